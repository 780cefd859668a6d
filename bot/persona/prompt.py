"""What a persona's model reads: its system prompt, the channel's mood in words, the recent chat and the message.

Pure functions over plain values; the service calls them with the mood at the moment the reply is written.
SmolLM2-135M (the shipped model) follows one short system turn and one user turn best; an example exchange that
answers "what's the vibe?" with the mood made it talk about the mood when asked (and little else changed).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from bot.config import BotConfig
from bot.domain import ChatLine, MoodState

Kind = Literal["reply", "join", "calm"]
Message = dict[str, str]

LINE_CHARS = 150  # one chat line in the recent-chat window, at most
HISTORY_CHARS = 2_400  # the whole window, at most (oldest lines go first): ~800 tokens

_INSTRUCTIONS: dict[Kind, str] = {
    "reply": "Reply to {user} with one short, casual chat message.",
    "join": "Join the conversation with one short, casual chat message.",
    "calm": "Chat is getting heated. Write one short, kind chat message that calms everyone down. Never scold or "
            "threaten anyone.",
}


EXAMPLE_QUESTION = "what's the vibe in here?"  # the example exchange's question (a reply must not parrot it)


def own_mention(account: str) -> re.Pattern[str]:
    """``@account`` with the punctuation that follows it (the persona reads the message as said to it)."""
    return re.compile(r"@" + re.escape(account) + r"\b[,:]?", re.IGNORECASE)


def mood_in_words(state: MoodState | None) -> str:
    """``chat is hype right now, 61%``; ``chat is quiet right now`` before any message was classified."""
    if state is None or state.messages == 0:
        return "chat is quiet right now"
    return f"chat is {state.label} right now, {round(state.share * 100)}%"


def default_system_prompt(bot: BotConfig) -> str:
    return f"You are {bot.account}, a friendly regular in this Twitch chat."


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _speaker(line: ChatLine) -> str:
    return line.user_name or line.user_login


def history_lines(history: Sequence[ChatLine], limit: int) -> list[str]:
    """The last ``limit`` lines as ``name: text``, each clipped, the oldest dropped beyond :data:`HISTORY_CHARS`."""
    out: list[str] = []
    used = 0
    for line in reversed(history[-limit:] if limit > 0 else ()):
        text = f"{_speaker(line)}: {_clip(line.text, LINE_CHARS)}"
        if used + len(text) > HISTORY_CHARS:
            break
        out.append(text)
        used += len(text) + 1
    return out[::-1]


def build_messages(
    bot: BotConfig,
    kind: Kind,
    *,
    channel: str,
    mood: str,
    history: Sequence[ChatLine] = (),
    line: ChatLine | None = None,
) -> list[Message]:
    """The chat for the model: a system turn (persona, place, mood, recent chat, what to do), then the message."""
    assert bot.persona is not None
    persona = bot.persona
    system = [
        (persona.system_prompt or default_system_prompt(bot)).strip(),
        f"You are @{bot.account} in the Twitch chat of {channel}. Right now {mood}.",
    ]
    recent = history_lines(history, persona.context_messages)
    if recent:
        system.append("Recent chat:\n" + "\n".join(recent))
    user = _speaker(line) if line is not None else "chat"
    system.append(_INSTRUCTIONS[kind].format(user=user))
    messages: list[Message] = [{"role": "system", "content": "\n".join(system)}]
    if kind == "reply":
        messages += [
            {"role": "user", "content": f"someone: {EXAMPLE_QUESTION}"},
            {"role": "assistant", "content": mood[:1].upper() + mood[1:] + " PogChamp"},
        ]
    if line is not None:
        text = own_mention(bot.account).sub("", line.text).strip() or line.text
        messages.append({"role": "user", "content": f"{user}: {_clip(text, 500)}"})
    else:
        messages.append({"role": "user", "content": f"({mood})"})
    return messages
