"""Chat commands for people: ``!mood`` (anyone), ``!label`` and ``!reset`` (moderators and the broadcaster).

Two halves:

* :class:`CommandRouter` is pure: it turns a :class:`~bot.domain.ChatLine` into a command value (or an immediate
  :class:`Reply` for usage errors, or nothing). It knows the prefix and aliases, the permissions that come from the
  message's badges (everyone < subscriber < vip < moderator < broadcaster) and the cooldowns, which use an
  injected monotonic ``clock``. It never answers the bot's own messages, and by default it never answers people
  who may not use a command, nor a cooldown hit: a bot that scolds is noisier than the spam it refuses.
* :class:`CommandExecutor` does the I/O through injected interfaces (a :class:`LabelStore`, the
  :class:`~bot.mood.MoodTracker`, a ``send`` coroutine). A failing handler is logged and never propagates.

Replies stay under Twitch's 500-character limit.
"""

from __future__ import annotations

import inspect
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

import structlog

from bot.config import CommandConfig, CommandsConfig, Role
from bot.domain import ChatLine, MoodState
from bot.mood import MoodTracker, to_oklab

log = structlog.get_logger(__name__)

MAX_REPLY = 500
CommandName = Literal["mood", "label", "reset"]
_COMMANDS: tuple[CommandName, ...] = ("mood", "label", "reset")
ROLE_RANK: dict[Role, int] = {"everyone": 0, "subscriber": 1, "vip": 2, "moderator": 3, "broadcaster": 4}
_WHO: dict[Role, str] = {
    "everyone": "everyone",
    "subscriber": "subscribers",
    "vip": "VIPs and moderators",
    "moderator": "moderators",
    "broadcaster": "the broadcaster",
}
_LOGIN = re.compile(r"^[a-z0-9_]{1,25}$")
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_MAX_COOLDOWN_KEYS = 10_000
_SELF_LABEL_LOOKBACK = 200  # recent channel messages searched when the newest one is the !label itself


# ------------------------------------------------------------------------------------------------ command values


@dataclass(frozen=True, slots=True)
class MoodCommand:
    line: ChatLine


@dataclass(frozen=True, slots=True)
class LabelCommand:
    """Label a message: by id (``target_message_id``, also the message replied to) or ``target_user``'s latest."""

    line: ChatLine
    category: str
    target_user: str | None = None
    target_message_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResetCommand:
    line: ChatLine


@dataclass(frozen=True, slots=True)
class Reply:
    """An immediate answer (usage, unknown category, not allowed): just send ``text``."""

    channel: str
    text: str
    reply_to: str | None = None


Command = MoodCommand | LabelCommand | ResetCommand | Reply


def role_of(line: ChatLine) -> Role:
    """The highest role the message's badges give its author. The channel owner counts as broadcaster even if the
    badge is missing (their login is the channel's, or their id the broadcaster id)."""
    if (
        "broadcaster" in line.badges
        or line.user_login.lower() == line.channel.lower()
        or (line.channel_id and line.user_id == line.channel_id)
    ):
        return "broadcaster"
    for role in ("moderator", "vip", "subscriber"):
        if role in line.badges:
            return role
    return "everyone"


def command_tokens(line: ChatLine, prefix: str) -> list[str] | None:
    """The words of ``line`` from its command word on (``["!label", "hype"]``), or None when it is no command.

    A Twitch reply's text starts with ``@parent_login`` (the client inserts it), so in a reply the command may be
    the second word. The prefix matches case-insensitively. Ingest uses this as its cheap pre-filter, so exactly
    the lines the router would look at reach it."""
    tokens = line.text.split()
    if line.reply_to and tokens and tokens[0].startswith("@"):
        tokens = tokens[1:]
    if not tokens:
        return None
    head = tokens[0]
    if len(head) <= len(prefix) or head[: len(prefix)].lower() != prefix.lower():
        return None
    return tokens


def is_command(line: ChatLine, prefix: str) -> bool:
    """Whether ``line`` is shaped like a command (see :func:`command_tokens`); permissions are not checked."""
    return command_tokens(line, prefix) is not None


def clip(text: str, limit: int = MAX_REPLY) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis when cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------------------ the router


class CommandRouter:
    """Parses chat lines into commands; applies permissions and cooldowns."""

    def __init__(
        self,
        cfg: CommandsConfig,
        categories: Sequence[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._last_used: dict[tuple[CommandName, str, str], float] = {}
        self._cfg = cfg
        self._categories: tuple[str, ...] = ()
        self._words: dict[str, CommandName] = {}
        self.update_config(cfg, categories)

    def update_config(self, cfg: CommandsConfig, categories: Sequence[str]) -> None:
        """Apply a reloaded config (SIGHUP). Running cooldowns are kept."""
        prefix = cfg.prefix.lower()
        words: dict[str, CommandName] = {}
        for name in _COMMANDS:
            for word in (name, *getattr(cfg, name).aliases):
                word = word.strip().lower().removeprefix(prefix)
                if not word or any(ch.isspace() for ch in word):
                    log.warning("command_alias_ignored", command=name, alias=word)
                    continue
                words.setdefault(word, name)
        self._cfg = cfg
        self._categories = tuple(categories)
        self._words = words

    @property
    def prefix(self) -> str:
        return self._cfg.prefix

    @property
    def cooldown_entries(self) -> int:
        """How many (command, channel, user) cooldown stamps are held (bounded: expired ones are pruned)."""
        return len(self._last_used)

    def _settings(self, name: CommandName) -> CommandConfig:
        settings: CommandConfig = getattr(self._cfg, name)
        return settings

    def route(self, line: ChatLine, bot_login: str) -> Command | None:
        """The command in ``line``, an immediate :class:`Reply`, or None (not a command, not allowed, cooling
        down, disabled, or the bot's own message)."""
        if line.user_login.lower() == bot_login.lower():
            return None
        prefix = self._cfg.prefix
        tokens = command_tokens(line, prefix)
        if tokens is None:
            return None
        name = self._words.get(tokens[0][len(prefix) :].lower())
        if name is None:
            return None
        settings = self._settings(name)
        if not settings.enabled:
            return None
        role = role_of(line)
        if ROLE_RANK[role] < ROLE_RANK[settings.allowed]:
            log.info("command_refused", command=name, channel=line.channel, user=line.user_login, role=role)
            if self._cfg.reply_to_unauthorized:
                text = f"@{line.user_name or line.user_login} only {_WHO[settings.allowed]} can use {prefix}{name}"
                return Reply(line.channel, clip(text), line.message_id)
            return None
        args = tokens[1:]
        cmd: Command
        if name == "mood":
            cmd = MoodCommand(line)
        elif name == "reset":
            cmd = ResetCommand(line)
        else:
            cmd = self._parse_label(line, args)
        if isinstance(cmd, Reply):  # usage errors cost no cooldown: the moderator will retry at once
            return cmd
        if not self._cooldown_ok(name, settings, line, role):
            log.debug("command_cooling_down", command=name, channel=line.channel, user=line.user_login)
            return None
        return cmd

    def _parse_label(self, line: ChatLine, args: list[str]) -> LabelCommand | Reply:
        p = self._cfg.prefix
        usage = Reply(
            line.channel,
            f"usage: {p}label <category> [@user | message-id], or reply to a message with {p}label <category>",
            line.message_id,
        )
        if not args:
            return usage
        category = args[0].lower()
        if category not in self._categories:
            shown = clip(args[0], 32)
            text = f"unknown category {shown!r}; use one of: {', '.join(self._categories)}"
            return Reply(line.channel, clip(text), line.message_id)
        if len(args) >= 2:
            target = args[1]
            if target.startswith("@"):
                user = target[1:].rstrip(",.:;!?").lower()
                if not _LOGIN.match(user):
                    return usage
                return LabelCommand(line, category, target_user=user)
            if not _MESSAGE_ID.match(target):
                return usage
            return LabelCommand(line, category, target_message_id=target)
        if line.reply_to:
            return LabelCommand(line, category, target_message_id=line.reply_to)
        return usage

    def _cooldown_ok(self, name: CommandName, settings: CommandConfig, line: ChatLine, role: Role) -> bool:
        """Check and charge the per-channel and per-user cooldowns. The broadcaster is never held back (their use
        still starts the channel's cooldown for everyone else)."""
        now = self._clock()
        channel_key = (name, line.channel, "")
        user_key = (name, line.channel, line.user_id or line.user_login)
        if role != "broadcaster":
            last_channel = self._last_used.get(channel_key)
            if last_channel is not None and now - last_channel < settings.cooldown_channel_s:
                return False
            last_user = self._last_used.get(user_key)
            if last_user is not None and now - last_user < settings.cooldown_user_s:
                return False
        if settings.cooldown_channel_s > 0 or settings.cooldown_user_s > 0:
            if len(self._last_used) >= _MAX_COOLDOWN_KEYS:
                self._prune(now)
            self._last_used[channel_key] = now
            self._last_used[user_key] = now
        return True

    def _prune(self, now: float) -> None:
        longest = max(max(c.cooldown_channel_s, c.cooldown_user_s) for c in map(self._settings, _COMMANDS))
        self._last_used = {k: t for k, t in self._last_used.items() if now - t < longest}


# -------------------------------------------------------------------------------------------------- formatting

#: Emoji squares and the colour each is drawn in (Twemoji's palette, which most chat clients resemble).
EMOJI_SQUARES: tuple[tuple[str, str], ...] = (
    ("🟥", "#dd2e44"),
    ("🟧", "#f4900c"),
    ("🟨", "#fdcb58"),
    ("🟩", "#78b159"),
    ("🟦", "#55acee"),
    ("🟪", "#aa8ed6"),
    ("🟫", "#c1694f"),
    ("⬛", "#31373d"),
    ("⬜", "#e6e7e8"),
)


_ACHROMATIC = 0.04  # OKLab chroma below which a colour reads as grey


def _lab_chroma(colour: str) -> tuple[float, float, float, float]:
    lightness, a, b = to_oklab(colour)
    return lightness, a, b, math.hypot(a, b)


def emoji_square(colour: str) -> str:
    """The emoji square nearest ``colour`` (``#rrggbb``) as people see it.

    Plain OKLab distance maps a mid grey onto the purple square (which is pale), so greys go to ⬜/⬛ by lightness
    and coloured colours are matched mostly by hue (OKLab hue direction, lightness at half weight): a muted
    orange, which is what a mostly-hype mood blended with the neutral grey looks like, is still 🟧."""
    lightness, a, b, chroma = _lab_chroma(colour)
    if chroma < _ACHROMATIC:
        return "⬜" if lightness >= 0.6 else "⬛"
    best, best_d = EMOJI_SQUARES[0][0], math.inf
    for square, ref in EMOJI_SQUARES:
        l2, a2, b2, c2 = _lab_chroma(ref)
        if c2 < _ACHROMATIC:
            continue
        d = math.hypot(0.5 * (lightness - l2), 0.15 * (a / chroma - a2 / c2), 0.15 * (b / chroma - b2 / c2))
        if d < best_d:
            best, best_d = square, d
    return best


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{round(minutes)} min"
    hours = minutes / 60
    if hours < 48:
        return f"{round(hours)} h"
    return f"{round(hours / 24)} days"


def format_mood(state: MoodState, now: datetime) -> str:
    """One short chat line, e.g. ``chat mood: hype 61% 🟧 (412 msgs, last 2 min)``; never over 500 characters.

    When chat outpaced the classifier it says how much was seen: ``(412 of 530 msgs, ...)``."""
    if state.messages == 0:
        if state.skipped:
            return clip(f"chat mood: neutral (no messages classified yet, {state.skipped} skipped)")
        return "chat mood: neutral (no messages yet)"
    share = min(100, max(0, math.floor(state.share * 100 + 0.5)))
    msgs = f"{state.messages} of {state.messages + state.skipped}" if state.skipped else f"{state.messages}"
    unit = "msg" if state.messages + state.skipped == 1 else "msgs"
    since = f", last {_span((now - state.first_at).total_seconds())}" if state.first_at else ""
    text = f"chat mood: {state.label} {share}% {emoji_square(state.colour)} ({msgs} {unit}{since})"
    return clip(text)


# ---------------------------------------------------------------------------------------------------- execution


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
    """The part of :class:`bot.storage.Storage` the commands need."""

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


class CommandExecutor:
    """Runs routed commands: the only place commands touch storage, the mood tracker and chat."""

    def __init__(
        self,
        storage: LabelStore,
        mood: MoodTracker,
        send: Send,
        clock: Callable[[], float] = time.time,
        on_reset: Callable[[str], object] | None = None,
    ) -> None:
        self._storage = storage
        self._mood = mood
        self._send = send
        self._clock = clock
        self._on_reset = on_reset

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
                if self._on_reset is not None:  # e.g. publish the fresh neutral state to the overlay
                    result = self._on_reset(line.channel)
                    if inspect.isawaitable(result):
                        await result
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
