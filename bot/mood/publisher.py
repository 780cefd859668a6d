"""The live mood of every channel: the tracker's state, handed to the hub whenever it changes.

:class:`MoodPublisher` is the one way the mood changes: verdicts are observed, a reset resets, and either way
the new state is published to the hub the overlays listen to. ``!reset``, the dashboard's reset button and the
API all call :meth:`MoodPublisher.reset`. Plain calls on the loop thread; :meth:`tick` is a service loop that
republishes every second, so an idle chat's colour follows the decay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

from bot.domain import ChatLine, MoodState, Verdict
from bot.mood.hub import MoodHub
from bot.mood.tracker import MoodTracker

log = structlog.get_logger(__name__)


class MoodPublisher:
    def __init__(self, tracker: MoodTracker, hub: MoodHub) -> None:
        self.tracker = tracker
        self.hub = hub

    def state(self, channel: str) -> MoodState:
        return self.tracker.state(channel)

    def publish(self, channel: str) -> MoodState:
        state = self.tracker.state(channel)
        self.hub.publish(state)
        return state

    def observe(self, pairs: Iterable[tuple[ChatLine, Verdict]]) -> None:
        """Fold verdicts into their channels' moods, then publish each changed channel once."""
        channels: set[str] = set()
        for line, verdict in pairs:
            self.tracker.observe(line.channel, verdict)
            channels.add(line.channel)
        for channel in channels:
            self.publish(channel)

    def reset(self, channel: str) -> MoodState:
        """Back to neutral, published at once; returns the fresh state."""
        self.tracker.reset(channel)  # logs mood_reset
        return self.publish(channel)

    async def tick(self, every_s: float = 1.0) -> None:
        """Service loop: republish every channel every ``every_s`` so the overlay follows the decay."""
        while True:
            await asyncio.sleep(every_s)
            for channel in self.tracker.channels():
                self.publish(channel)
