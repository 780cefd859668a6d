"""What a query asks of a chat's mood: signed weights over the configured categories, and how clearly it asks.

Two readings of the query are combined:

- **words**: a query word that names a category or a word of its description (``laughing`` ~ ``laughter``,
  ``memes``, ``supportive`` ~ ``support``: equal, or sharing their first five letters) or a glossary token
  (``KEKW``, ``pog``) points at that category; within two words after ``no``, ``not``, ``without``, ``less``
  ... it points away from it (``no toxicity``);
- **meaning**: the cosine between the query's sentence embedding and each category's ``"name: description"``
  embedding, as a softmax (temperature :data:`TEMPERATURE`), for queries that use none of those words
  (``a calm and cozy community``).

With words found, the weights are ``0.7 * words + 0.3 * meaning`` and the query asks clearly (strength 1);
otherwise they are the meaning alone, and the strength grows from 0 to 1 as the best category cosine goes from
:data:`SURE_LOW` to :data:`SURE_HIGH` (a pure topic query, ``speedrunning mario 64``, asks nothing of the mood).
Weights are scaled so their absolute values sum to 1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.classify.glossary import GLOSSARY
from bot.config import Category
from bot.vibes.profile import STOP_WORDS

TEMPERATURE = 0.04
SURE_LOW = 0.25  # best category cosine at which a query starts to ask for a mood
SURE_HIGH = 0.45  # ... and at which it asks as clearly as a query that names one
WORDS_SHARE = 0.7
PREFIX = 5
NEGATORS = frozenset({"no", "not", "without", "less", "never", "zero", "non", "nothing", "isnt", "arent",
                      "dont", "avoid", "free"})
# Description words too vague to name a mood on their own ("things that are funny", "no clear feeling").
VAGUE = frozenset({"thing", "things", "feel", "feeling", "feelings", "clear", "plain", "big", "stuff", "chat"})
_WORD = re.compile(r"[a-z0-9<]+[a-z0-9']*|<3")


def category_text(c: Category) -> str:
    """What a category's meaning is embedded from."""
    return f"{c.name}: {c.description}"


def query_words(text: str) -> list[str]:
    return [w.replace("'", "") for w in _WORD.findall(text.lower())]


def _alike(a: str, b: str) -> bool:
    if a == b:
        return True
    return len(a) >= PREFIX and len(b) >= PREFIX and a[:PREFIX] == b[:PREFIX]


@dataclass(frozen=True, slots=True)
class MoodAsk:
    weights: dict[str, float]  # category -> signed weight; absolute values sum to 1 (or all 0)
    strength: float  # 0..1, how clearly the query asks for moods at all
    named: tuple[str, ...]  # the query words that named a category, for explanations

    def asked(self) -> list[str]:
        """The categories asked for, strongest first."""
        return [c for c, w in sorted(self.weights.items(), key=lambda kv: -kv[1]) if w > 0.15]


class MoodReader:
    """Reads a :class:`MoodAsk` from a query; ``category_vecs`` are the embeddings of :func:`category_text`."""

    def __init__(self, categories: Sequence[Category], category_vecs: np.ndarray) -> None:
        self.categories = tuple(categories)
        self.names = tuple(c.name for c in categories)
        self._vecs = np.asarray(category_vecs, dtype=np.float32)
        self._vocab: list[set[str]] = []
        for c in self.categories:
            words = {w for w in query_words(c.description) if len(w) >= 3 and w not in STOP_WORDS | VAGUE}
            self._vocab.append(words | {c.name})

    def _words(self, words: list[str]) -> tuple[np.ndarray, list[str], set[int]]:
        hits = np.zeros(len(self.names))
        named: list[str] = []
        negated: set[int] = set()
        for i, w in enumerate(words):
            sign = -1.0 if any(x in NEGATORS for x in words[max(0, i - 2):i]) else 1.0
            found = False
            for k, vocab in enumerate(self._vocab):
                if any(_alike(w, v) for v in vocab):
                    hits[k] += sign
                    found = True
                    if sign < 0:
                        negated.add(k)
            plain = w in STOP_WORDS or w in NEGATORS or len(w) < 2
            gloss = GLOSSARY.get(w) if not found and not plain else None
            if gloss:
                for name, weight in gloss.items():
                    if name in self.names and name != "neutral":
                        k = self.names.index(name)
                        hits[k] += sign * weight
                        found = True
                        if sign < 0:
                            negated.add(k)
            if found:
                named.append(w)
        return hits, named, negated

    def read(self, query: str, query_vec: np.ndarray) -> MoodAsk:
        sims = self._vecs @ np.asarray(query_vec, dtype=np.float32)
        meaning = np.exp((sims - sims.max()) / TEMPERATURE)
        hits, named, negated = self._words(query_words(query))
        for k in negated:
            meaning[k] = 0.0  # "no toxicity" is close to angry in meaning; the words say otherwise
        if meaning.sum() > 0:
            meaning = meaning / meaning.sum()
        if np.abs(hits).sum() > 0:
            weights = WORDS_SHARE * hits / np.abs(hits).sum() + (1 - WORDS_SHARE) * meaning
            strength = 1.0
        else:
            weights = meaning
            strength = float(np.clip((sims.max() - SURE_LOW) / (SURE_HIGH - SURE_LOW), 0.0, 1.0))
        total = float(np.abs(weights).sum())
        if total > 0:
            weights = weights / total
        return MoodAsk({n: float(w) for n, w in zip(self.names, weights, strict=True)}, strength, tuple(named))
