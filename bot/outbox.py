"""What chatmood wants to say in chat: replies to commands now, personas' lines later.

Producers ``post`` (never blocking on Twitch's rate limits); one service task ``drain``\\s the queue into
whatever sends: the Twitch bots in ``chatmood run``, the log (or the terminal) in a replay or the demo.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

import structlog

from bot.domain import ChatLine

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


class Loopback:
    """Chat without Twitch (the demo): a bot's line (an ``Outgoing`` with a ``sender``) is printed and fed back into
    ingest as that bot's own chat line, as Twitch shows everyone what a bot says (so it is stored and reaches the
    dashboard); anything else goes to :func:`log_only`. ``accounts`` maps bot names to logins.

    Replayed chat keeps its recorded times, so a bot's line is stamped just after the newest line that went
    through :meth:`submit` (the replay's way into ingest)."""

    def __init__(self, ingest: Callable[[ChatLine], object], accounts: Mapping[str, str], out: TextIO) -> None:
        self._ingest = ingest
        self._accounts = dict(accounts)
        self._out = out
        self._chat_time: datetime | None = None

    def submit(self, line: ChatLine) -> None:
        if self._chat_time is None or line.sent_at > self._chat_time:
            self._chat_time = line.sent_at
        self._ingest(line)

    def __call__(self, message: Outgoing) -> None:
        account = self._accounts.get(message.sender) if message.sender is not None else None
        if account is None:
            log_only(message)
            return
        print(f"[#{message.channel}] {account}: {message.text}", file=self._out, flush=True)
        at = self._chat_time + timedelta(milliseconds=1) if self._chat_time is not None else datetime.now(UTC)
        self._chat_time = at
        self._ingest(ChatLine(
            message_id=f"{account}-{uuid.uuid4().hex}", channel=message.channel, user_id=f"bot:{account}",
            user_login=account, user_name=account, text=message.text, sent_at=at, reply_to=message.reply_to,
        ))
