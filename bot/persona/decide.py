"""Which persona, if any, answers a chat line. Pure: the clock and the randomness are parameters.

* A line from any configured bot account is never answered (its own, another persona's, a plain mood bot's), so
  personas cannot loop. A persona's own lines are remembered by id, so a viewer's Twitch reply to one of them
  counts as a mention of that persona.
* A line that mentions personas of its channel (``@account``, case-insensitive; the first one named wins) or
  replies to one of their lines is answered by that persona alone, unless it answers no mentions or the viewer's
  cooldown (``user_cooldown_s``) is still running; then no one answers it.
* Any other line: each persona of the channel whose ``min_gap_s`` since its last unprompted line has passed rolls
  its ``join_chance``; one of those that fire, chosen at random, joins in.

A line is picked when it arrives (the cooldown and the gap start then), so a burst cannot queue several answers.
"""

from __future__ import annotations

import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog

from bot.config import BotConfig
from bot.domain import ChatLine

log = structlog.get_logger(__name__)

_MENTION = re.compile(r"@([A-Za-z0-9_]{1,25})\b")
_REMEMBER = 2_000  # persona line ids kept per service, for replies to them
_MAX_KEYS = 10_000  # cooldown entries before old ones are swept


@dataclass(frozen=True, slots=True)
class Pick:
    bot: str  # the persona's bot name
    kind: Literal["reply", "join"]


def mentioned_accounts(text: str) -> list[str]:
    """The logins ``@``-mentioned in ``text``, lower case, in order."""
    return [m.lower() for m in _MENTION.findall(text)]


class Coordinator:
    def __init__(
        self,
        bots: Sequence[BotConfig],
        accounts: frozenset[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._own: OrderedDict[str, str] = OrderedDict()  # persona line id -> bot name
        self._mentioned_at: dict[tuple[str, str, str], float] = {}  # (bot, channel, viewer) -> when answered
        self._joined_at: dict[tuple[str, str], float] = {}  # (bot, channel) -> last unprompted line
        self.update(bots, accounts)

    def update(self, bots: Sequence[BotConfig], accounts: frozenset[str]) -> None:
        """A reloaded config; cooldowns and gaps carry over."""
        self._personas = [b for b in bots if b.persona is not None]
        self._by_account = {b.account: b for b in self._personas}
        self._accounts = accounts | frozenset(self._by_account)

    def pick(self, line: ChatLine) -> Pick | None:
        if line.user_login in self._accounts:
            persona = self._by_account.get(line.user_login)
            if persona is not None:
                self._own[line.message_id] = persona.name
                if len(self._own) > _REMEMBER:
                    self._own.popitem(last=False)
            return None
        here = [b for b in self._personas if line.channel in b.channels]
        if not here:
            return None
        now = self._clock()
        target = self._addressed(line, here)
        if target is not None:
            return self._reply(target, line, now)
        return self._join(here, line, now)

    def _addressed(self, line: ChatLine, here: list[BotConfig]) -> BotConfig | None:
        by_name = {b.name: b for b in here}
        if line.reply_to is not None and line.reply_to in self._own:
            replied = by_name.get(self._own[line.reply_to])
            if replied is not None:
                return replied
        for account in mentioned_accounts(line.text):
            bot = self._by_account.get(account)
            if bot is not None and bot.name in by_name:
                return bot
        return None

    def _reply(self, bot: BotConfig, line: ChatLine, now: float) -> Pick | None:
        assert bot.persona is not None
        if not bot.persona.reply_to_mentions:
            return None
        key = (bot.name, line.channel, line.user_login)
        last = self._mentioned_at.get(key)
        if last is not None and now - last < bot.persona.user_cooldown_s:
            log.debug("persona_cooldown", bot=bot.name, channel=line.channel, user=line.user_login)
            return None
        self._mentioned_at[key] = now
        if len(self._mentioned_at) > _MAX_KEYS:
            self._sweep(now)
        return Pick(bot.name, "reply")

    def _join(self, here: list[BotConfig], line: ChatLine, now: float) -> Pick | None:
        fired = []
        for bot in here:
            assert bot.persona is not None
            if bot.persona.join_chance <= 0:
                continue
            last = self._joined_at.get((bot.name, line.channel))
            if last is not None and now - last < bot.persona.min_gap_s:
                continue
            if self._rng.random() < bot.persona.join_chance:
                fired.append(bot)
        if not fired:
            return None
        bot = fired[0] if len(fired) == 1 else self._rng.choice(fired)
        self._joined_at[(bot.name, line.channel)] = now
        return Pick(bot.name, "join")

    def _sweep(self, now: float) -> None:
        longest = max((b.persona.user_cooldown_s for b in self._personas if b.persona is not None), default=0.0)
        self._mentioned_at = {k: t for k, t in self._mentioned_at.items() if now - t < longest}
