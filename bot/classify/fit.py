"""How a head is fitted: partial-label multinomial logistic regression by L-BFGS (numpy only).

How a valence-only label trains a head over richer categories -- the head is two-level, ``p(c) =
p(valence(c)) * p(c | valence(c))``:

* the *valence head* learns from every example: a category label (``hype``) counts as its valence (positive), a
  valence label as itself;
* the *category head* learns the split inside each valence from the category-labelled examples only (the shipped
  starter set, ``!label hype`` from mods, category-labelled files) plus the glossary features.

Both minimise a *partial-label* likelihood, ``-log sum_{c in allowed} p(c|x)``, which also covers a label that
allows several classes. With ``base=`` the result is an adapter (:class:`bot.classify.head.Head`). The current
figures are in the README ("How the mood is computed") and come from bench/accuracy.py.

Design history, measured on Kobs-dev with the *earlier* design (labels pooled with the 217-line starter set of
the time, 3x5-fold CV grouped by text): a single partial-label head over six categories fed by valence labels
reached 61.5% accuracy, the two-level head 65.9% (macro-F1 0.630), a plain 3-class valence head 64.7%; the
two-level head keeps the categories at no cost in valence accuracy, so it stayed. Sentence embeddings (MiniLM)
never helped: concatenated at the common L2 they lowered it to 57% (and cut throughput to ~340 msg/s); with their
own strong L2 (:data:`EMB_BLOCK_L2`) they are harmless (64.6% vs 64.8% in the same folds); late fusion (a separate
head on the embeddings averaged in log-probability space) reached 64.1%. So the default pipeline uses no
embeddings; whole-word features and other n-gram ranges changed nothing beyond noise. Evaluation against valence
labels sums the probabilities of each valence's categories.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import numpy as np
import structlog

from bot.classify.features import FeatureSpec, Sparse, Vocabulary, dense_features
from bot.classify.head import Head, base_logp, softmax, valence_offset
from bot.config import Category

log = structlog.get_logger(__name__)

#: L2 of a sentence-embedding block (``emb:*``), apart from the sparse features' ``l2``. Kobs-dev, 3x5-fold CV, earlier
#: (pooled) design:
#: MiniLM concatenated at the common l2 (1e-3) 57.1% / 0.551, at 1e-2 58.6%, 0.1 62.3%, 1.0 64.6% / 0.617 against
#: 64.8% / 0.615 without embeddings: strong shrinkage makes the block harmless, never helpful (see the README).
EMB_BLOCK_L2 = 1.0



def lbfgs(fun: Any, x0: np.ndarray, max_iter: int = 300, memory: int = 10, tol: float = 1e-5) -> np.ndarray:
    """Minimise a smooth convex ``fun(x) -> (value, gradient)`` by L-BFGS with Armijo backtracking."""
    x = x0.copy()
    f, g = fun(x)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for _ in range(max_iter):
        if np.linalg.norm(g, ord=np.inf) < tol:
            break
        q = g.copy()
        alphas: list[float] = []
        for s, y in zip(reversed(s_hist), reversed(y_hist), strict=True):
            a = float(s @ q) / float(y @ s)
            alphas.append(a)
            q -= a * y
        if s_hist:
            q *= float(s_hist[-1] @ y_hist[-1]) / float(y_hist[-1] @ y_hist[-1])
        for (s, y), a in zip(zip(s_hist, y_hist, strict=True), reversed(alphas), strict=True):
            b = float(y @ q) / float(y @ s)
            q += (a - b) * s
        d = -q
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            s_hist.clear()
            y_hist.clear()
            d = -g
            slope = float(g @ d)
        step = 1.0 if s_hist else 1.0 / max(1.0, float(np.linalg.norm(g)))
        for _ls in range(40):
            x_new = x + step * d
            f_new, g_new = fun(x_new)
            if f_new <= f + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            break
        s_vec, y_vec = x_new - x, g_new - g
        if float(s_vec @ y_vec) > 1e-10:
            s_hist.append(s_vec)
            y_hist.append(y_vec)
            if len(s_hist) > memory:
                s_hist.pop(0)
                y_hist.pop(0)
        converged = abs(f - f_new) <= 1e-9 * max(1.0, abs(f))
        x, f, g = x_new, f_new, g_new
        if converged:
            break
    return x


def allowed_mask(labels: Sequence[str], categories: Sequence[Category]) -> np.ndarray:
    """(n, k) bool: which categories each label allows. Unknown labels raise ValueError naming them."""
    names = [c.name for c in categories]
    valence = {"positive": 1, "neutral": 0, "negative": -1}
    mask = np.zeros((len(labels), len(names)), dtype=bool)
    bad: set[str] = set()
    for i, raw in enumerate(labels):
        label = raw.strip().lower()
        if label in names:
            mask[i, names.index(label)] = True
        elif label in valence:
            mask[i] = [c.valence == valence[label] for c in categories]
            if not mask[i].any():
                bad.add(raw)
        else:
            bad.add(raw)
    if bad:
        raise ValueError(f"unknown labels {sorted(bad)}: use one of {names} or positive/neutral/negative")
    return mask


def label_memory(texts: Sequence[str], mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(texts, allowed masks, counts) of the distinct (text, label) pairs, for :attr:`Head.memory_texts`."""
    counts: dict[tuple[str, bytes], int] = {}
    rows: dict[tuple[str, bytes], np.ndarray] = {}
    for text, row in zip(texts, mask, strict=True):
        key = (text, row.tobytes())
        counts[key] = counts.get(key, 0) + 1
        rows.setdefault(key, row)
    keys = list(counts)
    return (
        np.array([t for t, _ in keys], dtype=str),
        np.array([rows[key] for key in keys], dtype=bool).reshape(len(keys), mask.shape[1]),
        np.array([float(counts[key]) for key in keys]),
    )


def _fit(
    sparse: Sparse, dense: np.ndarray, mask: np.ndarray, weight: np.ndarray, l2: float, max_iter: int,
    offset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Partial-label multinomial logistic regression: minimise ``-sum w_i log sum_{c allowed} p_ic + l2/2 |W|^2``."""
    k = mask.shape[1]
    v, d = sparse.n_cols, dense.shape[1]
    weight = weight / weight.sum()

    def unpack(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return x[: v * k].reshape(v, k), x[v * k : v * k + d * k].reshape(d, k), x[v * k + d * k :]

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        ws, wd, b = unpack(x)
        z = sparse.matmul(ws) + dense @ wd + b
        p = softmax(z if offset is None else z + offset)
        inside = np.where(mask, p, 0.0)
        mass = np.maximum(inside.sum(axis=1), 1e-300)
        q = inside / mass[:, None]
        loss = float(-(weight * np.log(mass)).sum()) + 0.5 * l2 * float((ws * ws).sum() + (wd * wd).sum())
        gz = weight[:, None] * (p - q)
        grad = np.concatenate(
            [(sparse.rmatmul(gz) + l2 * ws).ravel(), (dense.T @ gz + l2 * wd).ravel(), gz.sum(axis=0)]
        )
        return loss, grad

    ws, wd, b = unpack(lbfgs(fun, np.zeros(v * k + d * k + k), max_iter=max_iter))
    return ws.copy(), wd.copy(), b.copy()


def _block_slice(spec: FeatureSpec, categories: Sequence[Category], name: str) -> slice:
    """The columns of dense block ``name`` in :func:`dense_features`' output."""
    start = (len(categories) + 1 if spec.glossary else 0) + (11 if spec.surface else 0) + (4 if spec.lexicon else 0)
    for key, width in spec.extras.items():
        if key == name:
            return slice(start, start + width)
        start += width
    raise ValueError(f"no dense block {name!r} in the feature spec")


def _balance(mask: np.ndarray) -> np.ndarray:
    keys = [row.tobytes() for row in mask]
    freq: dict[bytes, int] = {}
    for key in keys:
        freq[key] = freq.get(key, 0) + 1
    return np.array([len(keys) / (len(freq) * freq[key]) for key in keys])


def train_head(
    texts: Sequence[str],
    labels: Sequence[str],
    categories: Sequence[Category],
    spec: FeatureSpec | None = None,
    *,
    extras: dict[str, np.ndarray] | None = None,
    sample_weight: np.ndarray | None = None,
    l2: float = 1e-3,
    block_l2: dict[str, float] | None = None,
    balanced: bool = False,
    two_level: bool = True,
    max_iter: int = 300,
    base: Head | None = None,
) -> Head:
    """Fit a head on labelled texts (category names or valences).

    Two-level (the default, chosen by measurement): a valence head learns from every example (a category label
    counts as its valence), and the category head learns the split inside each valence from the category-labelled
    examples only. Single-level: one partial-label head over the categories from everything.

    ``block_l2`` gives named dense blocks their own L2 (sentence embeddings get :data:`EMB_BLOCK_L2` unless told
    otherwise); it is applied by scaling the block's standardised columns, so the saved head needs nothing new.

    With a ``base`` head this is an *adapter* (how labels teach chatmood, chosen by measurement, see the README):
    both heads learn corrections on top of the base (its log-probabilities are their offset, and a dense block they
    may rescale), so a few labels nudge the base instead of replacing it, and a category no label names keeps the
    base's share of its valence.
    Only labels that split a valence (a category sharing its valence with another) train the category head."""
    spec = spec or FeatureSpec()
    if not texts:
        raise ValueError("no labelled examples to train on")
    mask = allowed_mask(labels, categories)
    vocab = Vocabulary.fit(texts, spec)
    sparse = vocab.transform(texts, spec)
    dense = dense_features(texts, spec, categories, extras or {})
    offset = None
    if base is not None:
        if base.categories != tuple(c.name for c in categories):
            raise ValueError(f"base head is for {list(base.categories)}, not {[c.name for c in categories]}")
        offset = base_logp(base, texts, categories, extras)
        dense = np.concatenate([dense, offset], axis=1)
    k_base = len(categories)
    mean = dense.mean(axis=0)
    scale = dense.std(axis=0)
    scale = np.where(scale < 1e-6, 1.0, scale)
    blocks = {**{k: EMB_BLOCK_L2 for k in spec.extras if k.startswith("emb:")}, **(block_l2 or {})}
    for name, block in blocks.items():
        # a block's own L2: a column scaled by s sees the penalty l2 / s**2 on its original-scale weight
        sl = _block_slice(spec, categories, name)
        scale[sl] = scale[sl] * math.sqrt(block / l2)
    if offset is not None:  # log-probabilities keep their own scale: a few labels must not blow them up
        mean[-k_base:], scale[-k_base:] = 0.0, 1.0
    dense_n = (dense - mean) / scale
    weight = np.ones(len(texts)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    cat_valence = np.array([c.valence for c in categories], dtype=np.int64)
    valences = np.unique(cat_valence)
    single = mask.sum(axis=1) == 1
    names = {c.name for c in categories}
    shared = np.array([int((cat_valence == v).sum()) > 1 for v in cat_valence])  # categories that split a valence
    by_category = single & np.array([lab.strip().lower() in names for lab in labels]) & (mask & shared).any(axis=1)
    head = Head(
        categories=tuple(c.name for c in categories), spec=spec, vocab=vocab, dense_mean=mean, dense_scale=scale,
        w_sparse=np.zeros((0, 0)), w_dense=np.zeros((0, 0)), bias=np.zeros(0), base=base,
    )
    k = len(categories)
    if two_level and (by_category.any() or base is not None) and len(valences) < len(categories):
        rows = np.flatnonzero(by_category)
        if len(rows):
            w = weight[rows] * (_balance(mask[rows]) if balanced else 1.0)
            off = None if offset is None else offset[rows]
            head.w_sparse, head.w_dense, head.bias = _fit(
                sparse.take(rows), dense_n[rows], mask[rows], w, l2, max_iter, off
            )
        else:  # no label splits a valence: the base's split stands
            head.w_sparse, head.w_dense = np.zeros((sparse.n_cols, k)), np.zeros((dense.shape[1], k))
            head.bias = np.zeros(k)
        vmask = np.stack([[bool((row & (cat_valence == v)).any()) for v in valences] for row in mask])
        w = weight * (_balance(vmask) if balanced else 1.0)
        v_off = None if offset is None else valence_offset(offset, cat_valence, valences)
        head.v_sparse, head.v_dense, head.v_bias = _fit(sparse, dense_n, vmask, w, l2, max_iter, v_off)
        head.cat_valence, head.valences = cat_valence, valences
    else:
        w = weight * (_balance(mask) if balanced else 1.0)
        head.w_sparse, head.w_dense, head.bias = _fit(sparse, dense_n, mask, w, l2, max_iter, offset)
    digest = hashlib.blake2b(digest_size=5)
    for arr in (vocab.buckets, head.w_sparse, head.w_dense, head.bias, head.v_sparse, head.v_dense, head.v_bias):
        digest.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
    digest.update(json.dumps(asdict(spec), sort_keys=True).encode())
    if base is not None:
        digest.update(base.version.encode())
    counts: dict[str, int] = {}
    for label in labels:
        counts[label.strip().lower()] = counts.get(label.strip().lower(), 0) + 1
    head.meta = {
        "version": "head-" + digest.hexdigest(),
        "n_examples": len(texts),
        "label_counts": counts,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "l2": l2,
        "block_l2": blocks,
        "two_level": head.two_level,
        "base_version": base.version if base is not None else None,
    }
    log.info("head_trained", version=head.meta["version"], examples=len(texts), vocab=sparse.n_cols,
             dense=dense.shape[1], two_level=head.two_level)
    return head
