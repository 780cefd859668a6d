"""bot.mood.publisher: every change of a channel's mood reaches the hub; reset is one call."""

from __future__ import annotations

import asyncio

from bot.config import DEFAULT_CATEGORIES
from bot.mood.hub import MoodHub
from bot.mood.publisher import MoodPublisher
from bot.mood.tracker import MoodTracker
from tests.fakes.chat import chat_line, verdict
from tests.fakes.clock import FakeClock


def publisher(clock: FakeClock | None = None) -> MoodPublisher:
    tracker = MoodTracker(DEFAULT_CATEGORIES, half_life_s=60.0, neutral_prior=1.0, clock=clock or FakeClock())
    return MoodPublisher(tracker, MoodHub())


class TestMoodPublisher:
    async def test_observe_publishes_each_changed_channel_once(self) -> None:
        mood = publisher()
        async with mood.hub.subscribe("a") as sub_a, mood.hub.subscribe("b") as sub_b:
            pairs = [(chat_line("LETS GO", channel="a"), verdict("hype")) for _ in range(5)]
            pairs.append((chat_line("sadge", channel="b"), verdict("sad")))
            mood.observe(pairs)
            a, b = await sub_a.get(), await sub_b.get()
            assert a is not None and a.label == "hype" and a.messages == 5 and sub_a.conflated == 0
            assert b is not None and b.messages == 1

    async def test_reset_publishes_the_fresh_state_and_returns_it(self) -> None:
        mood = publisher()
        mood.observe([(chat_line("grr", channel="a"), verdict("angry")) for _ in range(10)])
        async with mood.hub.subscribe("a") as sub:
            fresh = mood.reset("a")
            assert (fresh.label, fresh.messages) == ("neutral", 0)
            assert await sub.get() == fresh
        assert mood.state("a").messages == 0

    async def test_tick_republishes_so_idle_chat_drifts_back(self) -> None:
        clock = FakeClock()
        mood = publisher(clock)
        mood.observe([(chat_line("KEKW", channel="a"), verdict("funny")) for _ in range(5)])
        async with mood.hub.subscribe("a") as sub:
            ticker = asyncio.create_task(mood.tick(every_s=0.01), name="test-ticker")
            try:
                first = await sub.get()
                clock.advance(600)  # ten half-lives of silence
                second = await sub.get()
                while second is not None and second.label != "neutral":
                    second = await sub.get()
            finally:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
        assert first is not None and first.label == "funny"
        assert second is not None and second.label == "neutral"
