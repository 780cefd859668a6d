"""Thin owners of llama-cpp objects: sentence embeddings and LLM label scoring.

llama.cpp contexts are not thread-safe. Each object here serialises its own calls with a
:class:`threading.Lock`; they block, so async callers run them with :func:`asyncio.to_thread`.

* :class:`Embedder` turns texts into L2-normalised sentence vectors (a BERT GGUF with mean pooling).
* :class:`LabelScorer` scores every label for every message by the log-probability of the label's tokens after a
  shared prompt prefix that is evaluated once and kept in the KV cache (sequence 0). Each message runs in its own
  sequence that borrows the prefix's cells (``llama_memory_seq_cp``), so several messages go through one
  ``llama_decode``; a label of several tokens gets a branch sequence of its own in the same decode. It also offers
  the two slower ways to the same answer: free generation with one prompt per message (the naive baseline) and
  grammar-constrained generation.

Load failures (missing, corrupt, unsupported files) raise :class:`~bot.errors.ModelError` naming the path.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp
import llama_cpp.llama_grammar
import numpy as np
import structlog

from bot.errors import ModelError
from bot.llm.gguf import atomic_path, check_gguf

log = structlog.get_logger(__name__)


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _llama_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp's log lines: errors become structlog events, the rest (model dumps, warnings about
    training context) is dropped. (llama-cpp-python's own handler maps ggml's newer level numbers wrongly and
    prints warnings while hiding errors.)"""
    if level == _GGML_LOG_LEVEL_ERROR:
        log.warning("llama_cpp_error", text=text.decode("utf-8", "replace").strip())


_GGML_LOG_LEVEL_ERROR = 4  # ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5
llama_cpp.llama_log_set(_llama_log, ctypes.c_void_p(0))

LOAD_HINT = "run `make setup` or `chatmood models fetch`, or point the config at a valid GGUF"


# A quiet Llama (verbose=False) is loaded inside llama-cpp-python's suppress_stdout_stderr, which points the
# process's file descriptors 1 and 2 and sys.stdout/stderr at /dev/null and back. It is not thread-safe: two loads on
# two threads at once can restore each other's /dev/null and leave stdout there for good. So loads take turns.
_LOADING = threading.Lock()


def _load(path: Path, **kwargs: Any) -> llama_cpp.Llama:
    """A quiet ``Llama`` or a :class:`ModelError` naming the path. One load at a time in the process."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(path, "model file not found", LOAD_HINT)
    check_gguf(path, hint=LOAD_HINT)
    try:
        with _LOADING:
            return llama_cpp.Llama(str(path), verbose=False, **kwargs)
    except (ValueError, RuntimeError, OSError) as e:
        raise ModelError(path, f"llama.cpp cannot load it ({e})", LOAD_HINT) from None


class _Batch:
    """A ``llama_batch`` we fill ourselves (token ids, positions, several sequence ids per token)."""

    def __init__(self, n_tokens: int, n_seq_ids: int) -> None:
        self.capacity = n_tokens
        self.n_seq_ids = n_seq_ids
        self.raw = llama_cpp.llama_batch_init(n_tokens, 0, n_seq_ids)
        self.outputs: list[int] = []

    def clear(self) -> None:
        self.raw.n_tokens = 0
        self.outputs = []

    def add(self, token: int, pos: int, seq_ids: Sequence[int], output: bool) -> int:
        """Append one token; returns its index in the batch (for ``llama_get_*_ith``)."""
        i = int(self.raw.n_tokens)
        if i >= self.capacity or len(seq_ids) > self.n_seq_ids:
            raise ValueError("llama batch overflow")
        self.raw.token[i] = token
        self.raw.pos[i] = pos
        self.raw.n_seq_id[i] = len(seq_ids)
        for j, s in enumerate(seq_ids):
            self.raw.seq_id[i][j] = s
        self.raw.logits[i] = output
        self.raw.n_tokens = i + 1
        return i

    @property
    def size(self) -> int:
        return int(self.raw.n_tokens)

    def free(self) -> None:
        if self.capacity:
            llama_cpp.llama_batch_free(self.raw)
            self.capacity = 0


def _decode(ctx: Any, batch: _Batch, path: Path) -> None:
    rc = llama_cpp.llama_decode(ctx, batch.raw)
    if rc != 0:
        raise ModelError(path, f"llama_decode failed (code {rc}, {batch.size} tokens)")


class Embedder:
    """Sentence embeddings from a BERT-style GGUF (mean pooling), L2-normalised float32 rows.

    Texts longer than ``n_ctx`` tokens (or the model's trained context, if shorter) are cut, keeping the closing
    [SEP]. ``pack_tokens`` > 0 packs several short texts into one decode (separate sequences) up to that many
    tokens; 0 (the default) decodes one text per call: in llama.cpp 0.3.36 every token of a packed batch attends
    over the whole batch (masked), so packing did not pay on this CPU (see bench/llama_speed.py)."""

    def __init__(self, path: Path, *, threads: int, n_ctx: int = 256, pack_tokens: int = 0) -> None:
        if not 16 <= n_ctx <= 512:
            raise ValueError("n_ctx must be within 16..512")
        self.path = Path(path)
        self.n_ctx = n_ctx
        self.pack_tokens = min(pack_tokens, n_ctx) if pack_tokens > 0 else 0
        self._lock = threading.Lock()
        self._llama = _load(self.path, embedding=True, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                            n_threads=threads, n_threads_batch=threads)
        if int(self._llama.pooling_type()) == int(llama_cpp.LLAMA_POOLING_TYPE_NONE):
            self.close()
            raise ModelError(self.path, "not a pooled embedding model (pooling type none)",
                             "use a sentence-embedding GGUF such as minilm")
        # never past the model's position table (a BERT has no rows for later positions)
        self.n_ctx = min(n_ctx, int(llama_cpp.llama_model_n_ctx_train(self._llama.model)))
        self.dim = int(self._llama.n_embd())
        self._seq_max = int(self._llama.context_params.n_seq_max)
        self._batch = _Batch(n_ctx, 1)
        log.info("embedder_loaded", path=str(self.path), dim=self.dim, n_ctx=self.n_ctx, threads=threads)

    def tokens(self, text: str) -> list[int]:
        """The token ids a text is embedded from, cut to ``n_ctx`` (the last token, [SEP], is kept)."""
        toks: list[int] = self._llama.tokenize(text.encode("utf-8", "replace"), add_bos=True)
        if len(toks) > self.n_ctx:
            toks = [*toks[: self.n_ctx - 1], toks[-1]]
        return toks

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit length (all zeros for a text with no tokens)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            if self._batch.capacity == 0:
                raise RuntimeError("Embedder is closed")
            group: list[tuple[int, list[int]]] = []
            used = 0
            for i, text in enumerate(texts):
                toks = self.tokens(text)
                if not toks:
                    continue
                limit = self.pack_tokens or 0
                if group and (used + len(toks) > limit or len(group) >= self._seq_max):
                    self._run(group, out)
                    group, used = [], 0
                group.append((i, toks))
                used += len(toks)
            if group:
                self._run(group, out)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def _run(self, group: list[tuple[int, list[int]]], out: np.ndarray) -> None:
        ctx = self._llama.ctx
        self._batch.clear()
        for seq, (_, toks) in enumerate(group):
            for pos, tok in enumerate(toks):
                self._batch.add(tok, pos, (seq,), True)
        mem = llama_cpp.llama_get_memory(ctx)
        if mem:
            llama_cpp.llama_memory_clear(mem, True)
        _decode(ctx, self._batch, self.path)
        for seq, (row, _) in enumerate(group):
            ptr = llama_cpp.llama_get_embeddings_seq(ctx, seq)
            if not ptr:
                raise ModelError(self.path, "llama.cpp returned no pooled embedding")
            out[row] = np.ctypeslib.as_array(ptr, shape=(self.dim,))

    def close(self) -> None:
        """Free the model (idempotent); waits for a call in progress on another thread."""
        with self._lock:
            batch = getattr(self, "_batch", None)
            if batch is not None:
                batch.free()
            self._llama.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=-1, keepdims=True)
    out: np.ndarray = logits - (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))
    return out


class LabelScorer:
    """Scores labels for chat messages with a causal LLM: ``log p(label | prefix + message + answer prefill)``.

    ``prefix`` (instructions, categories, examples) is evaluated once into sequence 0 of a unified KV cache.
    ``suffix_template`` holds ``{text}`` exactly once, e.g. ``"Message: {text}\\nMood:"``; each label is scored as
    the tokens of ``label_sep + label`` that follow it. Messages are cut to ``max_message_tokens`` tokens.
    ``batch_size`` messages share one decode (their own sequences borrow the prefix cells; labels of several tokens
    get branch sequences); ``batch_size=1`` is the sequential path. ``cache_prefix=False`` re-evaluates the prefix
    for every decode (for tests and measurements only). ``gen_ctx`` is the context of the generation paths
    (default: enough for the prompt)."""

    def __init__(self, path: Path, *, threads: int, prefix: str, labels: Sequence[str], suffix_template: str,
                 label_sep: str = " ", batch_size: int = 8, max_message_tokens: int = 64,
                 cache_prefix: bool = True, gen_ctx: int | None = None) -> None:
        if suffix_template.count("{text}") != 1:
            raise ValueError("suffix_template must contain {text} exactly once")
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError("labels must be at least two distinct strings")
        self.path = Path(path)
        self.labels = tuple(labels)
        self.prefix = prefix
        self.suffix_template = suffix_template
        self.label_sep = label_sep
        self.batch_size = max(1, batch_size)
        self.max_message_tokens = max(1, max_message_tokens)
        self.cache_prefix = cache_prefix
        self._lock = threading.Lock()
        self._ctx: Any = None
        self._batch: _Batch | None = None
        if gen_ctx is None:
            # the generation paths' own context: a prompt has at most one token per byte (plus BOS)
            longest_label = max(len((label_sep + lab).encode("utf-8")) for lab in labels)
            need = len((prefix + suffix_template).encode("utf-8")) + self.max_message_tokens + longest_label + 16
            gen_ctx = max(256, -(-need // 256) * 256)
        # use_mmap=False: llama.cpp repacks Q4_0 weights into its own buffer; with mmap the file's pages stay
        # resident too (SmolLM2: 214 -> 157 MB peak RSS for the load, no slower)
        self._llama = _load(self.path, n_ctx=gen_ctx, n_threads=threads, n_threads_batch=threads, use_mmap=False)
        try:
            self._setup(threads)
        except BaseException:
            self.close()
            raise
        self._grammar: llama_cpp.llama_grammar.LlamaGrammar | None = None
        log.info("label_scorer_loaded", path=str(self.path), labels=self.labels, prefix_tokens=len(self._prefix),
                 label_tokens=[len(t) for t in self._label_tokens], n_ctx=self._n_ctx, batch_size=self.batch_size)

    # ---- setup

    def _tok(self, text: str, *, bos: bool = False, special: bool = True) -> list[int]:
        """Prompt pieces may hold special tokens (``<|im_end|>``); chat text is tokenized with ``special=False``."""
        return list(self._llama.tokenize(text.encode("utf-8", "replace"), add_bos=bos, special=special))

    def _setup(self, threads: int) -> None:
        before, after = self.suffix_template.split("{text}")
        self._prefix = self._tok(self.prefix, bos=True)
        self._before = self._tok(before) if before else []
        self._after = self._tok(after) if after else []
        # A label's tokens are what tokenizing ``after + sep + label`` adds to ``after`` (the same merges the model
        # saw in training); if the tokenizer merges across that boundary, fall back to the label alone.
        self._label_tokens: list[list[int]] = []
        for label in self.labels:
            joined = self._tok(after + self.label_sep + label)
            if after and joined[: len(self._after)] == self._after and len(joined) > len(self._after):
                toks = joined[len(self._after):]
            else:
                toks = self._tok(self.label_sep + label)
            if not toks:
                raise ValueError(f"label {label!r} has no tokens")
            self._label_tokens.append(toks)
        if len({tuple(t) for t in self._label_tokens}) != len(self.labels):
            raise ValueError("two labels tokenize identically")
        self._branches = [i for i, t in enumerate(self._label_tokens) if len(t) > 1]
        seqs_per_msg = 1 + len(self._branches)
        max_seq = int(llama_cpp.llama_max_parallel_sequences())
        self.batch_size = max(1, min(self.batch_size, (max_seq - 1) // seqs_per_msg))
        self._per_msg = (len(self._before) + self.max_message_tokens + len(self._after)
                         + sum(len(self._label_tokens[i]) - 1 for i in self._branches))
        n_train = int(llama_cpp.llama_model_n_ctx_train(self._llama.model))
        if len(self._prefix) + self._per_msg > n_train:
            raise ValueError(f"prompt prefix ({len(self._prefix)} tokens) and a message do not fit the model's "
                             f"{n_train}-token context; shorten the prompt or lower max_message_tokens")
        # KV cells for the prefix plus every message of a batch; positions stay within one message's reach.
        need = len(self._prefix) + self.batch_size * self._per_msg
        self._n_ctx = -(-need // 256) * 256
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self._n_ctx
        params.n_batch = self._n_ctx
        params.n_ubatch = min(512, self._n_ctx)
        params.n_seq_max = 1 + self.batch_size * seqs_per_msg
        params.kv_unified = True
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._llama.model, params)
        if not self._ctx:
            raise ModelError(self.path, f"llama.cpp could not create a {self._n_ctx}-token context")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._n_vocab = int(self._llama.n_vocab())
        self._batch = _Batch(max(self._n_ctx, len(self._prefix)), seqs_per_msg)
        self._prefix_ready = False

    # ---- scoring

    def _eval_prefix(self) -> None:
        assert self._batch is not None
        llama_cpp.llama_memory_clear(self._mem, True)
        self._batch.clear()
        for pos, tok in enumerate(self._prefix):
            self._batch.add(tok, pos, (0,), False)
        _decode(self._ctx, self._batch, self.path)
        self._prefix_ready = True

    def message_tokens(self, text: str) -> list[int]:
        """The tokens evaluated after the prefix for one message (the text cut to ``max_message_tokens``)."""
        body = self._tok(text, special=False)[: self.max_message_tokens] if text else []
        return [*self._before, *body, *self._after]

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), len(labels)) log-probabilities, normalised over the labels (each row logsumexp == 0)."""
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        with self._lock:
            if self._batch is None:
                raise RuntimeError("LabelScorer is closed")
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start: start + self.batch_size]
                out[start: start + len(chunk)] = self._score_chunk(chunk)
        return out

    def _score_chunk(self, texts: Sequence[str]) -> np.ndarray:
        assert self._batch is not None
        if not self.cache_prefix or not self._prefix_ready:
            self._eval_prefix()
        p0 = len(self._prefix)
        seqs_per_msg = 1 + len(self._branches)
        self._batch.clear()
        # per message: the batch index whose logits give each label's first token, and (label, token, index)
        # triples for the later tokens of multi-token labels
        first_idx: list[int] = []
        later: list[list[tuple[int, int, int]]] = []
        used: list[int] = []
        for m, text in enumerate(texts):
            sid = 1 + m * seqs_per_msg
            ids = [sid + 1 + b for b in range(len(self._branches))]
            used += [sid, *ids]
            toks = self.message_tokens(text)
            last = 0
            for j, tok in enumerate(toks):
                last = self._batch.add(tok, p0 + j, (sid, *ids), j == len(toks) - 1)
            first_idx.append(last)
            extra: list[tuple[int, int, int]] = []
            for b, li in enumerate(self._branches):
                ltoks = self._label_tokens[li]
                for j in range(len(ltoks) - 1):
                    idx = self._batch.add(ltoks[j], p0 + len(toks) + j, (ids[b],), True)
                    extra.append((li, ltoks[j + 1], idx))
            later.append(extra)
        for sid in used:
            llama_cpp.llama_memory_seq_cp(self._mem, 0, sid, -1, -1)
        try:
            _decode(self._ctx, self._batch, self.path)
            scores = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
            for m in range(len(texts)):
                lp = self._logprobs(first_idx[m])
                scores[m] = [lp[t[0]] for t in self._label_tokens]
                for li, tok, idx in later[m]:
                    scores[m, li] += self._logprobs(idx)[tok]
        finally:
            for sid in used:
                llama_cpp.llama_memory_seq_rm(self._mem, sid, -1, -1)
        return _log_softmax_rows(scores)

    def _logprobs(self, batch_index: int) -> np.ndarray:
        ptr = llama_cpp.llama_get_logits_ith(self._ctx, batch_index)
        row = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).astype(np.float64)
        return _log_softmax_rows(row)

    # ---- the slower ways, for comparison

    def prompt_tokens(self, text: str) -> list[int]:
        """The whole prompt for one message as the generation paths send it (the same tokens scoring sees)."""
        return [*self._prefix, *self.message_tokens(text)]

    def _match(self, generated: str) -> str | None:
        g = generated.strip().lower()
        for label in sorted(self.labels, key=len, reverse=True):
            if g.startswith(label.lower()):
                return label
        return None

    def generate_label(self, text: str, *, max_tokens: int = 8) -> str | None:
        """The naive baseline: one prompt per message, greedy free generation; the label it starts with, if any."""
        with self._lock:
            res: Any = self._llama.create_completion(self.prompt_tokens(text), max_tokens=max_tokens,
                                                     temperature=0.0, stop=["\n"])
        return self._match(str(res["choices"][0]["text"]))

    def generate_label_constrained(self, text: str) -> str:
        """Greedy generation restricted by a grammar to exactly one of the labels."""
        if self._grammar is None:
            alts = " | ".join('"' + (self.label_sep + lab).replace("\\", "\\\\").replace('"', '\\"') + '"'
                              for lab in self.labels)
            self._grammar = llama_cpp.llama_grammar.LlamaGrammar.from_string(f"root ::= {alts}", verbose=False)
        # the grammar may spell a label with short tokens (even single characters), so allow one per byte
        longest = max(len((self.label_sep + lab).encode("utf-8")) for lab in self.labels)
        with self._lock:
            res: Any = self._llama.create_completion(self.prompt_tokens(text), max_tokens=longest + 2,
                                                     temperature=0.0, grammar=self._grammar)
        label = self._match(str(res["choices"][0]["text"]))
        if label is None:  # the grammar stopped early (max_tokens); the closest prefix still names one label
            raise ModelError(self.path, f"constrained generation produced {res['choices'][0]['text']!r}")
        return label

    @property
    def n_prefix_tokens(self) -> int:
        return len(self._prefix)

    def close(self) -> None:
        """Free the context and the model (idempotent); waits for a call in progress on another thread."""
        with self._lock:
            if self._batch is not None:
                self._batch.free()
                self._batch = None
            if self._ctx:
                llama_cpp.llama_free(self._ctx)
                self._ctx = None
            self._llama.close()

    def __enter__(self) -> LabelScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------- quantize


def requantize(src: Path, dst: Path, *, ftype: str = "q4_0", threads: int = 0) -> Path:
    """Re-quantize a GGUF with llama.cpp (``llama_model_quantize``, requantizing allowed). Written atomically."""
    ftypes = {"q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
              "q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1}
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[ftype]
    params.allow_requantize = True
    params.nthread = threads
    with atomic_path(dst) as tmp:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0:
            raise ModelError(src, f"llama.cpp could not quantize it to {ftype} (code {rc})")
    return dst
