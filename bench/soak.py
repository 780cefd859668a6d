"""Soak benchmark: fill the development database through the real pipeline to a million stored messages.

Run with the project's venv from the repository root: ``.venv/bin/python bench/soak.py`` (``--max-stored``
to stop earlier; a full run takes tens of minutes on two busy cores: run it with ``nice``). It starts its own
FerretDB (``bot.storage.devdb``) on a free port with a temporary folder, prints progress on stderr and ONE
JSON object as the last line of stdout.

What runs: ``open_pipeline`` (storage's writer, the real classifier, the history windows, commands), fed
through the replay path (``bot.replay.pacing.replay`` into ``Ingest.submit``) with synthetic chat: one
channel, 20,000 viewers of whom a few talk most (Zipf), about 1% commands. A simulated clock advances 50 ms
per message (a busy channel's 20 msg/s), so mood snapshots accumulate as they would over the stream's real
duration (a million messages is about 14 hours of chat, 5,000 snapshots). Lines are fed as fast as the
pipeline takes them: whenever the writer holds more than two batches in memory or is writing a spool back
(the database did not answer within server_timeout_ms), or the classifier is 500 behind, the feed waits
(the sustained rate, not a growing backlog; ``spooled`` says how often the spool was needed).

At each level (100k, 500k, 1M stored) it reports, over the stretch since the previous level:

* ``ingest_msgs_per_s``: messages stored *with* their verdict per second, end to end;
* ``verdict_lag_p95_s``: from a message's arrival to its verdict being stored (the writer's own figures);
* ``label_p95_ms``: ``!label <category> @user`` through the real ``CommandExecutor`` (30 mods' commands
  on viewers who spoke recently), while chat keeps arriving at 50 msg/s;
* ``api_p95_ms``: the dashboard's API over HTTP (``/api/messages``, ``/api/timeline`` for the last hour,
  the ``/dashboard`` page), same conditions; ``mood_api_p95_ms`` for ``/api/mood``;
* ``rss_mb`` (this process: chatmood and the feeder) and ``db_rss_mb`` (FerretDB), disk per million.

``baseline``, in the same run against the same server (its own database, first, to 100k): the
per-message-update design, where every verdict is its own ``$set`` after the insert, ``!label`` flushes the
writer and asks the database for the user's latest message, and the dashboard queries the database.
``query_costs_ms``: each query the bot can still send, timed alone on the development database at each level.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402 - after the path tweak, so the bench runs from a checkout too
import structlog  # noqa: E402
from aiohttp import web  # noqa: E402

import bot.storage.store as store_module  # noqa: E402
from bot.commands.router import LabelCommand  # noqa: E402
from bot.config import Config, parse_config  # noqa: E402
from bot.domain import ChatLine, Verdict  # noqa: E402
from bot.errors import StorageError  # noqa: E402
from bot.outbox import log_only  # noqa: E402
from bot.pipeline import Pipeline, open_pipeline  # noqa: E402
from bot.replay.pacing import replay  # noqa: E402
from bot.storage.devdb import DevDb, run_devdb  # noqa: E402
from bot.storage.documents import utcnow, verdict_fields  # noqa: E402
from bot.storage.spool import Update  # noqa: E402
from bot.storage.writer import MessageWriter  # noqa: E402
from bot.tasks import supervise  # noqa: E402
from bot.web.server import create_overlay_app  # noqa: E402

CHANNEL = "soakchannel"
SIM_STEP_S = 0.05  # simulated time per message: a busy channel's 20 msg/s
SNAPSHOT_EVERY_S = 10.0
FEED_CHUNK = 1_000
TRICKLE_RATE = 50  # msg/s of chat while commands and the dashboard are measured (a busy channel's peak)
TOKEN = "soak-token"
WORDS = (
    "LUL KEKW PogChamp Pog Kappa monkaS Sadge catJAM lets go gg ez no way that was insane what chat is this real "
    "hype love you streamer clip it W L ratio bruh lmao lol omg HUH copium so sad unlucky rip nice play wow "
    "amazing terrible why boring sleepy hello hi first time here from brazil germany chat is fast"
).split()


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def rss_mb(pid: int | None = None) -> float:
    path = Path(f"/proc/{pid or os.getpid()}/status")
    for line in path.read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid or os.getpid()}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def db_mb(data_dir: Path, database: str) -> float:
    """One database's SQLite files (with its write-ahead log) in FerretDB's folder."""
    return round(sum(f.stat().st_size for f in data_dir.glob(f"{database}.sqlite*")) / 2**20, 1)


def du_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


class SimClock:
    """Simulated wall time (epoch seconds) for the pipeline: mood decay and snapshot buckets."""

    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now


class Chat:
    """Synthetic chat, made as it is consumed (the feeder holds no list of a million lines). Texts come from a
    pool of 50,000 made up front, so the feeder costs little next to the pipeline it feeds."""

    def __init__(self, clock: SimClock, seed: int, prefix: str, users: int = 20_000) -> None:
        rng = self.rng = random.Random(seed)
        self.clock = clock
        self.prefix = prefix
        self.users = [f"viewer_{i:05d}" for i in range(users)]
        self.user_ids = [str(100_000 + i) for i in range(users)]
        weights = [1 / (i + 1) ** 1.1 for i in range(users)]
        self.cum = list(itertools.accumulate(weights))
        self.texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 10))) for _ in range(50_000)]
        self.n = 0
        self.recent_users: list[str] = []

    def __iter__(self) -> Iterator[ChatLine]:
        return self

    def __next__(self) -> ChatLine:
        rng = self.rng
        self.n += 1
        self.clock.now += SIM_STEP_S
        u = bisect.bisect_left(self.cum, rng.random() * self.cum[-1])
        user = self.users[u]
        if self.n % 100 == 37:
            text = "!mood"
        else:
            text = self.texts[int(rng.random() * len(self.texts))]
            self.recent_users.append(user)
            if len(self.recent_users) > 2_000:
                del self.recent_users[:1_000]
        return ChatLine(
            message_id=f"{self.prefix}-{self.n:08d}",
            channel=CHANNEL,
            user_id=self.user_ids[u],
            user_login=user,
            user_name=user,
            text=text,
            sent_at=datetime.fromtimestamp(self.clock.now, UTC),
        )

    def take(self, n: int) -> list[ChatLine]:
        return [next(self) for _ in range(n)]


class UpdateEachVerdict(MessageWriter):
    """The baseline: the per-message-update design. A message is inserted as soon as its batch is due, and
    every verdict is its own ``$set`` after the insert (never folded into it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._arrived: dict[str, float] = {}

    def submit(self, line: ChatLine, *, command: bool = False) -> None:
        super().submit(line, command=command)
        queued = self._by_id.get(line.message_id)
        if queued is not None:
            queued.ready = True  # the old writer never waited for a verdict
            self._arrived[line.message_id] = time.time()

    def submit_verdict(self, message_id: str, verdict: Verdict) -> None:
        self._stats.verdicts += 1
        self._stats.verdicts_late += 1
        if not self._updates:
            self._updates_at = self._clock()
            self._wake.set()
        arrived = self._arrived.pop(message_id, None)
        self._updates[message_id] = Update(message_id, verdict_fields(verdict, utcnow()), arrived)
        if len(self._updates) >= self._batch_size:
            self._wake.set()


@contextlib.contextmanager
def writer_class(cls: type[MessageWriter]) -> Iterator[None]:
    """Open the next storage with ``cls`` as its writer (the baseline only; restored afterwards)."""
    original = store_module.MessageWriter
    store_module.MessageWriter = cls  # type: ignore[misc]
    try:
        yield
    finally:
        store_module.MessageWriter = original  # type: ignore[misc]


def config(db: DevDb, database: str, spool: Path, baseline: bool) -> Config:
    storage: dict[str, Any] = {"mongodb_url": db.url, "database": database, "spool_dir": str(spool)}
    if baseline:  # the old design had no time limit on a query but the socket's (30 s): let its scans finish
        storage["server_timeout_ms"] = 30_000
    return parse_config(
        {
            "storage": storage,
            "classifier": {"embedding_model": "", "llm_model": ""},
            "mood": {"snapshot_interval_s": SNAPSHOT_EVERY_S},
        },
        {},
    )


class Soak:
    def __init__(self, db: DevDb, p: Pipeline, chat: Chat, clock: SimClock, baseline: bool) -> None:
        self.db = db
        self.database = p.storage.database
        self.p = p
        self.chat = chat
        self.clock = clock
        self.baseline = baseline
        self.next_snapshot = clock.now + SNAPSHOT_EVERY_S
        self.base_url = ""
        self.failed_labels = 0

    @property
    def stored(self) -> int:
        return self.p.storage.writer.stats.inserted

    @property
    def with_verdict(self) -> int:
        w = self.p.storage.writer.stats
        return w.verdicts_inline + w.verdicts_applied if not self.baseline else w.verdicts_applied

    async def snapshots_due(self) -> None:
        """The snapshots the pipeline's 10 s loop would have taken while this chunk's time passed."""
        now = self.clock.now
        while now >= self.next_snapshot:
            self.clock.now = self.next_snapshot  # each in its own bucket
            await self.p.save_snapshot(CHANNEL)
            self.next_snapshot += SNAPSHOT_EVERY_S
        self.clock.now = now

    async def backpressure(self) -> None:
        w = self.p.storage.writer
        batch = self.p.cfg.storage.batch_size
        while (  # noqa: ASYNC110 - polls counters: sustained rate, never a growing spool or backlog
            w.stats.buffered > 2 * batch or w.stats.spooling or self.p.classifier.pending > 500
        ):
            await asyncio.sleep(0.002)

    async def feed_until(self, stored: int) -> float:
        """Feed as fast as the pipeline takes it until ``stored`` messages are stored; returns the seconds."""
        t0 = time.perf_counter()
        last_report = t0
        while self.stored < stored:
            need = stored - self.stored
            chunk = self.chat.take(min(FEED_CHUNK, max(need, 100)))
            await replay(chunk, self.p.ingest.submit, speed=None)
            await self.snapshots_due()
            await self.backpressure()
            if self.stored + self.p.storage.writer.stats.buffered >= stored:
                await self.p.classifier.drain()
                await self.p.storage.writer.flush()
            now = time.perf_counter()
            if now - last_report > 10:
                last_report = now
                w = self.p.storage.writer.stats
                say(
                    f"  {'baseline ' if self.baseline else ''}stored {w.inserted:,}, spooled {w.spooled},"
                    f" late verdicts {w.verdicts_late:,}, load {os.getloadavg()[0]:.1f}"
                )
        return time.perf_counter() - t0

    async def trickle(self, rate: float, stop: asyncio.Event) -> None:
        """Chat keeps arriving while the commands and the dashboard are measured."""
        while not stop.is_set():
            await replay(self.chat.take(int(rate / 10)), self.p.ingest.submit, speed=None, max_rate=rate)
            await self.snapshots_due()

    async def label_latencies(self, n: int) -> list[float]:
        out: list[float] = []
        rng = random.Random(5)
        categories = self.p.cfg.category_names
        st = self.p.storage
        for i in range(n):
            user = rng.choice(self.chat.recent_users[-500:])
            category = rng.choice(categories)
            mod_line = ChatLine(
                message_id=f"label-{self.chat.prefix}-{self.stored}-{i}",
                channel=CHANNEL,
                user_id="1",
                user_login="soakmod",
                user_name="SoakMod",
                text=f"!label {category} @{user}",
                sent_at=datetime.fromtimestamp(self.clock.now, UTC),
                badges=frozenset({"moderator"}),
            )
            t = time.perf_counter()
            if self.baseline:  # the old executor: flush the writer, then ask the database
                await st.writer.flush()
                try:
                    msg = await st.latest_message_by(CHANNEL, user)
                except StorageError:  # the old design gave up at the socket timeout (30 s): a failed !label
                    self.failed_labels += 1
                    msg = None
                if msg is not None:
                    await st.add_labeled_example(
                        prompt=msg.text,
                        completion=category,
                        labelled_by="soakmod",
                        message_id=str(msg.id),
                        channel=CHANNEL,
                        at=mod_line.sent_at,
                    )
            else:
                await self.p.commands.executor.execute(LabelCommand(mod_line, category, user, None))
            out.append(1000 * (time.perf_counter() - t))
            await asyncio.sleep(0.05)
        return out

    async def api_latencies(self, http: aiohttp.ClientSession, n: int) -> tuple[list[float], list[float], int]:
        since = (datetime.fromtimestamp(self.clock.now, UTC) - timedelta(hours=1)).isoformat()
        dashboard = [
            f"/api/messages/{CHANNEL}?limit=50",
            f"/api/timeline/{CHANNEL}?since={since}",
            f"/dashboard/{CHANNEL}",
        ]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        api: list[float] = []
        mood: list[float] = []
        failed = 0
        for _ in range(n):
            for path in dashboard:
                t = time.perf_counter()
                async with http.get(self.base_url + path, headers=auth) as r:
                    body = await r.read()
                    failed += r.status != 200 or b"did not answer" in body
                api.append(1000 * (time.perf_counter() - t))
            t = time.perf_counter()
            async with http.get(f"{self.base_url}/api/mood/{CHANNEL}") as r:
                await r.read()
            mood.append(1000 * (time.perf_counter() - t))
            await asyncio.sleep(0.05)
        return api, mood, failed

    async def measure(self, http: aiohttp.ClientSession, samples: int) -> dict[str, Any]:
        stop = asyncio.Event()
        trickle = asyncio.create_task(self.trickle(TRICKLE_RATE, stop), name="soak-trickle")
        try:
            labels = await self.label_latencies(samples)
            api, mood, failed = await self.api_latencies(http, samples)
        finally:
            stop.set()
            await trickle
        return {
            "label_p95_ms": round(p95(labels) or 0, 1),
            "api_p95_ms": round(p95(api) or 0, 1),
            "mood_api_p95_ms": round(p95(mood) or 0, 1),
            "label_samples": len(labels),
            "api_samples": len(api),
            "api_failed": failed,
            "label_failed": self.failed_labels,
        }


async def query_costs(st: Any, clock: SimClock, scans: bool) -> dict[str, float | None]:
    """Each query the bot can still send, alone, on the development database (ms; one sample for scans)."""
    sample_id = await st.db["messages"].find_one({}, {"_id": 1})
    mid = sample_id["_id"] if sample_id else "none"

    async def ms(coro: Any) -> float:
        t = time.perf_counter()
        await coro
        return round(1000 * (time.perf_counter() - t), 1)

    out: dict[str, float | None] = {
        "get_message_by_id": await ms(st.get_message(mid)),
        "update_one_by_id": await ms(st.db["messages"].update_one({"_id": mid}, {"$set": {"seq": 1}})),
        "save_snapshot_upsert": await ms(st.db["mood_snapshots"].replace_one({"_id": "b"}, {"x": 1}, upsert=True)),
        "label_counts": await ms(st.label_counts()),
    }
    since = datetime.fromtimestamp(clock.now, UTC) - timedelta(hours=1)
    out["snapshots_last_hour"] = await ms(st.snapshots(CHANNEL, since, timeout_s=600))
    if scans:
        out["latest_message_by_user"] = await ms(st.latest_message_by(CHANNEL, "viewer_00007", commands=False,
                                                                     timeout_s=600))  # fmt: skip
        out["recent_messages_50"] = await ms(st.recent_messages(CHANNEL, 50, timeout_s=600))
    return out


@contextlib.asynccontextmanager
async def running(cfg: Config, clock: SimClock, baseline: bool) -> AsyncIterator[tuple[Pipeline, str]]:
    with writer_class(UpdateEachVerdict) if baseline else contextlib.nullcontext():
        async with open_pipeline(cfg, clock=clock) as p:
            services = {
                "storage": p.storage.tasks.watch(),
                "classifier": p.classifier.run(),
                "commands": p.commands.run(),
                "outbox": p.outbox.drain(log_only),
            }
            async with supervise(services), serve(p, baseline) as base:
                yield p, base


@contextlib.asynccontextmanager
async def serve(p: Pipeline, baseline: bool) -> AsyncIterator[str]:
    """The overlay app on a free port, as ``bot.app.serve_overlay`` serves it; the baseline's reads go to the
    database (the old wiring), the design's to the history."""
    app = create_overlay_app(
        cfg=p.cfg.overlay,
        categories=p.cfg.categories,
        hub=p.mood.hub,
        mood_state=p.mood.state,
        storage=p.storage if baseline else p.history,
        reset=p.mood.reset,
        health=_healthy,
        access_token=TOKEN,
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = next(int(addr[1]) for addr in runner.addresses)
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _healthy() -> dict[str, Any]:
    return {"ok": True}


def level_record(soak: Soak, start: tuple[int, int], end: tuple[int, int], seconds: float, lag: float | None,
                 db: DevDb, data_dir: Path, measured: dict[str, Any], costs: dict[str, Any] | None
                 ) -> dict[str, Any]:  # fmt: skip
    stats = soak.p.storage.writer.stats
    stored = end[0]
    return {
        "stored": stored,
        "ingest_msgs_per_s": round((end[1] - start[1]) / seconds) if seconds > 0 else None,
        "verdict_lag_p95_s": round(lag, 3) if lag is not None else None,
        "label_p95_ms": measured["label_p95_ms"],
        "api_p95_ms": measured["api_p95_ms"],
        "rss_mb": rss_mb(),
        "db_rss_mb": rss_mb(db.process.pid) if db.process else None,
        "mood_api_p95_ms": measured["mood_api_p95_ms"],
        "stored_msgs_per_s": round((end[0] - start[0]) / seconds) if seconds > 0 else None,
        "disk_mb_per_million": round(db_mb(data_dir, soak.database) / stored * 1e6, 1) if stored else None,
        "verdicts_inline": stats.verdicts_inline,
        "verdicts_late": stats.verdicts_late,
        "spooled": stats.spooled,
        "stretch_s": round(seconds, 1),
        "load": [round(x, 2) for x in os.getloadavg()],
        "query_costs_ms": costs,
        "samples": {"label": measured["label_samples"], "api": measured["api_samples"]},
        "api_failed": measured["api_failed"],
        "label_failed": measured["label_failed"],
    }


async def run_design(db: DevDb, tmp: Path, levels: list[int], baseline: bool, samples: int,
                     costs: bool, scans_at: int = 0) -> list[dict[str, Any]]:  # fmt: skip
    database = "soak_baseline" if baseline else "soak"
    cfg = config(db, database, tmp / f"spool-{database}", baseline)
    # Simulated time ends about now (the API refuses a `since` more than a week old).
    clock = SimClock(datetime.now(UTC) - timedelta(seconds=SIM_STEP_S * (levels[-1] + 100_000)))
    chat = Chat(clock, seed=3 if baseline else 1, prefix="b" if baseline else "s")
    out = []
    async with running(cfg, clock, baseline) as (p, base), aiohttp.ClientSession() as http:
        soak = Soak(db, p, chat, clock, baseline)
        soak.base_url = base
        for level in levels:
            start = (soak.stored, soak.with_verdict)
            db_pid = db.process.pid if db.process else None
            cpu0 = (cpu_s(), cpu_s(db_pid))
            p.storage.writer.lag.clear()
            say(f"{'baseline' if baseline else 'one write per message'}: filling to {level:,} stored")
            seconds = await soak.feed_until(level)
            end = (soak.stored, soak.with_verdict)
            cpu1 = (cpu_s(), cpu_s(db_pid))
            lag = p.storage.writer.lag.percentile(0.95)
            say(f"  at {soak.stored:,}: measuring !label and the dashboard API ({samples} samples each)")
            measured = await soak.measure(http, samples)
            qc = await query_costs(p.storage, clock, scans=level == scans_at) if costs else None
            rec = level_record(soak, start, end, seconds, lag, db, db.data_dir, measured, qc)
            n = max(1, end[0] - start[0])
            rec["cpu_us_per_msg"] = {
                "chatmood_and_feeder": round(1e6 * (cpu1[0] - cpu0[0]) / n, 1),
                "ferretdb": round(1e6 * (cpu1[1] - cpu0[1]) / n, 1),
            }
            say(f"  {json.dumps(rec)}")
            out.append(rec)
    return out


async def main() -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-stored", type=int, default=1_000_000, help="stop after this many stored messages")
    ap.add_argument("--baseline-stored", type=int, default=100_000, help="the baseline's level (0: skip it)")
    ap.add_argument("--samples", type=int, default=30, help="!label commands and API rounds per level")
    ap.add_argument("--no-query-costs", action="store_true", help="skip timing each query alone")
    ap.add_argument(
        "--scan-costs-at", type=int, default=100_000, help="time the queries that scan at this level only"
    )
    ap.add_argument("--data-dir", type=Path, default=None, help="FerretDB's folder (default: a temporary one)")
    args = ap.parse_args()
    levels = [n for n in (100_000, 500_000, 1_000_000) if n <= args.max_stored] or [args.max_stored]
    if args.max_stored not in levels and args.max_stored > levels[-1]:
        levels.append(args.max_stored)
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    t_start = time.time()
    result: dict[str, Any] = {"max_stored": args.max_stored, "load_at_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="chatmood-soak-") as tmp_s:
        tmp = Path(tmp_s)
        data_dir = args.data_dir or tmp / "ferretdb"
        async with run_devdb(data_dir=data_dir) as db:
            say(f"FerretDB at {db.url}, data in {data_dir}")
            if args.baseline_stored:
                baseline_samples = max(3, args.samples // 10)  # each baseline sample scans the collection
                [result["baseline"]] = await run_design(db, tmp, [args.baseline_stored], True, baseline_samples,
                                                        costs=False)  # fmt: skip
            result["levels"] = await run_design(
                db, tmp, levels, False, args.samples, costs=not args.no_query_costs, scans_at=args.scan_costs_at
            )
            result["disk_mb"] = du_mb(data_dir)
    result["elapsed_s"] = round(time.time() - t_start)
    result["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["cpu_cores"] = os.cpu_count()
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())), flush=True)
