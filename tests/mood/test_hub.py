"""bot.mood.hub: the latest mood per channel, fanned out to subscribers through one conflating slot each."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bot.domain import MoodState
from bot.mood.hub import MoodHub


def state(channel: str, label: str = "hype", colour: str = "#ff8c00") -> MoodState:
    return MoodState(channel=channel, label=label, share=0.6, valence=0.5, colour=colour)


async def wait_for(predicate: Callable[[], bool], what: str, limit_s: float = 5.0) -> None:
    try:
        async with asyncio.timeout(limit_s):
            while not predicate():  # noqa: ASYNC110 - the reader task's progress has no event to await
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for: {what}") from None


class TestHub:
    """MoodHub keeps the latest state per channel and one conflating slot per subscriber."""

    async def test_latest_and_delivery(self) -> None:
        """A published state becomes the channel's latest and reaches its subscribers, not other channels'."""
        hub = MoodHub()
        assert hub.latest("a") is None
        async with hub.subscribe("a") as sub_a, hub.subscribe("b") as sub_b:
            hub.publish(state("a"))
            assert hub.latest("a") == state("a")
            assert await sub_a.get() == state("a")
            assert sub_b.conflated == 0
            hub.publish(state("b", "sad", "#3b6fd8"))
            assert (await sub_b.get()).label == "sad"  # type: ignore[union-attr]

    async def test_slow_subscriber_gets_only_the_newest(self) -> None:
        """States published while a subscriber is busy replace each other: it then sees only the newest."""
        hub = MoodHub()
        async with hub.subscribe("a") as sub:
            for label in ("hype", "funny", "sad", "angry"):
                hub.publish(state("a", label))
            assert (await sub.get()).label == "angry"  # type: ignore[union-attr]
            assert sub.conflated == 3

    async def test_unsubscribe_on_exit_and_close_ends_iteration(self) -> None:
        """Leaving ``subscribe`` removes the subscriber; ``close`` ends a waiting ``async for``."""
        hub = MoodHub()
        seen: list[str] = []

        async def reader() -> None:
            async with hub.subscribe("a") as sub:
                async for st in sub:
                    seen.append(st.label)

        task = asyncio.create_task(reader(), name="test-hub-reader")
        await wait_for(lambda: hub.subscriber_count("a") == 1, "subscribed")
        hub.publish(state("a", "love"))
        await wait_for(lambda: seen == ["love"], "delivered")
        hub.close()
        await asyncio.wait_for(task, 2)
        assert hub.subscriber_count("a") == 0 and hub.subscriber_count() == 0

    async def test_forget_drops_the_latest_but_keeps_subscribers(self) -> None:
        hub = MoodHub()
        async with hub.subscribe("a") as sub:
            hub.publish(state("a"))
            hub.forget("a")
            assert hub.latest("a") is None and hub.subscriber_count("a") == 1
            assert await sub.get() == state("a")  # what was already handed over stays delivered

    async def test_a_closed_subscription_takes_nothing_more(self) -> None:
        hub = MoodHub()
        async with hub.subscribe("a") as sub:
            sub.close()
            hub.publish(state("a"))
            assert sub.closed and await sub.get() is None
