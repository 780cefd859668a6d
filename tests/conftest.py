"""Shared fixtures: a real FerretDB server and storage bound to a fresh database.

Fixtures (names are stable; other test modules rely on them):

``ferretdb`` (session)
    A :class:`bot.storage.devdb.DevDb`: FerretDB v1.24.2 started once per test session on a free loopback port
    with a temporary data folder. ``.url`` is its ``mongodb://127.0.0.1:PORT/`` URL, ``.port`` its port.
    Do not stop it: tests that take a database down use ``own_ferretdb``.

``own_ferretdb`` (function)
    A private FerretDB for one test (its own port and folder), which the test may ``stop()``/``astop()``
    and ``start()``/``astart()`` to drill an outage. Always terminated afterwards.

``storage_config`` (function)
    A :class:`bot.config.StorageConfig` pointing at ``ferretdb`` with a database name unique to the test
    (dropped afterwards), small batches (``batch_size=50``, ``flush_interval_ms=20``) and a short server
    timeout (1 s). Tweak with ``storage_config.model_copy(update={...})``.

``spool_dir`` (function)
    An empty folder for the writer's disk spool.

``storage`` (function)
    An open :class:`bot.storage.store.Storage` (``open_storage(storage_config, spool_dir=spool_dir)``): Beanie
    initialised, the writer's flusher running; closed (final flush) after the test.

The FerretDB binary comes from ``make setup`` (``make test`` builds it first). If it is missing the
session FAILS with instructions; it never skips.

Async fixtures here run on the test's own event loop (``loop_scope="function"``), like the tests.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from bot.config import StorageConfig
from bot.errors import StorageError
from bot.storage.devdb import DevDb, devdb, find_ferretdb
from bot.storage.store import Storage, open_storage


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long fuzz run (``@pytest.mark.fuzz``) takes minutes: it runs only when asked for with ``-m fuzz``."""
    if "fuzz" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="the long fuzz run: select it with `pytest -m fuzz`")
    for item in items:
        if "fuzz" in item.keywords:
            item.add_marker(skip)


def _require_ferretdb() -> None:
    try:
        find_ferretdb()
    except StorageError as e:
        pytest.fail(f"{e}. The storage tests need a real FerretDB; `make test` builds it.", pytrace=False)


@pytest.fixture(scope="session")
def ferretdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevDb]:
    _require_ferretdb()
    with devdb(data_dir=tmp_path_factory.mktemp("ferretdb")) as db:
        yield db


@pytest.fixture
def own_ferretdb(tmp_path: Path) -> Iterator[DevDb]:
    _require_ferretdb()
    with devdb(data_dir=tmp_path / "ferretdb") as db:
        yield db


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    path = tmp_path / "spool"
    path.mkdir()
    return path


def make_storage_config(url: str, **overrides: object) -> StorageConfig:
    """A config for tests: a fresh database name, small batches, a short server timeout."""
    values: dict[str, object] = {
        "mongodb_url": SecretStr(url),
        "database": f"test_{uuid.uuid4().hex[:16]}",
        "batch_size": 50,
        "flush_interval_ms": 20,
        "server_timeout_ms": 1000,  # every operation is bounded by it: leave room for a loaded machine
        "max_buffered": 10_000,
    }
    values.update(overrides)
    return StorageConfig.model_validate(values)


async def drop_database(url: str, name: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url, serverSelectionTimeoutMS=2000)
    try:
        await client.drop_database(name)
    finally:
        await client.close()


@pytest_asyncio.fixture(loop_scope="function")
async def storage_config(ferretdb: DevDb) -> AsyncIterator[StorageConfig]:
    cfg = make_storage_config(ferretdb.url)
    yield cfg
    await drop_database(ferretdb.url, cfg.database)


@pytest_asyncio.fixture(loop_scope="function")
async def storage(storage_config: StorageConfig, spool_dir: Path) -> AsyncIterator[Storage]:
    async with open_storage(storage_config, spool_dir=spool_dir) as st:
        yield st


@pytest_asyncio.fixture(loop_scope="function")
async def db(ferretdb: DevDb, storage_config: StorageConfig) -> AsyncIterator[Any]:
    """The test's database, read directly with PyMongo (what a program stored, seen from outside it)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(ferretdb.url)
    try:
        yield client[storage_config.database]
    finally:
        await client.close()
