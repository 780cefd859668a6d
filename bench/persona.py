"""Benchmark: persona replies with the shipped model, and classification beside them.

Runs with the project's venv (``.venv/bin/python bench/persona.py``); the last line printed is one JSON object:

* ``reply_p50_s`` / ``reply_p95_s``: from a mention reaching :class:`bot.persona.service.PersonaService` to its
  reply handed to the outbox, one mention at a time (no queueing), for the first persona of
  ``bots.toml.example`` (SmolLM2-135M-Instruct Q4_0, its prompt file) with ``--threads`` (default 2) threads;
* ``tokens_per_s``: those replies' tokens over the time spent writing them (prompt evaluation included), and
  ``decode_tokens_per_s`` (the same model generating 128 tokens, minus the time of generating one) and
  ``prompt_tokens``: the prompt the model reads for one reply;
* ``classify_msgs_per_s_alone``: the default classifier (``Config()`` defaults) over distinct chat lines, batches of
  ``classifier.batch_size``, on a worker thread as the pipeline runs it, with no persona running;
* ``classify_msgs_per_s_while_generating``: the same, measured while the persona writes replies back to back on
  its own thread (``generation_busy_share``: the part of that window a reply was being written);
* ``load_avg_1m`` at the start and at the end: on a shared machine every figure above moves with it.

The naive baseline for the classifier figure is the classifier alone, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.classify.classifier import load_classifier  # noqa: E402
from bot.config import ClassifierConfig, Config, load_config  # noqa: E402
from bot.domain import ChatLine  # noqa: E402
from bot.llm.chat import ChatGenerator  # noqa: E402
from bot.llm.registry import resolve_model  # noqa: E402
from bot.outbox import Outbox, Outgoing  # noqa: E402
from bot.persona.offline import FixedMood, parse_mood  # noqa: E402
from bot.persona.prompt import build_messages  # noqa: E402
from bot.persona.service import Job, PersonaService  # noqa: E402
from bot.tasks import supervise  # noqa: E402

_WORDS = ("KEKW LUL Pog Sadge what the game is so good bad chat lets go streamer play LETSGO <3 no way W L "
          "clutch insane omg gg ez why cat music vibe hello tonight rank ranked patch nerf buff").split()
QUESTIONS = ("how is chat feeling?", "what do you think of this run?", "are you enjoying the stream?",
             "who is winning?", "say hi to chat", "what should we play next?", "is this a good strat?")


def distinct_messages(n: int) -> list[str]:
    rng = random.Random(3)
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen.setdefault(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 9))), None)
    return list(seen)


def line(channel: str, user: str, text: str, i: int) -> ChatLine:
    return ChatLine(message_id=f"bench-{i}", channel=channel, user_id=str(i), user_login=user, user_name=user,
                    text=text, sent_at=datetime.now(UTC))


def classify_for(clf: object, texts: list[str], batch: int, seconds: float) -> float:
    """Classify ``texts`` round and round (distinct batches, no cache) for ``seconds``; messages per second."""
    done = 0
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < seconds:
        chunk = texts[i: i + batch]
        clf.classify(chunk)  # type: ignore[attr-defined]
        done += len(chunk)
        i = (i + batch) % (len(texts) - batch)
    return done / (time.perf_counter() - t0)


def decode_rate(path: Path, threads: int, messages: list[dict[str, str]]) -> float:
    with ChatGenerator(path, threads=threads) as g:
        g.generate(messages, max_tokens=1, temperature=0.0, one_line=False)  # warm: the prompt is cached after
        one = g.generate(messages, max_tokens=1, temperature=0.0, one_line=False)
        many = g.generate(messages, max_tokens=128, temperature=0.0, one_line=False, repeat_penalty=1.0)
    return (many.tokens - one.tokens) / max(1e-9, many.seconds - one.seconds)


async def main() -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replies", type=int, default=20, help="mentions answered one at a time for the latency")
    p.add_argument("--threads", type=int, default=2, help="llama.cpp threads for the persona's model")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each classification window")
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    load_start = os.getloadavg()[0]

    example = load_config(ROOT / "bots.toml.example", {})
    bot = example.bots[0]
    assert bot.persona is not None
    persona = bot.persona.model_copy(update={"threads": args.threads, "reply_timeout_s": 120.0,
                                              "user_cooldown_s": 0.0})
    bot = bot.model_copy(update={"persona": persona, "channels": ("bench",)})
    cfg = Config(bots=(bot,), classifier=ClassifierConfig(models_dir=ROOT / "models",
                                                           prompt_template=ROOT / "prompts" / "classify.txt"))
    mood = FixedMood(parse_mood(cfg, "hype:61"))
    outbox = Outbox()
    service = PersonaService(cfg, mood, outbox, rng=random.Random(1))

    clf = await asyncio.to_thread(load_classifier, cfg)
    texts = distinct_messages(20_000)
    batch = cfg.classifier.batch_size
    await asyncio.to_thread(classify_for, clf, texts, batch, 1.0)  # warm
    alone = await asyncio.to_thread(classify_for, clf, texts, batch, args.seconds)

    posted: dict[str, float] = {}

    def record(message: Outgoing) -> None:
        if message.reply_to is not None:
            posted[message.reply_to] = time.perf_counter()

    latencies: list[float] = []
    async with supervise({"personas": service.run(), "outbox": outbox.drain(record)}):
        await service.prepare()
        # latency, one mention at a time
        for i in range(args.replies):
            mention = line("bench", f"viewer{i % 5}", f"@{bot.account} {QUESTIONS[i % len(QUESTIONS)]}", i)
            t0 = time.perf_counter()
            service.offer(mention)
            await service.join()
            while len(outbox):  # noqa: ASYNC110 - the drain task takes it on the next turn
                await asyncio.sleep(0.001)
            if mention.message_id in posted:
                latencies.append(posted[mention.message_id] - t0)
        stats = service.stats[bot.name]
        tokens, seconds, dropped = stats.tokens, stats.writing_s, stats.dropped
        # classification while the persona writes back to back
        spans: list[tuple[float, float]] = []  # (start, end) of each write
        writing_since: list[float] = []  # the write in progress

        async def keep_writing() -> None:
            i = 10_000
            while True:
                i += 1
                mention = line("bench", f"viewer{i % 5}", f"@{bot.account} {QUESTIONS[i % len(QUESTIONS)]}", i)
                job = Job(bot.name, "reply", "bench", time.monotonic() + 120, mention)
                writing_since[:] = [time.perf_counter()]
                await service.write(job)
                spans.append((writing_since[0], time.perf_counter()))
                writing_since.clear()

        async with supervise({"writer": keep_writing()}):
            await asyncio.sleep(0.5)
            window_start = time.perf_counter()
            beside = await asyncio.to_thread(classify_for, clf, texts, batch, args.seconds)
            window_end = time.perf_counter()
            spans += [(t, window_end) for t in writing_since]
        busy = sum(max(0.0, min(b, window_end) - max(a, window_start)) for a, b in spans)
    await service.aclose()
    path = resolve_model(persona.model, ROOT / "models")
    prompt = build_messages(bot, "reply", channel="bench", mood="chat is hype right now, 61%",
                            line=line("bench", "viewer", f"@{bot.account} how is chat feeling?", 0))
    with ChatGenerator(path, threads=args.threads) as g:
        prompt_tokens = len(g.prompt_tokens(prompt))
    decode = decode_rate(path, args.threads, prompt)
    p95 = statistics.quantiles(latencies, n=20)[18] if len(latencies) >= 2 else None
    return {
        "reply_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "reply_p95_s": round(p95, 3) if p95 is not None else None,
        "replies": len(latencies),
        "replies_dropped": dropped,
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "decode_tokens_per_s": round(decode, 1),
        "prompt_tokens": prompt_tokens,
        "threads": args.threads,
        "model": path.name,
        "classify_msgs_per_s_alone": round(alone, 1),
        "classify_msgs_per_s_while_generating": round(beside, 1),
        "generation_busy_share": round(busy / max(1e-9, window_end - window_start), 3),
        "classifier": clf.version,
        "load_avg_1m_at_start": round(load_start, 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())), flush=True)
