"""Bounded windows of recent chat and mood, in memory (pure: no I/O, no clock).

:class:`MessageWindows` keeps, per channel, the last ``messages_per_channel`` messages (by id, in arrival
order) and, for the last ``users_per_channel`` users who spoke, each one's last ``messages_per_user``
messages; a message carries its verdict once it has one. :class:`SnapshotWindows` keeps each channel's last
``snapshots_per_channel`` mood snapshots and knows from when on it is complete.

Sizes come from ``[history]`` in bots.toml. At the defaults one busy channel costs about 20 MB.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from bot.domain import ChatLine, Verdict


@dataclass(slots=True)
class RecentMessage:
    """A message as the windows keep it: what ``!label`` and the dashboard read."""

    id: str
    channel: str
    user_login: str
    user_name: str
    text: str
    sent_at: datetime
    command: bool = False
    label: str | None = None
    confidence: float | None = None

    @classmethod
    def of(cls, line: ChatLine, *, command: bool) -> RecentMessage:
        return cls(line.message_id, line.channel, line.user_login, line.user_name, line.text, line.sent_at, command)


class _Channel:
    __slots__ = ("messages", "users")

    def __init__(self) -> None:
        self.messages: OrderedDict[str, RecentMessage] = OrderedDict()  # id -> message, oldest first
        self.users: OrderedDict[str, list[RecentMessage]] = OrderedDict()  # login -> messages, least recent first


class MessageWindows:
    """Recent messages per channel and per user. Fed by ingest (every message) and the verdicts."""

    def __init__(self, per_channel: int, per_user: int, users_per_channel: int) -> None:
        self.per_channel = per_channel
        self.per_user = per_user
        self.users_per_channel = users_per_channel
        self._channels: dict[str, _Channel] = {}

    def add(self, line: ChatLine, *, command: bool) -> None:
        ch = self._channels.get(line.channel)
        if ch is None:
            ch = self._channels[line.channel] = _Channel()
        if line.message_id in ch.messages:
            return
        msg = RecentMessage.of(line, command=command)
        ch.messages[msg.id] = msg
        if len(ch.messages) > self.per_channel:
            ch.messages.popitem(last=False)
        mine = ch.users.get(msg.user_login)
        if mine is None:
            mine = ch.users[msg.user_login] = []
            if len(ch.users) > self.users_per_channel:
                ch.users.popitem(last=False)
        else:
            ch.users.move_to_end(msg.user_login)
        mine.append(msg)
        if len(mine) > self.per_user:
            del mine[0]

    def add_older(self, channel: str, older: Iterable[RecentMessage]) -> None:
        """Messages from before this window (the database's, newest first), behind what it holds."""
        ch = self._channels.get(channel)
        if ch is None:
            ch = self._channels[channel] = _Channel()
        for msg in older:
            if len(ch.messages) >= self.per_channel:
                break
            if msg.id in ch.messages:
                continue
            ch.messages[msg.id] = msg
            ch.messages.move_to_end(msg.id, last=False)
            mine = ch.users.get(msg.user_login)
            if mine is None and len(ch.users) < self.users_per_channel:
                mine = ch.users[msg.user_login] = []
                ch.users.move_to_end(msg.user_login, last=False)
            if mine is not None and len(mine) < self.per_user:
                mine.insert(0, msg)

    def classified(self, line: ChatLine, verdict: Verdict) -> None:
        ch = self._channels.get(line.channel)
        if ch is None:
            return
        msg = ch.messages.get(line.message_id)
        if msg is None:
            msg = next((m for m in ch.users.get(line.user_login, ()) if m.id == line.message_id), None)
        if msg is not None:
            msg.label, msg.confidence = verdict.label, verdict.confidence

    def recent(self, channel: str, limit: int) -> list[RecentMessage]:
        """The newest ``limit`` messages of a channel, newest first."""
        ch = self._channels.get(channel)
        if ch is None:
            return []
        out: list[RecentMessage] = []
        for msg in reversed(ch.messages.values()):
            if len(out) >= limit:
                break
            out.append(msg)
        return out

    def count(self, channel: str) -> int:
        ch = self._channels.get(channel)
        return len(ch.messages) if ch is not None else 0

    def find(self, message_id: str) -> RecentMessage | None:
        """A message by id, in whichever channel's window holds it."""
        for ch in self._channels.values():
            msg = ch.messages.get(message_id)
            if msg is not None:
                return msg
        return None

    def latest_of(self, channel: str, user_login: str, *, commands: bool = False) -> RecentMessage | None:
        """A user's newest message in a channel (``commands=False``: the newest that is not a command)."""
        ch = self._channels.get(channel)
        if ch is None:
            return None
        for msg in reversed(ch.users.get(user_login, ())):
            if commands or not msg.command:
                return msg
        return None


@dataclass(frozen=True, slots=True)
class SnapshotPoint:
    """One point of a channel's mood timeline (what the dashboard's chart reads)."""

    bucket: datetime
    label: str
    valence: float
    colour: str
    shares: Mapping[str, float] = field(default_factory=dict)
    messages: int = 0


class SnapshotWindows:
    """Each channel's recent mood snapshots, oldest first, and since when the window is complete."""

    def __init__(self, per_channel: int) -> None:
        self.per_channel = per_channel
        self._points: dict[str, deque[SnapshotPoint]] = {}
        self._complete_from: dict[str, datetime] = {}

    def add(self, channel: str, point: SnapshotPoint) -> None:
        points = self._points.get(channel)
        if points is None:
            points = self._points[channel] = deque(maxlen=self.per_channel)
            self._complete_from.setdefault(channel, point.bucket)
        if points and point.bucket <= points[-1].bucket:  # re-saved bucket (or a clock step back): replace
            kept = [p for p in points if p.bucket < point.bucket]
            points.clear()
            points.extend(kept)
        points.append(point)
        if len(points) == self.per_channel:
            self._complete_from[channel] = max(self._complete_from[channel], points[0].bucket)

    def add_older(self, channel: str, older: Iterable[SnapshotPoint], since: datetime) -> None:
        """Every point from ``since`` up to the window's first (the database's, oldest first): the window is
        then complete from ``since`` (or from the oldest point it had room for)."""
        points = self._points.get(channel)
        if points is None:
            points = self._points[channel] = deque(maxlen=self.per_channel)
        first = points[0].bucket if points else None
        earlier = [p for p in older if first is None or p.bucket < first]
        room = self.per_channel - len(points)
        kept = earlier[-room:] if room > 0 else []
        points.extendleft(reversed(kept))
        if len(kept) == len(earlier):
            complete = since
        elif kept:
            complete = kept[0].bucket
        else:
            return
        current = self._complete_from.get(channel)
        self._complete_from[channel] = complete if current is None else min(current, complete)

    def complete_from(self, channel: str) -> datetime | None:
        """The window holds every snapshot of the channel from this time on (None: none seen yet)."""
        return self._complete_from.get(channel)

    def since(self, channel: str, since: datetime) -> list[SnapshotPoint]:
        return [p for p in self._points.get(channel, ()) if p.bucket >= since]
