"""EventSub chat path benchmark: documented channel.chat.message payload -> ``ChatLine`` handed to ``on_chat``.

Run with the project's venv: ``.venv/bin/python bench/twitch_chat.py [--n 20000] [--burst 5000]``.
Progress goes to stderr; the last line of stdout is ONE JSON object.

1. Conversion, same payloads, same run:
   * ``raw``: what bot/twitch/bot.py does: the payload stays a dict (``_Raw``) and ``chat_line_from_event`` reads it;
   * ``typed`` (the naive path): twitchAPI's default, parsing into ``ChannelChatMessageEvent`` objects (what
     ``listen_channel_chat_message`` hands out) and converting back with ``to_dict()``.
2. End to end over loopback: the in-repo fake Twitch pushes a burst of notifications through a real WebSocket
   into twitchAPI's thread and our loop; reports delivered msg/s and the latency from send to ``on_chat``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from twitchAPI.object.eventsub import ChannelChatMessageEvent  # noqa: E402

from bot.config import BotConfig, TwitchConfig  # noqa: E402
from bot.domain import ChatLine  # noqa: E402
from bot.twitch.bot import TwitchBot  # noqa: E402
from bot.twitch.events import chat_line_from_event  # noqa: E402
from bot.twitch.tokens import TokenSet, TokenStore  # noqa: E402
from tests.fakes.twitch import FakeTwitch, FakeUser, chat_event, emote_fragment, text_fragment  # noqa: E402


def payloads(n: int) -> list[dict[str, Any]]:
    b, c = FakeUser("600", "streamer", "Streamer"), FakeUser("42", "viewer", "Viewer")
    out = []
    for i in range(n):
        frags = [text_fragment(f"message {i} gg "), emote_fragment("Kappa", "25"), text_fragment(" nice")]
        ev = chat_event(b, c, f"message {i} gg Kappa nice", badges=["subscriber"], fragments=frags)
        out.append({"subscription": {"id": "s", "type": "channel.chat.message", "version": "1", "status": "enabled",
                                     "condition": {}, "transport": {}, "created_at": "2024-05-01T12:00:00Z",
                                     "cost": 0},
                    "metadata": {"message_id": f"m{i}", "message_type": "notification",
                                 "message_timestamp": "2024-05-01T12:00:01.123456789Z"},
                    "event": ev})
    return out


def bench_conversion(n: int) -> dict[str, float]:
    items = payloads(n)
    t0 = time.perf_counter()
    for p in items:
        chat_line_from_event(p["event"], p["metadata"])
    raw = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for p in items:
        obj = ChannelChatMessageEvent(**p)  # type: ignore[no-untyped-call]  # twitchAPI is untyped here
        d = obj.to_dict()
        chat_line_from_event(d["event"], {"message_timestamp": obj.metadata.message_timestamp})
    typed = n / (time.perf_counter() - t0)
    return {"raw_msgs_per_s": round(raw), "typed_msgs_per_s": round(typed), "speedup": round(raw / typed, 2)}


async def bench_end_to_end(burst: int) -> dict[str, float]:
    got: list[float] = []
    sent_at: dict[str, float] = {}
    done = asyncio.Event()
    want = [burst]

    def on_chat(line: ChatLine) -> None:
        got.append(time.perf_counter() - sent_at[line.message_id])
        if len(got) >= want[0]:
            done.set()

    async with FakeTwitch() as fake:
        fake.add_user("moodbot", "500")
        streamer = fake.add_user("streamer", "600")
        viewer = fake.add_user("viewer", "601")
        fake.live["streamer"] = datetime.now(UTC)
        access, refresh = fake.issue_token("moodbot")
        with tempfile.TemporaryDirectory() as tmp:
            store = TokenStore(Path(tmp) / "t.json")
            store.save(TokenSet(SecretStr(access), SecretStr(refresh)))
            cfg = TwitchConfig(client_id=FakeTwitch.CLIENT_ID, api_url=fake.api_url, auth_url=fake.auth_url,
                               eventsub_url=fake.eventsub_url)
            bot = TwitchBot(cfg, BotConfig(name="b", account="moodbot", channels=("streamer",)), token_store=store,
                            on_chat=on_chat, on_live=lambda *a: None)
            async with bot:
                await fake.wait_for(lambda: bool(fake.subs_of("channel.chat.message")))
                t0 = time.perf_counter()
                for i in range(burst):
                    mid = f"msg-{i}"
                    sent_at[mid] = time.perf_counter()
                    await fake.notify("channel.chat.message", chat_event(streamer, viewer, f"hi {i}", message_id=mid))
                await asyncio.wait_for(done.wait(), 120)
                elapsed = time.perf_counter() - t0
                burst_lat = statistics.quantiles(got, n=100)
                # Paced at 50 msg/s (what open-source mood overlays size for): latency without queueing.
                got.clear()
                done.clear()
                paced = 150
                want[0] = paced
                for i in range(paced):
                    mid = f"paced-{i}"
                    sent_at[mid] = time.perf_counter()
                    await fake.notify("channel.chat.message", chat_event(streamer, viewer, f"yo {i}", message_id=mid))
                    await asyncio.sleep(1 / 50)
                await asyncio.wait_for(done.wait(), 60)
                paced_lat = statistics.quantiles(got, n=100)
    return {"e2e_burst_msgs_per_s": round(burst / elapsed),
            "e2e_burst_latency_p50_ms": round(burst_lat[49] * 1000, 2),
            "e2e_burst_latency_p99_ms": round(burst_lat[98] * 1000, 2),
            "e2e_paced50_latency_p50_ms": round(paced_lat[49] * 1000, 2),
            "e2e_paced50_latency_p99_ms": round(paced_lat[98] * 1000, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--burst", type=int, default=5_000)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print("conversion ...", file=sys.stderr)
    result: dict[str, Any] = {"bench": "twitch_chat", "n": args.n, "burst": args.burst}
    result |= bench_conversion(args.n)
    print("end to end ...", file=sys.stderr)
    result |= asyncio.run(bench_end_to_end(args.burst))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
