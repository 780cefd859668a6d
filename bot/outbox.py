"""What chatmood wants to say in chat: replies to commands now, personas' lines later.

Producers ``post`` (never blocking on Twitch's rate limits); one service task ``drain``\\s the queue into
whatever sends: the Twitch bots in ``chatmood run``, the log (or the terminal) in a replay or the demo.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Outgoing:
    channel: str
    text: str
    reply_to: str | None = None  # the message id this answers
    sender: str | None = None  # the bot (by name) that should say it; None: the bot that reads the channel


Sender = Callable[[Outgoing], Awaitable[object] | object]


class Outbox:
    def __init__(self, maxsize: int = 1_000) -> None:
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0

    def put(self, message: Outgoing) -> bool:
        """Queue ``message``; False (logged) when the queue is full."""
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("outgoing_dropped", channel=message.channel, reason="outbox full")
            return False
        return True

    async def post(self, channel: str, text: str, reply_to: str | None = None) -> None:
        """``put`` with the signature of a chat sender (what :class:`~bot.commands.executor.CommandExecutor` takes)."""
        self.put(Outgoing(channel, text, reply_to))

    def __len__(self) -> int:
        return self._queue.qsize()

    async def drain(self, send: Sender) -> None:
        """Service loop: hand every queued message to ``send``, one at a time; a failed send is logged."""
        while True:
            message = await self._queue.get()
            try:
                result = send(message)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("send_failed", channel=message.channel)


def log_only(message: Outgoing) -> None:
    """The sender where no Twitch connection exists (replay, benchmarks)."""
    log.info("reply_not_sent", channel=message.channel, text=message.text, reason="no Twitch connection")
