"""Ranking channels for a query: what their chat says, and how it feels.

For a query ``q`` and a channel ``c``::

    text_score(q, c) = cos(embed(q), chat_embedding(c))             what the chat talks about (-1..1)
    mood_score(q, c) = sum over categories k of ask_k(q) * share_k(c)  how the chat feels (-1..1)
    m                = mood_weight * strength(q)                     how much the query asks about mood
    score            = (1 - m) * text_score + m * mood_score

``chat_embedding`` is the mean direction of the MiniLM embeddings of a sample of the channel's distinct messages
(:mod:`bot.vibes.profile`); ``share_k`` is the share of its classified messages in category ``k``; ``ask`` and
``strength`` come from :mod:`bot.vibes.query` (``ask`` is signed: "no toxicity" counts angry chat against a
channel). A query that asks nothing of the mood (``strength`` 0) ranks by text alone; one that names a mood
(strength 1) gives the mood ``mood_weight`` of the score (``vibes.mood_weight``, default 0.6). A channel without
an embedding scores 0 on text, one without verdicts 0 on mood. Ties go to the channel name, so a fixed store
always ranks the same way.

:class:`Catalogue` stacks the profiles into matrices once; ranking is then two matrix-vector products.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bot.config import Category
from bot.vibes.embedder import ChatEmbedder
from bot.vibes.profile import Profile, text_key
from bot.vibes.query import PREFIX, MoodAsk, MoodReader, category_text, query_words

SAMPLE_LINES = 2


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    vec: np.ndarray
    mood: MoodAsk


@dataclass(frozen=True, slots=True)
class Ranked:
    """One channel's place in a ranking, with what explains it."""

    channel: str
    score: float
    text_score: float
    mood_score: float
    moods: tuple[tuple[str, float], ...]  # the dominant mood shares, largest first
    samples: tuple[str, ...]  # a few lines of its chat that fit the query
    messages: int
    rate_per_min: float
    valence: float
    words: tuple[str, ...]
    emotes: tuple[str, ...]
    shares: tuple[tuple[str, float], ...]  # every category's share, in category order

    def as_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "score": round(self.score, 4),
            "text_score": round(self.text_score, 4),
            "mood_score": round(self.mood_score, 4),
            "moods": [{"name": n, "share": round(s, 4)} for n, s in self.moods],
            "shares": {n: round(s, 4) for n, s in self.shares},
            "samples": list(self.samples),
            "messages": self.messages,
            "rate_per_min": round(self.rate_per_min, 2),
            "valence": round(self.valence, 4),
            "top_words": list(self.words),
            "top_emotes": list(self.emotes),
        }


class Catalogue:
    """Profiles stacked for ranking: unit chat embeddings (zero rows where none) and mood shares."""

    def __init__(self, profiles: Sequence[Profile], categories: Sequence[str], dim: int) -> None:
        self.profiles = sorted(profiles, key=lambda p: p.channel)
        self.categories = tuple(categories)
        self.embeddings = np.zeros((len(self.profiles), dim), dtype=np.float32)
        self.shares = np.zeros((len(self.profiles), len(self.categories)), dtype=np.float32)
        for i, p in enumerate(self.profiles):
            e = p.embedding
            if e is not None and e.shape == (dim,):
                self.embeddings[i] = e
            shares = p.shares
            self.shares[i] = [shares.get(c, 0.0) for c in self.categories]

    def __len__(self) -> int:
        return len(self.profiles)


def _fits(line: str, words: set[str]) -> int:
    """How many of the query's words a line uses (equal, or the same first five letters)."""
    got = 0
    for w in set(query_words(line)):
        if any(w == q or (len(w) >= PREFIX and len(q) >= PREFIX and w[:PREFIX] == q[:PREFIX]) for q in words):
            got += 1
    return got


def sample_lines(p: Profile, q: Query, n: int = SAMPLE_LINES) -> tuple[str, ...]:
    """Lines of the channel's sample that fit the query: its words first, then the moods it asks for."""
    words = {w for w in query_words(q.text) if len(w) >= 3}
    asked = q.mood.asked()
    scored = []
    for i, line in enumerate(p.sample_lines()):
        if len(text_key(line.text)) < 3:
            continue
        mood = (len(asked) - asked.index(line.label)) if line.label in asked else 0
        scored.append((-_fits(line.text, words), -mood, i, line.text))
    return tuple(t for *_, t in sorted(scored)[:n])


def rank(q: Query, cat: Catalogue, *, mood_weight: float, top: int | None = None) -> list[Ranked]:
    """The catalogue's channels for ``q``, best first (see the module docstring for the blend)."""
    if not len(cat):
        return []
    text = cat.embeddings @ q.vec.astype(np.float32)
    ask = np.array([q.mood.weights.get(c, 0.0) for c in cat.categories], dtype=np.float32)
    mood = cat.shares @ ask
    m = mood_weight * q.mood.strength
    score = (1.0 - m) * text + m * mood
    names = [p.channel for p in cat.profiles]
    order = sorted(range(len(cat)), key=lambda i: (-round(float(score[i]), 9), names[i]))
    if top is not None:
        order = order[:top]
    out = []
    for i in order:
        p = cat.profiles[i]
        shares = p.shares
        out.append(Ranked(
            channel=p.channel,
            score=float(score[i]),
            text_score=float(text[i]),
            mood_score=float(mood[i]),
            moods=tuple(p.dominant(2)),
            samples=sample_lines(p, q),
            messages=p.messages,
            rate_per_min=p.rate_per_min,
            valence=p.mean_valence,
            words=tuple(w for w, _ in p.top_words(5)),
            emotes=tuple(e for e, _ in p.top_emotes(5)),
            shares=tuple((c, shares[c]) for c in p.categories),
        ))
    return out


class Ranker:
    """Turns query text into a :class:`Query` (the category embeddings are made once); :func:`rank` ranks."""

    def __init__(self, categories: Sequence[Category], embedder: ChatEmbedder, mood_weight: float) -> None:
        self.categories = tuple(categories)
        self.embedder = embedder
        self.mood_weight = mood_weight
        self._reader: MoodReader | None = None

    async def query(self, text: str) -> Query:
        if self._reader is None:
            vecs = await self.embedder.embed([category_text(c) for c in self.categories])
            self._reader = MoodReader(self.categories, vecs)
        vec = (await self.embedder.embed([text]))[0]
        return Query(text, vec, self._reader.read(text, vec))
