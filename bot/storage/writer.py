"""The message writer: one write per message, batched and ordered, spooled to disk when the database can't take it.

Every message write goes through :class:`MessageWriter`: ``submit(line)`` and ``submit_verdict(id, verdict)``
are plain calls that only queue. One flusher task (owned by :func:`~bot.storage.store.open_storage`) writes.

**One write per message.** A message waits in memory for at most ``flush_interval_ms``. When its verdict comes
in that time (on the default path it always does: a classifier batch takes about a millisecond) the verdict is
folded into the queued document and one insert writes both. A batch goes out with ``insert_many(ordered=False)``
when ``batch_size`` messages at the front of the queue are *ready* (they carry their verdict, are commands, which
get none, or have waited the window) or the oldest has waited ``flush_interval_ms``. A verdict that arrives
after its message left memory (the LLM path, a backlog) becomes a late update: at most one per message (a later
verdict replaces a queued one), sent with ``bulk_write`` in chunks of 64 after the inserts of the same step, at
most ``batch_size`` per step. ``stats`` counts both kinds (``verdicts_inline``, ``verdicts_late``).

**Outages.** A write that fails for a transient reason (no server, or no answer within ``server_timeout_ms``:
a hung server is noticed then, not after the socket timeout) goes to the disk spool (:mod:`bot.storage.spool`);
while anything is spooled, each flush window's messages go there too, so order is kept, also while the spool
is being written back: the write-back goes one chunk per step and the flusher spools between chunks, so
nothing waits only in memory for longer than a flush window. The write-back position is saved after each
chunk, so a restart resumes there. The in-memory queue is bounded: past ``max_buffered`` operations it moves to
the spool at once. At shutdown, memory goes to the database (or the spool), then the spool is written back for
at most :data:`SHUTDOWN_WRITE_BACK_S`; the next start does the rest.

**Refusals** are :class:`~bot.storage.batch.BatchWriter`'s: it writes each batch, counts duplicates, sets aside
what the database refuses for good without costing its neighbours, and lets only transient errors through.

Invariants that keep order: every operation in memory is newer than every operation in the spool; nothing is
written to the database from memory while the spool has operations in it; an update in memory never targets a
message still in memory (its verdict is folded in instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    PyMongoError,
)

from bot.config import StorageConfig
from bot.domain import ChatLine, SeenIds, Verdict
from bot.storage.batch import BatchWriter, LagWindow, PartlyWritten, WriterStats, failure_kind, is_transient
from bot.storage.documents import Doc, message_document, utcnow, verdict_fields
from bot.storage.spool import Insert, Op, Spool, Update

log = structlog.get_logger(__name__)

RECENT_IDS = 50_000  # stored message ids the writer remembers, to drop redeliveries before the database
PROBE_TIMEOUT_MS = 500  # how long "is the database back?" waits for an answer
SHUTDOWN_WRITE_BACK_S = 5.0  # how long shutdown keeps writing the spool back before leaving it for the next start



@dataclass(slots=True)
class _Queued:
    """A message waiting in memory for its batch (and, for a while, for its verdict)."""

    doc: Doc
    at: float  # clock() when submitted
    ready: bool  # carries its verdict, or expects none (a command)


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
        self._batch_size = cfg.batch_size
        self._interval = cfg.flush_interval_ms / 1000
        self._max_buffered = cfg.max_buffered
        self._timeout_s = cfg.server_timeout_ms / 1000
        self._probe = probe
        self._clock = clock
        self._retry_initial = retry_initial_s
        self._retry_max = retry_max_s
        self._backoff = retry_initial_s
        self._retry_at = 0.0
        self._queue: deque[_Queued] = deque()  # messages, oldest first
        self._by_id: dict[str, _Queued] = {}
        self._updates: dict[str, Update] = {}  # late verdicts, one per message
        self._updates_at = 0.0  # clock() when the oldest queued update arrived
        self._inflight: list[Op] | None = None  # a memory batch being written to the database
        self._inflight_spooled = False
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stats = WriterStats()
        self._spool = Spool(spool_dir)
        self.spool_dir = spool_dir
        self.spool_path = self._spool.path
        self.rejected_path = self._spool.rejected_path
        self._closing = False
        self._stored = SeenIds(RECENT_IDS)  # ids known to be stored
        self._db_ok = False  # the last write-back chunk went through: the next one needs no probe first
        # Messages written without a verdict, and when they arrived: a late verdict's lag is measured from there.
        self._unclassified: OrderedDict[str, float] = OrderedDict()
        self.lag = LagWindow()
        self._batches = BatchWriter(collection, timeout_s=self._timeout_s, stats=self._stats, stored=self._stored,
                                    lag=self.lag, rejected_path=self.rejected_path)

    # ---- lifecycle (driven by open_storage)

    def open(self) -> None:
        """Take the spool folder (one process at a time) and pick up a spool left by an earlier run."""
        pending = self._spool.open()
        if pending:
            self._stats.spool_pending = pending
            self._stats.spooling = True

    def mark_unreachable(self) -> None:
        """The database did not answer at startup: spool from the first message."""
        self._stats.spooling = True
        self._stats.last_failure = "unreachable"

    def close(self) -> None:
        self._spool.close()

    async def run(self) -> None:
        """The flusher: writes due batches and writes the spool back, until :meth:`stop` (or cancelled)."""
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
        """Ask the flusher to end after its current step (the owner awaits it, and cancels it if it lingers)."""
        self._closing = True
        self._wake.set()

    async def shutdown(self) -> None:
        """Final flush after the flusher is cancelled: memory to the database, or durably to the spool when
        it is spooling; then the spool is written back for at most :data:`SHUTDOWN_WRITE_BACK_S` (the next
        start writes back the rest, from the saved position)."""
        async with self._lock:
            if not self._stats.spooling:
                await self._drain_memory()
            if self._stats.spooling:
                self._spool_memory()
                deadline = self._clock() + SHUTDOWN_WRITE_BACK_S
                while self._stats.spooling and self._clock() < deadline:
                    if not await self._write_back_chunk():
                        break
                if not self._stats.spooling:
                    await self._drain_memory()
            if self._memory_ops():
                self._spool_memory()
            if self._memory_ops():
                log.error("storage_messages_lost_at_shutdown", operations=self._memory_ops())
        log.info("storage_writer_closed", **self.stats.as_dict())

    # ---- the producer side (plain calls, never wait on the database)

    def submit(self, line: ChatLine, *, command: bool = False) -> None:
        """Queue one message for insertion. ``command``: a command line (stored, never classified, so the
        writer does not wait for its verdict). Never blocks on the database."""
        self._stats.received += 1
        mid = line.message_id
        if mid in self._by_id or mid in self._stored:
            self._stats.duplicates += 1  # a redelivery: the first copy is queued or stored
            return
        if self._memory_ops() >= self._max_buffered:
            self._overflow()
        queued = _Queued(message_document(line, utcnow(), time.time_ns(), command=command), self._clock(), command)
        if not self._queue:
            self._wake.set()
        self._queue.append(queued)
        self._by_id[mid] = queued
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    def submit_verdict(self, message_id: str, verdict: Verdict) -> None:
        """Store a classification: in its message's insert when that is still queued, else as an update
        written after the message."""
        self._stats.verdicts += 1
        fields = verdict_fields(verdict, utcnow())
        queued = self._by_id.get(message_id)
        if queued is not None:
            queued.doc.update(fields)
            queued.ready = True
            self._stats.verdicts_inline += 1
            if len(self._queue) >= self._batch_size:
                self._wake.set()
            return
        self._stats.verdicts_late += 1
        pending = self._updates.get(message_id)
        if pending is not None:
            pending.fields.update(fields)  # the later verdict wins
            self._stats.verdicts_coalesced += 1
            return
        if self._memory_ops() >= self._max_buffered:
            self._overflow()
        if not self._updates:
            self._updates_at = self._clock()
            self._wake.set()
        self._updates[message_id] = Update(message_id, fields, self._unclassified.pop(message_id, None))
        if len(self._updates) >= self._batch_size:
            self._wake.set()

    def _memory_ops(self) -> int:
        return len(self._queue) + len(self._updates)

    def _overflow(self) -> None:
        """Memory is full: move it (after any batch in flight, which is older) to the spool."""
        ops: list[Op] = []
        with_inflight = self._inflight is not None and not self._inflight_spooled
        if self._inflight is not None and with_inflight:
            ops.extend(self._inflight)  # may also reach the database: the write-back then meets duplicates
        memory = self._take_all()
        ops.extend(memory)
        self._stats.overflows += 1
        log.warning("storage_buffer_full", moved_to_spool=len(ops), max_buffered=self._max_buffered)
        if self._append_to_spool(ops):
            self._inflight_spooled = self._inflight_spooled or with_inflight
        else:  # memory stays over its bound: better than losing messages
            self._restore(memory)

    def poke(self) -> None:
        """Make the flusher re-check its deadlines now (for a test that has just advanced its fake clock)."""
        self._wake.set()

    # ---- what is due

    @property
    def stats(self) -> WriterStats:
        self._stats.buffered = self._memory_ops()
        self._stats.spool_corrupt = self._spool.corrupt
        return self._stats

    def _ready_count(self, now: float, limit: int) -> int:
        """Messages at the front of the queue that may go now (their verdict is in, they expect none, or they
        have waited the window), up to ``limit``."""
        n = 0
        for q in self._queue:
            if n >= limit or not (q.ready or now - q.at >= self._interval):
                break
            n += 1
        return n

    def _inserts_due(self, now: float) -> bool:
        if not self._queue:
            return False
        if now - self._queue[0].at >= self._interval:
            return True
        return len(self._queue) >= self._batch_size and self._ready_count(now, self._batch_size) >= self._batch_size

    def _updates_due(self, now: float) -> bool:
        return bool(self._updates) and (
            len(self._updates) >= self._batch_size or now - self._updates_at >= self._interval
        )

    def _seconds_until_due(self) -> float:
        now = self._clock()
        if self._inserts_due(now) or self._updates_due(now):
            return 0.0
        waits: list[float] = []
        if self._queue:
            waits.append(self._queue[0].at + self._interval - now)
        if self._updates:
            waits.append(self._updates_at + self._interval - now)
        if self._stats.spooling:
            waits.append(self._retry_at - now)
        return max(0.0, min(waits)) if waits else 3600.0

    # ---- taking from memory

    def _take_inserts(self, n: int) -> list[Op]:
        ops: list[Op] = []
        for _ in range(min(n, len(self._queue))):
            q = self._queue.popleft()
            mid = q.doc["_id"]
            del self._by_id[mid]
            if not q.ready:  # leaves without its verdict: a late one will be an update
                self._unclassified[mid] = q.doc["received_at"].timestamp()
                if len(self._unclassified) > RECENT_IDS:
                    self._unclassified.popitem(last=False)
            ops.append(Insert(q.doc))
        return ops

    def _take_updates(self, n: int) -> list[Op]:
        ops: list[Op] = []
        while self._updates and len(ops) < n:
            mid = next(iter(self._updates))
            ops.append(self._updates.pop(mid))
        if self._updates:
            self._updates_at = self._clock()
        return ops

    def _take_batch(self, now: float) -> list[Op]:
        """What is due now: ready messages from the front (at most batch_size), then queued late updates."""
        ops: list[Op] = []
        if self._inserts_due(now):
            ops.extend(self._take_inserts(max(1, self._ready_count(now, self._batch_size))))
        if self._updates and (ops or self._updates_due(now)):
            ops.extend(self._take_updates(self._batch_size))
        return ops

    def _take_due(self, now: float) -> list[Op]:
        """Everything that may leave memory now: the ready messages at the front (any number), the updates."""
        return self._take_inserts(self._ready_count(now, len(self._queue))) + self._take_updates(len(self._updates))

    def _take_all(self) -> list[Op]:
        return self._take_inserts(len(self._queue)) + self._take_updates(len(self._updates))

    def _restore(self, ops: list[Op]) -> None:
        """Put operations taken from the front of memory back there (a cancelled write, a refusing disk)."""
        now = self._clock()
        for op in reversed([op for op in ops if isinstance(op, Insert)]):
            mid = op.doc["_id"]
            if mid in self._by_id:
                continue
            queued = _Queued(op.doc, now - self._interval, True)  # due again at once
            late = self._updates.pop(mid, None)
            if late is not None:  # its verdict came while it was away: fold it in after all
                queued.doc.update(late.fields)
                self._stats.verdicts_inline += 1
                self._stats.verdicts_late -= 1
            self._unclassified.pop(mid, None)
            self._queue.appendleft(queued)
            self._by_id[mid] = queued
        for update in ops:
            if isinstance(update, Update):
                newer = self._updates.pop(update.id, None)
                if newer is not None:
                    update.fields.update(newer.fields)
                if not self._updates:
                    self._updates_at = now - self._interval
                self._updates[update.id] = update

    # ---- flushing

    async def _step(self) -> None:
        now = self._clock()
        if self._stats.spooling:
            # To disk first, so nothing waits in memory while the write-back talks to the server. Only what
            # is due: a message still within its window may yet get its verdict folded in.
            if (self._inserts_due(now) or self._updates_due(now)) and not self._spool_or_keep(self._take_due(now)):
                await asyncio.sleep(1.0)  # the disk refused: do not spin
            if self._clock() >= self._retry_at:
                # Chunks back to back for up to one window while the database takes them, so the spool
                # catches up with what keeps arriving; then the next step spools what became due.
                deadline = self._clock() + self._interval
                while await self._write_back_chunk() and self._stats.spooling and self._clock() < deadline:
                    pass
            return
        ops = self._take_batch(now)
        if ops:
            await self._write_memory_batch(ops)

    async def flush(self) -> None:
        """Write everything submitted so far: to the database, or durably to the spool if it can't take it.

        When something is spooled, memory is appended to it and the spool is written back until it is empty
        (one attempt: a failure leaves the rest spooled, from the saved position). The lock is let go between
        chunks, so the flusher keeps spooling what arrives meanwhile."""
        async with self._lock:
            if not self._stats.spooling:
                await self._drain_memory()
            if not self._stats.spooling:
                return
            self._spool_memory()
        while self._stats.spooling:
            async with self._lock:
                if not self._stats.spooling:
                    break
                if not await self._write_back_chunk():
                    return
        async with self._lock:
            if not self._stats.spooling:
                await self._drain_memory()

    async def _drain_memory(self) -> None:
        """Write what memory holds now (ready or not) to the database, or to the spool once it can't."""
        left = self._memory_ops()
        while left > 0 and self._memory_ops():
            if self._stats.spooling:
                self._spool_memory()
                return
            ops = self._take_inserts(self._batch_size)
            ops += self._take_updates(self._batch_size - len(ops))
            left -= len(ops)
            await self._write_memory_batch(ops)

    async def _write_memory_batch(self, ops: list[Op]) -> None:
        self._inflight, self._inflight_spooled = ops, False
        try:
            await self._batches.apply(ops)
        except asyncio.CancelledError:
            if not self._inflight_spooled:  # not known to be written: back to the front of the queue
                self._restore(ops)
            raise
        except PartlyWritten as p:
            self._went_down(p.cause)
            if not self._inflight_spooled:
                self._spool_or_keep(p.ops)
        except PyMongoError as e:  # transient only: BatchWriter.apply settles the rest itself
            self._went_down(e)
            if not self._inflight_spooled:
                self._spool_or_keep(ops)
        except Exception:  # not a database answer (a bug, a full disk): keep the batch, let run() log it
            if not self._inflight_spooled:
                self._restore(ops)
            raise
        finally:
            self._inflight, self._inflight_spooled = None, False

    def _went_down(self, e: BaseException) -> None:
        why = failure_kind(e)
        self._stats.last_failure = why
        if not self._stats.spooling:
            self._stats.outages += 1
            event = "storage_too_slow" if why == "timeout" else "storage_unreachable"
            log.warning(event, error=str(e)[:200], timeout_ms=round(1000 * self._timeout_s), spool=str(self.spool_path))
        self._stats.spooling = True
        self._db_ok = False
        self._backoff = self._retry_initial
        self._retry_at = self._clock() + self._backoff

    # ---- the spool

    def _append_to_spool(self, ops: list[Op]) -> bool:
        if not self._spool.append(ops):
            return False
        self._stats.spooling = True
        self._stats.spooled += len(ops)
        self._stats.spool_pending = self._spool.pending
        return True

    def _spool_or_keep(self, ops: list[Op]) -> bool:
        """Spool ops taken from the front of memory; if the disk refuses, put them back there."""
        if self._append_to_spool(ops):
            return True
        self._restore(ops)
        return False

    def _spool_memory(self) -> bool:
        """Everything in memory to the spool (memory is newer than all of it)."""
        return self._spool_or_keep(self._take_all()) if self._memory_ops() else True

    async def _apply_after_probe(self, ops: list[Op]) -> None:
        """``BatchWriter.apply``, once more at once if the first try hits a dead connection.

        The probe has its own client; the writer's pool may still hold a connection from before the
        server restarted, and the first write on it fails although the server is up. Inserts are keyed
        by ``_id`` and verdicts are ``$set``, so the repeat is safe. (A failure after the inserts were
        acknowledged, ``PartlyWritten``, is not repeated here: its verdicts are retried as usual.)
        """
        try:
            await self._batches.apply(ops)
        except PyMongoError as e:
            if not is_transient(e) or e.timeout:
                raise
            log.info("storage_retrying_stale_connection", error=str(e)[:200])
            await self._batches.apply(ops)

    async def _write_back_chunk(self) -> bool:
        """Write the next chunk of the spool back, if the database answers; leave spooling mode when the
        spool is empty. False when the database could not take it (retried later, with backoff)."""
        try:
            if not self._db_ok:
                await self._probe()  # bounded by its own short timeout
            ops, offset = self._spool.read(self._batch_size)
            if ops:
                await self._apply_after_probe(ops)
            # A failure above leaves the position alone: the next attempt repeats the chunk, where the
            # unique _id turns repeated inserts into counted duplicates.
            self._spool.advance(offset, len(ops))
            self._stats.replayed += len(ops)
            self._stats.spool_pending = self._spool.pending
            self._db_ok = True
        except (PyMongoError, PartlyWritten) as e:
            self._db_ok = False
            self._stats.last_failure = failure_kind(e.cause if isinstance(e, PartlyWritten) else e)
            self._backoff = min(self._retry_max, self._backoff * 2)
            self._retry_at = self._clock() + self._backoff
            level = log.info if isinstance(e, PartlyWritten) or is_transient(e) else log.error
            level("storage_still_unreachable", retry_in_s=round(self._backoff, 2), error=str(e)[:200])
            return False
        self._retry_at = self._clock()  # the next chunk at once (the flusher spools due memory in between)
        if self._spool.drained:
            # Nothing awaits between the last read and here: no append can slip in.
            replayed = self._stats.replayed
            self._spool.reset()
            self._stats.spool_pending = 0
            self._stats.spooling = False
            self._backoff = self._retry_initial
            log.info("storage_recovered", replayed_in_total=replayed)
        return True


