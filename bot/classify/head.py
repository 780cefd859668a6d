"""The trained part of the classifier: text features -> multinomial logistic regression -> categories.

Features come from :mod:`bot.classify.features` (n-grams, glossary, surface, and model-made dense blocks). A head is
two-level, ``p(c) = p(valence(c)) * p(c | valence(c))``: a valence head and a category head that splits each
valence; :mod:`bot.classify.fit` trains both (and says why this design).

An *adapter* is a head with a ``base``: both its heads take the base head's log-probabilities as their offset and
as a feature block, so their weights are corrections to the base; :meth:`Head.shrunk` scales those corrections
(how far is chosen by cross-validation on the labels, :func:`bot.classify.training.choose_shrinkage`), and the
labelled texts themselves are remembered (:meth:`Head.recall`).

Saved as ``head-<UTC timestamp>.npz`` (weights + a JSON metadata string; no pickles).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from bot.classify.features import FeatureSpec, Sparse, Vocabulary, dense_features
from bot.config import Category
from bot.errors import ModelError

log = structlog.get_logger(__name__)

HEAD_FORMAT = 2
#: Format 1 heads (no base head, no prior shift) still load.
READABLE_FORMATS = (1, 2)
def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


@dataclass
class Head:
    """A trained head over ``categories``: vocabulary, dense scaling, category weights and (two-level heads)
    valence weights. With valence weights, ``p(c) = p(valence(c)) * p(c | valence(c))``: the valence part comes
    from the valence head, the split inside a valence from the category head."""

    categories: tuple[str, ...]
    spec: FeatureSpec
    vocab: Vocabulary
    dense_mean: np.ndarray
    dense_scale: np.ndarray
    w_sparse: np.ndarray  # (len(vocab.buckets), k)
    w_dense: np.ndarray  # (d, k)
    bias: np.ndarray  # (k,)
    meta: dict[str, Any] = field(default_factory=dict)
    # Two-level heads: the valence of each category (k,), the valences (m,) and the valence head's weights.
    cat_valence: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    valences: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    v_sparse: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    v_dense: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    v_bias: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # An adapter's base head: its log-probabilities are a dense block of both heads and the category head's offset.
    base: Head | None = None
    # Added to the log-probabilities at the end (a prior shift, e.g. the starter head's towards mostly neutral chat).
    shift: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # The labelled texts themselves (normalised), what each label allowed (m, k) and how often it was given: a text
    # a moderator labelled is read as labelled, whatever the weights say (see :meth:`recall`).
    memory_texts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    memory_masks: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))
    memory_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _memory_index: tuple[np.ndarray, dict[str, list[int]]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "untrained"))

    @property
    def two_level(self) -> bool:
        return len(self.valences) > 0

    def _scaled(self, dense: np.ndarray) -> np.ndarray:
        return np.asarray((dense - self.dense_mean) / self.dense_scale)

    def logits(self, sparse: Sparse, dense: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        z = sparse.matmul(self.w_sparse) + self._scaled(dense) @ self.w_dense + self.bias
        return np.asarray(z if offset is None else z + offset)

    def proba(self, sparse: Sparse, dense: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        p = softmax(self.logits(sparse, dense, offset))
        if self.two_level:
            zv = sparse.matmul(self.v_sparse) + self._scaled(dense) @ self.v_dense + self.v_bias
            if offset is not None:
                zv = zv + valence_offset(offset, self.cat_valence, self.valences)
            pv = softmax(zv)
            out = np.zeros_like(p)
            for j, v in enumerate(self.valences):
                group = self.cat_valence == v
                within = p[:, group] / np.maximum(p[:, group].sum(axis=1, keepdims=True), 1e-300)
                out[:, group] = within * pv[:, j : j + 1]
            p = out
        if len(self.shift) and self.shift.any():
            p = softmax(np.log(np.maximum(p, 1e-300)) + self.shift)
        return p

    def features(
        self, texts: Sequence[str], category_objs: Sequence[Category], extras: dict[str, np.ndarray] | None = None
    ) -> tuple[Sparse, np.ndarray, np.ndarray | None]:
        """(sparse, dense, offset) of ``texts``: with a base head, its log-probabilities are the offset and a block."""
        sparse = self.vocab.transform(texts, self.spec)
        dense = dense_features(texts, self.spec, category_objs, extras or {})
        if self.base is None:
            return sparse, dense, None
        offset = base_logp(self.base, texts, category_objs, extras)
        return sparse, np.concatenate([dense, offset], axis=1), offset

    def predict_proba(
        self, texts: Sequence[str], category_objs: Sequence[Category], extras: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        return self.recall(texts, self.proba(*self.features(texts, category_objs, extras)))

    def recall(self, texts: Sequence[str], probs: np.ndarray) -> np.ndarray:
        """``probs`` with every remembered text read as labelled: the probabilities restricted to what each of its
        labels allows (a valence label keeps the head's split inside that valence), mixed by how often each label
        was given."""
        if not len(self.memory_texts):
            return probs
        if self._memory_index is None or self._memory_index[0] is not self.memory_texts:
            index: dict[str, list[int]] = {}
            for j, text in enumerate(self.memory_texts.tolist()):
                index.setdefault(text, []).append(j)
            self._memory_index = (self.memory_texts, index)
        index = self._memory_index[1]
        out = probs
        for i, text in enumerate(texts):
            rows = index.get(text)
            if rows is None:
                continue
            if out is probs:
                out = probs.copy()
            mixed = np.zeros(probs.shape[1])
            for j in rows:
                inside = np.where(self.memory_masks[j], np.maximum(probs[i], 1e-12), 0.0)
                mixed += self.memory_counts[j] * inside / inside.sum()
            out[i] = mixed / mixed.sum()
        return out

    def shrunk(self, valence: float, category: float) -> Head:
        """This adapter with what it learned on top of its base scaled down (both heads' weights and biases; 0 gives
        back the base's probabilities, 1 the fitted adapter): ``log p = base + a * (adapter - base)`` per head."""
        if self.base is None:
            raise ValueError("only an adapter (a head with a base) can be shrunk towards its base")
        head = replace(
            self, w_sparse=self.w_sparse * category, w_dense=self.w_dense * category, bias=self.bias * category,
            v_sparse=self.v_sparse * valence, v_dense=self.v_dense * valence, v_bias=self.v_bias * valence,
            meta=dict(self.meta),
        )
        digest = hashlib.blake2b(f"{self.version} {valence:g} {category:g}".encode(), digest_size=5)
        head.meta.update(version="head-" + digest.hexdigest(), shrink={"valence": valence, "category": category})
        return head

    def _arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {**self.meta, "format": HEAD_FORMAT, "categories": list(self.categories), "spec": asdict(self.spec)}
        arrays = {
            "buckets": self.vocab.buckets,
            "idf": self.vocab.idf.astype(np.float32),
            "dense_mean": self.dense_mean,
            "dense_scale": self.dense_scale,
            "w_sparse": self.w_sparse.astype(np.float32),
            "w_dense": self.w_dense,
            "bias": self.bias,
            "cat_valence": self.cat_valence,
            "valences": self.valences,
            "v_sparse": self.v_sparse.astype(np.float32),
            "v_dense": self.v_dense,
            "v_bias": self.v_bias,
            "shift": self.shift,
            "memory_texts": self.memory_texts,
            "memory_masks": self.memory_masks,
            "memory_counts": self.memory_counts,
        }
        if self.base is not None:
            base_meta, base_arrays = self.base._arrays()
            meta["base"] = base_meta
            arrays.update({f"base.{k}": v for k, v in base_arrays.items()})
        return meta, arrays

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta, arrays = self._arrays()
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as fh:
            np.savez_compressed(fh, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]  # numpy types **kwds as allow_pickle
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Head:
        hint = "retrain it with `chatmood train`, or delete it to fall back to the newest older head"
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: np.asarray(z[k]) for k in z.files if k != "meta"}
        except FileNotFoundError:
            raise ModelError(path, "head file not found", hint) from None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise ModelError(path, f"not a readable head file: {e}", hint) from None
        return cls._from(meta, arrays, path, hint)

    @classmethod
    def _from(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path, hint: str) -> Head:
        if meta.get("format") not in READABLE_FORMATS:
            raise ModelError(path, f"head format {meta.get('format')!r} is not {HEAD_FORMAT}", hint)
        base = None
        if "base" in meta:
            base = cls._from(meta["base"], {k[5:]: v for k, v in arrays.items() if k.startswith("base.")}, path, hint)
        try:
            head = cls(
                categories=tuple(meta["categories"]),
                spec=FeatureSpec(**meta["spec"]),
                vocab=Vocabulary(arrays["buckets"].astype(np.int64), arrays["idf"].astype(np.float64)),
                dense_mean=arrays["dense_mean"],
                dense_scale=arrays["dense_scale"],
                w_sparse=arrays["w_sparse"].astype(np.float64),
                w_dense=arrays["w_dense"],
                bias=arrays["bias"],
                meta={k: v for k, v in meta.items() if k != "base"},
                cat_valence=arrays["cat_valence"].astype(np.int64),
                valences=arrays["valences"].astype(np.int64),
                v_sparse=arrays["v_sparse"].astype(np.float64),
                v_dense=arrays["v_dense"],
                v_bias=arrays["v_bias"],
                base=base,
                shift=arrays.get("shift", np.zeros(0)).astype(np.float64),
                memory_texts=arrays.get("memory_texts", np.zeros(0, dtype=str)).astype(str),
                memory_masks=arrays.get("memory_masks", np.zeros((0, 0), dtype=bool)).astype(bool),
                memory_counts=arrays.get("memory_counts", np.zeros(0)).astype(np.float64),
            )
        except (KeyError, TypeError) as e:
            raise ModelError(path, f"head file is missing {e}", hint) from None
        k, v, m = len(head.categories), len(head.vocab.buckets), len(head.valences)
        shapes_ok = head.w_sparse.shape == (v, k) and head.bias.shape == (k,) and len(head.shift) in (0, k)
        if m:
            shapes_ok = shapes_ok and head.v_sparse.shape == (v, m) and head.cat_valence.shape == (k,)
        if base is not None:
            shapes_ok = shapes_ok and base.categories == head.categories
        n_mem = len(head.memory_texts)
        if n_mem:
            shapes_ok = shapes_ok and head.memory_masks.shape == (n_mem, k) and head.memory_counts.shape == (n_mem,)
        if not shapes_ok:
            raise ModelError(path, "head weights have inconsistent shapes", hint)
        return head


def valence_offset(offset: np.ndarray, cat_valence: np.ndarray, valences: np.ndarray) -> np.ndarray:
    """Per valence, the log of the summed probabilities of its categories (from category log-probabilities)."""
    return np.stack(
        [np.log(np.exp(offset[:, cat_valence == v]).sum(axis=1)) for v in valences], axis=1
    )


def base_logp(
    base: Head, texts: Sequence[str], category_objs: Sequence[Category], extras: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """The base head's log-probabilities, floored at 1e-4 so one confident base cannot dominate a block."""
    return np.asarray(np.log(base.predict_proba(texts, category_objs, extras) + 1e-4))
