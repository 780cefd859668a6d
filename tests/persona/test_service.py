"""The persona service with real llama.cpp on tiny generated GGUFs: blocklist, fallbacks, intros, moderators,
and the time budget inside the real message path (real FerretDB), where chat ingest keeps its pace meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from bot.config import DEFAULT_CATEGORIES, BotConfig, Config, OverlayConfig, PersonaConfig, StorageConfig
from bot.domain import MoodState
from bot.mood.hub import MoodHub
from bot.outbox import Outbox, Outgoing
from bot.persona.offline import FixedMood
from bot.persona.service import PersonaService
from bot.pipeline import open_pipeline
from bot.tasks import supervise
from bot.web.server import create_overlay_app
from tests.fakes.chat import chat_line
from tests.fakes.clock import FakeClock
from tests.fakes.gguf import write_tiny_llama


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("persona") / "tiny-chat.gguf")


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Big enough that 256 greedy tokens take well over half a second, and it writes no line break before."""
    return write_tiny_llama(tmp_path_factory.mktemp("persona") / "slow-chat.gguf", n_embd=512, n_layer=4,
                            n_ff=2048, n_head=8)


def config(*bots: BotConfig, **kw: Any) -> Config:
    return Config(bots=bots, **kw)


def persona_bot(model: str, *, name: str = "chatty", account: str = "chatty_a",
                channels: tuple[str, ...] = ("one", "two"), **kw: Any) -> BotConfig:
    settings: dict[str, Any] = {"model": model, "temperature": 0.0, "user_cooldown_s": 0.0, **kw}
    return BotConfig(name=name, account=account, channels=channels, persona=PersonaConfig(**settings))


@contextlib.asynccontextmanager
async def running(service: PersonaService, outbox: Outbox) -> AsyncIterator[list[Outgoing]]:
    sent: list[Outgoing] = []
    try:
        async with supervise({"personas": service.run(), "outbox": outbox.drain(sent.append)}):
            yield sent
    finally:
        await service.aclose()


async def settled(service: PersonaService, outbox: Outbox) -> None:
    await asyncio.wait_for(service.join(), 30)
    while len(outbox):  # noqa: ASYNC110 - the drain task empties it on the next turn of the loop
        await asyncio.sleep(0.01)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


class TestBlocklist:
    async def test_a_blocked_word_drops_the_reply(self, tiny: Path) -> None:
        """Greedy sampling writes the same reply to the same prompt; with a word of it blocklisted (a reload), the
        reply to the identical mention in another channel is dropped and logged, and nothing is sent."""
        outbox = Outbox()
        cfg = config(persona_bot(str(tiny)))
        service = PersonaService(cfg, FixedMood(None), outbox, rng=random.Random(0))
        with capture_logs() as logs:
            async with running(service, outbox) as sent:
                service.offer(chat_line("@chatty_a what do you think", user="vic", channel="one"))
                await settled(service, outbox)
                assert len(sent) == 1 and sent[0].sender == "chatty" and sent[0].channel == "one"
                word = next(w for w in re.findall(r"\w+", sent[0].text) if len(w) >= 2)

                service.update(config(persona_bot(str(tiny), blocklist=(word,))))
                service.offer(chat_line("@chatty_a what do you think", user="vic", channel="two"))
                await settled(service, outbox)
        assert len(sent) == 1
        dropped = events(logs, "persona_reply_dropped")
        assert [e["reason"] for e in dropped] == ["blocked"] and dropped[0]["channel"] == "two"
        assert service.status()["chatty"]["replies_dropped"] == 1
        assert service.status()["chatty"]["last_drop_reason"] == "blocked"


class TestModels:
    async def test_a_model_is_loaded_once_however_many_ask(self, tiny: Path) -> None:
        cfg = config(persona_bot(str(tiny)), persona_bot(str(tiny), name="other", account="other_b"))
        service = PersonaService(cfg, FixedMood(None), Outbox())
        try:
            with capture_logs() as logs:
                await asyncio.gather(service.prepare(), service.prepare(), service.prepare())
        finally:
            await service.aclose()
        assert len(events(logs, "chat_model_loaded")) == 1


class TestFallback:
    async def test_a_model_that_fails_to_load_falls_back_to_the_next(self, tiny: Path, tmp_path: Path) -> None:
        broken = tmp_path / "broken.gguf"
        broken.write_bytes(b"GGUF" + bytes(200))
        outbox = Outbox()
        cfg = config(persona_bot(str(broken), fallback_models=(str(tmp_path / "missing.gguf"), str(tiny))))
        service = PersonaService(cfg, FixedMood(None), outbox)
        with capture_logs() as logs:
            async with running(service, outbox) as sent:
                service.offer(chat_line("@chatty_a hello", channel="one"))
                await settled(service, outbox)
                status = service.status()["chatty"]
        assert len(sent) == 1
        assert status["model"] == tiny.name and status["model_loaded"] and status["ok"]
        failed = [e["model"] for e in events(logs, "persona_model_unavailable")]
        assert failed == [str(broken), str(tmp_path / "missing.gguf")]
        assert events(logs, "persona_replied")[0]["model"] == tiny.name

    async def test_no_usable_model_drops_and_reports(self, tmp_path: Path) -> None:
        outbox = Outbox()
        service = PersonaService(config(persona_bot(str(tmp_path / "missing.gguf"))), FixedMood(None), outbox)
        with capture_logs() as logs:
            async with running(service, outbox) as sent:
                service.offer(chat_line("@chatty_a hello", channel="one"))
                await settled(service, outbox)
                status = service.status()["chatty"]
        assert sent == []
        assert [e["reason"] for e in events(logs, "persona_reply_dropped")] == ["no_model"]
        assert status["state"] == "failed" and status["ok"] is False and not status["model_loaded"]


class TestIntro:
    async def test_said_once_per_live_period_even_when_several_bots_report_it(self, tiny: Path) -> None:
        outbox = Outbox()
        cfg = config(persona_bot(str(tiny), intro_message="hi chat, moody here <3"),
                     persona_bot(str(tiny), name="quiet", account="quiet_b"))
        service = PersonaService(cfg, FixedMood(None), outbox)
        async with running(service, outbox) as sent:
            for _ in range(2):
                service.channel_live("one", True)
            service.channel_live("one", False)
            service.channel_live("one", True)
            await settled(service, outbox)
        assert sent == [Outgoing("one", "hi chat, moody here <3", None, sender="chatty")] * 2


class AngryMood:
    """A mood source whose angry share the test sets."""

    def __init__(self) -> None:
        self.angry = 0.0

    def state(self, channel: str) -> MoodState:
        shares = {"angry": self.angry, "neutral": 1 - self.angry}
        label = "angry" if self.angry > 0.5 else "neutral"
        return MoodState(channel, label, max(shares.values()), -self.angry, "#d62828", shares, messages=10)


class TestModerator:
    async def test_calms_a_channel_that_stays_angry_at_most_once_per_interval(self, tiny: Path) -> None:
        clock = FakeClock(0.0)
        mood = AngryMood()
        outbox = Outbox()
        bot = persona_bot(str(tiny), channels=("one",), role="moderator", angry_threshold=0.4, angry_for_s=30,
                          calm_interval_s=300)
        service = PersonaService(config(bot), mood, outbox, clock=clock)
        with capture_logs() as logs:
            async with running(service, outbox) as sent:

                async def step(seconds: float, angry: float) -> int:
                    clock.advance(seconds)
                    mood.angry = angry
                    service.check_mood()
                    await settled(service, outbox)
                    return len(events(logs, "persona_calming"))

                assert await step(0, 0.6) == 0  # angry from now
                assert await step(20, 0.6) == 0
                assert await step(5, 0.3) == 0  # a dip below the threshold starts the count again
                assert await step(5, 0.6) == 0
                assert await step(29, 0.6) == 0
                assert await step(1, 0.6) == 1  # 30 s above the threshold
                assert await step(60, 0.9) == 1  # still angry, but calmed less than calm_interval_s ago
                assert await step(240, 0.9) == 2
        dropped = events(logs, "persona_reply_dropped")
        assert len(sent) + len(dropped) == 2 and all(e["reason"] != "timeout" for e in dropped)
        assert all(m.reply_to is None and m.sender == "chatty" and m.channel == "one" for m in sent)
        assert all(not m.text.startswith(("/", ".")) for m in sent)

    async def test_a_chatter_never_calms(self, tiny: Path) -> None:
        clock = FakeClock(0.0)
        mood = AngryMood()
        mood.angry = 0.9
        service = PersonaService(config(persona_bot(str(tiny), angry_for_s=0)), mood, Outbox(), clock=clock)
        with capture_logs() as logs:
            for _ in range(5):
                service.check_mood()
                clock.advance(1000)
        assert events(logs, "persona_calming") == []


class TestTimeBudget:
    async def test_a_late_reply_is_dropped_while_ingest_keeps_its_pace(
        self, slow: Path, storage_config: StorageConfig
    ) -> None:
        """The model runs on its own thread: while it writes (until the budget ends it), the event loop keeps
        taking chat; the reply that missed its budget is logged and never sent."""
        bot = persona_bot(str(slow), channels=("chan",), max_tokens=256, reply_timeout_s=0.6)
        cfg = Config(storage=storage_config, bots=(bot,), classifier={"embedding_model": ""})  # type: ignore[arg-type]
        sent: list[Outgoing] = []
        gaps: list[float] = []

        async def heartbeat() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        with capture_logs() as logs:
            async with open_pipeline(cfg) as p, supervise({**p.services(), "outbox": p.outbox.drain(sent.append)}):
                assert p.personas is not None
                async with asyncio.timeout(30):
                    while not p.personas.status()["chatty"]["model_loaded"]:  # noqa: ASYNC110 - loads off-loop
                        await asyncio.sleep(0.05)
                async with supervise({"heartbeat": heartbeat()}):
                    p.ingest.submit(chat_line("@chatty_a tell me a long story", channel="chan"))
                    for i in range(120):  # 100 msg/s for 1.2 s: the budget ends in the middle
                        p.ingest.submit(chat_line(f"chat keeps going {i}", user=f"u{i % 7}", channel="chan"))
                        await asyncio.sleep(0.01)
                await p.settle(["chan"])
                assert p.ingest.stats.received == 121
                assert await p.storage.count_messages("chan") == 121
                assert p.mood.state("chan").messages == 121  # every line classified meanwhile
        assert sent == []
        dropped = events(logs, "persona_reply_dropped")
        assert len(dropped) == 1 and dropped[0]["reason"] == "timeout"
        assert dropped[0]["stopped"] == "deadline" and 0 < dropped[0]["tokens"] < 256
        # generation ran ~0.6 s of the 1.2 s; on the loop it would have stalled it that long
        assert max(gaps) < 0.3, f"the event loop stalled for {max(gaps):.3f} s"


class TestDashboard:
    async def test_shows_each_persona_and_what_it_did(self, tiny: Path) -> None:
        """The dashboard lists every persona with its model, replies sent and dropped, and the last reply."""
        outbox = Outbox()
        cfg = config(persona_bot(str(tiny)), persona_bot("missing.gguf", name="other", account="other_b"))
        service = PersonaService(cfg, FixedMood(None), outbox)
        async with running(service, outbox) as sent:
            service.offer(chat_line("@chatty_a hi", channel="one"))
            service.offer(chat_line("@other_b hi", channel="one"))
            await settled(service, outbox)
            assert len(sent) == 1
            hub = MoodHub()
            app = create_overlay_app(
                cfg=OverlayConfig(), categories=DEFAULT_CATEGORIES, hub=hub, mood_state=FixedMood(None).state,
                storage=None, reset=FixedMood(None).state, health=_no_health, access_token="tok",
                personas=service.status,
            )
            runner = web.AppRunner(app)
            await runner.setup()
            try:
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                port = runner.addresses[0][1]
                async with aiohttp.ClientSession() as http, http.get(
                    f"http://127.0.0.1:{port}/dashboard/one", headers={"Authorization": "Bearer tok"}
                ) as r:
                    html = await r.text()
            finally:
                await runner.cleanup()
                hub.close()
        rows = re.findall(r'<tr data-bot="(\w+)">(.*?)</tr>', html, re.S)
        assert [name for name, _ in rows] == ["chatty", "other"]
        chatty, other = (re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).split() for _, row in rows)
        assert chatty[:4] == ["chatty", "@chatty_a", "chatter", tiny.name] and chatty[4:6] == ["1", "0"]
        assert other[:4] == ["other", "@other_b", "chatter", "failed"] and other[4:7] == ["0", "1", "(no_model)"]


async def _no_health() -> dict[str, Any]:
    return {}
