"""Chat messages -> mood verdicts: the classifier pipeline and the service that feeds it without blocking ingest.

The pipeline (chosen by measurement, see bot/head.py and the README): normalise the text, compute features --
hashed character n-grams, the emote/slang glossary, surface features, sentence embeddings from a local GGUF
(llama-cpp, when ``classifier.embedding_model`` is set) and LLM label log-probs (only when the configured LLM is
capable, see :func:`llm_enabled`) -- and apply a small trained head. The newest ``models/head-*.npz`` that fits the
configured categories and models is used; without one the head is trained at start-up from the glossary-backed
starter set shipped in ``bot/data/starter_labels.jsonl`` (cold start). :meth:`PipelineClassifier.maybe_reload`
swaps in a newer head without a restart.

:class:`ClassifierService` sits between ingest and the classifier: ``offer()`` never blocks (a bounded buffer,
reservoir sampling when chat outpaces the model, skipped messages counted per channel); ``run()`` classifies in
batches off the event loop, one call at a time, with an LRU cache of verdicts keyed by normalised text.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import structlog

from bot.config import Category, Config
from bot.domain import ChatLine, Verdict
from bot.errors import ModelError
from bot.head import FeatureSpec, Head, train_head

log = structlog.get_logger(__name__)

#: LLMs measured too weak to help (SmolLM2-135M: 21-47% zero-shot on 3 classes, noise as features).
WEAK_LLMS = frozenset({"smollm2", "SmolLM2-135M-Instruct.Q4_0.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"})
HEAD_GLOB = "head-*.npz"
_WS = re.compile(r"\s+")
_RUN = re.compile(r"(.)\1{3,}")


@runtime_checkable
class Classifier(Protocol):
    """Anything that turns texts into verdicts over fixed categories. ``classify`` blocks."""

    @property
    def version(self) -> str: ...

    @property
    def categories(self) -> tuple[str, ...]: ...

    def classify(self, texts: Sequence[str]) -> list[Verdict]: ...


@runtime_checkable
class Reloadable(Protocol):
    def maybe_reload(self) -> bool: ...


def normalise(text: str) -> str:
    """The form a message is classified (and cached) in: whitespace collapsed, letter runs cut to three,
    a token repeated back to back kept once ("KEKW KEKW KEKW" -> "KEKW"). Case is kept: it carries meaning."""
    text = _RUN.sub(lambda m: m.group(1) * 3, _WS.sub(" ", text).strip())
    tokens = text.split(" ")
    out = [t for i, t in enumerate(tokens) if i == 0 or t != tokens[i - 1]]
    return " ".join(out)


def starter_examples() -> list[tuple[str, str]]:
    """The shipped cold-start set: (text, category) pairs written for the default categories."""
    raw = resources.files("bot").joinpath("data/starter_labels.jsonl").read_text("utf-8")
    out = []
    for line in raw.splitlines():
        if line.strip():
            row = json.loads(line)
            out.append((str(row["text"]), str(row["label"])))
    return out


def usable_starter(categories: Sequence[Category]) -> list[tuple[str, str]]:
    """Starter examples whose label exists among the configured categories (valences stand in for the rest)."""
    names = {c.name for c in categories}
    valence = {-1: "negative", 0: "neutral", 1: "positive"}
    default_valence = {"hype": 1, "funny": 1, "love": 1, "neutral": 0, "sad": -1, "angry": -1}
    present = {c.valence for c in categories}
    out = []
    for text, label in starter_examples():
        if label in names:
            out.append((text, label))
        elif default_valence.get(label) in present:
            out.append((text, valence[default_valence[label]]))
    return out


def llm_enabled(cfg: Config) -> bool:
    """LLM label scores are used when ``use_llm="always"``, or ``"auto"`` with a configured LLM not known to be weak."""
    c = cfg.classifier
    if c.use_llm == "never" or not c.llm_model:
        return False
    if c.use_llm == "always":
        return True
    return c.llm_model not in WEAK_LLMS and Path(c.llm_model).name not in WEAK_LLMS


def render_prompt(template: str, categories: Sequence[Category], examples: Sequence[tuple[str, str]] = ()) -> str:
    """Fill a prompt template's ``{categories}`` and ``{examples}``; ``{message}`` is left for each message.

    Each example is written in the template's own message layout (the ``{message}`` line with the text filled in
    and the label after the answer cue), one per line, so examples and the scored message look alike."""
    cats = "\n".join(f"- {c.name}: {c.description}" for c in categories)
    shots = ""
    if examples and "{message}" in template:
        head, _, tail = template.partition("{message}")
        before = head.rpartition("\n")[2].replace("{examples}", "")
        after = tail.rstrip()
        shots = "".join(f"{before}{normalise(t)}{after} {label}\n" for t, label in examples)
    return template.replace("{categories}", cats).replace("{examples}", shots)


def split_prompt(rendered: str) -> tuple[str, str]:
    """(shared prefix, per-message suffix template with ``{message}``) of a rendered template.

    The suffix loses trailing whitespace (a template file's final newline): the label is scored right after the
    answer cue (``Mood:``), as in the examples. Everything before ``{message}`` is the cached prefix, so the
    per-message part is only the text plus the cue -- keep the cue short: every suffix token is evaluated for
    every message (`` Mood:`` is 2 SmolLM2 tokens, ``\nMood:`` 4)."""
    if "{message}" not in rendered:
        raise ValueError("prompt template has no {message} placeholder")
    prefix, _, rest = rendered.partition("{message}")
    return prefix, "{message}" + rest.rstrip()


def load_prompt(cfg: Config) -> str:
    path = cfg.resolve(cfg.classifier.prompt_template)
    try:
        text = path.read_text("utf-8")
    except OSError as e:
        problem = f"cannot read the prompt template: {e.strerror or e}"
        raise ModelError(path, problem, "restore prompts/classify.txt") from None
    if "{message}" not in text:
        raise ModelError(path, "prompt template has no {message} placeholder", "see prompts/classify.txt")
    return render_prompt(text, cfg.categories)


class FeatureSource:
    """Dense feature blocks from local models (sentence embeddings, LLM label scores), keyed as the head names them."""

    def __init__(self, embedder: Any = None, embed_name: str = "", scorer: Any = None, llm_name: str = "") -> None:
        self.embedder = embedder
        self.scorer = scorer
        self.widths: dict[str, int] = {}
        if embedder is not None:
            self.widths[f"emb:{embed_name}"] = int(embedder.dim)
        if scorer is not None:
            self.widths[f"llm:{llm_name}"] = len(scorer.labels)

    def compute(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for key in self.widths:
            if key.startswith("emb:"):
                out[key] = np.asarray(self.embedder.embed(list(texts)), dtype=np.float64)
            else:
                out[key] = np.asarray(self.scorer.score(list(texts)), dtype=np.float64)
        return out

    def close(self) -> None:
        for model in (self.embedder, self.scorer):
            close = getattr(model, "close", None)
            if close is not None:
                close()


class PipelineClassifier:
    """Features -> trained head -> verdicts. Not thread-safe: the service calls it from one thread at a time."""

    def __init__(
        self,
        categories: Sequence[Category],
        head: Head,
        source: FeatureSource | None = None,
        *,
        models_dir: Path | None = None,
        head_path: Path | None = None,
    ) -> None:
        self._cats = tuple(categories)
        self._source = source or FeatureSource()
        self._models_dir = models_dir
        self._head = head
        self._head_path = head_path
        self._head_mtime = head_path.stat().st_mtime if head_path else 0.0
        self._rejected: set[tuple[Path, float]] = set()  # (path, mtime) of heads found unusable
        self._check(head, head_path or Path("<memory>"))

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(c.name for c in self._cats)

    @property
    def version(self) -> str:
        models = "+".join(self._source.widths) or "text"
        return f"{self._head.version}/{models}"

    @property
    def head(self) -> Head:
        return self._head

    @property
    def head_path(self) -> Path | None:
        return self._head_path

    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec(extras=dict(self._source.widths))

    def compatible(self, head: Head) -> str | None:
        """Why ``head`` cannot serve this configuration, or None when it can."""
        if head.categories != self.categories:
            return f"trained for categories {list(head.categories)}, configured {list(self.categories)}"
        if head.spec.extras != self._source.widths:
            return f"needs feature blocks {head.spec.extras}, configured models give {self._source.widths}"
        return None

    def _check(self, head: Head, path: Path) -> None:
        problem = self.compatible(head)
        if problem:
            raise ModelError(path, problem, "retrain with `chatmood train`")

    def extras(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        return self._source.compute(texts)

    def classify(self, texts: Sequence[str]) -> list[Verdict]:
        if not texts:
            return []
        head = self._head  # one read: a concurrent reload swaps whole heads only
        norm = [normalise(t) for t in texts]
        unique = list(dict.fromkeys(norm))
        probs = head.predict_proba(unique, self._cats, self._source.compute(unique))
        version = self.version
        names = self.categories
        by_text: dict[str, Verdict] = {}
        for text, row in zip(unique, probs, strict=True):
            j = int(np.argmax(row))
            by_text[text] = Verdict(
                label=names[j],
                confidence=float(row[j]),
                probs={n: float(p) for n, p in zip(names, row, strict=True)},
                model=version,
            )
        return [by_text[t] for t in norm]

    def maybe_reload(self) -> bool:
        """Load the newest compatible head in ``models_dir`` when it is newer than the current one."""
        if self._models_dir is None:
            return False
        for path in newest_heads(self._models_dir):
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if path == self._head_path and mtime == self._head_mtime:
                return False
            if self._head_path is not None and path.name < self._head_path.name:
                return False
            if (path, mtime) in self._rejected:
                continue
            try:
                head = Head.load(path)
            except ModelError as e:
                log.warning("head_unusable", path=str(path), error=str(e))
                self._rejected.add((path, mtime))
                continue
            problem = self.compatible(head)
            if problem:
                log.warning("head_incompatible", path=str(path), problem=problem)
                self._rejected.add((path, mtime))
                continue
            self._head, self._head_path, self._head_mtime = head, path, mtime
            log.info("head_loaded", path=str(path), version=head.version)
            return True
        return False

    def close(self) -> None:
        self._source.close()


def newest_heads(models_dir: Path) -> list[Path]:
    """Head files, newest first (names carry a sortable UTC timestamp)."""
    try:
        return sorted(models_dir.glob(HEAD_GLOB), key=lambda p: p.name, reverse=True)
    except OSError:
        return []


#: The LLM path's batching: messages per ``llama_decode`` and the longest message scored (in tokens). Measured with
#: SmolLM2 Q4_0 on 2 threads (bench/classify.py): 16 messages per decode ~108 msg/s vs 8 ~93 (32: no gain, more KV);
#: chat messages are short, so 32 tokens keeps the KV reservation small without cutting real ones.
LLM_BATCH = 16
LLM_MAX_MESSAGE_TOKENS = 32


def open_label_scorer(cfg: Config, path: Path | None = None) -> Any:
    """A :class:`bot.llama.LabelScorer` for the configured LLM (or ``path``) and prompt template: the prompt up to
    ``{message}`` is the cached prefix, the message and the answer cue are all that is evaluated per message."""
    from bot.llama import LabelScorer
    from bot.models import resolve_model

    if path is None:
        path = resolve_model(cfg.classifier.llm_model, cfg.resolve(cfg.classifier.models_dir))
    prefix, suffix = split_prompt(load_prompt(cfg))
    return LabelScorer(
        path,
        threads=cfg.classifier.threads,
        prefix=prefix,
        labels=list(cfg.category_names),
        suffix_template=suffix.replace("{message}", "{text}"),
        batch_size=LLM_BATCH,
        max_message_tokens=LLM_MAX_MESSAGE_TOKENS,
    )


def open_sources(cfg: Config) -> FeatureSource:
    """Load the configured local models. Raises ModelError naming the path and how to get the model."""
    from bot.models import resolve_model

    models_dir = cfg.resolve(cfg.classifier.models_dir)
    embedder = scorer = None
    emb_name = cfg.classifier.embedding_model
    if emb_name:
        from bot.llama import Embedder

        embedder = Embedder(resolve_model(emb_name, models_dir), threads=cfg.classifier.threads)
    llm_name = cfg.classifier.llm_model
    if llm_enabled(cfg):
        try:
            scorer = open_label_scorer(cfg)
        except BaseException:
            if embedder is not None:
                embedder.close()
            raise
    return FeatureSource(embedder, Path(emb_name).name, scorer, Path(llm_name).name)


def cold_start_head(cfg: Config, source: FeatureSource) -> Head:
    """A head trained on the shipped starter set (and the glossary features) for the configured categories."""
    pairs = usable_starter(cfg.categories)
    texts = [normalise(t) for t, _ in pairs]
    head = train_head(
        texts,
        [label for _, label in pairs],
        cfg.categories,
        FeatureSpec(extras=dict(source.widths)),
        extras=source.compute(texts),
        l2=1e-2,  # few examples: keep the confidences modest (kobs cold start 53% at any l2 from 1e-3 to 1e-2)
    )
    head.meta["version"] = "cold-" + str(head.meta["version"]).removeprefix("head-")
    head.meta["source"] = "starter set"
    return head


def load_classifier(cfg: Config) -> PipelineClassifier:
    """The configured pipeline with the newest compatible head, or a cold-start head when there is none."""
    models_dir = cfg.resolve(cfg.classifier.models_dir)
    source = open_sources(cfg)
    try:
        clf = PipelineClassifier(cfg.categories, cold_start_head(cfg, source), source, models_dir=models_dir)
        if not clf.maybe_reload():
            log.info("head_cold_start", version=clf.version, models_dir=str(models_dir))
    except BaseException:
        source.close()
        raise
    return clf


class VerdictCache:
    """A bounded LRU of verdicts by normalised text, emptied when the classifier's version changes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, Verdict] = OrderedDict()
        self._version = ""
        self.hits = 0
        self.misses = 0

    def check_version(self, version: str) -> None:
        if version != self._version:
            self._data.clear()
            self._version = version

    def get(self, key: str) -> Verdict | None:
        v = self._data.get(key)
        if v is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return v

    def put(self, key: str, verdict: Verdict) -> None:
        if self.size <= 0:
            return
        self._data[key] = verdict
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


def _lookup(cache: VerdictCache, texts: Sequence[str]) -> tuple[list[str], dict[str, Verdict], list[str]]:
    """(normalised keys, cached verdicts by key, distinct keys to classify)."""
    keys = [normalise(t) for t in texts]
    found: dict[str, Verdict] = {}
    for k in keys:
        if k not in found:
            v = cache.get(k)
            if v is not None:
                found[k] = v
    return keys, found, [k for k in dict.fromkeys(keys) if k not in found]


def _fill(cache: VerdictCache, found: dict[str, Verdict], misses: list[str], fresh: list[Verdict]) -> None:
    for k, v in zip(misses, fresh, strict=True):
        found[k] = v
        cache.put(k, v)


def classify_cached(classifier: Classifier, cache: VerdictCache, texts: Sequence[str]) -> list[Verdict]:
    """Classify with the cache: each distinct normalised text not cached is classified once, in one batch."""
    cache.check_version(classifier.version)
    keys, found, misses = _lookup(cache, texts)
    if misses:
        _fill(cache, found, misses, classifier.classify(misses))
    return [found[k] for k in keys]


OnVerdicts = Callable[[list[tuple[ChatLine, Verdict]]], Awaitable[None] | None]


class ClassifierService:
    """Bounded, sampling, batching front of a classifier. ``run()`` is owned by the app's TaskGroup."""

    def __init__(
        self,
        classifier: Classifier,
        cfg: Config,
        on_verdicts: OnVerdicts,
        rng: random.Random | None = None,
        *,
        on_skipped: Callable[[str, int], None] | None = None,
        reload_every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.classifier = classifier
        self._on_verdicts = on_verdicts
        self._on_skipped = on_skipped
        self._rng = rng or random.Random()
        self._capacity = cfg.classifier.queue_size
        self._batch_size = cfg.classifier.batch_size
        self.cache = VerdictCache(cfg.classifier.cache_size)
        self._buffer: list[tuple[int, ChatLine]] = []
        self._inflight: list[tuple[int, ChatLine]] = []
        self._overflow = 0  # offers since the buffer was last full-and-taken from, beyond its capacity
        self._seq = 0
        self._skipped: dict[str, int] = {}
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self._reload_every_s = reload_every_s
        self._clock = clock
        self._last_reload = clock()
        self.classified = 0
        self.failed = 0

    @property
    def version(self) -> str:
        return self.classifier.version

    @property
    def pending(self) -> int:
        return len(self._buffer) + len(self._inflight)

    def skipped(self, channel: str | None = None) -> int:
        """Messages not classified because chat outpaced the model (one channel, or all)."""
        if channel is None:
            return sum(self._skipped.values())
        return self._skipped.get(channel, 0)

    def _skip(self, line: ChatLine) -> None:
        self._skipped[line.channel] = self._skipped.get(line.channel, 0) + 1
        if self._on_skipped is not None:
            self._on_skipped(line.channel, 1)

    def offer(self, line: ChatLine) -> None:
        """Queue a message for classification; never blocks. When the buffer is full, reservoir sampling keeps
        a uniform sample of the messages offered since it filled, and the one left out is counted as skipped."""
        self._seq += 1
        item = (self._seq, line)
        if len(self._buffer) < self._capacity:
            self._buffer.append(item)
        else:
            self._overflow += 1
            j = self._rng.randrange(self._capacity + self._overflow)
            if j < self._capacity:
                self._skip(self._buffer[j][1])
                self._buffer[j] = item
            else:
                self._skip(line)
        self._wakeup.set()

    def _oldest_pending(self) -> float:
        seqs = [s for s, _ in self._buffer] + [s for s, _ in self._inflight]
        return min(seqs) if seqs else float("inf")

    async def drain(self) -> None:
        """Wait until every message offered so far has been classified or skipped (needs ``run()`` running)."""
        target = self._seq
        while self._oldest_pending() <= target:
            await self._progress.wait()

    def _signal_progress(self) -> None:
        ev, self._progress = self._progress, asyncio.Event()
        ev.set()

    async def run(self) -> None:
        """The worker: take a batch, classify the cache misses off the loop, hand the verdicts on. Forever."""
        while True:
            try:
                async with asyncio.timeout(self._reload_every_s):
                    await self._wakeup.wait()
            except TimeoutError:  # idle: still look for a newer head
                await self._maybe_reload()
                continue
            if not self._buffer:
                self._wakeup.clear()
                continue
            self._inflight = self._buffer[: self._batch_size]
            del self._buffer[: self._batch_size]
            self._overflow = 0
            try:
                await self._process([line for _, line in self._inflight])
            finally:
                self._inflight = []
                self._signal_progress()
            await self._maybe_reload()

    async def _process(self, lines: list[ChatLine]) -> None:
        try:
            verdicts = await self._classify([line.text for line in lines])
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failed += len(lines)
            log.exception("classify_failed", messages=len(lines))
            return
        self.classified += len(lines)
        try:
            result = self._on_verdicts(list(zip(lines, verdicts, strict=True)))
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("on_verdicts_failed", messages=len(lines))

    async def _classify(self, texts: list[str]) -> list[Verdict]:
        self.cache.check_version(self.classifier.version)
        keys, found, misses = _lookup(self.cache, texts)
        if misses:
            _fill(self.cache, found, misses, await asyncio.to_thread(self.classifier.classify, misses))
        return [found[k] for k in keys]

    async def _maybe_reload(self) -> None:
        now = self._clock()
        if now - self._last_reload < self._reload_every_s or not isinstance(self.classifier, Reloadable):
            return
        self._last_reload = now
        try:
            if await asyncio.to_thread(self.classifier.maybe_reload):
                self.cache.check_version(self.classifier.version)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("head_reload_failed")

    async def reload_now(self) -> bool:
        """Check for a newer head at once (the worker also checks every ``reload_every_s`` while busy)."""
        if not isinstance(self.classifier, Reloadable):
            return False
        return await asyncio.to_thread(self.classifier.maybe_reload)
