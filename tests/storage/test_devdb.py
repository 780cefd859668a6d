"""The development database: finding the FerretDB binary, running it, stopping and restarting it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from bot.errors import StorageError
from bot.storage.devdb import DEFAULT_BINARY, FERRETDB_ENV, DevDb, devdb, find_ferretdb, free_port, run_devdb

ROOT = Path(__file__).resolve().parents[2]


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def connect(url: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(url, serverSelectionTimeoutMS=3000)


def ping(url: str) -> bool:
    with connect(url) as client:
        return client.admin.command("ping").get("ok") == 1.0


class TestFindFerretdb:
    def test_missing_binary_says_how_to_build_it(self, tmp_path: Path) -> None:
        """A missing binary is a StorageError naming the path and `make setup`."""
        missing = tmp_path / "nope" / "ferretdb"
        with pytest.raises(StorageError, match=r"not found .*nope/ferretdb.*make setup"):
            find_ferretdb({FERRETDB_ENV: str(missing)})

    def test_not_executable(self, tmp_path: Path) -> None:
        """A file that cannot be run is refused with the same hint."""
        fake = tmp_path / "ferretdb"
        fake.write_text("not a program")
        fake.chmod(0o644)
        with pytest.raises(StorageError, match=r"not executable.*make setup"):
            find_ferretdb({FERRETDB_ENV: str(fake)})

    def test_default_location(self, ferretdb: DevDb) -> None:
        """Without the variable, the binary built by `make setup` is used."""
        assert find_ferretdb({}) == DEFAULT_BINARY
        assert ferretdb.binary == find_ferretdb()


class TestDevDb:
    def test_temporary_server_is_cleaned_up(self) -> None:
        """devdb() picks a free port and a temporary folder, and removes both afterwards."""
        with devdb() as db:
            assert db.url == f"mongodb://127.0.0.1:{db.port}/"
            assert ping(db.url)
            data_dir = db.data_dir
            assert data_dir.is_dir()
            proc = db.process
            assert proc is not None
        assert proc.poll() is not None
        assert not listening(db.port)
        assert not data_dir.exists()

    def test_stop_and_start_on_the_same_port_keeps_the_data(self, tmp_path: Path) -> None:
        """stop() really ends the server; start() brings it back on the same port with the same data."""
        with devdb(data_dir=tmp_path / "db") as db:
            with connect(db.url) as client:
                client.keep.things.insert_one({"_id": "kept", "n": 1})
            port = db.port
            db.stop(kill=True)
            assert not db.running and not listening(port)
            db.start()
            assert db.port == port and listening(port)
            with connect(db.url) as client:
                assert client.keep.things.find_one({"_id": "kept"}) == {"_id": "kept", "n": 1}

    def test_port_in_use_is_a_clear_error(self, tmp_path: Path) -> None:
        """Starting on a port someone else listens on fails at once, naming the port."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            db = DevDb(binary=find_ferretdb(), data_dir=tmp_path, port=port)
            with pytest.raises(StorageError, match=f"{port} is already in use"):
                db.start()

    async def test_async_variant(self) -> None:
        """run_devdb() starts and stops off the event loop, and astop()/astart() restart it."""
        async with run_devdb() as db:
            assert db.running
            await db.astop()
            assert not listening(db.port)
            await db.astart()
            assert listening(db.port)
            proc = db.process
        assert proc is not None and proc.poll() is not None


class TestIdIndex:
    def test_lookup_by_id_uses_the_id_index(self, ferretdb: DevDb) -> None:
        """A find by _id is an index search, not a table scan (make setup builds FerretDB with the _id lookup
        corrected: tools/ferretdb/patch-module.sh). Upstream v1.24.2 compares an expression its _id index is not
        built on, so every lookup and update by _id scans the whole collection."""
        with connect(ferretdb.url) as client:
            db = client["test_id_index"]
            try:
                db.messages.insert_many([{"_id": f"m-{i}", "n": i} for i in range(200)])
                plan = db.command("explain", {"find": "messages", "filter": {"_id": "m-150"}})["queryPlanner"]
                steps = " | ".join(str(step) for step in plan["Plan"])
                assert "SCAN" not in steps, steps
                assert "USING INDEX" in steps and "__id_" in steps, steps
                assert db.messages.find_one({"_id": "m-150"}) == {"_id": "m-150", "n": 150}
            finally:
                client.drop_database("test_id_index")


class TestDevdbCommand:
    def test_foreground_until_interrupted(self, tmp_path: Path) -> None:
        """`chatmood devdb` prints the URL, serves it, and exits 0 on SIGINT, taking FerretDB down with it."""
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "devdb", "--port", str(port), "--data-dir", str(tmp_path / "data")],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert proc.stdout is not None
            url = f"mongodb://127.0.0.1:{port}/"
            deadline = time.monotonic() + 30
            seen = []
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                seen.append(line)
                if url in line:
                    break
            assert any(url in line for line in seen), "".join(seen)
            assert ping(url)
            assert (tmp_path / "data").is_dir()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=20) == 0
            assert not listening(port)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def test_port_taken(self, ferretdb: DevDb, tmp_path: Path) -> None:
        """A port already served is reported, with a non-zero exit."""
        result = subprocess.run(
            [sys.executable, "-m", "bot", "devdb", "--port", str(ferretdb.port), "--data-dir", str(tmp_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode != 0
        assert "already in use" in result.stdout + result.stderr
