"""Development database benchmark: what lookups and updates by ``_id`` cost as the collection grows.

Run with the project's venv: ``.venv/bin/python bench/devdb.py``. It starts the FerretDB that ``make setup``
built (or ``$CHATMOOD_FERRETDB``) on a free port with a temporary folder, fills one collection with small
message-like documents to 1,000, 10,000 and 100,000, and at each size times ``find_one`` by ``_id``,
``update_one`` by ``_id``, one ``bulk_write`` of 64 updates by ``_id`` and ``insert_many`` of 500; it also
reports the plan ``explain`` gives for a find by ``_id``. Progress on stderr, ONE JSON object on stdout.

The baseline is upstream FerretDB v1.24.2, whose ``_id`` lookups never use the ``_id`` index
(tools/ferretdb/patch-module.sh says why). Build it next to the patched one and point the variable at it::

    cp -r tools/ferretdb /tmp/ferretdb-upstream && sed -i '/^replace /d' /tmp/ferretdb-upstream/go.mod
    (cd /tmp/ferretdb-upstream && go build -o ferretdb .)
    CHATMOOD_FERRETDB=/tmp/ferretdb-upstream/ferretdb .venv/bin/python bench/devdb.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402 - after the path tweak, so the bench runs from a checkout
from pymongo import MongoClient, UpdateOne  # noqa: E402

from bot.storage.devdb import devdb, find_ferretdb  # noqa: E402

SIZES = (1_000, 10_000, 100_000)


def doc(i: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"_id": f"msg-{i:08d}", "channel": "benchchannel", "user_login": f"viewer_{i % 997}",
            "text": "lets go that was insane", "sent_at": now, "received_at": now, "seq": i}  # fmt: skip


def ms(fn: Any, repeat: int) -> float:
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return round(1000 * (time.perf_counter() - t) / repeat, 2)


def measure(client: MongoClient[dict[str, Any]], size: int) -> dict[str, Any]:
    coll = client["bench_devdb"]["messages"]
    ids = [f"msg-{(size * k) // 11:08d}" for k in range(1, 11)]
    it = iter(ids * 100)
    plan = client["bench_devdb"].command("explain", {"find": "messages", "filter": {"_id": ids[0]}})
    extra = iter(range(10_000_000 + 10 * size, 20_000_000))
    bulk = [UpdateOne({"_id": f"msg-{(size * k) // 67:08d}"}, {"$set": {"n": k}}) for k in range(64)]
    return {
        "stored": size,
        "find_one_by_id_ms": ms(lambda: coll.find_one({"_id": next(it)}), 10),
        "update_one_by_id_ms": ms(lambda: coll.update_one({"_id": next(it)}, {"$set": {"label": "hype"}}), 10),
        "bulk_64_updates_ms": ms(lambda: coll.bulk_write(bulk), 2),
        "insert_many_500_ms": ms(lambda: coll.insert_many([doc(next(extra)) for _ in range(500)]), 2),
        "plan": [str(step) for step in plan["queryPlanner"].get("Plan", [])],
    }


def main() -> dict[str, Any]:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    binary = find_ferretdb()
    out: dict[str, Any] = {"binary": str(binary), "levels": []}
    with devdb() as db, MongoClient(db.url) as client:
        coll = client["bench_devdb"]["messages"]
        stored = 0  # msg-00000000 .. stored-1 exist (the timed inserts add ids from 10,000,000 on)
        for size in SIZES:
            while stored < size:
                n = min(5_000, size - stored)
                coll.insert_many([doc(i) for i in range(stored, stored + n)], ordered=False)
                stored += n
            level = measure(client, size)
            print(json.dumps(level), file=sys.stderr, flush=True)
            out["levels"].append(level)
    out["load"] = [round(x, 2) for x in os.getloadavg()]
    return out


if __name__ == "__main__":
    print(json.dumps(main()), flush=True)
