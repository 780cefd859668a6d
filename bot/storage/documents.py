"""The Beanie documents chatmood stores, one per collection, and their indexes.

Collections: ``messages`` (:class:`MessageDoc`, ``_id`` = the Twitch message id, so a redelivered message
is stored once), ``labeled_examples``, ``mood_snapshots`` and ``stream_sessions``. The schema keeps to
what MongoDB 7/8 and FerretDB v1 both support: plain compound indexes, flat sub-documents, arrays of
scalars only (emote spans are parallel arrays), ``$group`` with ``$sum`` only, no NUL in strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from beanie import Document
from pydantic import Field
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from bot.domain import ChatLine, Verdict

Doc = dict[str, Any]  # a raw document, as PyMongo reads and writes it


class MessageDoc(Document):
    """One chat message; the classification fields are filled in when its verdict arrives."""

    id: str = Field(alias="_id")  # type: ignore[assignment]  # the Twitch message id, not an ObjectId
    channel: str
    channel_id: str = ""
    user_id: str
    user_login: str
    user_name: str
    text: str
    sent_at: datetime
    badges: list[str] = Field(default_factory=list)
    emote_ids: list[str] = Field(default_factory=list)
    emote_begins: list[int] = Field(default_factory=list)  # text[begin:end], code points, end exclusive
    emote_ends: list[int] = Field(default_factory=list)
    reply_to: str | None = None
    received_at: datetime
    # Ingest order (ns clock): BSON dates keep milliseconds, so this breaks ties in "latest message" queries.
    seq: int = 0
    command: bool = False  # a command line (stored, never classified, never training data); stored only if true
    label: str | None = None
    confidence: float | None = None
    probs: dict[str, float] | None = None
    model: str | None = None
    classified_at: datetime | None = None

    class Settings:
        name = "messages"
        # Each serves a query's filter and its whole sort (sent_at, then seq), so MongoDB reads only the
        # documents it returns: recent_messages and latest_message_by (docs/storage.md).
        indexes: ClassVar[list[IndexModel]] = [
            IndexModel(
                [("channel", ASCENDING), ("sent_at", ASCENDING), ("seq", ASCENDING)], name="channel_sent_at_seq"
            ),
            IndexModel(
                [("channel", ASCENDING), ("user_login", ASCENDING), ("sent_at", ASCENDING), ("seq", ASCENDING)],
                name="channel_user_sent_at_seq",
            ),
        ]
        # Indexes earlier versions created, replaced by the ones above: dropped at startup.
        obsolete_indexes: ClassVar[tuple[str, ...]] = ("channel_sent_at", "channel_user_sent_at")


class LabeledExampleDoc(Document):
    """A training record: prompt = message text, completion = label."""

    id: str = Field(alias="_id")  # type: ignore[assignment]  # "msg-<message id>" or "txt-<hash>"
    prompt: str
    completion: str
    message_id: str | None = None
    channel: str | None = None
    labelled_by: str
    labelled_at: datetime
    source: str = "chat"  # "chat" (a !label command), "import", ...

    class Settings:
        name = "labeled_examples"
        indexes: ClassVar[list[IndexModel]] = [
            IndexModel([("completion", ASCENDING)], name="completion"),
            IndexModel([("channel", ASCENDING), ("labelled_at", ASCENDING)], name="channel_labelled_at"),
        ]


class MoodSnapshotDoc(Document):
    """A channel's mood in one time bucket (``_id`` = channel and bucket, so re-saving replaces it)."""

    id: str = Field(alias="_id")  # type: ignore[assignment]
    channel: str
    bucket: datetime
    label: str
    share: float
    valence: float
    colour: str
    counts: dict[str, int] = Field(default_factory=dict)
    shares: dict[str, float] = Field(default_factory=dict)
    messages: int = 0
    skipped: int = 0

    class Settings:
        name = "mood_snapshots"
        indexes: ClassVar[list[IndexModel]] = [
            IndexModel([("channel", ASCENDING), ("bucket", ASCENDING)], name="channel_bucket")
        ]


class StreamSessionDoc(Document):
    """One broadcast of a channel: ``ended`` is None while it is live."""

    channel: str
    started: datetime
    ended: datetime | None = None

    class Settings:
        name = "stream_sessions"
        indexes: ClassVar[list[IndexModel]] = [
            IndexModel([("channel", ASCENDING), ("started", ASCENDING)], name="channel_started")
        ]


DOCUMENT_MODELS: list[type[Document]] = [MessageDoc, LabeledExampleDoc, MoodSnapshotDoc, StreamSessionDoc]


async def ensure_indexes(db: AsyncDatabase[Doc]) -> None:
    """Create the declared indexes that are missing, one per command, and drop the obsolete ones.

    Beanie's own index setup re-sends every declared index on each start. MongoDB treats that as a
    no-op, but FerretDB v1.24.2 drops the connection (a recovered panic, "slice bounds out of range")
    when one createIndexes command names two or more indexes that already exist. So: list, compare
    by name, create only what is missing.
    """
    for model in DOCUMENT_MODELS:
        settings = getattr(model, "Settings", None)
        wanted: list[IndexModel] = list(getattr(settings, "indexes", []))
        obsolete: tuple[str, ...] = getattr(settings, "obsolete_indexes", ())
        if not wanted and not obsolete:
            continue
        coll = db[model.get_collection_name()]
        existing = set((await coll.index_information()).keys())
        for index in wanted:
            if index.document["name"] not in existing:
                await coll.create_indexes([index])
        for name in obsolete:
            if name in existing:
                await coll.drop_index(name)


def utcnow() -> datetime:
    return datetime.now(UTC)


def message_document(line: ChatLine, received_at: datetime, seq: int = 0, *, command: bool = False) -> Doc:
    """The ``messages`` document for a chat line (the writer inserts these as plain dicts, for speed).

    Empty optional fields (no badges, no emotes, not a reply, no channel id, not a command) are left out:
    FerretDB's cost per document grows with its fields (about a quarter less CPU per insert without them),
    and :class:`MessageDoc` reads them back as their defaults.
    """
    doc: Doc = {
        "_id": line.message_id,
        "channel": line.channel,
        "user_id": line.user_id,
        "user_login": line.user_login,
        "user_name": line.user_name,
        "text": line.text,
        "sent_at": line.sent_at,
        "received_at": received_at,
        "seq": seq,
    }
    if line.channel_id:
        doc["channel_id"] = line.channel_id
    if line.badges:
        doc["badges"] = sorted(line.badges)
    if line.emotes:
        doc["emote_ids"] = [e.emote_id for e in line.emotes]
        doc["emote_begins"] = [e.begin for e in line.emotes]
        doc["emote_ends"] = [e.end for e in line.emotes]
    if line.reply_to is not None:
        doc["reply_to"] = line.reply_to
    if command:
        doc["command"] = True
    return doc


def verdict_fields(verdict: Verdict, classified_at: datetime) -> Doc:
    return {
        "label": verdict.label,
        "confidence": float(verdict.confidence),
        "probs": {str(k): float(v) for k, v in verdict.probs.items()},
        "model": verdict.model,
        "classified_at": classified_at,
    }
