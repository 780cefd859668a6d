"""One batch of writes to the ``messages`` collection, and what the database said about it.

:class:`BatchWriter` is the database side of :class:`~bot.storage.writer.MessageWriter`: the inserts go out
with one ``insert_many(ordered=False)``, late verdicts with ``bulk_write`` in chunks of
:data:`UPDATES_PER_COMMAND`. Duplicate keys (error 11000) are redeliveries, counted, never failures. A document
the database or BSON refuses for good costs its neighbours nothing: the rest of its batch is stored, a refused
verdict is split off so its message is still stored, a refused update leaves the other updates of its chunk
applied, and what was refused goes once to ``rejected.jsonl`` with the reason. Only transient errors (no server,
no answer within ``server_timeout_ms``) escape, for the writer to spool; :class:`PartlyWritten` says the inserts
were acknowledged and only verdicts remain.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import bson
import pymongo
import structlog
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from bot.domain import SeenIds
from bot.storage.documents import Doc
from bot.storage.spool import Insert, Op, Update, append_rejected

log = structlog.get_logger(__name__)

DUPLICATE_KEY = 11000
# Server error codes that mean "not now" rather than "never" (shutdown, failover, network).
_TRANSIENT_CODES = frozenset({6, 7, 89, 91, 189, 9001, 10107, 11600, 11602, 13435, 13436})
# Verdict updates per update command. FerretDB 1.24.2 never answers an update command of 100 or more
# statements (99 take a third of a second); MongoDB has no such limit, and chunks cost it nothing.
UPDATES_PER_COMMAND = 64
VERDICT_KEYS = ("label", "confidence", "probs", "model", "classified_at")
LAG_SAMPLES = 2048


def is_transient(e: BaseException) -> bool:
    if isinstance(e, PyMongoError) and e.timeout:
        return True  # no answer within server_timeout_ms: a hung or overloaded server, not a refusal
    if isinstance(e, ConnectionFailure):
        return True
    if isinstance(e, OperationFailure) and not isinstance(e, BulkWriteError):
        return e.has_error_label("RetryableWriteError") or e.code in _TRANSIENT_CODES
    return False


def failure_kind(e: BaseException) -> str:
    """"timeout" when the server was there but did not answer in time (hung, overloaded), else "unreachable"."""
    if not isinstance(e, PyMongoError) or not e.timeout:
        return "unreachable"
    if isinstance(e, ServerSelectionTimeoutError) and "timed out" not in str(e):
        return "unreachable"  # nothing to select: connections refused, no such host
    return "timeout"


def is_duplicate(e: BaseException) -> bool:
    return isinstance(e, OperationFailure) and e.code == DUPLICATE_KEY


@dataclass
class WriterStats:
    received: int = 0  # messages submitted
    inserted: int = 0  # new documents the database acknowledged
    duplicates: int = 0  # redeliveries dropped by the writer or the unique _id (not failures)
    verdicts: int = 0  # verdicts submitted
    verdicts_inline: int = 0  # ... folded into their message's insert (one write per message)
    verdicts_late: int = 0  # ... that came after their message left memory: an update each
    verdicts_coalesced: int = 0  # ... late ones that replaced a queued update for the same message
    verdicts_applied: int = 0  # late updates that matched a stored message
    verdicts_unmatched: int = 0  # ... whose message is not stored (rejected or never submitted)
    batches: int = 0  # successful round trips
    spooled: int = 0  # operations written to the disk spool, in total
    spool_pending: int = 0  # operations in the spool not yet written back
    replayed: int = 0  # operations written back from the spool
    overflows: int = 0  # times the memory queue hit max_buffered and went to the spool
    outages: int = 0  # times the database became unreachable or stopped answering in time
    failed_batches: int = 0  # refusals for good (each one set aside in rejected.jsonl)
    rejected: int = 0  # operations set aside in rejected.jsonl
    spool_corrupt: int = 0  # unreadable spool lines (a torn write from a crash), skipped
    buffered: int = 0  # operations waiting in memory
    spooling: bool = False
    # Why the spool was last needed: "unreachable" (no server) or "timeout" (no answer in server_timeout_ms).
    last_failure: str = ""

    def as_dict(self) -> dict[str, int | bool | str]:
        return asdict(self)


class LagWindow:
    """Seconds from a message's arrival to its verdict being stored, over the last stored verdicts."""

    def __init__(self, size: int = LAG_SAMPLES) -> None:
        self._lags: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._lags.append(max(0.0, seconds))

    def percentile(self, q: float) -> float | None:
        if not self._lags:
            return None
        ordered = sorted(self._lags)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def clear(self) -> None:
        self._lags.clear()

class BatchWriter:
    """Writes batches of operations to the collection. Shares the writer's ``stats``, its set of ``stored`` ids
    (redeliveries are dropped before the database) and its ``lag`` window."""

    def __init__(self, collection: AsyncCollection[Doc], *, timeout_s: float, stats: WriterStats, stored: SeenIds,
                 lag: LagWindow, rejected_path: Path) -> None:
        self._coll = collection
        self._timeout_s = timeout_s
        self.stats = stats
        self.stored = stored
        self.lag = lag
        self.rejected_path = rejected_path

    async def apply(self, ops: list[Op]) -> None:
        """Write ops: the inserts (one ``insert_many``), then the late verdicts (``bulk_write`` in chunks).

        Raises only transient errors (:class:`_PartlyWritten` once the inserts are acknowledged);
        duplicates are counted and anything refused for good goes to rejected.jsonl.
        """
        # Redeliveries are dropped here when we know the id is stored (or is earlier in this batch):
        # FerretDB falls back to one insert per document when a batch meets a duplicate key.
        inserts: list[Doc] = []
        batch_ids: set[str] = set()
        known = 0
        updates: dict[str, Update] = {}
        for op in ops:
            if isinstance(op, Insert):
                mid = op.doc["_id"]
                if mid in batch_ids or mid in self.stored:
                    known += 1
                else:
                    batch_ids.add(mid)
                    inserts.append(op.doc)
            else:  # one update per message and chunk, the later fields winning (the spool may hold several)
                earlier = updates.pop(op.id, None)
                merged = {**earlier.fields, **op.fields} if earlier is not None else op.fields
                updates[op.id] = Update(op.id, merged, op.received_s)
        if inserts:
            await self._insert(inserts)
        self.stats.duplicates += known
        pending = list(updates.values())
        for start in range(0, len(pending), UPDATES_PER_COMMAND):
            try:
                await self._update_chunk(pending[start : start + UPDATES_PER_COMMAND])
            except Exception as e:
                if is_transient(e):
                    left: list[Op] = list(pending[start:])
                    raise PartlyWritten(left, e) from e
                raise
        self.stats.batches += 1

    async def _insert(self, docs: list[Doc]) -> None:
        try:
            with pymongo.timeout(self._timeout_s):
                await self._coll.insert_many(docs, ordered=False)
        except BulkWriteError as e:
            await self._bulk_error(e, docs)
        except Exception as e:
            if is_transient(e):
                raise
            await self._isolate(docs, e)
        else:
            self._stored_docs(docs)

    def _stored_docs(self, docs: Iterable[Doc]) -> None:
        now = time.time()
        n = 0
        for doc in docs:
            n += 1
            self.stored.add(doc["_id"])
            if "label" in doc:
                self.lag.add(now - doc["received_at"].timestamp())
        self.stats.inserted += n

    async def _bulk_error(self, e: BulkWriteError, docs: list[Doc]) -> None:
        """Some documents of a batch were refused: count the duplicates, store the rest, isolate the refused."""
        refused: dict[int, Exception] = {}
        duplicate: set[int] = set()
        for err in e.details.get("writeErrors", []):
            index = int(err["index"])
            if err.get("code") == DUPLICATE_KEY:
                duplicate.add(index)
            else:
                refused[index] = OperationFailure(str(err.get("errmsg", "refused")), err.get("code"))
        self.stats.duplicates += len(duplicate)
        for i in duplicate:
            self.stored.add(docs[i]["_id"])
        self._stored_docs(d for i, d in enumerate(docs) if i not in refused and i not in duplicate)
        for i, err in refused.items():
            await self._refused_insert(docs[i], err)

    async def _isolate(self, docs: list[Doc], first: Exception) -> None:
        """A batch was refused as a whole: find the documents at fault, store the others."""
        log.warning("storage_batch_refused_isolating", error=str(first)[:200], documents=len(docs))
        good: list[Doc] = []
        for doc in docs:
            try:
                bson.encode(doc)  # what BSON can't carry (a lone surrogate in an id) fails here, before the wire
            except Exception as enc:  # noqa: BLE001 - any encoding failure marks this document, and only it
                await self._refused_insert(doc, enc)
            else:
                good.append(doc)
        if len(good) == len(docs):  # no culprit found here: the server refused the batch; go one by one
            for doc in good:
                await self._insert_one(doc)
            return
        if good:  # the rest as a batch again; refused once more, _isolate finds no culprit and goes one by one
            await self._insert(good)

    async def _insert_one(self, doc: Doc) -> None:
        try:
            with pymongo.timeout(self._timeout_s):
                await self._coll.insert_one(doc)
        except Exception as e:
            if is_transient(e):
                raise
            if is_duplicate(e):
                self.stats.duplicates += 1
                self.stored.add(doc["_id"])
            else:
                await self._refused_insert(doc, e)
        else:
            self._stored_docs((doc,))

    async def _refused_insert(self, doc: Doc, e: Exception) -> None:
        """One document refused for good. If it carries a verdict, the message alone may still be stored:
        then only the verdict is set aside."""
        verdict = {k: doc[k] for k in VERDICT_KEYS if k in doc}
        if verdict:
            bare = {k: v for k, v in doc.items() if k not in verdict}
            try:
                bson.encode(bare)
                with pymongo.timeout(self._timeout_s):
                    await self._coll.insert_one(bare)
            except Exception as e2:
                if is_transient(e2):
                    raise
                if not is_duplicate(e2):
                    self._reject(e2, [Insert(doc)])
                    return
                self.stats.duplicates += 1
                self.stored.add(bare["_id"])
            else:
                self._stored_docs((bare,))
            self._reject(e, [Update(str(doc["_id"]), verdict)])
            return
        self._reject(e, [Insert(doc)])

    async def _update_chunk(self, chunk: list[Update]) -> None:
        requests = [UpdateOne({"_id": u.id}, {"$set": u.fields}) for u in chunk]
        try:
            with pymongo.timeout(self._timeout_s):
                res = await self._coll.bulk_write(requests, ordered=False)
        except Exception as e:
            if is_transient(e):
                raise
            # One refused update must not cost the others. FerretDB stops an update command at its first
            # refused statement (ordered or not, and its reply then lacks the counts PyMongo reads), so the
            # chunk goes again one update at a time ($set twice is harmless).
            log.warning("storage_updates_refused_isolating", error=str(e)[:200], updates=len(chunk))
            for u in chunk:
                await self._update_one(u)
            return
        self.stats.verdicts_applied += res.matched_count
        self.stats.verdicts_unmatched += len(chunk) - res.matched_count
        self._late_lags(chunk)

    async def _update_one(self, u: Update) -> None:
        try:
            bson.encode({"_id": u.id, "$set": u.fields})
            with pymongo.timeout(self._timeout_s):
                res = await self._coll.update_one({"_id": u.id}, {"$set": u.fields})
        except Exception as e:
            if is_transient(e):
                raise
            self._reject(e, [u])
            return
        if res.matched_count:
            self.stats.verdicts_applied += 1
            self._late_lags((u,))
        else:
            self.stats.verdicts_unmatched += 1

    def _late_lags(self, updates: Iterable[Update]) -> None:
        now = time.time()
        for u in updates:
            if u.received_s is not None:
                self.lag.add(now - u.received_s)

    def _reject(self, e: BaseException, ops: list[Op]) -> None:
        """The database said no for good: keep the operations, with the reason, in rejected.jsonl."""
        self.stats.failed_batches += 1
        self.stats.rejected += len(ops)
        reason = str(e)[:500]
        log.error("storage_write_refused", error=reason, operations=len(ops), kept_in=str(self.rejected_path))
        append_rejected(self.rejected_path, reason, ops)


class PartlyWritten(Exception):  # a signal between BatchWriter and MessageWriter, never seen outside storage
    """Transient failure after the inserts of a batch were acknowledged; ``ops`` (verdicts) still need writing."""

    def __init__(self, ops: list[Op], cause: Exception) -> None:
        super().__init__(str(cause))
        self.ops = ops
        self.cause = cause
