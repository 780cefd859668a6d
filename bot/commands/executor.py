""":class:`CommandExecutor` runs routed commands: the only place commands touch storage, the mood and chat.
A failing handler is logged and never propagates.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

import structlog

from bot.commands.format import format_mood
from bot.commands.router import Command, LabelCommand, MoodCommand, Reply, ResetCommand, clip
from bot.domain import ChatLine, MoodState

log = structlog.get_logger(__name__)


class StoredMessage(Protocol):
    """What the executor reads from a message found for ``!label`` (in memory, or storage's ``MessageDoc``)."""

    @property
    def id(self) -> object: ...
    @property
    def channel(self) -> str: ...
    @property
    def user_login(self) -> str: ...
    @property
    def text(self) -> str: ...


class Found(Protocol):
    """A lookup's answer (``bot.history.reads.Lookup``): the message, or why there is none
    (``"not_stored"``, ``"too_old"``, ``"unavailable"``)."""

    @property
    def message(self) -> StoredMessage | None: ...
    @property
    def why(self) -> str: ...


class MessageFinder(Protocol):
    """The part of :class:`bot.history.reads.History` ``!label`` uses: recent chat from memory, older from
    the database within a bounded time."""

    async def find_message(self, channel: str, message_id: str) -> Found: ...

    async def latest_message_of(self, channel: str, user_login: str) -> Found: ...


class LabelStore(Protocol):
    """The part of :class:`bot.storage.store.Storage` the commands need."""

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
        messages: MessageFinder,
        mood: Mood,
        send: Send,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._messages = messages
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

    async def _find_target(self, cmd: LabelCommand) -> Found:
        line = cmd.line
        if cmd.target_message_id is not None:
            return await self._messages.find_message(line.channel, cmd.target_message_id)
        assert cmd.target_user is not None  # the router sets exactly one target
        # The user's newest message that is not a command: never "!mood", nor this "!label ... @me" itself.
        return await self._messages.latest_message_of(line.channel, cmd.target_user)

    async def _label(self, cmd: LabelCommand) -> None:
        line = cmd.line
        found = await self._find_target(cmd)
        msg = found.message
        if msg is None:
            await self._reply(line, _not_found(cmd, found.why))
            log.info(
                "label_target_missing",
                channel=line.channel,
                user=cmd.target_user,
                id=cmd.target_message_id,
                why=found.why,
            )
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


def _not_found(cmd: LabelCommand, why: str) -> str:
    """The reply when ``!label`` finds no message: which one was meant, and why it isn't there."""
    if why == "unavailable":
        return "can't look that message up right now: the database isn't answering"
    if cmd.target_user is not None:
        if why == "too_old":
            return (
                f"@{cmd.target_user} hasn't chatted recently, and older messages take too long to look up:"
                f" reply to the message with !label {cmd.category}"
            )
        return f"no stored message from @{cmd.target_user} in this channel"
    if why == "too_old":
        return f"message {cmd.target_message_id} is too old to find quickly"
    if cmd.target_message_id == cmd.line.reply_to:
        return "that message isn't stored, so it can't be labelled"
    return f"message {cmd.target_message_id} isn't stored, so it can't be labelled"
