"""Chat commands for people: ``!mood`` (anyone), ``!label`` and ``!reset`` (moderators and the broadcaster).

* :class:`CommandRouter` (here) is pure: it turns a :class:`~bot.domain.ChatLine` into a command value (or an immediate
  :class:`Reply` for usage errors, or nothing). It knows the prefix and aliases, the permissions that come from the
  message's badges (everyone < subscriber < vip < moderator < broadcaster) and the cooldowns, which use an
  injected monotonic ``clock``. It never answers the bot's own messages, and by default it never answers people
  who may not use a command, nor a cooldown hit: a bot that scolds is noisier than the spam it refuses.
* :class:`~bot.commands.executor.CommandExecutor` runs what the router returns.

Replies stay under Twitch's 500-character limit.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog

from bot.config import CommandConfig, CommandsConfig, Role, command_word
from bot.domain import ChatLine

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
    """The words of ``line`` from its prefixed first word on (``["!label", "hype"]``), or None when it has none.

    A Twitch reply's text starts with ``@parent_login`` (the client inserts it), so in a reply the command may be
    the second word. The prefix matches case-insensitively. Whether that word is a command the router knows is
    :meth:`CommandRouter.is_command`'s question."""
    tokens = line.text.split()
    if line.reply_to and tokens and tokens[0].startswith("@"):
        tokens = tokens[1:]
    if not tokens:
        return None
    head = tokens[0]
    if len(head) <= len(prefix) or head[: len(prefix)].lower() != prefix.lower():
        return None
    return tokens


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
        bot_accounts: Collection[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._last_used: dict[tuple[CommandName, str, str], float] = {}
        self._cfg = cfg
        self._categories: tuple[str, ...] = ()
        self._words: dict[str, CommandName] = {}
        self._bots: frozenset[str] = frozenset()
        self.update_config(cfg, categories, bot_accounts)

    def update_config(self, cfg: CommandsConfig, categories: Sequence[str], bot_accounts: Collection[str] = ()) -> None:
        """Apply a reloaded config (SIGHUP). Running cooldowns are kept. ``bot_accounts``: the logins of every
        configured bot; their messages are never commands (no bot answers a bot, or itself)."""
        words: dict[str, CommandName] = {}
        for name in _COMMANDS:
            for word in (name, *getattr(cfg, name).aliases):
                word = command_word(word, cfg.prefix)  # the normalisation CommandsConfig checks uniqueness with
                if not word or any(ch.isspace() for ch in word):
                    log.warning("command_alias_ignored", command=name, alias=word)
                    continue
                words.setdefault(word, name)
        self._cfg = cfg
        self._categories = tuple(categories)
        self._words = words
        self._bots = frozenset(a.lower() for a in bot_accounts)

    @property
    def prefix(self) -> str:
        return self._cfg.prefix

    def _command_word(self, line: ChatLine) -> tuple[CommandName, list[str]] | None:
        """The command ``line`` names with its first word (a configured name or alias) and its words."""
        prefix = self._cfg.prefix
        tokens = command_tokens(line, prefix)
        if tokens is None:
            return None
        name = self._words.get(tokens[0][len(prefix) :].lower())
        return None if name is None else (name, tokens)

    def is_command(self, line: ChatLine) -> bool:
        """Whether ``line``'s first word is one of this router's command words (enabled or not; permissions and
        cooldowns are not checked). Ingest's pre-filter: such lines steer the bot and are never classified,
        while a line that only looks like one (``!!!! POGGERS``, ``!reset`` spelt with a Cyrillic e) is chat."""
        return self._command_word(line) is not None

    @property
    def cooldown_entries(self) -> int:
        """How many (command, channel, user) cooldown stamps are held (bounded: expired ones are pruned)."""
        return len(self._last_used)

    def _settings(self, name: CommandName) -> CommandConfig:
        settings: CommandConfig = getattr(self._cfg, name)
        return settings

    def route(self, line: ChatLine) -> Command | None:
        """The command in ``line``, an immediate :class:`Reply`, or None (not a command, not allowed, cooling
        down, disabled, or a bot's own message)."""
        if line.user_login.lower() in self._bots:
            return None
        prefix = self._cfg.prefix
        found = self._command_word(line)
        if found is None:
            return None
        name, tokens = found
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

