"""Plain values shared by every part of chatmood. No I/O lives here.

A chat message travels as a :class:`ChatLine` from whoever produced it (Twitch
EventSub, a replayed log) through ingest into storage, the classifier and the
mood tracker. A classification is a :class:`Verdict`; what the overlay, the
dashboard and ``!mood`` show is a :class:`MoodState`.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

#: The badges chatmood cares about (Twitch ``badges[].set_id`` values).
Badge = Literal["broadcaster", "moderator", "vip", "subscriber"]
KNOWN_BADGES: frozenset[str] = frozenset({"broadcaster", "moderator", "vip", "subscriber"})


def clean_text(text: str) -> str:
    """Text as chatmood keeps it: NUL removed (MongoDB/FerretDB reject it) and lone surrogates (a broken
    ``"\\ud83d"`` escape in a JSON log) replaced by U+FFFD, since BSON strings must be valid UTF-8.

    The one place text is cleaned: :class:`ChatLine` applies it to every line it is built with."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


def storable(value: str) -> bool:
    """Whether ``value`` can be stored and printed as it is: no NUL and no lone surrogate (valid UTF-8)."""
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """``text`` safe to write to any UTF-8 stream: lone surrogates (from a file name that isn't UTF-8, say)
    are shown as ``\\udcxx`` escapes instead of raising ``UnicodeEncodeError`` mid-report."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class UnstorableField(ValueError):
    """A :class:`ChatLine` id, login or channel holds a NUL or a lone surrogate: no database can store it, and
    unlike text it can't be repaired without becoming a different id, so the line is refused (``field`` names it)."""

    def __init__(self, field: str, value: str) -> None:
        self.field = field
        super().__init__(f"{field} {value!r} cannot be stored (it holds a NUL or a lone surrogate)")


#: The ChatLine fields that identify something; they are refused, never repaired, when unstorable.
ID_FIELDS = ("message_id", "channel", "channel_id", "user_id", "user_login", "reply_to")


def _shift_spans(raw: str, emotes: tuple[EmoteSpan, ...]) -> tuple[EmoteSpan, ...]:
    """Emote spans of ``raw`` moved onto ``raw`` without its NUL characters; spans that no longer fit go."""
    nuls = [i for i, ch in enumerate(raw) if ch == "\x00"]
    length = len(raw) - len(nuls)
    out = []
    for e in emotes:
        begin = e.begin - sum(1 for i in nuls if i < e.begin)
        end = e.end - sum(1 for i in nuls if i < e.end)
        if 0 <= begin < end <= length:
            out.append(EmoteSpan(e.emote_id, begin, end))
    return tuple(out)


class SeenIds:
    """A bounded set of recently seen ids, oldest forgotten first (a lookup refreshes an id).

    Twitch delivers at least once, and logs get replayed: whoever must not act twice on one id keeps one."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, key: str) -> None:
        """Remember ``key`` as the newest."""
        self._ids[key] = None
        self._ids.move_to_end(key)
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)

    def first_time(self, key: str) -> bool:
        """True the first time ``key`` is seen (and remember it); False, refreshing it, when already seen."""
        if key in self._ids:
            self._ids.move_to_end(key)
            return False
        self.add(key)
        return True


def synthetic_message_id(channel: str, sent_at: datetime, user: str, text: str, position: int) -> str:
    """A deterministic id for logs that carry none, so replaying a file twice stores nothing new."""
    key = "\x1f".join((channel.lower(), sent_at.astimezone(UTC).isoformat(), user.lower(), text, str(position)))
    # surrogatepass: a lone surrogate in the text (ChatLine cleans it later) must not stop the id being made.
    return "syn-" + hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


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
        """Decide once, at the edge, what odd text becomes: text and display name are cleaned (see
        :func:`clean_text`); an unstorable id, login or channel raises :class:`UnstorableField`; unstorable
        badge names and emote ids are dropped (they only decorate a message)."""
        if self.sent_at.tzinfo is None:
            raise ValueError("ChatLine.sent_at must be timezone-aware")
        for name in ID_FIELDS:
            value = getattr(self, name)
            if value is not None and not storable(value):
                raise UnstorableField(name, value)
        if not all(storable(b) for b in self.badges):
            object.__setattr__(self, "badges", frozenset(b for b in self.badges if storable(b)))
        if not all(storable(e.emote_id) for e in self.emotes):
            object.__setattr__(self, "emotes", tuple(e for e in self.emotes if storable(e.emote_id)))
        text = clean_text(self.text)
        if text != self.text:
            if self.emotes:
                object.__setattr__(self, "emotes", _shift_spans(self.text, self.emotes))
            object.__setattr__(self, "text", text)
        name = clean_text(self.user_name)
        if name != self.user_name:
            object.__setattr__(self, "user_name", name)

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


def percent(share: float) -> int:
    """A share (0..1) as a whole percent, half up, within 0..100: how chat lines show a mood's share."""
    return min(100, max(0, math.floor(share * 100 + 0.5)))


@dataclass(frozen=True, slots=True)
class MoodState:
    """A channel's smoothed mood at one instant."""

    channel: str
    label: str  # dominant category
    share: float  # the dominant category's share of the weight, 0..1
    valence: float  # -1..1
    colour: str  # "#rrggbb": the colour viewers see (bot.mood.colour.mood_colour)
    shares: Mapping[str, float] = field(default_factory=dict)
    lean: str | None = None  # the strongest non-neutral category, whose hue the colour takes
    strength: float = 0.0  # how far the colour has moved from neutral towards the lean, 0..1
    label_colour: str = ""  # the named mood's own category colour (what !mood's emoji square shows)
    messages: int = 0  # messages classified into this mood since the last reset
    skipped: int = 0  # messages not classified because chat outpaced the model
    first_at: datetime | None = None  # oldest message folded in since the last reset
    at: datetime | None = None  # when this state was computed

    def leaning(self) -> str:
        """``leaning hype 25%`` when the colour leans clearly (strength at least a half) towards a mood that isn't
        the named one, else ``""``: a neutral label in an orange colour says why."""
        if not self.lean or self.lean == self.label or self.strength < 0.5:
            return ""
        return f"leaning {self.lean} {percent(self.shares.get(self.lean, 0.0))}%"
