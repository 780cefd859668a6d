"""Twitch's chat send limits for one bot account, as a pure decision plus an async gate.

Twitch's rules for a bot account (https://dev.twitch.tv/docs/chat/#rate-limits):

- 20 messages per 30 s across the account, or 100 per 30 s when sending in a channel where the
  account is the broadcaster or a moderator (``set_privileged``);
- when not a moderator, a 1 s slow mode per channel;
- an identical message repeated within 30 s in a channel is silently dropped by Twitch;
- at most 500 characters.

Choice for repeats: :class:`SendLimiter` *drops* an identical text within 30 s (``acquire`` returns
``None`` and logs ``send_dropped_duplicate``) instead of altering it with an invisible marker. A
repeated bot reply carries nothing new for chat, and disguising repeats is exactly what the rule is
there to stop.

``next_allowed(channel, text, now)`` is pure (no clock, no I/O) so tests drive it with numbers;
``acquire`` applies it with the injected clock and sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)

WINDOW_S = 30.0
LIMIT = 20
PRIVILEGED_LIMIT = 100
SLOW_MODE_S = 1.0
DUPLICATE_WINDOW_S = 30.0
MAX_CHARS = 500
ELLIPSIS = "…"


def truncate(text: str, limit: int = MAX_CHARS) -> str:
    """``text`` cut to ``limit`` code points on a word boundary, ending in an ellipsis when cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ELLIPSIS)]
    space = cut.rfind(" ")
    if space >= limit // 2:  # a boundary that keeps most of the text; else cut mid-word
        cut = cut[:space]
    return cut.rstrip() + ELLIPSIS


class SendLimiter:
    """Per-account gate. One instance per bot account; not shared between accounts."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        *,
        max_wait_s: float = 60.0,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._max_wait_s = max_wait_s
        self._sent: deque[float] = deque()  # account-wide send times, oldest first
        self._last_in_channel: dict[str, float] = {}
        self._recent_texts: dict[str, deque[tuple[float, str]]] = {}
        self._privileged: set[str] = set()
        self._lock = asyncio.Lock()

    def set_privileged(self, channel: str, privileged: bool) -> None:
        """Record whether the account is broadcaster or moderator in ``channel``."""
        if privileged and channel not in self._privileged:
            log.info("send_limit_privileged", channel=channel)
            self._privileged.add(channel)
        elif not privileged and channel in self._privileged:
            log.info("send_limit_unprivileged", channel=channel)
            self._privileged.discard(channel)

    def is_privileged(self, channel: str) -> bool:
        return channel in self._privileged

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - WINDOW_S:
            self._sent.popleft()
        for texts in self._recent_texts.values():
            while texts and texts[0][0] <= now - DUPLICATE_WINDOW_S:
                texts.popleft()

    def next_allowed(self, channel: str, text: str, now: float) -> float | None:
        """When ``text`` may be sent to ``channel``: a time ``<= now`` means now; ``None`` means never (duplicate).

        Pure with respect to time: it only forgets what fell out of the windows before ``now``.
        """
        self._expire(now)
        if any(t == text for _, t in self._recent_texts.get(channel, ())):
            return None
        privileged = channel in self._privileged
        at = now
        limit = PRIVILEGED_LIMIT if privileged else LIMIT
        if len(self._sent) >= limit:
            # The window frees a slot when the (len - limit + 1)-th oldest send leaves it.
            at = max(at, self._sent[len(self._sent) - limit] + WINDOW_S)
        if not privileged and channel in self._last_in_channel:
            at = max(at, self._last_in_channel[channel] + SLOW_MODE_S)
        return at

    def record(self, channel: str, text: str, now: float) -> None:
        """Note that ``text`` was sent to ``channel`` at ``now``."""
        self._sent.append(now)
        self._last_in_channel[channel] = now
        self._recent_texts.setdefault(channel, deque()).append((now, text))

    async def acquire(self, channel: str, text: str) -> str | None:
        """Wait until ``text`` may go to ``channel``; the text to send (truncated), or ``None`` to drop it."""
        text = truncate(text)
        if not text:
            log.warning("send_dropped_empty", channel=channel)
            return None
        async with self._lock:  # first come, first served
            while True:
                now = self._clock()
                at = self.next_allowed(channel, text, now)
                if at is None:
                    log.info("send_dropped_duplicate", channel=channel, window_s=DUPLICATE_WINDOW_S)
                    return None
                if at <= now:
                    self.record(channel, text, now)
                    return text
                if at - now > self._max_wait_s:
                    log.warning("send_dropped_backlog", channel=channel, wait_s=round(at - now, 3))
                    return None
                await self._sleep(at - now)
