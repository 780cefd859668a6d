"""Latency from a message entering ingest to the overlay WebSocket frame that reflects it.

Run with the project's venv python from the repository root (``make setup`` first):

    .venv/bin/python bench/latency.py [--rate 50] [--seconds 30] [--naive-seconds 10]

Two paths are measured in the same run, against the same local FerretDB and the same
overlay server, each read by a real WebSocket client:

- ``pipeline``: chatmood's path: ``Ingest.submit`` -> batched writer + classifier service
  (default model, batches, cache) -> mood tracker -> hub -> ``/ws/{channel}`` frame.
- ``naive``: the seeds' approach: per message, one ``insert_one`` and one prompt with free
  generation by the LLM (SmolLM2), then the mood update; messages wait their turn.

A frame reflects message *i* once its ``messages`` count (classified so far) reaches
*i + 1*. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.app import serve_overlay  # noqa: E402
from bot.commands.router import CommandRouter  # noqa: E402
from bot.config import CommandsConfig, parse_config  # noqa: E402
from bot.domain import ChatLine, Verdict  # noqa: E402
from bot.logs import configure_logging  # noqa: E402
from bot.pipeline import open_pipeline  # noqa: E402
from bot.replay.logfile import open_log  # noqa: E402
from bot.storage.devdb import run_devdb  # noqa: E402
from bot.tasks import supervise  # noqa: E402

SAMPLE = ROOT / "bot" / "data" / "sample_chat.jsonl"


def chat_texts() -> list[str]:
    router = CommandRouter(CommandsConfig(), ())  # the default command words, as ingest tells them apart
    with open_log(SAMPLE, "demo") as parsed:
        return [ln.text for ln in parsed.lines if not router.is_command(ln)]


def make_line(channel: str, i: int, text: str) -> ChatLine:
    return ChatLine(
        message_id=f"bench-{channel}-{i}",
        channel=channel,
        user_id=str(1000 + i % 50),
        user_login=f"viewer{i % 50}",
        user_name=f"Viewer{i % 50}",
        text=text,
        sent_at=datetime.now(UTC),
    )


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_s": None, "p95_s": None, "p99_s": None, "max_s": None}
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return {
        "p50_s": round(q[49], 4),
        "p95_s": round(q[94], 4),
        "p99_s": round(q[98], 4),
        "max_s": round(max(values), 4),
    }


class Watcher:
    """A WebSocket client on /ws/{channel} recording when each classified count was first seen."""

    def __init__(self) -> None:
        self.first_seen: list[float] = []  # first_seen[k] = time a frame showed >= k + 1 messages

    async def run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            now = time.perf_counter()
            count = int(json.loads(msg.data).get("messages", 0))
            while len(self.first_seen) < count:
                self.first_seen.append(now)

    def latencies(self, submitted: Sequence[float]) -> tuple[list[float], int]:
        got = [self.first_seen[i] - t for i, t in enumerate(submitted) if i < len(self.first_seen)]
        return got, len(submitted) - len(got)


async def paced(n: int, rate: float, submit: Any) -> list[float]:
    """Call ``submit(i)`` n times at ``rate`` per second on an absolute schedule; returns submit times."""
    start = time.perf_counter()
    times: list[float] = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        times.append(time.perf_counter())
        submit(i)
    return times


async def wait_for(watcher: Watcher, n: int, limit_s: float) -> None:
    """Until n messages are reflected or limit_s passes (then the rest count as unreflected)."""
    deadline = time.perf_counter() + limit_s
    while len(watcher.first_seen) < n and time.perf_counter() < deadline:  # noqa: ASYNC110 - a bench poll
        await asyncio.sleep(0.05)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    configure_logging("warning", "json")
    texts = chat_texts()
    async with run_devdb() as db:
        cfg = parse_config(
            {
                "storage": {"database": "bench_latency", "spool_dir": str(ROOT / "bench" / "out" / "spool")},
                "classifier": {"models_dir": str(ROOT / "models"), "threads": args.threads},
                "mood": {"half_life_s": 30.0},
            },
            {},
        )
        cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"mongodb_url": SecretStr(db.url)})})

        async with open_pipeline(cfg) as p:

            async def health() -> dict[str, Any]:
                return {"database": {"ok": True}}

            async with (
                serve_overlay(p, "127.0.0.1", 0, "bench-token", health) as base,
                supervise(p.services()),
                aiohttp.ClientSession() as http,
            ):
                result: dict[str, Any] = {
                    "rate_msgs_per_s": args.rate,
                    "model": p.classifier.version,
                }

                # --- chatmood's pipeline ---
                n = int(args.rate * args.seconds)
                watcher = Watcher()
                async with http.ws_connect(f"{base}/ws/bench") as ws:
                    reader = asyncio.create_task(watcher.run(ws), name="bench-ws-pipeline")
                    try:
                        submitted = await paced(
                            n, args.rate, lambda i: p.ingest.submit(make_line("bench", i, texts[i % len(texts)]))
                        )
                        await wait_for(watcher, n, 30)
                    finally:
                        reader.cancel()
                        await asyncio.gather(reader, return_exceptions=True)
                lat, missing = watcher.latencies(submitted)
                result["pipeline"] = {"messages": n, "unreflected": missing, **percentiles(lat)}

                # --- the naive path: one insert and one generated prompt per message ---
                result["naive"] = await naive(args, p, http, base, texts, db.url)

    pipe_p95 = result["pipeline"]["p95_s"]
    naive_p95 = result["naive"].get("p95_s")
    result["p95_s"] = pipe_p95
    result["naive_p95_s"] = naive_p95
    result["p95_ratio_naive_over_pipeline"] = round(naive_p95 / pipe_p95, 1) if naive_p95 and pipe_p95 else None
    result["goal_p95_le_1_5_s"] = pipe_p95 is not None and pipe_p95 <= 1.5 and result["pipeline"]["unreflected"] == 0
    return result


async def naive(
    args: argparse.Namespace, p: Any, http: aiohttp.ClientSession, base: str, texts: list[str], db_url: str
) -> dict[str, Any]:
    from pymongo import AsyncMongoClient

    from bot.llm.llama import LabelScorer
    from bot.llm.registry import resolve_model

    try:
        path = resolve_model("smollm2", ROOT / "models")
    except Exception as e:  # noqa: BLE001 - the naive path needs the LLM; without it the figure is skipped
        return {"skipped": f"no LLM for the naive path: {e}"}
    names = list(p.cfg.category_names)
    prefix = "Classify the mood of a Twitch chat message as one of: " + ", ".join(names) + ".\nAnswer with one word.\n"
    scorer = await asyncio.to_thread(
        LabelScorer, path, threads=args.threads, prefix=prefix, labels=names, suffix_template="Message: {text}\nMood:"
    )
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(db_url)
    n = int(args.rate * args.naive_seconds)
    queue: asyncio.Queue[tuple[int, ChatLine]] = asyncio.Queue()  # the seeds' handler queue: unbounded
    watcher = Watcher()
    unlabelled = 0

    async def handle() -> None:
        nonlocal unlabelled
        col = client["bench_latency"]["naive_messages"]
        while True:
            _, line = await queue.get()
            await col.insert_one({"_id": line.message_id, "text": line.text, "sent_at": line.sent_at})
            label = await asyncio.to_thread(scorer.generate_label, line.text)
            if label not in names:
                unlabelled += 1
                label = "neutral"
            probs = {c: (1.0 if c == label else 0.0) for c in names}
            p.mood.tracker.observe("naive", Verdict(label=label, confidence=1.0, probs=probs, model="naive"))
            p.mood.publish("naive")

    try:
        async with http.ws_connect(f"{base}/ws/naive") as ws:
            reader = asyncio.create_task(watcher.run(ws), name="bench-ws-naive")
            worker = asyncio.create_task(handle(), name="bench-naive-worker")
            try:
                submitted = await paced(
                    n, args.rate, lambda i: queue.put_nowait((i, make_line("naive", i, texts[i % len(texts)])))
                )
                await wait_for(watcher, n, args.naive_drain_s)
            finally:
                for t in (reader, worker):
                    t.cancel()
                await asyncio.gather(reader, worker, return_exceptions=True)
    finally:
        await client.close()
        await asyncio.to_thread(scorer.close)
    lat, missing = watcher.latencies(submitted)
    return {
        "messages": n,
        "unreflected": missing,
        "no_label_generated": unlabelled,
        "drain_limit_s": args.naive_drain_s,
        **percentiles(lat),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--naive-seconds", type=float, default=10.0)
    ap.add_argument("--naive-drain-s", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2)
    out = asyncio.run(main(ap.parse_args()))
    print(json.dumps(out))
