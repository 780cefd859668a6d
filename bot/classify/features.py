"""Text features for the head, computed with numpy only:

* character n-grams (1-5, inside word boundaries, lower case), hashed to 2**18 buckets with a vectorised numpy
  polynomial hash, sublinear tf, idf from the training texts, L2-normalised rows. Buckets never seen in training
  are dropped (they would carry no weight anyway), so the head stores only the buckets it knows;
* the glossary's category weights (bot/classify/glossary.py), projected onto the configured categories;
* surface features: capitals, length, ``!``/``?``, repeated letters, commands, mentions, links, emoji;
* VADER's lexicon scores (negative, neutral, positive, compound; ``vaderSentiment``, MIT), when ``spec.lexicon``;
* optional dense blocks from local models (sentence embeddings, LLM label log-probs), standardised.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from bot.classify import glossary
from bot.config import Category

log = structlog.get_logger(__name__)

_SEP = 1  # code point that separates padded words; n-grams across it are dropped
_MULT = np.uint64(0x100000001B3)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_URL = re.compile(r"https?://|www\.")
_RUN3 = re.compile(r"(.)\1{2,}")


@dataclass(frozen=True)
class FeatureSpec:
    """Which features a head uses; saved with it so a loaded head computes the same ones."""

    ngram_min: int = 1
    ngram_max: int = 5
    hash_bits: int = 18
    glossary: bool = True
    surface: bool = True
    words: bool = False  # also hash whole words, case kept (emotes are case-sensitive)
    lexicon: bool = False  # VADER's four scores as a dense block
    min_df: int = 1  # buckets seen in fewer training texts are dropped (smaller heads, same accuracy)
    # Dense blocks computed by local models: name -> width (e.g. {"emb:minilm": 384}).
    extras: dict[str, int] = field(default_factory=dict)


@dataclass
class Sparse:
    """Rows in CSR form: row i owns ``indices/data[indptr[i]:indptr[i+1]]``."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    n_cols: int
    _by_col: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def take(self, rows: np.ndarray) -> Sparse:
        """The given rows, in order."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        idx = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends, strict=True)] or [np.zeros(0, int)])
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(ends - starts, out=indptr[1:])
        return Sparse(indptr=indptr, indices=self.indices[idx], data=self.data[idx], n_cols=self.n_cols)

    def row_ids(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_rows), np.diff(self.indptr))

    def matmul(self, w: np.ndarray) -> np.ndarray:
        """self @ w for a dense (n_cols, k) matrix."""
        return _segment_sum(self.data[:, None] * w[self.indices], self.indptr, w.shape[1])

    def rmatmul(self, g: np.ndarray) -> np.ndarray:
        """self.T @ g for a dense (n_rows, k) matrix (the column order is computed once and kept)."""
        if self._by_col is None:
            order = np.argsort(self.indices, kind="stable")
            colptr = np.zeros(self.n_cols + 1, dtype=np.int64)
            np.cumsum(np.bincount(self.indices, minlength=self.n_cols), out=colptr[1:])
            self._by_col = (order, self.row_ids()[order], colptr)
        order, rows, colptr = self._by_col
        return _segment_sum(self.data[order, None] * g[rows], colptr, g.shape[1])


def _segment_sum(values: np.ndarray, ptr: np.ndarray, k: int) -> np.ndarray:
    """Row sums of ``values`` (nnz, k) over the segments ``ptr[i]:ptr[i+1]``; empty segments give zeros."""
    out = np.zeros((len(ptr) - 1, k), dtype=np.float64)
    nonempty = np.flatnonzero(np.diff(ptr) > 0)
    if len(nonempty):
        out[nonempty] = np.add.reduceat(values, ptr[nonempty], axis=0)
    return out


def hashed_ngrams(texts: Sequence[str], spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """(doc ids, bucket ids) of every char n-gram occurrence, vectorised over the whole batch."""
    parts: list[str] = []
    lengths: list[int] = []
    for text in texts:
        padded = "".join(f" {w} \x01" for w in text.lower().split()) or " \x01"
        parts.append(padded)
        lengths.append(len(padded))
    joined = "\x01".join(parts)
    # surrogatepass: a lone surrogate (text that never went through ChatLine: training files, the CLI) is a
    # code point like any other here; it must not fail the whole batch.
    cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    doc = np.repeat(np.arange(len(texts)), [n + 1 for n in lengths])[: len(cps)]
    n_total = len(cps)
    valid = cps != _SEP
    h = np.zeros(n_total, dtype=np.uint64)
    docs: list[np.ndarray] = []
    buckets: list[np.ndarray] = []
    mask_bits = np.uint64((1 << spec.hash_bits) - 1)
    for n in range(1, spec.ngram_max + 1):
        span = n_total - n + 1
        if span <= 0:
            break
        h = h[:span] * _MULT + cps[n - 1 : n - 1 + span]
        valid = valid[:span] & (cps[n - 1 : n - 1 + span] != _SEP)
        if n < spec.ngram_min:
            continue
        mixed = (h + np.uint64(n)) * _MIX
        mixed ^= mixed >> np.uint64(29)
        idx = np.flatnonzero(valid)
        docs.append(doc[idx])
        buckets.append((mixed[idx] >> np.uint64(17)) & mask_bits)
    if spec.words:
        wd: list[int] = []
        wb: list[int] = []
        for i, text in enumerate(texts):
            for word in text.split():
                wd.append(i)
                wb.append(zlib.crc32(word.encode("utf-8", "replace")) & int(mask_bits))
        docs.append(np.array(wd, dtype=np.int64))
        buckets.append(np.array(wb, dtype=np.uint64))
    if not docs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(docs).astype(np.int64), np.concatenate(buckets).astype(np.int64)


@dataclass
class Vocabulary:
    """The hashed buckets seen in training (sorted) and their idf."""

    buckets: np.ndarray
    idf: np.ndarray

    @classmethod
    def fit(cls, texts: Sequence[str], spec: FeatureSpec) -> Vocabulary:
        docs, buckets = hashed_ngrams(texts, spec)
        pairs = np.unique(docs * (1 << spec.hash_bits) + buckets)
        vocab, df = np.unique(pairs % (1 << spec.hash_bits), return_counts=True)
        keep = df >= spec.min_df
        vocab, df = vocab[keep], df[keep]
        n = len(texts)
        idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
        return cls(buckets=vocab.astype(np.int64), idf=idf.astype(np.float64))

    def transform(self, texts: Sequence[str], spec: FeatureSpec) -> Sparse:
        docs, buckets = hashed_ngrams(texts, spec)
        pos = np.searchsorted(self.buckets, buckets)
        pos = np.minimum(pos, max(len(self.buckets) - 1, 0))
        known = (self.buckets[pos] == buckets) if len(self.buckets) else np.zeros(len(buckets), dtype=bool)
        key = docs[known] * (len(self.buckets) + 1) + pos[known]
        uniq, counts = np.unique(key, return_counts=True)
        rows = uniq // (len(self.buckets) + 1)
        cols = uniq % (len(self.buckets) + 1)
        data = (1.0 + np.log(counts)) * self.idf[cols]
        norms = np.sqrt(np.bincount(rows, weights=data * data, minlength=len(texts)))
        data = data / np.maximum(norms[rows], 1e-12)
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(texts)), out=indptr[1:])
        return Sparse(indptr=indptr, indices=cols.astype(np.int64), data=data, n_cols=len(self.buckets))


def surface_features(texts: Sequence[str]) -> np.ndarray:
    """Shape-of-the-message features (n, 11)."""
    out = np.zeros((len(texts), 11), dtype=np.float64)
    for i, text in enumerate(texts):
        letters = [c for c in text if c.isalpha()]
        upper = sum(1 for c in letters if c.isupper())
        words = text.split()
        caps_words = sum(1 for w in words if len(w) > 1 and w.isupper())
        emoji = sum(1 for c in text if ord(c) >= 0x2100)
        out[i] = (
            upper / len(letters) if letters else 0.0,
            math.log1p(len(text)),
            math.log1p(len(words)),
            math.log1p(text.count("!")),
            math.log1p(text.count("?")),
            1.0 if _RUN3.search(text) else 0.0,
            1.0 if text.lstrip().startswith("!") else 0.0,
            1.0 if "@" in text else 0.0,
            1.0 if _URL.search(text) else 0.0,
            math.log1p(emoji),
            caps_words / len(words) if words else 0.0,
        )
    return out


def glossary_features(texts: Sequence[str], categories: Sequence[Category]) -> np.ndarray:
    """Glossary weights on the configured categories, log-scaled, plus the number of hits (n, k + 1)."""
    counts = glossary.glossary_counts(texts) @ glossary.GlossaryProjector(tuple(categories)).matrix()
    hits = counts.sum(axis=1, keepdims=True)
    return np.concatenate([np.log1p(counts), np.log1p(hits)], axis=1)


_VADER: Any = None


def lexicon_features(texts: Sequence[str]) -> np.ndarray:
    """VADER's (negative, neutral, positive, compound) scores of each text (n, 4)."""
    global _VADER  # one read-only analyser per process: it only holds the lexicon it loaded
    if _VADER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        _VADER = SentimentIntensityAnalyzer()
    out = np.zeros((len(texts), 4), dtype=np.float64)
    for i, text in enumerate(texts):
        s = _VADER.polarity_scores(text)
        out[i] = (s["neg"], s["neu"], s["pos"], s["compound"])
    return out


def dense_features(
    texts: Sequence[str], spec: FeatureSpec, categories: Sequence[Category], extras: dict[str, np.ndarray]
) -> np.ndarray:
    blocks: list[np.ndarray] = []
    if spec.glossary:
        blocks.append(glossary_features(texts, categories))
    if spec.surface:
        blocks.append(surface_features(texts))
    if spec.lexicon:
        blocks.append(lexicon_features(texts))
    for name, width in spec.extras.items():
        block = extras.get(name)
        if block is None or block.shape != (len(texts), width):
            raise ValueError(f"feature block {name!r} must have shape ({len(texts)}, {width})")
        blocks.append(np.asarray(block, dtype=np.float64))
    if not blocks:
        return np.zeros((len(texts), 0), dtype=np.float64)
    return np.concatenate(blocks, axis=1)
