"""The disk spool: message writes that cannot go to the database now, kept durably until they can.

Files in the spool folder (one chatmood process at a time: ``.lock`` is held with ``flock``):

``messages.jsonl``
    One operation per line, JSON (ASCII, so a lone surrogate travels as an escape and is refused later by
    the database, not by the spool): ``{"op":"insert","doc":{...}}`` is a message document (with its verdict
    fields when the verdict came in time), ``{"op":"verdict","id":"...","set":{...}}`` a verdict for a
    message written earlier. Datetimes are ISO 8601 strings. Appends are write, flush, fsync (and the
    folder is fsync'd when the file is created), so an append that returned survives a crash of the
    process or the machine. A line torn by a crash is closed off with a newline at open, and skipped
    (counted) when read.
``messages.pos``
    The write-back position: ``<inode> <offset>``; everything before ``offset`` is in the database.
    Replaced atomically (temporary file, fsync, rename) after every chunk the database acknowledged, so a
    restart continues where the last run stopped. A crash between a write and its position update repeats
    one chunk: inserts meet the unique ``_id`` (counted as duplicates), verdicts are ``$set`` again.
``rejected.jsonl``
    Operations the database refused for good, each with the reason (:func:`append_rejected`).

When the spool is written back completely, the position file is removed first and then the spool, never
the other way round: a stale position must never skip into a newer spool (the inode guards that too).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import structlog

from bot.errors import StorageError
from bot.storage.documents import Doc

log = structlog.get_logger(__name__)

SPOOL_FILE = "messages.jsonl"
POSITION_FILE = "messages.pos"
REJECTED_FILE = "rejected.jsonl"
LOCK_FILE = ".lock"
DATETIME_KEYS = ("sent_at", "received_at", "classified_at")


@dataclass(slots=True)
class Insert:
    """Insert one message document (it carries its verdict when the verdict arrived before the write)."""

    doc: Doc


@dataclass(slots=True)
class Update:
    """``$set`` a late verdict on a message written earlier."""

    id: str
    fields: Doc
    # When the message arrived (time.time()), where the writer still knew it; for the lag figures only.
    received_s: float | None = field(default=None, compare=False)


Op = Insert | Update


def encode_op(op: Op) -> bytes:
    """One spool line (without the newline)."""

    def enc(value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else value

    if isinstance(op, Insert):
        doc = {k: enc(v) for k, v in op.doc.items()}
        return json.dumps({"op": "insert", "doc": doc}, separators=(",", ":")).encode()
    fields = {k: enc(v) for k, v in op.fields.items()}
    return json.dumps({"op": "verdict", "id": op.id, "set": fields}, separators=(",", ":")).encode()


def decode_op(raw: bytes) -> Op:
    obj = json.loads(raw)

    def dec(d: Doc) -> Doc:
        for k in DATETIME_KEYS:
            if isinstance(d.get(k), str):
                d[k] = datetime.fromisoformat(d[k])
        return d

    if obj["op"] == "insert":
        return Insert(dec(obj["doc"]))
    if obj["op"] == "verdict":
        return Update(str(obj["id"]), dec(obj["set"]))
    raise ValueError(f"unknown spool operation {obj['op']!r}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_rejected(path: Path, reason: str, ops: Iterable[Op]) -> None:
    """Keep operations the database refused for good, with the reason (write, flush, fsync)."""
    lines = b"".join(
        json.dumps({"reason": reason, "entry": json.loads(encode_op(op))}).encode() + b"\n" for op in ops
    )
    with open(path, "ab") as f:
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())


class Spool:
    """The spool file, its write-back position and the folder lock. Synchronous on purpose: the order of
    the calls is the order on disk. Used by :class:`bot.storage.writer.MessageWriter` only."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / SPOOL_FILE
        self.position_path = folder / POSITION_FILE
        self.rejected_path = folder / REJECTED_FILE
        self.pending = 0  # operations after the write-back position
        self.corrupt = 0  # unreadable lines skipped, in total
        self._offset = 0  # bytes of the spool already written back
        self._out: IO[bytes] | None = None
        self._lock: IO[bytes] | None = None

    # ---- lifecycle

    def open(self) -> int:
        """Take the folder (one process at a time) and find a spool an earlier run left: the operations
        still to write back, counted from the saved position."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.folder / LOCK_FILE, "wb")  # closed in close()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise StorageError(f"spool folder {self.folder} is in use by another chatmood process") from None
        if not self.path.exists():
            self.position_path.unlink(missing_ok=True)
            return 0
        self._offset = self._saved_offset()
        pending, torn = 0, False
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            for raw in f:
                pending += bool(raw.strip())
                torn = not raw.endswith(b"\n")
        if not pending:
            self.reset()
            return 0
        if torn:  # a write cut short by a crash: keep new lines apart from it
            with open(self.path, "ab") as f:
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
        self.pending = pending
        log.warning("storage_spool_found", path=str(self.path), operations=pending, resuming_at_byte=self._offset)
        return pending

    def _saved_offset(self) -> int:
        """The saved write-back position, if it belongs to this spool file and falls on a line boundary."""
        try:
            inode, offset = (int(x) for x in self.position_path.read_text(encoding="ascii").split())
            st = self.path.stat()
        except (OSError, ValueError):
            return 0
        if inode != st.st_ino or not 0 <= offset <= st.st_size:
            log.warning("storage_spool_position_ignored", path=str(self.position_path), reason="not this spool")
            return 0
        if offset:
            with open(self.path, "rb") as f:
                f.seek(offset - 1)
                if f.read(1) != b"\n":
                    log.warning("storage_spool_position_ignored", path=str(self.position_path), reason="mid-line")
                    return 0
        return offset

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    # ---- appending

    def append(self, ops: list[Op]) -> bool:
        """Append durably. False (and the file as it was) when the disk refuses."""
        if not ops:
            return True
        start = 0
        try:
            if self._out is None:
                created = not self.path.exists()
                self._out = open(self.path, "ab")  # closed in reset() or close()
                if created:
                    _fsync_dir(self.folder)
            start = self._out.tell()
            self._out.write(b"".join(encode_op(op) + b"\n" for op in ops))
            self._out.flush()
            os.fsync(self._out.fileno())
        except OSError as e:
            log.error("storage_spool_write_failed", error=str(e), operations=len(ops), kept_in_memory=True)
            if self._out is not None:
                with contextlib.suppress(OSError):
                    self._out.truncate(start)
                with contextlib.suppress(OSError):
                    self._out.close()
                self._out = None
            return False
        self.pending += len(ops)
        return True

    # ---- writing back

    def read(self, limit: int) -> tuple[list[Op], int]:
        """Up to ``limit`` operations from the write-back position, and the offset after them."""
        ops: list[Op] = []
        if not self.path.exists():
            return ops, self._offset
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            offset = self._offset
            while len(ops) < limit:
                raw = f.readline()
                if not raw.endswith(b"\n"):
                    break  # end of file (a torn tail was closed off with a newline at open())
                offset += len(raw)
                if not raw.strip():
                    continue
                try:
                    ops.append(decode_op(raw))
                except (ValueError, KeyError, TypeError) as e:
                    self.corrupt += 1
                    self.pending = max(0, self.pending - 1)
                    log.error("storage_spool_line_unreadable", offset=offset - len(raw), error=str(e)[:200])
        return ops, offset

    def advance(self, offset: int, written: int) -> None:
        """Everything before ``offset`` is in the database: save the position (atomically, durably)."""
        self.pending = max(0, self.pending - written)
        if offset == self._offset:
            return
        self._offset = offset
        try:
            inode = self.path.stat().st_ino
            tmp = self.position_path.with_suffix(".pos.tmp")
            with open(tmp, "w", encoding="ascii") as f:
                f.write(f"{inode} {offset}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.position_path)
        except OSError as e:  # the next start repeats more than it must; duplicates are harmless
            log.warning("storage_spool_position_not_saved", error=str(e))

    @property
    def drained(self) -> bool:
        """Nothing left after the write-back position."""
        try:
            return self._offset >= self.path.stat().st_size
        except FileNotFoundError:
            return True

    def reset(self) -> None:
        """The spool is written back: remove the position first, then the file."""
        if self._out is not None:
            self._out.close()
            self._out = None
        self.position_path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
        self._offset = 0
        self.pending = 0
