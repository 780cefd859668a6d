""":class:`CommandExecutor` runs routed commands: the only place commands touch storage, the mood and chat.
A failing handler is logged and never propagates.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import structlog

from bot.commands.format import format_mood
from bot.commands.router import Command, LabelCommand, MoodCommand, Reply, ResetCommand, clip
from bot.domain import ChatLine, MoodState

log = structlog.get_logger(__name__)

_SELF_LABEL_LOOKBACK = 200  # recent channel messages searched when the newest one is the !label itself


class StoredMessage(Protocol):
    """What the executor reads from a stored message (storage's ``MessageDoc``)."""

    @property
    def id(self) -> object: ...
    @property
    def channel(self) -> str: ...
    @property
    def user_login(self) -> str: ...
    @property
    def text(self) -> str: ...


class _Flushable(Protocol):
    async def flush(self) -> None: ...


class LabelStore(Protocol):
    """The part of :class:`bot.storage.store.Storage` the commands need."""

    @property
    def writer(self) -> _Flushable: ...

    async def get_message(self, message_id: str) -> StoredMessage | None: ...

    async def latest_message_by(self, channel: str, user_login: str) -> StoredMessage | None: ...

    async def recent_messages(self, channel: str, limit: int = 50) -> Sequence[StoredMessage]: ...

    async def add_labeled_example(
        self,
        *,
        prompt: str,
        completion: str,
        labelled_by: str,
        message_id: str | None = None,
        channel: str | None = None,
        source: str = "chat",
        at: datetime | None = None,
    ) -> object: ...


Send = Callable[[str, str, str | None], Awaitable[None]]


class Mood(Protocol):
    """The part of :class:`~bot.mood.publisher.MoodPublisher` the commands use."""

    def state(self, channel: str) -> MoodState: ...

    def reset(self, channel: str) -> MoodState: ...


class CommandExecutor:
    """Runs routed commands: the only place commands touch storage, the mood and chat."""

    def __init__(
        self,
        storage: LabelStore,
        mood: Mood,
        send: Send,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._mood = mood
        self._send = send
        self._clock = clock

    async def execute(self, cmd: Command) -> None:
        """Run one command. Failures are logged, never raised: the bot keeps running."""
        try:
            await self._dispatch(cmd)
        except Exception:  # per-command isolation; CancelledError is a BaseException and still propagates
            line = None if isinstance(cmd, Reply) else cmd.line
            log.exception(
                "command_failed",
                command=type(cmd).__name__,
                channel=cmd.channel if isinstance(cmd, Reply) else cmd.line.channel,
                user=line.user_login if line else None,
                message_id=line.message_id if line else None,
            )

    async def send(self, channel: str, text: str, reply_to: str | None = None) -> None:
        """Send a chat line (cut to 500 characters) through the injected sender. Raises what the sender raises;
        :meth:`execute` is the isolating entry point."""
        await self._send(channel, clip(text), reply_to)

    async def _reply(self, line: ChatLine, text: str) -> None:
        await self.send(line.channel, text, line.message_id)

    async def _dispatch(self, cmd: Command) -> None:
        match cmd:
            case Reply(channel=channel, text=text, reply_to=reply_to):
                await self.send(channel, text, reply_to)
            case MoodCommand(line=line):
                state = self._mood.state(line.channel)
                await self._reply(line, format_mood(state, datetime.fromtimestamp(self._clock(), UTC)))
                log.info("command_mood", channel=line.channel, user=line.user_login, label=state.label)
            case ResetCommand(line=line):
                self._mood.reset(line.channel)
                await self._reply(line, "chat mood reset: back to neutral")
                log.info("command_reset", channel=line.channel, user=line.user_login)
            case LabelCommand():
                await self._label(cmd)

    async def _find_target(self, cmd: LabelCommand) -> StoredMessage | None:
        line = cmd.line
        # The message may have arrived moments ago and still sit in the writer's batch: write it out first.
        await self._storage.writer.flush()
        if cmd.target_message_id is not None:
            msg = await self._storage.get_message(cmd.target_message_id)
            # A moderator here labels messages from here only.
            return msg if msg is not None and msg.channel == line.channel else None
        assert cmd.target_user is not None  # the router sets exactly one target
        msg = await self._storage.latest_message_by(line.channel, cmd.target_user)
        if msg is not None and str(msg.id) == line.message_id:
            # "!label hype @me": the command itself is not the message meant; look a little further back.
            recent = await self._storage.recent_messages(line.channel, limit=_SELF_LABEL_LOOKBACK)
            msg = next(
                (m for m in recent if m.user_login == cmd.target_user and str(m.id) != line.message_id),
                None,
            )
        return msg

    async def _label(self, cmd: LabelCommand) -> None:
        line = cmd.line
        msg = await self._find_target(cmd)
        if msg is None:
            if cmd.target_user is not None:
                text = f"no stored message from @{cmd.target_user} in this channel"
            elif cmd.target_message_id == line.reply_to:
                text = "that message isn't stored, so it can't be labelled"
            else:
                text = f"message {cmd.target_message_id} isn't stored, so it can't be labelled"
            await self._reply(line, text)
            log.info("label_target_missing", channel=line.channel, user=cmd.target_user, id=cmd.target_message_id)
            return
        message_id = str(msg.id)
        await self._storage.add_labeled_example(
            prompt=msg.text,
            completion=cmd.category,
            labelled_by=line.user_login,
            message_id=message_id,
            channel=line.channel,
            source="chat",
            at=line.sent_at,
        )
        await self._reply(line, f"labelled @{msg.user_login}'s message as {cmd.category}")
        log.info(
            "command_label",
            channel=line.channel,
            user=line.user_login,
            message_id=message_id,
            label=cmd.category,
        )
