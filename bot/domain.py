"""Plain values shared by every part of chatmood. No I/O lives here.

A chat message travels as a :class:`ChatLine` from whoever produced it (Twitch
EventSub, a replayed log) through ingest into storage, the classifier and the
mood tracker. A classification is a :class:`Verdict`; what the overlay, the
dashboard and ``!mood`` show is a :class:`MoodState`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

#: The badges chatmood cares about (Twitch ``badges[].set_id`` values).
Badge = Literal["broadcaster", "moderator", "vip", "subscriber"]
KNOWN_BADGES: frozenset[str] = frozenset({"broadcaster", "moderator", "vip", "subscriber"})


def clean_text(text: str) -> str:
    """Chat text as stored: NUL characters removed (MongoDB/FerretDB reject them)."""
    return text.replace("\x00", "")


def synthetic_message_id(channel: str, sent_at: datetime, user: str, text: str, position: int) -> str:
    """A deterministic id for logs that carry none, so replaying a file twice stores nothing new."""
    key = "\x1f".join((channel.lower(), sent_at.astimezone(UTC).isoformat(), user.lower(), text, str(position)))
    return "syn-" + hashlib.blake2b(key.encode("utf-8"), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class EmoteSpan:
    """One emote inside a message: ``text[begin:end]`` (end exclusive, in code points)."""

    emote_id: str
    begin: int
    end: int


@dataclass(frozen=True, slots=True)
class ChatLine:
    """One chat message, as ingest receives it."""

    message_id: str
    channel: str  # broadcaster login, lower case
    user_id: str
    user_login: str
    user_name: str  # display name
    text: str
    sent_at: datetime  # timezone-aware, UTC
    badges: frozenset[str] = frozenset()
    emotes: tuple[EmoteSpan, ...] = ()
    reply_to: str | None = None  # id of the message this one replies to
    channel_id: str = ""  # broadcaster user id, when known

    def __post_init__(self) -> None:
        if self.sent_at.tzinfo is None:
            raise ValueError("ChatLine.sent_at must be timezone-aware")

    @property
    def is_privileged(self) -> bool:
        """Broadcaster or moderator: may run moderator commands."""
        return "broadcaster" in self.badges or "moderator" in self.badges


@dataclass(frozen=True, slots=True)
class Verdict:
    """The classifier's answer for one message: always one of the configured categories."""

    label: str
    confidence: float
    probs: Mapping[str, float]
    model: str  # model and prompt/head version that produced it


@dataclass(frozen=True, slots=True)
class MoodState:
    """A channel's smoothed mood at one instant."""

    channel: str
    label: str  # dominant category
    share: float  # the dominant category's share of the weight, 0..1
    valence: float  # -1..1
    colour: str  # "#rrggbb"
    shares: Mapping[str, float] = field(default_factory=dict)
    messages: int = 0  # messages classified into this mood since the last reset
    skipped: int = 0  # messages not classified because chat outpaced the model
    first_at: datetime | None = None  # oldest message folded in since the last reset
    at: datetime | None = None  # when this state was computed
