""":class:`History`: reads of recent chat and mood from memory, and of older data from the database.

``!label @user``, ``!label`` as a reply, ``!label <id>``, the dashboard's recent messages and its timeline
read the windows (:mod:`bot.history.windows`) the pipeline keeps. Only what the windows cannot hold goes to
the database, bounded by ``history.lookup_timeout_ms``:

* a message by id that left the window: ``get_message`` (the ``_id`` index, fast everywhere);
* a user's latest message when the window holds none of theirs (they last spoke long ago, or before a
  restart): ``latest_message_by``. MongoDB serves it from an index; the development database scans, so on a
  large collection the lookup gives up and the answer says the message is too old to find quickly;
* recent messages and snapshots of a channel after a restart: read once per channel into the window
  (a *backfill*), then from memory. If the backfill times out it is tried again after :data:`BACKFILL_RETRY_S`.

Nothing here raises for a slow or absent database: lookups say why they found nothing, lists return what
memory holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import structlog

from bot.config import HistoryConfig
from bot.domain import ChatLine, MoodState, Verdict
from bot.errors import StorageError, StorageTimeout
from bot.history.windows import MessageWindows, RecentMessage, SnapshotPoint, SnapshotWindows
from bot.storage.documents import MessageDoc
from bot.storage.store import Storage

log = structlog.get_logger(__name__)

BACKFILL_RETRY_S = 600.0  # a backfill that failed is not tried again for this long

Miss = Literal["", "not_stored", "too_old", "unavailable"]


@dataclass(frozen=True, slots=True)
class Lookup:
    """The answer to "which message?": the message, or why there is none.

    ``why``: ``"not_stored"`` (no such message here), ``"too_old"`` (not in memory, and the database did not
    find it within the lookup time: on the development database such lookups scan) or ``"unavailable"`` (not
    in memory and the database is not answering)."""

    message: RecentMessage | MessageDoc | None
    why: Miss = ""


def _recent(doc: MessageDoc) -> RecentMessage:
    return RecentMessage(
        str(doc.id), doc.channel, doc.user_login, doc.user_name, doc.text, doc.sent_at, doc.command, doc.label,
        doc.confidence,
    )  # fmt: skip


class History:
    """Recent chat from memory, older from the database. The pipeline feeds it; commands and the web read it."""

    def __init__(
        self, cfg: HistoryConfig, storage: Storage | None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.messages = MessageWindows(cfg.messages_per_channel, cfg.messages_per_user, cfg.users_per_channel)
        self.snapshot_windows = SnapshotWindows(cfg.snapshots_per_channel)
        self._storage = storage
        self._lookup_s = cfg.lookup_timeout_ms / 1000
        self._clock = clock
        self._backfilled: dict[tuple[str, str], float] = {}  # (what, channel) -> clock() of the last try

    # ---- fed by the pipeline

    def observe(self, line: ChatLine, *, command: bool) -> None:
        """Every message ingest takes (commands too: ``!label`` must tell them apart)."""
        self.messages.add(line, command=command)

    def classified(self, pairs: Sequence[tuple[ChatLine, Verdict]]) -> None:
        for line, verdict in pairs:
            self.messages.classified(line, verdict)

    def snapshot(self, state: MoodState, bucket: datetime) -> None:
        """A snapshot the pipeline takes (kept even when the database could not store it)."""
        self.snapshot_windows.add(
            state.channel,
            SnapshotPoint(bucket, state.label, state.valence, state.colour, dict(state.shares), state.messages),
        )

    # ---- for !label

    async def find_message(self, channel: str, message_id: str) -> Lookup:
        """A message of this channel by id (a moderator here labels messages from here only)."""
        msg = self.messages.find(message_id)
        if msg is not None:
            return Lookup(msg if msg.channel == channel else None, "" if msg.channel == channel else "not_stored")
        if self._storage is None:
            return Lookup(None, "not_stored")
        try:
            doc = await self._storage.get_message(message_id, timeout_s=self._lookup_s)
        except StorageTimeout:
            return Lookup(None, "too_old")
        except StorageError as e:
            log.warning("history_lookup_failed", what="message", error=str(e))
            return Lookup(None, "unavailable")
        if doc is None or doc.channel != channel:
            return Lookup(None, "not_stored")
        return Lookup(doc)

    async def latest_message_of(self, channel: str, user_login: str) -> Lookup:
        """A user's newest message in a channel that is not a command."""
        user_login = user_login.lower().removeprefix("@")
        msg = self.messages.latest_of(channel, user_login)
        if msg is not None:
            return Lookup(msg)
        if self._storage is None:
            return Lookup(None, "not_stored")
        try:
            doc = await self._storage.latest_message_by(
                channel, user_login, commands=False, timeout_s=self._lookup_s
            )
        except StorageTimeout:
            log.info("history_lookup_too_slow", what="latest_message_by", timeout_s=self._lookup_s)
            return Lookup(None, "too_old")
        except StorageError as e:
            log.warning("history_lookup_failed", what="latest_message_by", error=str(e))
            return Lookup(None, "unavailable")
        return Lookup(doc) if doc is not None else Lookup(None, "not_stored")

    # ---- for the dashboard and the API (the overlay's storage protocol)

    async def recent_messages(self, channel: str, limit: int = 50, /) -> Sequence[RecentMessage]:
        """The newest ``limit`` messages of a channel, newest first."""
        if self.messages.count(channel) < limit:
            await self._backfill_messages(channel)
        return self.messages.recent(channel, limit)

    async def label_counts(self) -> Mapping[str, int]:
        """Labelled examples per label (a small collection; the database's answer, bounded in time)."""
        if self._storage is None:
            return {}
        return await self._storage.label_counts()

    async def snapshots(self, channel: str, since: datetime, /) -> Sequence[SnapshotPoint]:
        """A channel's mood snapshots from ``since``, oldest first."""
        complete_from = self.snapshot_windows.complete_from(channel)
        points = self.snapshot_windows.since(channel, since)
        if self._storage is None or (complete_from is not None and since >= complete_from):
            return points
        if not self._due(("snapshots", channel)):
            return points
        # Older than the window reaches (after a restart, or a custom `since`): the span before the window
        # from the database, kept in the window for the next request.
        until = points[0].bucket if points else None
        try:
            docs = await self._storage.snapshots(channel, since, until, timeout_s=self._lookup_s)
        except StorageError as e:
            log.info("history_backfill_failed", what="snapshots", channel=channel, error=str(e))
            return points
        self._backfilled.pop(("snapshots", channel), None)  # it answered: a still older span may be asked
        older = [SnapshotPoint(d.bucket, d.label, d.valence, d.colour, dict(d.shares), d.messages) for d in docs]
        self.snapshot_windows.add_older(channel, older, since)
        return self.snapshot_windows.since(channel, since)

    async def _backfill_messages(self, channel: str) -> None:
        if self._storage is None or not self._due(("messages", channel)):
            return
        try:
            docs = await self._storage.recent_messages(
                channel, self.messages.per_channel, timeout_s=self._lookup_s
            )
        except StorageError as e:
            log.info("history_backfill_failed", what="messages", channel=channel, error=str(e))
            return
        self.messages.add_older(channel, (_recent(d) for d in docs))

    def _due(self, key: tuple[str, str]) -> bool:
        """Backfill once per channel; after a failure, again only after BACKFILL_RETRY_S."""
        last = self._backfilled.get(key)
        now = self._clock()
        if last is not None and now - last < BACKFILL_RETRY_S:
            return False
        self._backfilled[key] = now
        return True
