"""Ingest benchmark: parsed chat line -> acknowledged MongoDB document, and a database-outage drill.

Run with the project's venv: ``.venv/bin/python bench/ingest.py`` (``--quick`` for a short run).
It starts its own FerretDB (``bot.storage.devdb``) on a free port with a temporary folder, and prints progress
on stderr and ONE JSON object as the last line of stdout.

1. Throughput, same run, same server, each on a fresh database:
   * ``batched``: ``Storage.writer.submit(line)`` for every line, then ``flush()``; the writer batches
     with ``insert_many(ordered=False)`` (the production path, default config: 500 per batch or 200 ms).
   * ``per_message``: one awaited ``insert_one`` per line (the naive path), same documents.
   * ``per_message_beanie``: one awaited ``MessageDoc(...).insert()`` per line (naive, through the ODM).
   Lines come from a self-generated synthetic text log (``[YYYY-MM-DD HH:MM:SS UTC] user: text``),
   parsed before timing starts; if ``../shared/data/chatlogs/hasanabi-2022-11-26.csv`` exists, its
   83k real messages are also pushed through the batched path (``batched_csv_msgs_per_s``).
2. Fault drill: 500 msg/s arrive (2% of them redelivered, as Twitch delivers at least once) while the
   server is stopped (SIGTERM) for 10 s and started again on the same port and data folder. Reports what
   was sent, stored, lost and duplicated, read back from the database afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import logging
import os
import random
import re
import resource
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402 - after the path tweak, so the bench runs from a checkout too
from pydantic import SecretStr  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402

from bot.config import StorageConfig  # noqa: E402
from bot.domain import ChatLine, EmoteSpan, synthetic_message_id  # noqa: E402
from bot.storage.devdb import DevDb, run_devdb  # noqa: E402
from bot.storage.documents import MessageDoc  # noqa: E402
from bot.storage.store import open_storage  # noqa: E402
from bot.storage.writer import message_document  # noqa: E402

CSV_LOG = ROOT.parent / "shared" / "data" / "chatlogs" / "hasanabi-2022-11-26.csv"
LINE_RE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC\] ([A-Za-z0-9_]{1,25}): (.*)$")
WORDS = (
    "LUL KEKW PogChamp Pog Kappa monkaS Sadge catJAM lets go gg ez no way that was insane what chat "
    "is this real hype love you streamer clip it W L ratio bruh lmao lol omg HUH copium"
).split()
EMOTES = {"Kappa": "25", "PogChamp": "88", "LUL": "425618"}


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- input


def synthetic_log(n: int, seed: int = 7) -> list[str]:
    """A text chat log in the OverRustle/justlog style, ~10 msg/s of a busy channel."""
    rng = random.Random(seed)
    users = [f"viewer_{i:04d}" for i in range(400)]
    t = datetime(2024, 5, 1, 18, 0, 0, tzinfo=UTC)
    out = []
    for _ in range(n):
        t += timedelta(milliseconds=rng.randint(0, 200))
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
        out.append(f"[{t:%Y-%m-%d %H:%M:%S} UTC] {rng.choice(users)}: {words}")
    return out


def parse_lines(lines: list[str], channel: str) -> list[ChatLine]:
    parsed = []
    for pos, raw in enumerate(lines):
        m = LINE_RE.match(raw)
        if not m:
            continue
        sent_at = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        user, text = m[2], m[3]
        emotes = []
        offset = 0
        for word in text.split(" "):
            if word in EMOTES:
                emotes.append(EmoteSpan(EMOTES[word], offset, offset + len(word)))
            offset += len(word) + 1
        parsed.append(
            ChatLine(
                message_id=synthetic_message_id(channel, sent_at, user, text, pos),
                channel=channel,
                user_id=str(abs(hash(user)) % 10_000_000),
                user_login=user.lower(),
                user_name=user,
                text=text,
                sent_at=sent_at,
                badges=frozenset({"subscriber"}) if pos % 3 == 0 else frozenset(),
                emotes=tuple(emotes),
            )
        )
    return parsed


def csv_lines(path: Path, channel: str) -> list[ChatLine]:
    """The shared CSV has only an index and the text: users and times are made up, ids are derived."""
    base = datetime(2022, 11, 26, 18, 0, tzinfo=UTC)
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        for pos, row in enumerate(csv.DictReader(f)):
            text = row.get("comment") or ""
            sent_at = base + timedelta(milliseconds=100 * pos)
            user = f"chatter{pos % 997}"
            out.append(
                ChatLine(
                    message_id=synthetic_message_id(channel, sent_at, user, text, pos),
                    channel=channel,
                    user_id=str(pos % 997),
                    user_login=user,
                    user_name=user,
                    text=text,
                    sent_at=sent_at,
                )
            )
    return out


# ---- measurements


class CpuMeter:
    """CPU seconds spent by this process and by the FerretDB process during a phase."""

    def __init__(self, db: DevDb) -> None:
        self.pid = db.process.pid if db.process else None
        self.start = self._read()

    def _read(self) -> tuple[float, float]:
        r = resource.getrusage(resource.RUSAGE_SELF)
        server = 0.0
        if self.pid is not None:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{self.pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
                server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return r.ru_utime + r.ru_stime, server

    def per_message_us(self, n: int, wall: float) -> dict[str, float]:
        py, server = (b - a for a, b in zip(self.start, self._read(), strict=True))
        return {
            "wall_us": round(1e6 * wall / n, 1),
            "python_cpu_us": round(1e6 * py / n, 1),
            "ferretdb_cpu_us": round(1e6 * server / n, 1),
        }


def config(url: str, database: str, **overrides: Any) -> StorageConfig:
    return StorageConfig.model_validate({"mongodb_url": SecretStr(url), "database": database, **overrides})


async def count(url: str, database: str) -> int:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        return await client[database]["messages"].count_documents({})
    finally:
        await client.close()


async def batched(db: DevDb, lines: list[ChatLine], database: str, spool: Path) -> tuple[float, dict[str, float]]:
    cfg = config(db.url, database)
    async with open_storage(cfg, spool_dir=spool) as st:
        await st.writer.flush()  # connection and indexes ready before the clock starts
        meter = CpuMeter(db)
        t0 = time.perf_counter()
        for i, line in enumerate(lines, 1):
            st.writer.submit(line)
            if i % 500 == 0:
                # A live source yields between messages. Arrivals here are paced to what the writer
                # takes (a few batches queued), so memory never overflows to the spool: sustained rate.
                await asyncio.sleep(0)
                while st.writer.stats.buffered > 4 * cfg.batch_size:  # noqa: ASYNC110 - polls the writer's counter
                    await asyncio.sleep(0.001)
        await st.writer.flush()
        elapsed = time.perf_counter() - t0
        profile = meter.per_message_us(len(lines), elapsed)
        assert st.writer.stats.inserted == len(lines) and st.writer.stats.spooled == 0, st.writer.stats
    stored = await count(db.url, database)
    assert stored == len(lines), (stored, len(lines))
    return len(lines) / elapsed, profile


async def per_message(
    db: DevDb, lines: list[ChatLine], database: str, spool: Path, beanie: bool
) -> tuple[float, dict[str, float]]:
    async with open_storage(config(db.url, database), spool_dir=spool) as st:
        coll = st.db["messages"]
        meter = CpuMeter(db)
        t0 = time.perf_counter()
        for line in lines:
            doc = message_document(line, datetime.now(UTC))
            if beanie:
                await MessageDoc.model_validate(doc).insert()
            else:
                await coll.insert_one(doc)
        elapsed = time.perf_counter() - t0
        profile = meter.per_message_us(len(lines), elapsed)
    stored = await count(db.url, database)
    assert stored == len(lines), (stored, len(lines))
    return len(lines) / elapsed, profile


@dataclass
class Drill:
    sent: int = 0  # distinct messages
    redelivered: int = 0
    max_buffered: int = 0
    max_submit_lag_ms: float = 0.0
    up_at: float | None = None  # monotonic time the restarted server accepted connections
    recovered_at: float | None = None  # ... and the time the writer had written its spool back


async def drill(
    db: DevDb, lines: list[ChatLine], spool: Path, rate: int, before: float, down: float, after: float
) -> dict[str, Any]:
    database = "bench_drill"
    cfg = config(db.url, database)
    d = Drill()
    sent_ids: list[str] = []
    rng = random.Random(11)
    async with open_storage(cfg, spool_dir=spool) as st:

        async def produce(total_s: float) -> None:
            per_tick, tick = rate // 50, 0.02
            start = time.monotonic()
            n = 0
            i = 0
            while time.monotonic() - start < total_s:
                due = start + n * tick
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                d.max_submit_lag_ms = max(d.max_submit_lag_ms, (time.monotonic() - due) * 1000 - 1000 * tick)
                t_submit = time.perf_counter()
                for _ in range(per_tick):
                    line = lines[i % len(lines)]
                    i += 1
                    st.writer.submit(line)
                    sent_ids.append(line.message_id)
                    if rng.random() < 0.02:  # at-least-once delivery
                        st.writer.submit(line)
                        d.redelivered += 1
                submit_ms = (time.perf_counter() - t_submit) * 1000
                d.max_submit_lag_ms = max(d.max_submit_lag_ms, submit_ms)
                d.max_buffered = max(d.max_buffered, st.writer.stats.buffered)
                if d.up_at is not None and d.recovered_at is None and not st.writer.stats.spooling:
                    d.recovered_at = time.monotonic()
                n += 1

        producer = asyncio.create_task(produce(before + down + after), name="bench-producer")
        try:
            await asyncio.sleep(before)
            say(f"drill: stopping the server ({db.url}) for {down:g} s while {rate} msg/s arrive")
            t_stop = time.monotonic()
            await db.astop()
            await asyncio.sleep(max(0.0, t_stop + down - time.monotonic()))
            await db.astart()
            t_up = d.up_at = time.monotonic()
            say(f"drill: server back after {t_up - t_stop:.1f} s; spool holds {st.writer.stats.spool_pending}")
            await producer
        finally:
            producer.cancel()
            await asyncio.wait({producer})
        deadline = time.monotonic() + 120
        while st.writer.stats.spooling or st.writer.stats.buffered:
            await st.writer.flush()
            if time.monotonic() > deadline:
                break
        recovered_s = (d.recovered_at or time.monotonic()) - t_up
        stats = st.writer.stats.as_dict()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(db.url)
    try:
        stored_ids = [doc["_id"] async for doc in client[database]["messages"].find({}, {"_id": 1})]
    finally:
        await client.close()
    expected = set(sent_ids)
    found = set(stored_ids)
    return {
        "sent": len(expected),  # distinct messages
        "stored": len(stored_ids),
        "lost": len(expected - found),
        "duplicates": len(stored_ids) - len(found) + len(found - expected),
        "redelivered": d.redelivered,
        "submitted": len(sent_ids) + d.redelivered,
        "redeliveries_dropped": stats["duplicates"],  # by the writer or the unique _id
        "down_s": round(t_up - t_stop, 2),
        "spool_written_back_s_after_restart": round(recovered_s, 2),
        "spooled": stats["spooled"],
        "replayed": stats["replayed"],
        "outages": stats["outages"],
        "max_buffered": d.max_buffered,
        "max_submit_block_ms": round(d.max_submit_lag_ms, 1),
        "rate_msgs_per_s": rate,
    }


async def main() -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=30_000, help="synthetic lines for the batched path")
    ap.add_argument("--per-message", type=int, default=3_000, help="lines for the one-insert-per-message paths")
    ap.add_argument("--quick", action="store_true", help="small run (CI smoke): fewer lines, shorter drill")
    ap.add_argument("--no-csv", action="store_true", help="skip the shared CSV log even if present")
    args = ap.parse_args()
    n, n_single = args.messages, args.per_message
    before, down, after = 3.0, 10.0, 4.0
    if args.quick:
        n, n_single, before, down, after = 5_000, 500, 1.0, 3.0, 1.0

    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    import tempfile

    with tempfile.TemporaryDirectory(prefix="chatmood-bench-") as tmp:
        tmpdir = Path(tmp)
        t0 = time.perf_counter()
        raw = synthetic_log(n + n_single)
        t1 = time.perf_counter()
        lines = parse_lines(raw, "benchchannel")
        t2 = time.perf_counter()
        say(f"generated {len(raw)} lines in {t1 - t0:.2f} s, parsed at {len(raw) / (t2 - t1):,.0f} lines/s")
        result: dict[str, Any] = {"messages": n, "per_message_messages": n_single}
        async with run_devdb(data_dir=tmpdir / "ferretdb") as db:
            say(f"FerretDB at {db.url}")
            rate_b, prof_b = await batched(db, lines[:n], "bench_batched", tmpdir / "spool1")
            say(f"batched:           {rate_b:,.0f} msg/s")
            rate_1, prof_1 = await per_message(db, lines[n:], "bench_single", tmpdir / "spool2", beanie=False)
            say(f"insert_one each:   {rate_1:,.0f} msg/s")
            rate_bn, _ = await per_message(db, lines[n:], "bench_single_beanie", tmpdir / "spool3", beanie=True)
            say(f"Beanie insert each: {rate_bn:,.0f} msg/s")
            result |= {
                "batched_msgs_per_s": round(rate_b),
                "per_message_msgs_per_s": round(rate_1),
                "ratio": round(rate_b / rate_1, 1),
                "per_message_beanie_msgs_per_s": round(rate_bn),
                "ratio_vs_beanie": round(rate_b / rate_bn, 1),
                "parse_lines_per_s": round(len(raw) / (t2 - t1)),
                # Where the time goes, per message: wall clock, our CPU, FerretDB's CPU.
                "profile": {"batched": prof_b, "per_message": prof_1, "cpu_cores": os.cpu_count()},
            }
            if CSV_LOG.exists() and not args.no_csv and not args.quick:
                real = csv_lines(CSV_LOG, "hasanabi")
                rate_c, _ = await batched(db, real, "bench_csv", tmpdir / "spool4")
                say(f"batched, shared CSV ({len(real)} messages): {rate_c:,.0f} msg/s")
                result |= {"batched_csv_msgs_per_s": round(rate_c), "csv_messages": len(real)}
            result["drill"] = await drill(db, lines, tmpdir / "spool5", 500, before, down, after)
            say(f"drill: {result['drill']}")
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())), flush=True)
