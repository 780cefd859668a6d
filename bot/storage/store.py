"""Storage: the database handle on MongoDB (FerretDB in development) and the queries chatmood makes.

The documents and their indexes are in :mod:`bot.storage.documents`; docs/storage.md lists every query the bot
sends, the index that serves it on MongoDB and what it costs on the development database.

Message writes go through :class:`bot.storage.writer.MessageWriter`, which :func:`open_storage` owns. Reads of
recent chat are served from memory by :mod:`bot.history`; the message queries here are its fallback for older
messages. Every query is bounded by ``server_timeout_ms`` (or a shorter ``timeout_s``): a hung server is an
error (:class:`~bot.errors.StorageTimeout`) within that time, not after the socket timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pymongo
import structlog
from beanie import Document, init_beanie
from pymongo import AsyncMongoClient
from pymongo.errors import (
    AutoReconnect,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from bot.config import StorageConfig
from bot.domain import MoodState, clean_text
from bot.errors import StorageError, StorageTimeout
from bot.storage.documents import (
    DOCUMENT_MODELS,
    Doc,
    LabeledExampleDoc,
    MessageDoc,
    MoodSnapshotDoc,
    StreamSessionDoc,
    ensure_indexes,
    utcnow,
)
from bot.storage.spool import SPOOL_FILE
from bot.storage.writer import PROBE_TIMEOUT_MS, MessageWriter
from bot.tasks import TaskSet

log = structlog.get_logger(__name__)


def _short(e: BaseException) -> str:
    return str(e).split(", Timeout:")[0][:200]


class Storage:
    """What :func:`open_storage` yields: ``writer`` for messages and verdicts, and the queries.

    ``tasks`` holds the writer's flusher while ``open_storage`` is open; a program that runs services watches
    it (``storage.tasks.watch()``), so a crashed writer stops the program at once."""

    def __init__(
        self,
        cfg: StorageConfig,
        client: AsyncMongoClient[Doc],
        spool_dir: Path,
        clock: Callable[[], float],
        probe_client: AsyncMongoClient[Doc] | None = None,
    ):
        self.cfg = cfg
        self.client = client
        # Asks "is it back?" with a short server-selection timeout, so that the writer's retry never
        # holds up spooling for long. (Never cancel PyMongo calls for a timeout: it may swallow the
        # cancellation.)
        self._probe_client = probe_client or client
        self._timeout_s = cfg.server_timeout_ms / 1000
        self._probe_s = min(cfg.server_timeout_ms, PROBE_TIMEOUT_MS) / 1000
        self.database = cfg.database_name  # the URL's database, else storage.database
        self.db = client[self.database]
        self.ready = False  # Beanie initialised against this database
        self._ready_lock = asyncio.Lock()
        self.writer = MessageWriter(self.db["messages"], cfg, spool_dir, probe=self.ensure_ready, clock=clock)
        self.tasks = TaskSet("storage")  # the writer's flusher, for the life of open_storage

    async def ensure_ready(self) -> None:
        """Ping the database and initialise Beanie once. Raises PyMongo's errors when it is unreachable."""
        await self._ping()
        if self.ready:
            return
        async with self._ready_lock:
            if not self.ready:
                await init_beanie(database=self.db, document_models=DOCUMENT_MODELS, skip_indexes=True)
                await ensure_indexes(self.db)
                self.ready = True
                log.info("storage_ready", database=self.database)

    async def _ping(self) -> None:
        with pymongo.timeout(self._probe_s):  # a hung server (SIGSTOP) answers nothing: give up quickly
            try:
                await self._probe_client.admin.command("ping")
            except ServerSelectionTimeoutError:
                raise
            except AutoReconnect as e:
                if e.timeout:
                    raise
                # A pooled connection from before a server restart fails once and is dropped: ask again.
                await self._probe_client.admin.command("ping")

    async def ping(self) -> bool:
        """True when the database answers (within half a second)."""
        try:
            await self._ping()
        except PyMongoError:
            return False
        return True

    @contextlib.asynccontextmanager
    async def query(self, what: str, timeout_s: float | None = None) -> AsyncIterator[None]:
        """Make sure Beanie is bound, bound the query's time, and turn PyMongo's errors into
        :class:`StorageError` (:class:`StorageTimeout` when the server did not answer in time). For every query
        on the database, here and in the features that keep their own collections."""
        seconds = timeout_s if timeout_s is not None else self._timeout_s
        try:
            if not self.ready:
                await self.ensure_ready()
            with pymongo.timeout(seconds):
                yield
        except PyMongoError as e:
            if e.timeout:
                raise StorageTimeout(f"{what} took longer than {seconds:g} s", seconds) from e
            raise StorageError(f"{what} failed: {_short(e)}") from e

    # ---- messages

    async def get_message(self, message_id: str, *, timeout_s: float | None = None) -> MessageDoc | None:
        """One message by id (the ``_id`` index)."""
        async with self.query("get_message", timeout_s):
            return await MessageDoc.get(message_id)

    async def latest_message_by(
        self, channel: str, user_login: str, *, commands: bool = True, timeout_s: float | None = None
    ) -> MessageDoc | None:
        """The newest stored message of a user in a channel (``commands=False``: the newest that is not a
        command, e.g. for ``!label @user``). Index ``channel_user_sent_at_seq``."""
        query: Doc = {"channel": channel, "user_login": user_login.lower().removeprefix("@")}
        if not commands:
            query["command"] = {"$ne": True}
        async with self.query("latest_message_by", timeout_s):
            found = await MessageDoc.find(query).sort("-sent_at", "-seq").limit(1).to_list()
        return found[0] if found else None

    async def recent_messages(
        self, channel: str, limit: int = 50, classified_only: bool = False, *, timeout_s: float | None = None
    ) -> list[MessageDoc]:
        """The newest ``limit`` messages of a channel, newest first. Index ``channel_sent_at_seq``."""
        query: Doc = {"channel": channel}
        if classified_only:
            query["label"] = {"$ne": None}
        async with self.query("recent_messages", timeout_s):
            return await MessageDoc.find(query).sort("-sent_at", "-seq").limit(limit).to_list()

    async def count_messages(self, channel: str | None = None) -> int:
        async with self.query("count_messages"):
            return await MessageDoc.find({} if channel is None else {"channel": channel}).count()

    async def classified_counts(self, channel: str, since: datetime | None = None) -> dict[str, int]:
        """How many of a channel's stored messages carry each label (``$group`` with ``$sum``)."""
        match: Doc = {"channel": channel, "label": {"$ne": None}}
        if since is not None:
            match["sent_at"] = {"$gte": since}
        return await self._count_by(MessageDoc, match, "$label", "classified_counts")

    async def scan_messages(
        self, query: Doc, fields: Sequence[str], *, batch_size: int = 2_000, timeout_s: float | None = None
    ) -> AsyncIterator[Doc]:
        """Every stored message matching ``query``, as raw documents with only ``fields`` (and ``_id``), in
        the database's order: one pass in bounded memory, for features that aggregate stored chat (bot.vibes).

        On FerretDB v1 every filter but ``_id`` reads the whole collection (~55 us a document), however
        narrow: callers make one pass for many channels rather than one per channel, and give the pass a
        ``timeout_s`` to match (the default is ``server_timeout_ms``)."""
        async with self.query("scan_messages", timeout_s):
            cursor = MessageDoc.get_pymongo_collection().find(
                query, {name: 1 for name in fields}, batch_size=batch_size
            )
            async for doc in cursor:
                yield doc

    async def message_channels(self, *, timeout_s: float | None = None) -> dict[str, int]:
        """Every channel with stored messages, and how many (``$group`` with ``$sum``: a scan)."""
        return await self._count_by(MessageDoc, {}, "$channel", "message_channels", timeout_s)

    # ---- labelled examples

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
    ) -> LabeledExampleDoc:
        """Store a training example. One per message (a new label replaces the old); unlinked examples are
        keyed by source, text and label, so importing the same file twice stores nothing new."""
        prompt = clean_text(prompt)
        if message_id:
            key = f"msg-{message_id}"
        else:
            digest = hashlib.blake2b("\x1f".join((source, prompt, completion)).encode(), digest_size=16).hexdigest()
            key = f"txt-{digest}"
        doc = LabeledExampleDoc(
            _id=key,
            prompt=prompt,
            completion=completion,
            message_id=message_id,
            channel=channel,
            labelled_by=labelled_by.lower(),
            labelled_at=at or utcnow(),
            source=source,
        )
        async with self.query("add_labeled_example"):
            await LabeledExampleDoc.get_pymongo_collection().replace_one(
                {"_id": key}, doc.model_dump(by_alias=True, exclude={"revision_id"}), upsert=True
            )
        return doc

    async def labeled_examples(self, channel: str | None = None, source: str | None = None) -> list[LabeledExampleDoc]:
        """Every labelled example (optionally of one channel or source), oldest first."""
        query: Doc = {}
        if channel is not None:
            query["channel"] = channel
        if source is not None:
            query["source"] = source
        async with self.query("labeled_examples"):
            return await LabeledExampleDoc.find(query).sort("+labelled_at").to_list()

    async def label_counts(self, channel: str | None = None) -> dict[str, int]:
        """Labelled examples per label (the training set's balance)."""
        match: Doc = {} if channel is None else {"channel": channel}
        return await self._count_by(LabeledExampleDoc, match, "$completion", "label_counts")

    async def _count_by(
        self, model: type[Document], match: Doc, key: str, what: str, timeout_s: float | None = None
    ) -> dict[str, int]:
        pipeline: list[Doc] = [{"$match": match}, {"$group": {"_id": key, "n": {"$sum": 1}}}]
        async with self.query(what, timeout_s):
            rows = await model.aggregate(pipeline).to_list()
        return {str(r["_id"]): int(r["n"]) for r in rows if r["_id"] is not None}

    # ---- mood snapshots

    async def save_snapshot(
        self, state: MoodState, *, bucket: datetime | None = None, counts: Mapping[str, int] | None = None
    ) -> MoodSnapshotDoc:
        """Store a channel's mood for one time bucket (default: ``state.at``, else now); re-saving replaces."""
        when = bucket or state.at or utcnow()
        doc = MoodSnapshotDoc(
            _id=f"{state.channel}@{when.astimezone(UTC).isoformat()}",
            channel=state.channel,
            bucket=when,
            label=state.label,
            share=state.share,
            valence=state.valence,
            colour=state.colour,
            counts=dict(counts or {}),
            shares={str(k): float(v) for k, v in state.shares.items()},
            messages=state.messages,
            skipped=state.skipped,
        )
        async with self.query("save_snapshot"):
            await MoodSnapshotDoc.get_pymongo_collection().replace_one(
                {"_id": doc.id}, doc.model_dump(by_alias=True, exclude={"revision_id"}), upsert=True
            )
        return doc

    async def snapshots(
        self,
        channel: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 0,
        *,
        timeout_s: float | None = None,
    ) -> list[MoodSnapshotDoc]:
        """A channel's snapshots with ``since <= bucket < until``, oldest first. Index ``channel_bucket``."""
        query: Doc = {"channel": channel}
        span: Doc = {}
        if since is not None:
            span["$gte"] = since
        if until is not None:
            span["$lt"] = until
        if span:
            query["bucket"] = span
        async with self.query("snapshots", timeout_s):
            return await MoodSnapshotDoc.find(query).sort("+bucket").limit(limit).to_list()

    # ---- stream sessions

    async def open_session(self, channel: str, at: datetime) -> StreamSessionDoc:
        """Record that a channel went live; a repeated notice returns the session already open."""
        async with self.query("open_session"):
            current = await self.current_session(channel)
            if current is not None:
                return current
            doc = StreamSessionDoc(channel=channel, started=at)
            await doc.insert()
            return doc

    async def close_session(self, channel: str, at: datetime) -> StreamSessionDoc | None:
        """Record that a channel went offline; None when no session was open."""
        async with self.query("close_session"):
            current = await self.current_session(channel)
            if current is None:
                return None
            current.ended = at
            await StreamSessionDoc.get_pymongo_collection().update_one({"_id": current.id}, {"$set": {"ended": at}})
            return current

    async def current_session(self, channel: str) -> StreamSessionDoc | None:
        async with self.query("current_session"):
            found = await StreamSessionDoc.find({"channel": channel, "ended": None}).sort("-started").limit(1).to_list()
        return found[0] if found else None

    async def sessions(self, channel: str) -> list[StreamSessionDoc]:
        async with self.query("sessions"):
            return await StreamSessionDoc.find({"channel": channel}).sort("+started").to_list()


@contextlib.asynccontextmanager
async def open_storage(
    cfg: StorageConfig, *, spool_dir: Path, clock: Callable[[], float] = time.monotonic
) -> AsyncIterator[Storage]:
    """Connect, initialise Beanie, and run the writer's flusher until exit (then a final flush).

    An unreachable database at startup is not an error: the writer spools to disk and the
    connection (and Beanie's initialisation) is retried in the background until it answers.
    """
    url = cfg.mongodb_url.get_secret_value()
    timeout_ms = cfg.server_timeout_ms
    client: AsyncMongoClient[Doc] = AsyncMongoClient(
        url,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(30_000, 10 * timeout_ms),
        tz_aware=True,
        appname="chatmood",
    )
    probe_ms = min(timeout_ms, PROBE_TIMEOUT_MS)
    probe: AsyncMongoClient[Doc] = AsyncMongoClient(
        url,
        serverSelectionTimeoutMS=probe_ms,
        connectTimeoutMS=probe_ms,
        socketTimeoutMS=max(5_000, timeout_ms),
        maxPoolSize=1,
        appname="chatmood-probe",
    )
    try:
        storage = Storage(cfg, client, spool_dir, clock, probe_client=probe)
        # The spool folder first: a second process on it is refused before it opens a single connection.
        storage.writer.open()
        try:
            try:
                await storage.ensure_ready()
            except PyMongoError as e:
                storage.writer.mark_unreachable()
                log.warning(
                    "storage_unreachable_at_startup",
                    database=storage.database,
                    error=_short(e),
                    spooling_to=str(spool_dir / SPOOL_FILE),
                )
            storage.tasks.spawn(storage.writer.run(), name="storage-writer")
            try:
                yield storage
            finally:
                storage.writer.stop()
                # The flusher ends after its current step, itself bounded by server_timeout_ms: let it, rather
                # than cancel PyMongo in the middle of a write.
                await storage.tasks.aclose(grace_s=cfg.server_timeout_ms / 1000 + 1.0)
                await storage.writer.shutdown()
        finally:
            storage.writer.close()
    finally:
        await probe.close()
        await client.close()
