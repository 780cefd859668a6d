"""Ingest benchmark: parsed chat line -> acknowledged MongoDB document, and a database-outage drill.

Run with the project's venv: ``.venv/bin/python bench/ingest.py`` (``--quick`` for a short run).
It starts its own FerretDB (``bot.storage.devdb``) on a free port with a temporary folder, and prints progress
on stderr and ONE JSON object as the last line of stdout.

1. Throughput, same run, same server, each on a fresh database:
   * ``batched``: ``Storage.writer.submit(line)`` and its verdict for every line, then ``flush()``; the
     writer folds each verdict into its message and batches with ``insert_many(ordered=False)`` (the
     production path, default config: 500 per batch or 200 ms).
   * ``per_message``: one awaited ``insert_one`` per line (the naive path), same documents.
   * ``per_message_beanie``: one awaited ``MessageDoc(...).insert()`` per line (naive, through the ODM).
   Lines come from a self-generated synthetic text log (``[YYYY-MM-DD HH:MM:SS UTC] user: text``),
   parsed before timing starts; if ``../shared/data/chatlogs/hasanabi-2022-11-26.csv`` exists, its
   83k real messages are also pushed through the batched path (``batched_csv_msgs_per_s``).
2. Fault drill (``drill``): 500 msg/s arrive at the writer (2% of them redelivered, as Twitch delivers at
   least once) while the server is stopped (SIGTERM) for 10 s and started again on the same port and data
   folder. Reports what was sent, stored, lost and duplicated, read back from the database afterwards.
3. Whole-pipeline drills (``drills``): ``chatmood replay --max-rate 500`` (a separate process: the real
   CLI, classifier and writer) replays a 20 s JSONL log (2% redelivered lines, 1% commands) while a fault
   is injected: ``no_fault``; ``db_sigstop_10s`` (FerretDB frozen with SIGSTOP for 10 s: it keeps its
   connections but answers nothing); ``db_kill9_restart`` (FerretDB killed with SIGKILL, restarted 10 s
   later); ``chatmood_sigterm`` (the replay gets SIGTERM mid-stream: what it took must be stored);
   ``chatmood_kill9_rerun`` (the replay is killed with SIGKILL mid-stream, then the log is replayed again:
   nothing may be missing or stored twice in the end; right after the kill at most the last flush window,
   about 100 messages at 500 msg/s, may be missing). Each reports ``{name, sent, stored, lost,
   duplicates}`` (distinct messages sent; read back from the database), and how many stored messages
   lack their verdict.
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
import signal
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
from bot.domain import ChatLine, EmoteSpan, Verdict, synthetic_message_id  # noqa: E402
from bot.storage.devdb import DevDb, run_devdb  # noqa: E402
from bot.storage.documents import (  # noqa: E402
    MessageDoc,
    message_document,
    verdict_fields,
)
from bot.storage.store import open_storage  # noqa: E402

# Every message is stored with its verdict (one write per message), so the documents timed carry one.
VERDICT = Verdict("hype", 0.8, {"hype": 0.8, "funny": 0.1, "neutral": 0.1}, "bench")
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
            st.writer.submit_verdict(line.message_id, VERDICT)  # as the classifier does, within the window
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
            doc = message_document(line, datetime.now(UTC)) | verdict_fields(VERDICT, datetime.now(UTC))
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


# ---- whole-pipeline drills: the real `chatmood replay` in its own process

DRILL_RATE = 500
DRILL_SECONDS = 20
FLUSH_WINDOW_S = 0.2


def drill_log(path: Path, seconds: int, rate: int, seed: int = 23) -> list[str]:
    """A JSONL chat log of ``seconds * rate`` lines (2% of them redelivered copies, 1% commands);
    returns the message ids in file order (repeats included)."""
    rng = random.Random(seed)
    ids: list[str] = []
    with path.open("w", encoding="utf-8") as f:
        for i in range(seconds * rate):
            if ids and rng.random() < 0.02:
                mid = ids[-rng.randint(1, min(len(ids), 50))]  # a redelivery of a recent message
                n = int(mid.split("-")[1])
            else:
                mid, n = f"d-{i:06d}", i
            text = "!mood" if n % 100 == 50 else " ".join(random.Random(n).choice(WORDS) for _ in range(1 + n % 8))
            f.write(json.dumps({"message_id": mid, "channel": "drillchannel", "user_login": f"viewer_{n % 300}",
                                "text": text, "offset": n / rate}) + "\n")  # fmt: skip
            ids.append(mid)
    return ids


class Replay:
    """``chatmood replay`` as a child process; notes when it starts taking lines."""

    def __init__(self, cfg_path: Path, log: Path, out_dir: Path, name: str) -> None:
        self.cmd = [sys.executable, "-m", "bot", "replay", str(log), "--max-rate", str(DRILL_RATE),
                    "--config", str(cfg_path)]  # fmt: skip
        self.out_path = out_dir / f"{name}.out"
        self.err_path = out_dir / f"{name}.err"
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at: float | None = None  # monotonic time of its replay_started log line
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        self._reader = asyncio.create_task(self._read(), name="drill-replay-output")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None and self.proc.stderr is not None
        err = self.proc.stderr

        async def copy_err() -> None:
            with self.err_path.open("wb") as f:
                async for raw in err:
                    if self.started_at is None and b"replay_started" in raw:
                        self.started_at = time.monotonic()
                    f.write(raw)

        async def copy_out() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            self.out_path.write_bytes(await self.proc.stdout.read())

        await asyncio.gather(copy_err(), copy_out())

    async def until_started(self, within: float = 120.0) -> float:
        deadline = time.monotonic() + within
        while self.started_at is None:
            if time.monotonic() > deadline or (self.proc and self.proc.returncode is not None):
                raise RuntimeError(f"replay did not start; see {self.err_path}")
            await asyncio.sleep(0.02)
        return self.started_at

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, within: float = 300.0) -> int:
        assert self.proc is not None and self._reader is not None
        rc = await asyncio.wait_for(self.proc.wait(), within)
        await self._reader
        return rc

    @property
    def output(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace") if self.out_path.exists() else ""


async def stored_ids(url: str, database: str) -> tuple[list[str], int]:
    """Every stored message id, and how many stored chat lines (not commands) lack a verdict."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, serverSelectionTimeoutMS=30_000)
    try:
        ids, unclassified = [], 0
        async for doc in client[database]["messages"].find({}, {"_id": 1, "label": 1, "command": 1}):
            ids.append(str(doc["_id"]))
            unclassified += "label" not in doc and not doc.get("command")
        return ids, unclassified
    finally:
        await client.close()


def spool_count(spool: Path) -> int:
    path = spool / "messages.jsonl"
    if not path.exists():
        return 0
    offset = 0
    pos = spool / "messages.pos"
    if pos.exists():
        offset = int(pos.read_text().split()[1])
    with path.open("rb") as f:
        f.seek(offset)
        return sum(1 for line in f if line.strip())


async def pipeline_drill(db: DevDb, tmp: Path, name: str, log: Path, ids: list[str]) -> dict[str, Any]:
    database = f"drill_{name}"
    spool = tmp / f"spool-{name}"
    cfg_path = tmp / f"{name}.toml"
    cfg_path.write_text(
        f'[storage]\nmongodb_url = "{db.url}"\ndatabase = "{database}"\nspool_dir = "{spool}"\n'
        '[classifier]\nembedding_model = ""\n[logging]\nformat = "json"\nlevel = "info"\n'
    )
    extra: dict[str, Any] = {}
    replay_ = Replay(cfg_path, log, tmp, name)
    await replay_.start()
    started = await replay_.until_started()
    sent_ids = ids
    assert db.process is not None
    if name == "no_fault":
        rc = await replay_.wait()
    elif name == "db_sigstop_10s":
        await asyncio.sleep(max(0.0, started + 4 - time.monotonic()))
        os.kill(db.process.pid, signal.SIGSTOP)
        await asyncio.sleep(10)
        os.kill(db.process.pid, signal.SIGCONT)
        rc = await replay_.wait()
    elif name == "db_kill9_restart":
        await asyncio.sleep(max(0.0, started + 4 - time.monotonic()))
        await db.astop(kill=True)
        await asyncio.sleep(10)
        await db.astart()
        rc = await replay_.wait()
    elif name == "chatmood_sigterm":
        await asyncio.sleep(max(0.0, started + 8 - time.monotonic()))
        replay_.signal(signal.SIGTERM)
        rc = await replay_.wait()
        m = re.search(r"replay interrupted: ([\d,]+) messages taken", replay_.output)
        taken = int(m[1].replace(",", "")) if m else 0
        sent_ids = ids[:taken]
        extra["taken_lines"] = taken
        extra["spool_left"] = spool_count(spool)
    elif name == "chatmood_kill9_rerun":
        await asyncio.sleep(max(0.0, started + 8 - time.monotonic()))
        replay_.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        rc = await replay_.wait()
        # At 500 msg/s from its start: about how many lines it had taken when it was killed.
        taken = min(len(ids), int((killed_at - started) * DRILL_RATE))
        after_kill, _ = await stored_ids(db.url, database)
        persisted = len(set(after_kill)) + spool_count(spool)
        extra["missing_right_after_kill"] = max(0, len(set(ids[:taken])) - persisted)
        extra["flush_window_msgs"] = int(DRILL_RATE * FLUSH_WINDOW_S)
        extra["killed_rc"] = rc
        rerun = Replay(cfg_path, log, tmp, f"{name}-rerun")
        await rerun.start()
        rc = await rerun.wait()
        extra["rerun_output_tail"] = rerun.output.strip().splitlines()[-2:]
    else:
        raise ValueError(name)
    found, unclassified = await stored_ids(db.url, database)
    log_text = replay_.err_path.read_text(encoding="utf-8", errors="replace")
    events = ("storage_too_slow", "storage_unreachable", "storage_recovered", "storage_write_refused")
    extra["writer_events"] = [e for e in events if f'"{e}"' in log_text]
    extra["summary"] = [line for line in replay_.output.splitlines() if line.startswith("stored:")]
    expected = set(sent_ids)
    distinct = set(found)
    return {
        "name": name,
        "sent": len(expected),
        "stored": len(found),
        "lost": len(expected - distinct),
        "duplicates": len(found) - len(distinct) + len(distinct - expected),
        "unclassified": unclassified,
        "rc": rc,
        **extra,
    }


async def pipeline_drills(tmp: Path, seconds: int) -> list[dict[str, Any]]:
    log = tmp / "drill.jsonl"
    ids = drill_log(log, seconds, DRILL_RATE)
    out = []
    async with run_devdb(data_dir=tmp / "drill-ferretdb") as db:
        for name in ("no_fault", "db_sigstop_10s", "db_kill9_restart", "chatmood_sigterm", "chatmood_kill9_rerun"):
            say(f"drill {name}: chatmood replay at {DRILL_RATE} msg/s, {len(ids)} lines")
            result = await pipeline_drill(db, tmp, name, log, ids)
            say(f"  {result}")
            out.append(result)
    return out


async def main() -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=30_000, help="synthetic lines for the batched path")
    ap.add_argument("--per-message", type=int, default=3_000, help="lines for the one-insert-per-message paths")
    ap.add_argument("--quick", action="store_true", help="small run (CI smoke): fewer lines, shorter drill")
    ap.add_argument("--no-csv", action="store_true", help="skip the shared CSV log even if present")
    ap.add_argument("--drills-only", action="store_true", help="only the whole-pipeline drills")
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
        if args.drills_only:
            drills = await pipeline_drills(tmpdir, DRILL_SECONDS)
            return {"drills": drills, "load": [round(x, 2) for x in os.getloadavg()]}
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
        result["drills"] = await pipeline_drills(tmpdir, DRILL_SECONDS)
    result["load"] = [round(x, 2) for x in os.getloadavg()]
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())), flush=True)
