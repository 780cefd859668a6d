"""Personas without Twitch: ``chatmood persona BOT "message"`` and the demo's persona.

``cmd_persona`` writes the reply a persona would give to a viewer's message, through the same service, models,
fallbacks, time budget and cleaning as live chat, and prints it on the first line of standard output, then the
model and its timing, then the mood it was told. Nothing is sent and no database is needed.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from bot.config import BotConfig, Config, PersonaConfig, persona_prompt_path
from bot.domain import ChatLine, MoodState
from bot.errors import ChatmoodError, ConfigError
from bot.outbox import Outbox
from bot.persona.service import Job, PersonaService

DEMO_CHANNEL = "demo"
DEMO_PROMPT = Path("moodbot.txt")  # under prompts/
DEMO_SHARE = 0.6  # the share `--mood LABEL` stands for


class FixedMood:
    """A channel mood that stays put (``--mood``)."""

    def __init__(self, state: MoodState | None) -> None:
        self._state = state

    def state(self, channel: str) -> MoodState:
        if self._state is None:
            return MoodState(channel=channel, label="neutral", share=1.0, valence=0.0, colour="#8a8f98")
        return dataclasses.replace(self._state, channel=channel)


def parse_mood(cfg: Config, text: str | None) -> MoodState | None:
    """``hype`` (a share of 60%) or ``hype:61`` as a mood; None for no mood (a quiet chat)."""
    if not text:
        return None
    label, _, pct = text.partition(":")
    if label not in cfg.category_names:
        raise ConfigError(None, [f"--mood: {label!r} is not a category (one of {', '.join(cfg.category_names)})"])
    try:
        share = float(pct.rstrip("%")) / 100 if pct else DEMO_SHARE
    except ValueError:
        raise ConfigError(None, [f"--mood: {pct!r} is not a percentage"]) from None
    if not 0 < share <= 1:
        raise ConfigError(None, [f"--mood: the share must be within 1..100, got {pct}"])
    category = cfg.category(label)
    shares = {c: (share if c == label else (1 - share) / (len(cfg.category_names) - 1)) for c in cfg.category_names}
    return MoodState(channel="", label=label, share=share, valence=float(category.valence) * share,
                     colour=category.colour, shares=shares, messages=1)


def _persona_bot(cfg: Config, name: str) -> BotConfig:
    bot = next((b for b in cfg.bots if b.name == name), None)
    if bot is None:
        known = ", ".join(b.name for b in cfg.bots) or "none"
        raise ChatmoodError(f"no bot named {name!r} in the config (bots: {known})")
    if bot.persona is None:
        raise ChatmoodError(f"bot {name!r} has no [bots.persona] table")
    return bot


async def cmd_persona(cfg: Config, bot_name: str, message: str, *, mood: str | None = None,
                      user: str = "viewer", seed: int | None = None, out: TextIO | None = None) -> int:
    """``chatmood persona BOT "message" [--mood hype] [--seed N]``: the reply, then ``model: ...`` and
    ``mood: ...`` lines. The same ``seed`` gives the same reply on the same machine and model."""
    out = out or sys.stdout
    bot = _persona_bot(cfg, bot_name)
    persona = bot.persona
    assert persona is not None
    fixed = FixedMood(parse_mood(cfg, mood))
    service = PersonaService(cfg.model_copy(update={"bots": (bot,)}), fixed, Outbox(), rng=random.Random(seed))
    try:
        t0 = time.perf_counter()
        await service.prepare()
        load_s = time.perf_counter() - t0
        if not service.status()[bot.name]["model_loaded"]:
            raise ChatmoodError(f"persona {bot.name!r}: none of its models loaded ({', '.join(persona.models)}); "
                                "see the log")
        channel = bot.channels[0]
        line = ChatLine(message_id="offline-1", channel=channel, user_id="0", user_login=user.lower(), user_name=user,
                        text=message, sent_at=datetime.now(UTC))
        job = Job(bot.name, "reply", channel, time.monotonic() + persona.reply_timeout_s, line)
        written = await service.write(job)
    finally:
        await service.aclose()
    result = written.result
    if written.text is None:
        raw = f"; it wrote {result.text[:200]!r}" if result is not None else ""
        raise ChatmoodError(f"persona {bot.name!r} gave no reply ({written.reason}{raw})")
    assert result is not None
    print(written.text, file=out)
    print(f"model: {written.model}, {result.tokens} tokens in {result.seconds:.2f} s "
          f"({result.tokens_per_s:.1f} tokens/s, prompt {result.prompt_tokens} tokens; loaded in {load_s:.2f} s)",
          file=out)
    print(f"mood: {written.mood}", file=out)
    return 0


def demo_persona(cfg: Config) -> Config:
    """The config the demo runs: unless a persona already reads the demo channel, the config's first persona
    (or, without one, a built-in ``moodbot`` as ``my_mood_bot`` speaking with prompts/moodbot.txt and the shipped
    model) joins the demo channel. The sample chat mentions ``@my_mood_bot``."""
    personas = [b for b in cfg.bots if b.persona is not None]
    if any(DEMO_CHANNEL in b.channels for b in personas):
        return cfg
    if personas:
        first = personas[0].model_copy(update={"channels": (DEMO_CHANNEL,)})
        bots = tuple(first if b.name == first.name else b for b in cfg.bots)
        return cfg.model_copy(update={"bots": bots})
    path = persona_prompt_path(cfg, DEMO_PROMPT)
    try:
        prompt = path.read_text(encoding="utf-8").strip()
    except OSError:
        prompt = ""  # the default: "You are my_mood_bot, a friendly regular in this Twitch chat."
    name = "moodbot" if all(b.name != "moodbot" for b in cfg.bots) else "demo_moodbot"
    bot = BotConfig(name=name, account="my_mood_bot", channels=(DEMO_CHANNEL,),
                    persona=PersonaConfig(system_prompt=prompt[:2000], user_cooldown_s=0.0))
    return cfg.model_copy(update={"bots": (*cfg.bots, bot)})

