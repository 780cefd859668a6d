"""``chatmood replay`` end to end: a signal stops it cleanly, and nothing it took is lost."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from bot.config import StorageConfig, load_config
from bot.replay.run import INTERRUPTED, cmd_replay
from bot.storage.devdb import DevDb


class Out:
    text = ""

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


def chat_log(path: Path, n: int) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            text = ["lets go", "so sad", "KEKW", "!mood", "gg"][i % 5]
            f.write(json.dumps({"message_id": f"r-{i}", "channel": "somechannel", "user_login": f"user{i % 40}",
                                "text": text, "offset": i / 10}) + "\n")  # fmt: skip
    return path


class TestSignals:
    async def test_sigterm_stops_the_replay_and_keeps_everything_taken(
        self, tmp_path: Path, ferretdb: DevDb, storage_config: StorageConfig
    ) -> None:
        """SIGTERM mid-replay: no new lines are taken, every line taken is stored (or spooled), exit 130."""
        log = chat_log(tmp_path / "chat.jsonl", 5000)
        cfg_path = tmp_path / "bots.toml"
        cfg_path.write_text(
            f'[storage]\nmongodb_url = "{ferretdb.url}"\ndatabase = "{storage_config.database}"\n'
            f'spool_dir = "{tmp_path / "spool"}"\n[classifier]\nembedding_model = ""\n'
        )
        cfg = load_config(cfg_path, {})
        out = Out()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(ferretdb.url)
        try:
            messages = client[storage_config.database]["messages"]
            replaying = asyncio.create_task(cmd_replay(cfg, log, max_rate=400, out=out))
            async with asyncio.timeout(60):
                while await messages.count_documents({}) < 200:  # noqa: ASYNC110 - polling the database
                    await asyncio.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM)
            assert await replaying == INTERRUPTED
            m = re.search(r"replay interrupted: ([\d,]+) messages taken", out.text)
            assert m, out.text
            taken = int(m[1].replace(",", ""))
            assert 200 <= taken < 5000
            stored = await messages.count_documents({})
            assert stored == taken, out.text
            assert f"stored: {taken} new, 0 already stored" in out.text
            assert not (tmp_path / "spool" / "messages.jsonl").exists()
            classified = await messages.count_documents({"label": {"$exists": True}})
            assert classified == await messages.count_documents({"command": {"$ne": True}})
        finally:
            await client.close()
