"""``chatmood replay`` end to end: a real FerretDB, the real classifier (cold-start head). A signal stops it
cleanly and nothing it took is lost; hostile logs cost only their bad lines; the report it prints never fails."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from structlog.testing import capture_logs

from bot.config import Config, StorageConfig, load_config
from bot.replay.run import INTERRUPTED, cmd_replay
from bot.storage.devdb import DevDb


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
        out = io.StringIO()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(ferretdb.url)
        try:
            messages = client[storage_config.database]["messages"]
            replaying = asyncio.create_task(cmd_replay(cfg, log, max_rate=400, out=out))
            async with asyncio.timeout(60):
                while await messages.count_documents({}) < 200:  # noqa: ASYNC110 - polling the database
                    await asyncio.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM)
            assert await replaying == INTERRUPTED
            m = re.search(r"replay interrupted: ([\d,]+) messages taken", out.getvalue())
            assert m, out.getvalue()
            taken = int(m[1].replace(",", ""))
            assert 200 <= taken < 5000
            stored = await messages.count_documents({})
            assert stored == taken, out.getvalue()
            assert f"stored: {taken} new, 0 already stored" in out.getvalue()
            assert not (tmp_path / "spool" / "messages.jsonl").exists()
            classified = await messages.count_documents({"label": {"$exists": True}})
            assert classified == await messages.count_documents({"command": {"$ne": True}})
        finally:
            await client.close()


def config(tmp_path: Path, ferretdb: DevDb, storage_config: StorageConfig) -> Config:
    path = tmp_path / "bots.toml"
    path.write_text(
        f'[storage]\nmongodb_url = "{ferretdb.url}"\ndatabase = "{storage_config.database}"\n'
        '[classifier]\nembedding_model = ""\n',
        encoding="utf-8",
    )
    return load_config(path, {})


def row(n: int, text: str, *, user: str = "viewer", **over: object) -> str:
    obj: dict[str, object] = {"message_id": f"m{n}", "channel": "den", "user_login": user, "text": text,
                              "sent_at": f"2024-01-01T10:00:{n % 60:02d}Z", **over}
    return json.dumps(obj)  # lone surrogates become \udxxx escapes, as a hostile log writes them


def strict_stdout() -> io.TextIOWrapper:
    """Like a real stdout: UTF-8 with strict errors, so printing a lone surrogate raises."""
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)


def printed(out: io.TextIOWrapper) -> str:
    buffer = out.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue().decode("utf-8")


class TestHostileLog:
    """One line with an id or channel no database can store costs only itself: its neighbours are stored and
    classified, the line is reported with its number, and the summary prints."""

    async def test_unstorable_ids_and_channel_cost_only_their_line(
        self, tmp_path: Path, ferretdb: DevDb, storage_config: StorageConfig, db: Any
    ) -> None:
        rows = [row(n, f"message number {n} KEKW") for n in range(1, 41)]
        rows[9] = row(10, "bad id", message_id="m10\ud83d")
        rows[19] = row(20, "bad channel", channel="den\ud83d")
        rows[29] = row(30, "half an emoji \ud83d")  # text: kept, with U+FFFD
        log = tmp_path / "hostile.jsonl"
        log.write_text("\n".join(rows) + "\n", encoding="utf-8")
        out = strict_stdout()
        with capture_logs() as logs:
            assert await cmd_replay(config(tmp_path, ferretdb, storage_config), log, max_rate=10_000, out=out) == 0
        text = printed(out)
        assert "replayed 38 messages" in text and "2 malformed" in text
        assert "line 10: message_id 'm10\\ud83d' cannot be stored" in text
        assert "line 20: 'channel' 'den\\ud83d' is not a Twitch login" in text
        assert "stored: 38 new" in text and "mood #den:" in text
        assert await db.messages.count_documents({}) == 38
        assert await db.messages.count_documents({"label": {"$exists": True}}) == 38
        assert (await db.messages.find_one({"_id": "m30"}))["text"] == "half an emoji \ufffd"
        assert not [e for e in logs if e["event"] in ("snapshot_failed", "classify_failed")]

    async def test_a_non_utf8_file_name_prints(
        self, tmp_path: Path, ferretdb: DevDb, storage_config: StorageConfig, db: Any
    ) -> None:
        log = tmp_path / "chat-\udcff.jsonl"  # a name whose bytes aren't UTF-8 (os.fsdecode's surrogateescape)
        log.write_text(row(1, "hello there") + "\n", encoding="utf-8")
        out = strict_stdout()
        assert await cmd_replay(config(tmp_path, ferretdb, storage_config), log, max_rate=10_000, out=out) == 0
        assert "from chat-\\udcff.jsonl" in printed(out)


class TestLastSecondCommands:
    """A replay ends only after the commands it read have run: a !label in the log's last second is stored."""

    async def test_label_in_the_last_line_runs(
        self, tmp_path: Path, ferretdb: DevDb, storage_config: StorageConfig, db: Any
    ) -> None:
        rows = [row(1, "what a play LETSGO", user="viewer"), row(2, "hello chat", user="other"),
                row(3, "!label hype @viewer", user="modmia", badges=["moderator"])]
        log = tmp_path / "label.jsonl"
        log.write_text("\n".join(rows) + "\n", encoding="utf-8")
        out = strict_stdout()
        assert await cmd_replay(config(tmp_path, ferretdb, storage_config), log, max_rate=10_000, out=out) == 0
        examples = await db.labeled_examples.find({}).to_list()
        assert [(e["message_id"], e["completion"], e["labelled_by"]) for e in examples] == [("m1", "hype", "modmia")]


class TestLookalikeCommands:
    """Only a known command word keeps a line from the classifier: look-alikes are chat and get a verdict."""

    async def test_lookalikes_are_classified_and_commands_are_not(
        self, tmp_path: Path, ferretdb: DevDb, storage_config: StorageConfig, db: Any
    ) -> None:
        rows = [row(1, "!!!! POGGERS"), row(2, "!r\u0435set the vibes"), row(3, "!mood", user="other")]
        log = tmp_path / "lookalike.jsonl"
        log.write_text("\n".join(rows) + "\n", encoding="utf-8")
        assert await cmd_replay(config(tmp_path, ferretdb, storage_config), log, max_rate=10_000,
                                out=strict_stdout()) == 0
        labelled = {d["_id"] async for d in db.messages.find({"label": {"$exists": True}})}
        assert labelled == {"m1", "m2"}
        assert await db.messages.count_documents({}) == 3


class TestUnusablePath:
    """A path in bots.toml that can't be used ends `chatmood replay` with one error line, not a traceback."""

    def test_spool_dir_that_cannot_be_created(
        self, tmp_path: Path, ferretdb: DevDb, storage_config: StorageConfig
    ) -> None:
        path = tmp_path / "bots.toml"
        path.write_text(
            f'[storage]\nmongodb_url = "{ferretdb.url}"\ndatabase = "{storage_config.database}"\n'
            'spool_dir = "/proc/no-such-dir/spool"\n[classifier]\nembedding_model = ""\n',
            encoding="utf-8",
        )
        log = Path(__file__).resolve().parents[1] / "data" / "small.jsonl"
        r = subprocess.run([sys.executable, "-m", "bot", "replay", str(log), "--config", str(path)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert "chatmood: error: /proc/no-such-dir" in r.stderr
