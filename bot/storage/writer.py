"""The message writer: every message write, batched, ordered, and spooled to disk while the database is away.

Every message write goes through :class:`MessageWriter`: ``submit()`` is a plain call that only queues.
One flusher task (owned by :func:`open_storage`) writes the queue with ``insert_many(ordered=False)``
when ``batch_size`` operations are waiting or the oldest has waited ``flush_interval_ms``. Verdict
updates ride the same queue, so each lands after the insert of its message.

When the database is unreachable the writer *spools*: batches are appended to ``spool_dir/messages.jsonl``
(write, flush, fsync), and while anything is spooled every later batch goes there too, so order is kept.
A retry with capped backoff writes the spool back in order once the database answers, then removes it.
A spool left by an earlier process is written back at startup. The in-memory queue is bounded: past
``max_buffered`` operations it is moved to the spool at once. Duplicate keys (error 11000) are
redeliveries, never failures. Anything the database rejects for good goes to ``rejected.jsonl`` with the
reason, so no message is lost silently.

Invariant that keeps order: every operation in memory is newer than every operation in the spool, and
nothing is written to the database from memory while the spool has operations in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import structlog
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
)

from bot.config import StorageConfig
from bot.domain import ChatLine, SeenIds, Verdict
from bot.errors import StorageError
from bot.storage.documents import Doc

log = structlog.get_logger(__name__)

DUPLICATE_KEY = 11000
# Server error codes that mean "not now" rather than "never" (shutdown, failover, network).
_TRANSIENT_CODES = frozenset({6, 7, 89, 91, 189, 9001, 10107, 11600, 11602, 13435, 13436})
SPOOL_FILE = "messages.jsonl"
RECENT_IDS = 50_000  # stored message ids the writer remembers, to drop redeliveries before the database
PROBE_TIMEOUT_MS = 500  # how long "is the database back?" waits for an answer
REJECTED_FILE = "rejected.jsonl"
# Verdict updates per update command. FerretDB 1.24.2 never answers an update command of 100 or more
# statements (99 take a third of a second); MongoDB has no such limit, and chunks cost it nothing.
UPDATES_PER_COMMAND = 64
_DATETIME_KEYS = ("sent_at", "received_at", "classified_at")



def utcnow() -> datetime:
    return datetime.now(UTC)


def message_document(line: ChatLine, received_at: datetime, seq: int = 0) -> Doc:
    """The ``messages`` document for a chat line (the writer inserts these as plain dicts, for speed).

    Empty optional fields (no badges, no emotes, not a reply, no channel id) are left out: FerretDB's
    cost per document grows with its fields (about a quarter less CPU per insert without them), and
    :class:`MessageDoc` reads them back as their defaults.
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
    return doc


def verdict_fields(verdict: Verdict, classified_at: datetime) -> Doc:
    return {
        "label": verdict.label,
        "confidence": float(verdict.confidence),
        "probs": {str(k): float(v) for k, v in verdict.probs.items()},
        "model": verdict.model,
        "classified_at": classified_at,
    }


# An operation: ("insert", document, None) or ("verdict", message id, fields to $set).
Op = tuple[str, Any, Any]


def _is_transient(e: BaseException) -> bool:
    if isinstance(e, ConnectionFailure):
        return True
    if isinstance(e, OperationFailure) and not isinstance(e, BulkWriteError):
        return e.has_error_label("RetryableWriteError") or e.code in _TRANSIENT_CODES
    return False


def _encode_op(op: Op) -> bytes:
    def enc(value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else value

    if op[0] == "insert":
        doc = {k: enc(v) for k, v in op[1].items()}
        return json.dumps({"op": "insert", "doc": doc}, separators=(",", ":")).encode()
    fields = {k: enc(v) for k, v in op[2].items()}
    return json.dumps({"op": "verdict", "id": op[1], "set": fields}, separators=(",", ":")).encode()


def _decode_op(raw: bytes) -> Op:
    obj = json.loads(raw)

    def dec(d: Doc) -> Doc:
        for k in _DATETIME_KEYS:
            if isinstance(d.get(k), str):
                d[k] = datetime.fromisoformat(d[k])
        return d

    if obj["op"] == "insert":
        return ("insert", dec(obj["doc"]), None)
    if obj["op"] == "verdict":
        return ("verdict", str(obj["id"]), dec(obj["set"]))
    raise ValueError(f"unknown spool operation {obj['op']!r}")


@dataclass
class WriterStats:
    received: int = 0  # messages submitted
    inserted: int = 0  # new documents the database acknowledged
    duplicates: int = 0  # redeliveries the unique _id turned away (not failures)
    verdicts: int = 0  # verdict updates submitted
    verdicts_applied: int = 0  # ... that matched a stored message
    verdicts_unmatched: int = 0  # ... whose message is not stored (rejected or never submitted)
    batches: int = 0  # successful round trips
    spooled: int = 0  # operations written to the disk spool, in total
    spool_pending: int = 0  # operations in the spool not yet written back
    replayed: int = 0  # operations written back from the spool
    overflows: int = 0  # times the memory queue hit max_buffered and went to the spool
    outages: int = 0  # times the database became unreachable
    failed_batches: int = 0  # batches refused for a non-transient reason
    rejected: int = 0  # operations set aside in rejected.jsonl
    spool_corrupt: int = 0  # unreadable spool lines (a torn write from a crash), skipped
    buffered: int = 0  # operations waiting in memory
    spooling: bool = False

    def as_dict(self) -> dict[str, int | bool]:
        return asdict(self)


class MessageWriter:
    """The one path for message writes. Create through :func:`open_storage`; ``submit*`` on the loop thread."""

    def __init__(
        self,
        collection: AsyncCollection[Doc],
        cfg: StorageConfig,
        spool_dir: Path,
        *,
        probe: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
        retry_initial_s: float = 0.25,
        retry_max_s: float = 1.0,
    ) -> None:
        self._coll = collection
        self._batch_size = cfg.batch_size
        self._interval = cfg.flush_interval_ms / 1000
        self._max_buffered = cfg.max_buffered
        self._probe = probe
        self._clock = clock
        self._retry_initial = retry_initial_s
        self._retry_max = retry_max_s
        self._backoff = retry_initial_s
        self._retry_at = 0.0
        self._pending: deque[Op] = deque()
        self._oldest_at = 0.0  # clock() when the oldest pending operation arrived
        self._inflight: list[Op] | None = None  # a memory batch being written to the database
        self._inflight_spooled = False
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stats = WriterStats()
        self.spool_dir = spool_dir
        self.spool_path = spool_dir / SPOOL_FILE
        self.rejected_path = spool_dir / REJECTED_FILE
        self._spool_out: IO[bytes] | None = None
        self._spool_offset = 0  # bytes of the spool already written back
        self._lock_file: IO[bytes] | None = None
        self._closing = False
        self._stored = SeenIds(RECENT_IDS)  # ids known to be stored

    # ---- lifecycle (driven by open_storage)

    def open(self, *, reachable: bool) -> None:
        """Take the spool folder (one process at a time) and pick up a spool left by an earlier run."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.spool_dir / ".lock", "wb")  # closed in close()
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            self._lock_file = None
            raise StorageError(f"spool folder {self.spool_dir} is in use by another chatmood process") from None
        if self.spool_path.exists():
            pending, torn = 0, False
            with open(self.spool_path, "rb") as f:
                for raw in f:
                    pending += bool(raw.strip())
                    torn = not raw.endswith(b"\n")
            if not pending:
                self.spool_path.unlink()
            else:
                if torn:  # a write cut short by a crash: keep new lines apart from it
                    with open(self.spool_path, "ab") as f:
                        f.write(b"\n")
                        f.flush()
                        os.fsync(f.fileno())
                self._stats.spool_pending = pending
                self._stats.spooling = True
                log.warning("storage_spool_found", path=str(self.spool_path), operations=pending)
        if not reachable:
            self._stats.spooling = True

    def close(self) -> None:
        if self._spool_out is not None:
            self._spool_out.close()
            self._spool_out = None
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    async def run(self) -> None:
        """The flusher: writes due batches and retries the spool. Runs until :meth:`stop` and cancelled."""
        me = asyncio.current_task()
        while not self._closing:
            # PyMongo can turn a cancellation into a connection error while it waits for a server;
            # the task still counts as cancelling, so honour it here.
            if me is not None and me.cancelling():
                raise asyncio.CancelledError
            wait = self._seconds_until_due()
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=min(wait, max(self._interval, 0.05)))
                continue
            try:
                async with self._lock:
                    await self._step()
            except Exception:  # a bug must not stop the writer: log it, wait, carry on
                log.exception("storage_writer_step_failed")
                await asyncio.sleep(1.0)

    def stop(self) -> None:
        """Ask the flusher to end after its current step (the owner then cancels and awaits it)."""
        self._closing = True
        self._wake.set()

    async def shutdown(self) -> None:
        """Final flush after the flusher is cancelled: one last try to write the spool back, then memory
        to the database, or to the spool if it is still down (the next start writes it back)."""
        async with self._lock:
            if self._stats.spooling:
                await self._recover()
            if not self._stats.spooling and self._pending:
                await self._drain_memory()
            if self._pending and not self._spool_or_keep(self._take(len(self._pending))):
                log.error("storage_messages_lost_at_shutdown", operations=len(self._pending))
        log.info("storage_writer_closed", **self.stats.as_dict())

    # ---- the producer side (plain calls, never wait on the database)

    def submit(self, line: ChatLine) -> None:
        """Queue one message for insertion. Never blocks on the database."""
        self._stats.received += 1
        self._push(("insert", message_document(line, utcnow(), time.time_ns()), None))

    def submit_verdict(self, message_id: str, verdict: Verdict) -> None:
        """Queue a classification; it is applied after the insert of that message."""
        self._stats.verdicts += 1
        self._push(("verdict", message_id, verdict_fields(verdict, utcnow())))

    def _push(self, op: Op) -> None:
        if len(self._pending) >= self._max_buffered:
            self._overflow()
        if not self._pending:
            self._oldest_at = self._clock()
            self._wake.set()
        self._pending.append(op)
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    def _overflow(self) -> None:
        """Memory is full: move it (after any batch in flight, which is older) to the spool."""
        ops: list[Op] = []
        with_inflight = self._inflight is not None and not self._inflight_spooled
        if self._inflight is not None and with_inflight:
            ops.extend(self._inflight)  # may also reach the database: the replay then meets duplicates
        ops.extend(self._pending)
        self._stats.overflows += 1
        log.warning("storage_buffer_full", moved_to_spool=len(ops), max_buffered=self._max_buffered)
        if self._spool_append(ops):  # else memory stays over its bound: better than losing messages
            self._pending.clear()
            self._inflight_spooled = self._inflight_spooled or with_inflight

    def poke(self) -> None:
        """Make the flusher re-check its deadlines now (for a test that has just advanced its fake clock)."""
        self._wake.set()

    # ---- flushing

    @property
    def stats(self) -> WriterStats:
        self._stats.buffered = len(self._pending)
        return self._stats

    def _seconds_until_due(self) -> float:
        now = self._clock()
        waits: list[float] = []
        if self._pending:
            if len(self._pending) >= self._batch_size:
                return 0.0
            waits.append(self._oldest_at + self._interval - now)
        if self._stats.spooling:
            waits.append(self._retry_at - now)
        return max(0.0, min(waits)) if waits else 3600.0

    def _take(self, n: int) -> list[Op]:
        n = min(n, len(self._pending))
        ops = [self._pending.popleft() for _ in range(n)]
        if self._pending:
            self._oldest_at = self._clock()
        return ops

    async def _step(self) -> None:
        due = bool(self._pending) and (
            len(self._pending) >= self._batch_size or self._clock() >= self._oldest_at + self._interval
        )
        if self._stats.spooling:
            # To disk first, so nothing waits in memory while the retry asks the server.
            if due and not self._spool_or_keep(self._take(len(self._pending))):
                await asyncio.sleep(1.0)  # the disk refused: do not spin
            if self._clock() >= self._retry_at:
                await self._recover()
        elif due:
            await self._write_memory_batch(self._take(self._batch_size))

    async def flush(self) -> None:
        """Write everything submitted so far: to the database, or durably to the spool if it is unreachable.

        If something is spooled, one attempt is made to write the spool back first.
        """
        async with self._lock:
            if self._stats.spooling:
                await self._recover()
            await self._drain_memory()

    async def _drain_memory(self) -> None:
        while self._pending:
            ops = self._take(self._batch_size)
            if self._stats.spooling:
                if not self._spool_or_keep(ops):
                    return
            else:
                await self._write_memory_batch(ops)

    async def _write_memory_batch(self, ops: list[Op]) -> None:
        self._inflight, self._inflight_spooled = ops, False
        try:
            await self._apply(ops)
        except asyncio.CancelledError:
            if not self._inflight_spooled:  # not known to be written: back to the front of the queue
                self._pending.extendleft(reversed(ops))
            raise
        except _PartlyWritten as p:
            self._went_down(p.cause)
            if not self._inflight_spooled:
                self._spool_or_keep(p.ops)
        except PyMongoError as e:  # transient only: _apply settles the rest itself
            self._went_down(e)
            if not self._inflight_spooled:
                self._spool_or_keep(ops)
        except Exception:  # not a database answer (a bug, a full disk): keep the batch, let run() log it
            if not self._inflight_spooled:
                self._pending.extendleft(reversed(ops))
            raise
        finally:
            self._inflight, self._inflight_spooled = None, False

    def _went_down(self, e: BaseException) -> None:
        if not self._stats.spooling:
            self._stats.outages += 1
            log.warning("storage_unreachable", error=str(e)[:200], spool=str(self.spool_path))
        self._stats.spooling = True
        self._backoff = self._retry_initial
        self._retry_at = self._clock() + self._backoff

    async def _apply(self, ops: list[Op]) -> None:
        """Write ops: the inserts (one ``insert_many``), then the verdict updates (``bulk_write`` in chunks).

        Raises only transient errors (:class:`_PartlyWritten` once the inserts are acknowledged);
        duplicates are counted and anything refused for good goes to rejected.jsonl.
        """
        # Redeliveries are dropped here when we know the id is stored (or is earlier in this batch):
        # FerretDB falls back to one insert per document when a batch meets a duplicate key.
        inserts: list[Doc] = []
        batch_ids: set[str] = set()
        known = 0
        for op in ops:
            if op[0] == "insert":
                mid = op[1]["_id"]
                if mid in batch_ids or mid in self._stored:
                    known += 1
                else:
                    batch_ids.add(mid)
                    inserts.append(op[1])
        verdicts = [op for op in ops if op[0] == "verdict"]
        if inserts:
            try:
                res = await self._coll.insert_many(inserts, ordered=False)
                self._stats.inserted += len(res.inserted_ids)
                self._remember(batch_ids)
            except BulkWriteError as e:
                self._bulk_error(e, inserts)
            except Exception as e:
                if _is_transient(e):
                    raise
                await self._insert_one_by_one(inserts, e)
        self._stats.duplicates += known
        for start in range(0, len(verdicts), UPDATES_PER_COMMAND):
            chunk = verdicts[start : start + UPDATES_PER_COMMAND]
            updates = [UpdateOne({"_id": op[1]}, {"$set": op[2]}) for op in chunk]
            try:
                ures = await self._coll.bulk_write(updates, ordered=True)
                self._stats.verdicts_applied += ures.matched_count
                self._stats.verdicts_unmatched += len(updates) - ures.matched_count
            except Exception as e:
                if _is_transient(e):
                    raise _PartlyWritten(verdicts[start:], e) from e
                self._refuse(e, chunk)
        self._stats.batches += 1

    async def _insert_one_by_one(self, docs: list[Doc], first: Exception) -> None:
        """A batch was refused as a whole: find the culprits, store the rest."""
        log.warning("storage_batch_refused_retrying_singly", error=str(first)[:200], documents=len(docs))
        for doc in docs:
            try:
                await self._coll.insert_one(doc)
                self._stats.inserted += 1
                self._remember((doc["_id"],))
            except Exception as e:
                if _is_transient(e):
                    raise
                if isinstance(e, OperationFailure) and e.code == DUPLICATE_KEY:
                    self._stats.duplicates += 1
                    self._remember((doc["_id"],))
                else:
                    self._refuse(e, [("insert", doc, None)])

    def _bulk_error(self, e: BulkWriteError, docs: list[Doc]) -> None:
        details = e.details
        self._stats.inserted += int(details.get("nInserted", 0))
        bad: list[Op] = []
        for err in details.get("writeErrors", []):
            if err.get("code") == DUPLICATE_KEY:
                self._stats.duplicates += 1
            else:
                bad.append(("insert", docs[int(err["index"])], None))
        refused = {op[1]["_id"] for op in bad}
        self._remember(d["_id"] for d in docs if d["_id"] not in refused)
        if bad:
            self._refuse(e, bad)

    def _remember(self, ids: Iterable[str]) -> None:
        """Ids known to be stored (bounded, oldest forgotten first)."""
        for mid in ids:
            self._stored.add(mid)

    def _refuse(self, e: Exception, ops: list[Op]) -> None:
        """The database said no for good: keep the operations, with the reason, in rejected.jsonl."""
        self._stats.failed_batches += 1
        self._stats.rejected += len(ops)
        reason = str(e)[:500]
        log.error("storage_write_refused", error=reason, operations=len(ops), kept_in=str(self.rejected_path))
        lines = b"".join(
            json.dumps({"reason": reason, "entry": json.loads(_encode_op(op))}).encode() + b"\n" for op in ops
        )
        with open(self.rejected_path, "ab") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    # ---- the spool

    def _spool_append(self, ops: list[Op]) -> bool:
        """Append durably (write, flush, fsync). Synchronous on purpose: order is the order of the calls.

        False (and the file as it was) when the disk refuses; the caller then keeps the operations in memory.
        """
        if not ops:
            return True
        self._stats.spooling = True
        start = 0
        try:
            if self._spool_out is None:
                self._spool_out = open(self.spool_path, "ab")  # closed when the spool drains
            start = self._spool_out.tell()
            self._spool_out.write(b"".join(_encode_op(op) + b"\n" for op in ops))
            self._spool_out.flush()
            os.fsync(self._spool_out.fileno())
        except OSError as e:
            log.error("storage_spool_write_failed", error=str(e), operations=len(ops), kept_in_memory=True)
            if self._spool_out is not None:
                with contextlib.suppress(OSError):
                    self._spool_out.truncate(start)
                with contextlib.suppress(OSError):
                    self._spool_out.close()
                self._spool_out = None
            return False
        self._stats.spooled += len(ops)
        self._stats.spool_pending += len(ops)
        return True

    def _spool_or_keep(self, ops: list[Op]) -> bool:
        """Spool ops taken from the front of memory; if the disk refuses, put them back there."""
        if self._spool_append(ops):
            return True
        self._pending.extendleft(reversed(ops))
        return False

    def _read_spool(self, limit: int) -> tuple[list[Op], int]:
        """Up to ``limit`` operations from the current offset, and the offset after them."""
        ops: list[Op] = []
        if not self.spool_path.exists():
            return ops, self._spool_offset
        with open(self.spool_path, "rb") as f:
            f.seek(self._spool_offset)
            offset = self._spool_offset
            while len(ops) < limit:
                raw = f.readline()
                if not raw.endswith(b"\n"):
                    break  # end of file (a torn tail was closed off with a newline at open())
                offset += len(raw)
                if not raw.strip():
                    continue
                try:
                    ops.append(_decode_op(raw))
                except (ValueError, KeyError, TypeError) as e:
                    self._stats.spool_corrupt += 1
                    self._stats.spool_pending = max(0, self._stats.spool_pending - 1)
                    log.error("storage_spool_line_unreadable", offset=offset - len(raw), error=str(e)[:200])
        return ops, offset

    async def _apply_after_probe(self, ops: list[Op]) -> None:
        """``_apply``, once more at once if the first try hits a dead connection.

        The probe has its own client; the writer's pool may still hold a connection from before the
        server restarted, and the first write on it fails although the server is up. Inserts are keyed
        by ``_id`` and verdicts are ``$set``, so the repeat is safe. (A failure after the inserts were
        acknowledged, ``_PartlyWritten``, is not repeated here: its verdicts are retried as usual.)
        """
        try:
            await self._apply(ops)
        except PyMongoError as e:
            if not _is_transient(e):
                raise
            log.info("storage_retrying_stale_connection", error=str(e)[:200])
            await self._apply(ops)

    async def _recover(self) -> None:
        """If the database answers, write the spool back in order and leave spooling mode."""
        replayed = 0
        try:
            await self._probe()
            while True:
                ops, offset = self._read_spool(self._batch_size)
                if not ops:
                    if offset != self._spool_offset:  # only unreadable lines were left
                        self._spool_offset = offset
                        continue
                    break
                # A failure part way leaves the offset alone: the next attempt repeats the chunk,
                # where the unique _id turns repeated inserts into counted duplicates.
                await self._apply_after_probe(ops)
                self._spool_offset = offset
                replayed += len(ops)
                self._stats.replayed += len(ops)
                self._stats.spool_pending = max(0, self._stats.spool_pending - len(ops))
        except (PyMongoError, _PartlyWritten) as e:
            self._backoff = min(self._retry_max, self._backoff * 2)
            self._retry_at = self._clock() + self._backoff
            level = log.info if isinstance(e, _PartlyWritten) or _is_transient(e) else log.error
            level(
                "storage_still_unreachable", retry_in_s=round(self._backoff, 2), replayed=replayed, error=str(e)[:200]
            )
            return
        # The spool is empty and nothing awaits between here and the end: no append can slip in.
        if self._spool_out is not None:
            self._spool_out.close()
            self._spool_out = None
        self.spool_path.unlink(missing_ok=True)
        self._spool_offset = 0
        self._stats.spool_pending = 0
        self._stats.spooling = False
        self._backoff = self._retry_initial
        log.info("storage_recovered", replayed=replayed)


class _PartlyWritten(Exception):  # an internal signal, never seen outside the writer
    """Transient failure after the inserts of a batch were acknowledged; ``ops`` (verdicts) still need writing."""

    def __init__(self, ops: list[Op], cause: Exception) -> None:
        super().__init__(str(cause))
        self.ops = ops
        self.cause = cause
