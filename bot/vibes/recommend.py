"""``chatmood vibes "QUERY"``: the stored channels ranked by how well their chat fits the query.

Refreshes the stored profiles first (incrementally; ``--rebuild`` from scratch; ``--since`` profiles only the
recent window and stores nothing), ranks them (:mod:`bot.vibes.rank`) and prints a table, one JSON array
(``--json``) and/or a bar chart (``--plot FILE.png``, needs the ``plot`` extra: matplotlib).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import unicodedata
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import structlog

from bot.config import Category, Config
from bot.errors import ChatmoodError
from bot.storage.store import Storage, open_storage
from bot.vibes.embedder import ChatEmbedder
from bot.vibes.profile import Profile
from bot.vibes.rank import Catalogue, Query, Ranked, Ranker, rank
from bot.vibes.store import ProfileStore

log = structlog.get_logger(__name__)

TEMPLATES = ("a calm and cozy community", "chaotic and spammy but hilarious", "hype esports energy")
EMPTY_HINT = ("no channel profiles yet: fill the store with `chatmood replay FILE --channel NAME` "
              "or `chatmood collect --top N --minutes M`")


@dataclass
class Vibes:
    """What the CLI, the web page and the app share: the profile store and the ranker over one embedder.

    Ranking keeps the loaded profiles until this process's store writes new ones (a refresh), so a running
    program reads them from the database once per refresh, not once per query; what another process writes is
    seen after this one's next refresh."""

    store: ProfileStore
    ranker: Ranker
    _cached: tuple[int, list[Profile]] | None = None

    async def refresh_every(self, interval_s: float) -> None:
        """A service: bring the stored profiles up to date now and every ``interval_s``. A refresh that fails
        (the database is down, the model is missing) is logged and tried again next time."""
        while True:
            try:
                await self.store.refresh()
            except ChatmoodError as e:
                log.warning("vibes_refresh_failed", error=str(e)[:300], retry_in_s=interval_s)
            await asyncio.sleep(interval_s)

    async def answer(self, query: str, top: int) -> dict[str, Any]:
        """The JSON answer of ``/api/vibes`` (and what the ``/vibes`` page shows): how the query was read, the
        blend, and the ranked channels as ``chatmood vibes --json`` writes them."""
        q, ranked = await self.rank(query, top=top)
        m = self.ranker.mood_weight * q.mood.strength
        return {
            "query": q.text,
            "moods_asked": {c: round(q.mood.weights[c], 4) for c in q.mood.asked()},
            "mood_strength": round(q.mood.strength, 4),
            "weights": {"text": round(1 - m, 4), "mood": round(m, 4)},
            "channels": [r.as_json() for r in ranked],
        }

    async def rank(self, query: str, *, top: int | None = None, since: datetime | None = None,
                   ) -> tuple[Query, list[Ranked]]:
        if since is not None:
            profiles = await self.store.window(since)
        elif self._cached is not None and self._cached[0] == self.store.version:
            profiles = self._cached[1]
        else:
            version = self.store.version
            profiles = await self.store.load(for_ranking=True)
            self._cached = (version, profiles)
        q = await self.ranker.query(query)
        cat = Catalogue(profiles, [c.name for c in self.ranker.categories], q.vec.shape[0])
        return q, rank(q, cat, mood_weight=self.ranker.mood_weight, top=top)


@contextlib.asynccontextmanager
async def open_vibes(cfg: Config, storage: Storage) -> AsyncIterator[Vibes]:
    """Vibes over an open :class:`~bot.storage.store.Storage`; the embedding model is freed on exit."""
    embedder = ChatEmbedder.from_config(cfg)
    try:
        yield Vibes(ProfileStore(storage, cfg, embedder), Ranker(cfg.categories, embedder, cfg.vibes.mood_weight))
    finally:
        await asyncio.to_thread(embedder.close)


def _clean(text: str, limit: int = 90) -> str:
    """Chat text for a terminal: control characters (escape sequences) shown as U+FFFD, long lines cut."""
    text = "".join("\ufffd" if unicodedata.category(ch) == "Cc" else ch for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _moods(r: Ranked) -> str:
    return ", ".join(f"{n} {s:.0%}" for n, s in r.moods) or "-"


def describe_query(q: Query, mood_weight: float) -> str:
    m = mood_weight * q.mood.strength
    asked = ", ".join(f"{c} {q.mood.weights[c]:.0%}" for c in q.mood.asked()) or "none in particular"
    if q.mood.strength == 0:
        closest = q.mood.asked()[:1]
        asked = "none clearly" + (f" (closest: {closest[0]})" if closest else "")
    return f"query: {q.text!r}  moods asked: {asked} (strength {q.mood.strength:.2f}); " \
           f"score = {1 - m:.2f} * text + {m:.2f} * mood"


def format_table(q: Query, ranked: Sequence[Ranked], mood_weight: float) -> str:
    lines = [describe_query(q, mood_weight), ""]
    width = max([len("channel"), *(len(r.channel) for r in ranked)])
    lines.append(f"{'#':>2}  {'channel':<{width}}  {'score':>6}  {'text':>6}  {'mood':>6}  "
                 f"{'msgs':>6}  {'msg/min':>7}  dominant moods")
    for i, r in enumerate(ranked, 1):
        lines.append(f"{i:>2}  {r.channel:<{width}}  {r.score:6.3f}  {r.text_score:6.3f}  {r.mood_score:6.3f}  "
                     f"{r.messages:>6}  {r.rate_per_min:7.1f}  {_moods(r)}")
        for s in r.samples:
            lines.append(f"{'':>4}  “{_clean(s)}”")
    return "\n".join(lines)


def plot_ranking(q: Query, ranked: Sequence[Ranked], categories: Sequence[Category], path: Path,
                 mood_weight: float) -> Path:
    """A PNG: each channel's score split into its text and mood parts, and its mood shares."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ChatmoodError("--plot needs matplotlib: pip install 'chatmood[plot]'") from None
    m = mood_weight * q.mood.strength
    names = [r.channel for r in ranked][::-1]
    rows = list(ranked)[::-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.6 * len(rows) + 1.9), sharey=True,
                                      gridspec_kw={"width_ratios": [3, 2]})
    try:
        text_part = [(1 - m) * r.text_score for r in rows]
        mood_part = [m * r.mood_score for r in rows]
        left.barh(names, text_part, color="#5b8def", label=f"text ({1 - m:.2f} × cosine)")
        left.barh(names, mood_part, left=[max(0.0, t) for t in text_part], color="#f2a541",
                  label=f"mood ({m:.2f} × agreement)")
        for y, r in enumerate(rows):
            left.text(max(0.0, r.score) + 0.01, y, f"{r.score:.3f}", va="center", fontsize=9)
        left.set_xlabel("score")
        left.legend(loc="lower right", fontsize=8)
        left.set_xlim(min(0.0, *text_part) - 0.02, max(0.1, *(r.score for r in rows)) * 1.2)
        start = [0.0] * len(rows)
        for c in categories:
            share = [dict(r.shares).get(c.name, 0.0) for r in rows]
            right.barh(names, share, left=start, color=c.colour, label=c.name)
            start = [a + b for a, b in zip(start, share, strict=True)]
        right.set_xlim(0, 1)
        right.set_xlabel("share of classified messages")
        right.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(categories), fontsize=8,
                     frameon=False, handlelength=1.0, columnspacing=0.8)
        fig.suptitle(f"chatmood vibes: “{_clean(q.text, 60)}”")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


async def cmd_vibes(
    cfg: Config,
    query: str,
    *,
    top: int = 5,
    as_json: bool = False,
    plot: Path | None = None,
    since: timedelta | None = None,
    rebuild: bool = False,
    refresh: bool = True,
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    if not query.strip():
        raise ChatmoodError("the query is empty: describe the chat you look for, e.g. " + repr(TEMPLATES[0]))
    async with open_storage(cfg.storage, spool_dir=cfg.resolve(cfg.storage.spool_dir)) as storage, \
            open_vibes(cfg, storage) as vibes:
        if since is None and (refresh or rebuild):
            await vibes.store.refresh(rebuild=rebuild)
        q, ranked = await vibes.rank(query, top=top, since=None if since is None else datetime.now(UTC) - since)
    if as_json:
        print(json.dumps([r.as_json() for r in ranked], ensure_ascii=False), file=out)
    elif not ranked:
        print(EMPTY_HINT, file=out)
    else:
        print(format_table(q, ranked, cfg.vibes.mood_weight), file=out)
    if plot is not None and ranked:
        plot_ranking(q, ranked, cfg.categories, plot, cfg.vibes.mood_weight)
        if not as_json:
            print(f"plot: {plot}", file=out)
    return 0
