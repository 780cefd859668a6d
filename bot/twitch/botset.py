"""The running Twitch bots: one exit stack each, so a reload can add or drop one alone.

Ownership: :class:`BotSet` holds one watcher task per running bot in its :class:`~bot.tasks.TaskSet`
(``bots.tasks``; the app watches it). A bot whose token is revoked stops alone, with the fix in the log; any
other failure of a bot ends its watcher with that error, which stops the app.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import structlog

from bot.config import Config
from bot.domain import ChatLine
from bot.errors import ChatmoodError
from bot.outbox import Outgoing
from bot.tasks import TaskSet

log = structlog.get_logger(__name__)


class Sessions(Protocol):
    """Where a stream's live periods are recorded (storage's ``stream_sessions``)."""

    async def open_session(self, channel: str, at: datetime) -> object: ...

    async def close_session(self, channel: str, at: datetime) -> object: ...


class LiveListener(Protocol):
    """Told when a channel goes live or offline (the personas' intros)."""

    def channel_live(self, channel: str, live: bool) -> None: ...


class BotSet:
    """The running Twitch bots, one exit stack each, so a reload can add or drop one alone."""

    def __init__(
        self,
        cfg: Config,
        ingest: Callable[[ChatLine], object],
        sessions: Sessions,
        live: LiveListener | None = None,
    ) -> None:
        self._cfg = cfg
        self._ingest = ingest
        self._sessions = sessions
        self._live = live
        self._bots: dict[str, Any] = {}
        self._stacks: dict[str, contextlib.AsyncExitStack] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self.tasks = TaskSet("bots")
        self.stopped: dict[str, str] = {}  # bot name -> why it stopped

    async def send(self, message: Outgoing) -> None:
        """Say ``message`` through its ``sender`` bot, or else the first running bot that reads its channel."""
        for name, bot in self._bots.items():
            if name == message.sender or (message.sender is None and message.channel in self._channels_of(name)):
                await bot.send(message.channel, message.text, message.reply_to)
                return
        log.warning("reply_not_sent", channel=message.channel, bot=message.sender,
                    reason="no running bot reads this channel")

    def _channels_of(self, name: str) -> tuple[str, ...]:
        return next((b.channels for b in self._cfg.bots if b.name == name), ())

    async def _on_live(self, channel: str, live: bool, at: datetime) -> None:
        if self._live is not None:  # a plain call first: a database that is down must not stop it
            self._live.channel_live(channel, live)
        if live:
            await self._sessions.open_session(channel, at)
        else:
            await self._sessions.close_session(channel, at)
        log.info("stream_live" if live else "stream_offline", channel=channel)

    async def start(self, bot_cfg: Any) -> None:
        from bot.twitch.bot import TwitchBot
        from bot.twitch.tokens import TokenStore

        stack = contextlib.AsyncExitStack()
        try:
            bot = await stack.enter_async_context(
                TwitchBot(
                    self._cfg.twitch,
                    bot_cfg,
                    token_store=TokenStore(self._cfg.resolve(bot_cfg.token_path)),
                    on_chat=self._ingest,
                    on_live=self._on_live,
                )
            )
        except ChatmoodError as e:
            await stack.aclose()
            self.stopped[bot_cfg.name] = str(e)
            log.error("bot_stopped", bot=bot_cfg.name, error=str(e))
            return
        except BaseException:
            await stack.aclose()
            raise
        self._bots[bot_cfg.name] = bot
        self._stacks[bot_cfg.name] = stack
        self.stopped.pop(bot_cfg.name, None)
        self._watchers[bot_cfg.name] = self.tasks.spawn(self._watch(bot_cfg.name), name=f"bot-{bot_cfg.name}")

    async def _watch(self, name: str) -> None:
        """A revoked or expired token stops that bot (with the fix in the log); the others carry on."""
        try:
            await self._bots[name].wait()
        except ChatmoodError as e:
            self.stopped[name] = str(e)
            log.error("bot_stopped", bot=name, error=str(e))
            self._watchers.pop(name, None)
            await self._close(name)

    async def _close(self, name: str) -> None:
        self._bots.pop(name, None)
        stack = self._stacks.pop(name, None)
        if stack is not None:
            await stack.aclose()

    async def stop(self, name: str) -> None:
        watcher = self._watchers.pop(name, None)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await self._close(name)

    async def apply(self, new: Config) -> None:
        old = {b.name: b for b in self._cfg.bots}
        self._cfg = new
        for name in old.keys() - {b.name for b in new.bots}:
            await self.stop(name)
        for bot_cfg in new.bots:
            if bot_cfg.name not in old or (bot_cfg.name not in self._bots and bot_cfg.name in self.stopped):
                await self.start(bot_cfg)
            elif old[bot_cfg.name] != bot_cfg and bot_cfg.name in self._bots:
                if old[bot_cfg.name].account != bot_cfg.account or old[bot_cfg.name].token_file != bot_cfg.token_file:
                    await self.stop(bot_cfg.name)
                    await self.start(bot_cfg)
                else:
                    await self._bots[bot_cfg.name].set_channels(bot_cfg.channels)

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for bot_cfg in self._cfg.bots:
            bot = self._bots.get(bot_cfg.name)
            if bot is None:
                out[bot_cfg.name] = {"ok": False, "error": self.stopped.get(bot_cfg.name, "not running")}
            else:
                status = bot.status().as_json()
                out[bot_cfg.name] = {"ok": status["connected"], **status}
        return out

    @property
    def running(self) -> int:
        return len(self._bots)

    async def aclose(self) -> None:
        for name in list(self._stacks):
            await self.stop(name)
        await self.tasks.aclose()
