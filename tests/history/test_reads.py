"""History's reads against real storage: memory first, the database only for what memory can't hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.config import HistoryConfig
from bot.domain import MoodState
from bot.history.reads import History
from bot.storage.devdb import DevDb
from bot.storage.store import Storage, open_storage
from tests.conftest import make_storage_config
from tests.fakes.chat import chat_line, verdict

NOW = datetime.now(UTC).replace(microsecond=0)


def mood(label: str, messages: int) -> MoodState:
    return MoodState(channel="chan", label=label, share=1.0, valence=0.5, colour="#ff8c00", shares={label: 1.0},
                     messages=messages)  # fmt: skip


class TestRecentMessages:
    async def test_served_from_memory_while_the_database_is_down(self, own_ferretdb: DevDb, spool_dir: Path) -> None:
        """The dashboard's recent messages (with their verdicts) come from memory: a stopped database
        changes nothing."""
        cfg = make_storage_config(own_ferretdb.url)
        async with open_storage(cfg, spool_dir=spool_dir) as st:
            history = History(HistoryConfig(messages_per_channel=50), st)
            for i in range(60):
                history.observe(chat_line(f"line {i}", channel="chan", message_id=f"m-{i}"), command=False)
            history.classified([(chat_line("x", channel="chan", message_id="m-59"), verdict("hype"))])
            await own_ferretdb.astop()
            recent = await history.recent_messages("chan", 50)
            assert [m.id for m in recent[:3]] == ["m-59", "m-58", "m-57"] and len(recent) == 50
            assert recent[0].label == "hype"

    async def test_after_a_restart_the_window_is_filled_once_from_the_database(self, storage: Storage) -> None:
        for i in range(30):
            storage.writer.submit(chat_line(f"old {i}", channel="chan", message_id=f"old-{i:02d}",
                                            sent_at=NOW - timedelta(minutes=30 - i)))  # fmt: skip
        await storage.writer.flush()
        history = History(HistoryConfig(), storage)
        history.observe(chat_line("new", channel="chan", message_id="new-1"), command=False)
        recent = await history.recent_messages("chan", 5)
        assert [m.id for m in recent] == ["new-1", "old-29", "old-28", "old-27", "old-26"]
        assert history.messages.count("chan") == 31  # backfilled: the next read stays in memory


class TestSnapshots:
    async def test_the_timeline_reads_memory_and_older_points_from_the_database(self, storage: Storage) -> None:
        """Points saved by an earlier run come from the database once; points of this run from memory,
        also when the database could not store them."""
        for minutes_ago in (50, 40, 30):
            await storage.save_snapshot(mood("sad", minutes_ago), bucket=NOW - timedelta(minutes=minutes_ago))
        history = History(HistoryConfig(), storage)
        for minutes_ago in (20, 10):
            history.snapshot(mood("hype", minutes_ago), NOW - timedelta(minutes=minutes_ago))
        recent = await history.snapshots("chan", NOW - timedelta(minutes=25))
        assert [p.messages for p in recent] == [20, 10]
        whole = await history.snapshots("chan", NOW - timedelta(hours=1))
        assert [(p.label, p.messages) for p in whole] == [("sad", 50), ("sad", 40), ("sad", 30), ("hype", 20),
                                                           ("hype", 10)]  # fmt: skip
        assert history.snapshot_windows.complete_from("chan") == NOW - timedelta(hours=1)

