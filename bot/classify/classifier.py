"""Chat messages -> mood verdicts: the classifier pipeline.

The pipeline (chosen by measurement, see bot/classify/fit.py and the README): normalise the text, compute features --
hashed character n-grams, the emote/slang glossary, surface features, sentence embeddings from a local GGUF
(llama-cpp, when ``classifier.embedding_model`` is set) and LLM label log-probs (only when the configured LLM is
capable, see :func:`llm_enabled`) -- and apply a small trained head. The newest ``models/head-*.npz`` that fits the
configured categories and models is used; without one, the starter head trained on the shipped starter set
(:mod:`bot.classify.starter`; cold start). :meth:`PipelineClassifier.maybe_reload`
swaps in a newer head without a restart.

The service that feeds it without blocking ingest is :mod:`bot.classify.service`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import structlog

from bot.classify.features import FeatureSpec
from bot.classify.head import Head
from bot.classify.prompt import load_prompt, split_prompt
from bot.classify.starter import STARTER_SPEC, data_hash, shipped_head, train_starter
from bot.classify.text import normalise
from bot.config import DEFAULT_CATEGORIES, Category, Config
from bot.domain import Verdict
from bot.errors import ModelError

log = structlog.get_logger(__name__)

#: LLMs measured too weak to help (SmolLM2-135M: 21-47% zero-shot on 3 classes, noise as features).
WEAK_LLMS = frozenset({"smollm2", "SmolLM2-135M-Instruct.Q4_0.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"})
HEAD_GLOB = "head-*.npz"

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


def llm_enabled(cfg: Config) -> bool:
    """LLM label scores are used when ``use_llm="always"``, or ``"auto"`` with a configured LLM not known to be weak."""
    c = cfg.classifier
    if c.use_llm == "never" or not c.llm_model:
        return False
    if c.use_llm == "always":
        return True
    return c.llm_model not in WEAK_LLMS and Path(c.llm_model).name not in WEAK_LLMS


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

    def compute(self, texts: Sequence[str], keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The blocks named in ``keys`` (all by default) for ``texts``."""
        out: dict[str, np.ndarray] = {}
        for key in self.widths if keys is None else [k for k in self.widths if k in keys]:
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
        needs = blocks_of(head)
        if any(self._source.widths.get(name) != width for name, width in needs.items()):
            return f"needs feature blocks {needs}, configured models give {self._source.widths}"
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
        probs = head.predict_proba(unique, self._cats, self._source.compute(unique, list(blocks_of(head))))
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


def blocks_of(head: Head) -> dict[str, int]:
    """The model feature blocks a head (and its base) reads: a text-only head serves any configuration."""
    out = dict(head.spec.extras)
    if head.base is not None:
        out.update(blocks_of(head.base))
    return out


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
    """A :class:`bot.llm.llama.LabelScorer` for the configured LLM (or ``path``) and prompt template: the prompt up to
    ``{message}`` is the cached prefix, the message and the answer cue are all that is evaluated per message."""
    from bot.llm.llama import LabelScorer
    from bot.llm.registry import resolve_model

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
    from bot.llm.registry import resolve_model

    models_dir = cfg.resolve(cfg.classifier.models_dir)
    embedder = scorer = None
    emb_name = cfg.classifier.embedding_model
    if emb_name:
        from bot.llm.llama import Embedder

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


def starter_head(cfg: Config) -> Head:
    """The head a channel starts with: text features trained on the shipped starter set (no model blocks: they
    join through labels, see :func:`bot.classify.training.train_from_pairs`).

    The default categories use the pre-trained head shipped in the package; other categories train their own
    once and keep it as ``models_dir/starter-<hash>.npz``."""
    if tuple(cfg.categories) == DEFAULT_CATEGORIES:
        shipped = shipped_head()
        if shipped is not None:
            return shipped
    models_dir = cfg.resolve(cfg.classifier.models_dir)
    path = models_dir / f"starter-{data_hash(cfg.categories, STARTER_SPEC, {})}.npz"
    if path.is_file():
        try:
            head = Head.load(path)
            if head.spec == STARTER_SPEC and head.categories == tuple(c.name for c in cfg.categories):
                return head
        except ModelError as e:
            log.warning("starter_head_unusable", path=str(path), error=str(e))
    log.info("starter_head_training", categories=list(cfg.category_names))
    head = train_starter(cfg.categories)
    try:
        head.save(path)
    except OSError as e:  # a read-only models_dir: train again next start
        log.warning("starter_head_not_saved", path=str(path), error=str(e))
    return head


def load_classifier(cfg: Config) -> PipelineClassifier:
    """The configured pipeline with the newest compatible head, or a cold-start head when there is none."""
    models_dir = cfg.resolve(cfg.classifier.models_dir)
    source = open_sources(cfg)
    try:
        clf = PipelineClassifier(cfg.categories, starter_head(cfg), source, models_dir=models_dir)
        if not clf.maybe_reload():
            log.info("head_cold_start", version=clf.version, models_dir=str(models_dir))
    except BaseException:
        source.close()
        raise
    return clf


