"""Channel vibes, measured: do queries that describe a channel's content or mood rank it first, and how fast is
ranking 1,000 profiled channels?

Run with the project's venv python from the repository root (``make setup`` first):

    .venv/bin/python bench/vibes.py [--chatlogs ../shared/data/chatlogs] [--no-real-logs]

What it does, against a throw-away local FerretDB and the real models (MiniLM for vibes; the configured
classifier, by default the cold-start head, labels the chat):

1. Replays several chats into separate channels through the normal pipeline (ingest, storage, classifier):
   the bundled sample chat cut into its seven phases (``bot.vibes.samples``), and, unless ``--no-real-logs``,
   the real logs under ``../shared/data/chatlogs`` (a Northernlion broadcast, three stretches of a HasanAbi
   stream). The real logs are read here only; nothing from them is printed but counts and scores.
2. Profiles every channel (timed: the first build and a refresh with nothing new).
3. Asks each query of :data:`QUERIES` (written by us after reading each chat: a description of its content or
   of its mood) and checks where its channel lands among all channels, ranked three ways: text only
   (``mood_weight`` 0), mood only (the mood score alone), and the blend chatmood uses. Top-1 and top-3 hit rates.
4. Times ranking 1,000 profiled channels (made by perturbing the real profiles' embeddings and mood shares):
   loading them from FerretDB, stacking them, ranking one query; and the naive way (a Python loop over the
   channels) in the same run.

The last line printed is one JSON object (with the machine's load average: numbers taken while other work
runs are slower).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.config import Config, parse_config  # noqa: E402
from bot.domain import ChatLine, synthetic_message_id  # noqa: E402
from bot.logs import configure_logging  # noqa: E402
from bot.outbox import log_only  # noqa: E402
from bot.pipeline import open_pipeline  # noqa: E402
from bot.replay.logfile import open_log  # noqa: E402
from bot.replay.pacing import replay  # noqa: E402
from bot.storage.devdb import run_devdb  # noqa: E402
from bot.tasks import supervise  # noqa: E402
from bot.vibes.documents import ChannelProfileDoc  # noqa: E402
from bot.vibes.profile import Profile  # noqa: E402
from bot.vibes.query import MoodAsk  # noqa: E402
from bot.vibes.rank import Catalogue, Query, rank  # noqa: E402
from bot.vibes.recommend import open_vibes  # noqa: E402
from bot.vibes.samples import sample_channels  # noqa: E402

DEFAULT_CHATLOGS = ROOT.parent / "shared" / "data" / "chatlogs"
# Three stretches of 2,000 messages: the World Cup match, an argument about cheating in relationships, and a
# KEKW-heavy late stretch (picked by keyword counts, read only here).
HASAN_STRETCHES = {"hasan_worldcup": (23000, 25000), "hasan_dating": (37500, 39500), "hasan_late": (76000, 78000)}
FEED_RATE = 2_000  # msg/s: below what the writer takes without spilling to its disk spool

#: (channel, kind, query). Written after reading each chat; "content" says what it talks about, "mood" how it feels.
QUERIES: tuple[tuple[str, str, str], ...] = (
    ("sample_opening", "content", "greetings and questions before the match starts"),
    ("sample_opening", "mood", "a calm, chill chat"),
    ("sample_hype", "content", "a clutch play in the finals"),
    ("sample_hype", "mood", "hype esports energy"),
    ("sample_funny", "content", "he fell off the map"),
    ("sample_funny", "mood", "laughing at memes"),
    ("sample_sad", "content", "losing the final round"),
    ("sample_sad", "mood", "sad and emotional chat"),
    ("sample_angry", "content", "lag and cheaters"),
    ("sample_angry", "mood", "toxic angry chat"),
    ("sample_love", "content", "a raid with gifted subs"),
    ("sample_love", "mood", "a wholesome, supportive community"),
    ("sample_closing", "content", "saying good night after the stream"),
    ("sample_closing", "mood", "a calm and cozy community"),
    ("nl_culling", "content", "playing The Culling with friends"),
    ("hasan_worldcup", "content", "watching Mexico at the World Cup"),
    ("hasan_dating", "content", "arguing about cheating and relationships"),
    ("hasan_late", "mood", "chaotic and spammy but hilarious"),
)


def real_channels(folder: Path) -> dict[str, list[ChatLine]]:
    """The real logs as channels: the rechat broadcast whole, the CSV's stretches one channel each."""
    out: dict[str, list[ChatLine]] = {}
    rechat = folder / "rechat-98355852.json"
    if rechat.is_file():
        out["nl_culling"] = list(open_log(rechat, "nl_culling").lines)
    stream = folder / "hasanabi-2022-11-26.csv"
    if stream.is_file():
        with stream.open(encoding="utf-8", newline="") as f:
            texts = [row[1] for row in csv.reader(f) if len(row) > 1][1:]
        start = datetime(2022, 11, 26, 16, tzinfo=UTC)
        for name, (a, b) in HASAN_STRETCHES.items():
            lines = []
            for i, text in enumerate(texts[a:b]):
                at = start + timedelta(seconds=0.25 * (a + i))  # the CSV has no times: 4 msg/s
                lines.append(ChatLine(synthetic_message_id(name, at, "viewer", text, a + i), name, "", "viewer",
                                      "viewer", text, at))
            out[name] = lines
    return out


def bench_config(url: str, tmp: Path) -> Config:
    return parse_config({
        "storage": {"mongodb_url": url, "database": "bench_vibes", "spool_dir": str(tmp / "spool"),
                    "server_timeout_ms": 10_000},
        "classifier": {"models_dir": str(ROOT / "models")},
        "logging": {"level": "warning", "format": "json"},
    }, {})


def stage(what: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


def hits(ranked: list[str], target: str) -> tuple[bool, bool]:
    return ranked[:1] == [target], target in ranked[:3]


def rates(results: list[dict[str, Any]], method: str, kind: str | None = None) -> dict[str, float | int]:
    rows = [r for r in results if kind is None or r["kind"] == kind]
    n = len(rows)
    return {"n": n, "top1": round(sum(r[method]["top1"] for r in rows) / n, 3) if n else 0.0,
            "top3": round(sum(r[method]["top3"] for r in rows) / n, 3) if n else 0.0}


def perturbed(profiles: list[Profile], n: int, rng: random.Random) -> Iterator[Profile]:
    """``n`` profiles like the real ones: embeddings and mood shares moved a little, the rest kept."""
    nrng = np.random.default_rng(rng.randrange(2**32))
    for i in range(n):
        base = profiles[i % len(profiles)]
        p = dataclasses.replace(base, channel=f"synthetic_{i:04d}", label_counts=dict(base.label_counts),
                                sample=dict(base.sample))
        if base.embedding_sum is not None:
            p.embedding_sum = base.embedding_sum + nrng.normal(0, 0.3 * float(np.abs(base.embedding_sum).mean()),
                                                               base.embedding_sum.shape)
        total = max(1, base.classified)
        weights = nrng.dirichlet([1.0 + 20 * base.label_counts.get(c, 0) / total for c in base.categories])
        p.label_counts = {c: round(float(w) * total) for c, w in zip(base.categories, weights, strict=True)}
        p.classified = sum(p.label_counts.values())
        yield p


def naive_rank(q: Query, profiles: list[Profile], m: float, top: int) -> list[str]:
    """The obvious way: per channel, its mean embedding and shares recomputed, dot products in Python."""
    qv = [float(x) for x in q.vec]
    scored = []
    for p in profiles:
        e = p.embedding
        text = sum(a * float(b) for a, b in zip(qv, e, strict=True)) if e is not None else 0.0
        shares = p.shares
        mood = sum(q.mood.weights.get(c, 0.0) * s for c, s in shares.items())
        scored.append(((1 - m) * text + m * mood, p.channel))
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [c for _, c in scored[:top]]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("warning", "json")
    channels = {name: lines for name, lines in sample_channels().items()}
    if not args.no_real_logs:
        channels |= real_channels(args.chatlogs)
    queries = [q for q in QUERIES if q[0] in channels]
    with tempfile.TemporaryDirectory(prefix="bench-vibes-") as tmp_name:
        tmp = Path(tmp_name)
        async with run_devdb() as db:
            cfg = bench_config(db.url, tmp)
            async with open_pipeline(cfg) as p, supervise({**p.services(), "outbox": p.outbox.drain(log_only)}):
                stage(f"replaying {sum(map(len, channels.values())):,} messages into {len(channels)} channels")
                started = time.perf_counter()
                for lines in channels.values():
                    await replay(lines, p.ingest.submit, speed=None, max_rate=FEED_RATE)
                await p.settle(channels)
                feed_s = time.perf_counter() - started
                stored = p.storage.writer.stats.inserted
                async with open_vibes(cfg, p.storage) as vibes:
                    stage(f"stored {stored:,}; profiling")
                    first = await vibes.store.refresh()
                    again = await vibes.store.refresh()
                    profiles = await vibes.store.load()
                    ranker = vibes.ranker
                    results = []
                    for target, kind, text in queries:
                        q = await ranker.query(text)
                        cat = Catalogue(profiles, [c.name for c in ranker.categories], q.vec.shape[0])
                        sure = Query(q.text, q.vec, MoodAsk(q.mood.weights, 1.0, q.mood.named))
                        ranked = {
                            "text": [r.channel for r in rank(q, cat, mood_weight=0.0)],
                            "mood": [r.channel for r in rank(sure, cat, mood_weight=1.0)],
                            "blend": [r.channel for r in rank(q, cat, mood_weight=ranker.mood_weight)],
                        }
                        row: dict[str, Any] = {"channel": target, "kind": kind, "query": text}
                        for method, order in ranked.items():
                            top1, top3 = hits(order, target)
                            row[method] = {"top1": top1, "top3": top3, "rank": order.index(target) + 1,
                                           "first": order[0]}
                        results.append(row)

                    # ---- 1,000 profiled channels
                    stage(f"{len(results)} queries asked; storing 1,000 profiles")
                    rng = random.Random(7)
                    many = list(perturbed(profiles, 1000, rng))
                    now = datetime.now(UTC)
                    docs = [ChannelProfileDoc.from_profile(x, model=vibes.ranker.embedder.name, at=now)
                            .model_dump(by_alias=True, exclude={"revision_id"}) for x in many]
                    doc_kb = statistics.mean(len(bson.encode(d)) for d in docs) / 1024
                    coll = ChannelProfileDoc.get_pymongo_collection()
                    for i in range(0, len(docs), 100):  # new documents: inserted, not replaced one by one
                        await coll.insert_many(docs[i:i + 100])
                    stage("ranking 1,000 channels")
                    t0 = time.perf_counter()
                    loaded = [x for x in await vibes.store.load(for_ranking=True) if x.channel.startswith("synthetic_")]
                    load_s = time.perf_counter() - t0
                    q_texts = [text for _, _, text in queries]
                    t0 = time.perf_counter()
                    qs = [await ranker.query(t) for t in q_texts]
                    embed_ms = (time.perf_counter() - t0) / len(qs) * 1000
                    t0 = time.perf_counter()
                    cat = Catalogue(loaded, [c.name for c in ranker.categories], qs[0].vec.shape[0])
                    stack_ms = (time.perf_counter() - t0) * 1000
                    fast, slow = [], []
                    agree = 0
                    for q in qs:
                        t0 = time.perf_counter()
                        got = [r.channel for r in rank(q, cat, mood_weight=ranker.mood_weight, top=10)]
                        fast.append((time.perf_counter() - t0) * 1000)
                        t0 = time.perf_counter()
                        want = naive_rank(q, loaded, ranker.mood_weight * q.mood.strength, 10)
                        slow.append((time.perf_counter() - t0) * 1000)
                        agree += got == want
    return {
        "bench": "vibes",
        "load_avg_1m_5m_15m": [round(x, 2) for x in os.getloadavg()],
        "channels": {name: len(lines) for name, lines in channels.items()},
        "stored_messages": stored,
        "feed_s": round(feed_s, 2),
        "profile_first_build": {"seconds": round(first.seconds, 2), "messages": first.messages,
                                "verdicts": first.verdicts, "texts_embedded": first.embedded},
        "profile_refresh_nothing_new_s": round(again.seconds, 3),
        "queries": len(results),
        "hit_rates": {m: rates(results, m) for m in ("text", "mood", "blend")},
        "hit_rates_by_kind": {kind: {m: rates(results, m, kind) for m in ("text", "mood", "blend")}
                              for kind in ("content", "mood")},
        "misses_blend": [{"channel": r["channel"], "query": r["query"], "rank": r["blend"]["rank"],
                          "first": r["blend"]["first"]} for r in results if not r["blend"]["top1"]],
        "ranking_1000_channels": {
            "profile_document_kb": round(doc_kb, 1),
            "load_profiles_s": round(load_s, 3),
            "embed_query_ms": round(embed_ms, 2),
            "stack_catalogue_ms": round(stack_ms, 2),
            "rank_top10_ms_median": round(statistics.median(fast), 3),
            "naive_python_loop_ms_median": round(statistics.median(slow), 3),
            "naive_speedup": round(statistics.median(slow) / statistics.median(fast), 1),
            "same_top10_as_naive": f"{agree}/{len(qs)}",
        },
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chatlogs", type=Path, default=DEFAULT_CHATLOGS, help="folder of the real chat logs")
    ap.add_argument("--no-real-logs", action="store_true", help="only the sample chat's phases")
    out = asyncio.run(main(ap.parse_args()))
    print(json.dumps(out))
