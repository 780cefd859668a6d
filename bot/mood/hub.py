"""MoodHub: fans the latest mood of each channel out to whoever is watching.

The mood tracker's owner calls :meth:`MoodHub.publish` with every new
:class:`~bot.domain.MoodState`; each overlay WebSocket holds a
:class:`Subscription`. A subscription is a conflating queue of one slot: a
slow browser always gets the newest state and never a growing backlog, so a
stalled client costs one reference, whatever the chat rate.

The hub runs no tasks of its own and must be used from the event loop's
thread (``publish`` is a plain call; it never awaits).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog

from bot.domain import MoodState

log = structlog.get_logger(__name__)


class Subscription:
    """One watcher of one channel: iterate it to receive the newest states.

    ``async for state in sub`` waits for the next state published after the
    previous one was taken; states published in between replace each other
    (``conflated`` counts how many were dropped that way). Iteration ends when
    the subscription is closed.
    """

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.conflated = 0
        self._pending: MoodState | None = None
        self._wakeup = asyncio.Event()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, state: MoodState) -> None:
        """Keep ``state`` as the one pending state, replacing an untaken older one."""
        if self._closed:
            return
        if self._pending is not None:
            self.conflated += 1
        self._pending = state
        self._wakeup.set()

    def close(self) -> None:
        """End iteration; a waiting ``async for`` stops at once."""
        self._closed = True
        self._pending = None
        self._wakeup.set()

    async def get(self) -> MoodState | None:
        """The next state, or None once closed."""
        while True:
            if self._closed:
                return None
            if self._pending is not None:
                state, self._pending = self._pending, None
                self._wakeup.clear()
                return state
            self._wakeup.clear()
            await self._wakeup.wait()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> MoodState:
        state = await self.get()
        if state is None:
            raise StopAsyncIteration
        return state


class MoodHub:
    """The latest mood per channel, and the subscriptions that want to hear about changes."""

    def __init__(self) -> None:
        self._latest: dict[str, MoodState] = {}
        self._subs: dict[str, set[Subscription]] = {}

    def publish(self, state: MoodState) -> None:
        """Record ``state`` as its channel's latest and hand it to every subscriber (never blocks)."""
        self._latest[state.channel] = state
        for sub in self._subs.get(state.channel, ()):
            sub.offer(state)

    def latest(self, channel: str) -> MoodState | None:
        """The last state published for ``channel``, if any."""
        return self._latest.get(channel)

    def forget(self, channel: str) -> None:
        """Drop the stored latest state of ``channel`` (subscribers stay)."""
        self._latest.pop(channel, None)

    def subscriber_count(self, channel: str | None = None) -> int:
        """Open subscriptions for ``channel``, or for all channels when None."""
        if channel is not None:
            return len(self._subs.get(channel, ()))
        return sum(len(s) for s in self._subs.values())

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        """``async with hub.subscribe(ch) as sub: async for state in sub: ...``; unsubscribes on exit."""
        sub = Subscription(channel)
        self._subs.setdefault(channel, set()).add(sub)
        log.debug("hub_subscribed", channel=channel, subscribers=len(self._subs[channel]))
        try:
            yield sub
        finally:
            sub.close()
            subs = self._subs.get(channel)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[channel]
            log.debug("hub_unsubscribed", channel=channel, subscribers=self.subscriber_count(channel))

    def close(self) -> None:
        """Close every subscription (their iterations end); used at shutdown."""
        for subs in self._subs.values():
            for sub in subs:
                sub.close()
