"""The development and test database: FerretDB v1.24.2 (SQLite backend) on loopback.

``make setup`` builds the binary into ``.tools/bin/ferretdb`` (``tools/ferretdb/main.go`` says how and
why); ``CHATMOOD_FERRETDB`` points somewhere else. It speaks the MongoDB wire protocol, so chatmood talks
to it exactly as production talks to MongoDB: over TCP, through PyMongo's async client and Beanie.

* :class:`DevDb` is one server process on a fixed host, port and data folder. ``stop()`` really stops it
  (SIGTERM, then SIGKILL) and ``start()`` brings it back on the same port with the same data, which is
  how the tests and ``bench/ingest.py`` drill a database outage. ``astart()``/``astop()`` do the same off
  the event loop.
* :func:`devdb` (blocking, for pytest session fixtures) and :func:`run_devdb` (async) pick a free port
  when given 0 and a temporary data folder when given none (removed afterwards), start the server, wait
  until it accepts connections, and always terminate it on exit.
* :func:`devdb_main` is ``chatmood devdb``: the server in the foreground until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO

import structlog

from bot.errors import StorageError

log = structlog.get_logger(__name__)

FERRETDB_ENV = "CHATMOOD_FERRETDB"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = REPO_ROOT / ".tools" / "bin" / "ferretdb"
BUILD_HINT = "build it with `make setup` (or `cd tools/ferretdb && go build -trimpath -o ../../.tools/bin/ferretdb .`)"


def find_ferretdb(environ: dict[str, str] | None = None) -> Path:
    """The FerretDB binary: ``$CHATMOOD_FERRETDB`` or ``.tools/bin/ferretdb`` in the repository."""
    env = os.environ if environ is None else environ
    configured = env.get(FERRETDB_ENV)
    path = Path(configured) if configured else DEFAULT_BINARY
    if not path.is_file():
        where = f"{FERRETDB_ENV}={configured}" if configured else str(path)
        raise StorageError(f"FerretDB binary not found ({where}); {BUILD_HINT}")
    if not os.access(path, os.X_OK):
        raise StorageError(f"FerretDB binary {path} is not executable; {BUILD_HINT}")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class DevDb:
    """One FerretDB server process; restartable on the same port and data folder."""

    def __init__(
        self,
        *,
        binary: Path,
        data_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        log_level: str = "error",
        log_file: Path | None = None,
    ) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.port = port
        self.host = host
        self.log_level = log_level
        # FerretDB's own log (stderr); kept so a failed start can say why.
        self.log_file = log_file or data_dir / "ferretdb.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        return [
            str(self.binary),
            f"--listen-addr={self.host}:{self.port}",
            f"--data-dir={self.data_dir}",
            f"--log-level={self.log_level}",
        ]

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts TCP connections."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _accepts(self.host, self.port):
            raise StorageError(f"cannot start FerretDB: {self.host}:{self.port} is already in use")
        self._log = open(self.log_file, "ab")  # closed in stop()
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while not _accepts(self.host, self.port):
            code = self.process.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop()
                why = f"exited with status {code}" if code is not None else f"not listening after {timeout:g}s"
                raise StorageError(f"FerretDB {why}; its log: {self._tail()}")
            time.sleep(0.02)
        log.debug("devdb_started", url=self.url, pid=self.process.pid, data_dir=str(self.data_dir))

    def stop(self, timeout: float = 10.0, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM (FerretDB closes its client connections, which takes ~3 s), then SIGKILL
        after ``timeout``; ``kill=True`` sends SIGKILL at once, like a crash. Idempotent."""
        proc, self.process = self.process, None
        if proc is not None:
            if proc.poll() is None:
                if kill:
                    proc.kill()
                else:
                    proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.debug("devdb_stopped", url=self.url, status=proc.returncode)
        if self._log is not None:
            self._log.close()
            self._log = None

    async def astart(self) -> None:
        """:meth:`start` off the event loop."""
        await asyncio.to_thread(self.start)

    async def astop(self, *, kill: bool = False) -> None:
        """:meth:`stop` off the event loop."""
        await asyncio.to_thread(self.stop, kill=kill)

    def _tail(self, limit: int = 2000) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text[-limit:].strip() or "(empty)"


@contextlib.contextmanager
def devdb(
    *, port: int = 0, data_dir: Path | None = None, host: str = "127.0.0.1", log_level: str = "error"
) -> Iterator[DevDb]:
    """A started :class:`DevDb`; a free port when ``port`` is 0, a temporary folder when ``data_dir`` is None."""
    binary = find_ferretdb()
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chatmood-ferretdb-")))
        db = DevDb(binary=binary, data_dir=data_dir, port=port or free_port(host), host=host, log_level=log_level)
        stack.callback(db.stop)
        db.start()
        yield db


@contextlib.asynccontextmanager
async def run_devdb(
    *, port: int = 0, data_dir: Path | None = None, host: str = "127.0.0.1", log_level: str = "error"
) -> AsyncIterator[DevDb]:
    """Async :func:`devdb`: starting and stopping run off the event loop."""
    binary = find_ferretdb()
    async with contextlib.AsyncExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chatmood-ferretdb-")))
        db = DevDb(binary=binary, data_dir=data_dir, port=port or free_port(host), host=host, log_level=log_level)
        stack.push_async_callback(db.astop)
        await db.astart()
        yield db


async def cmd_devdb(port: int, data_dir: Path, host: str = "127.0.0.1") -> int:
    """``chatmood devdb``: FerretDB in the foreground, its log on stderr, until SIGINT or SIGTERM."""
    try:
        binary = find_ferretdb()
    except StorageError as e:
        print(f"chatmood devdb: {e}", flush=True)
        return 2
    data_dir = await asyncio.to_thread(data_dir.resolve)
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    if await asyncio.to_thread(_accepts, host, port):
        print(f"chatmood devdb: {host}:{port} is already in use (another devdb? try --port)", flush=True)
        return 1
    db = DevDb(binary=binary, data_dir=data_dir, port=port, host=host, log_level="warn")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    proc = await asyncio.create_subprocess_exec(*db.command(), stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not await asyncio.to_thread(_accepts, host, port):
            if proc.returncode is not None or time.monotonic() > deadline:
                print("chatmood devdb: FerretDB did not start (see its log above)", flush=True)
                return 1
            await asyncio.sleep(0.05)
        print(f"FerretDB is listening: {db.url}  (data in {data_dir}; Ctrl-C stops it)", flush=True)
        print(f"  export CHATMOOD_MONGODB_URL={db.url}", flush=True)
        waiter = asyncio.create_task(proc.wait(), name="devdb-process")
        stopper = asyncio.create_task(stop.wait(), name="devdb-signal")
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            waiter.cancel()
            await asyncio.gather(waiter, stopper, return_exceptions=True)
        if proc.returncode is not None:
            print(f"chatmood devdb: FerretDB exited with status {proc.returncode}", flush=True)
            return 1
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
