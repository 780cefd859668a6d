"""Storage against a real FerretDB over TCP: documents, the batched writer, the disk spool, queries."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from bot.config import StorageConfig
from bot.domain import ChatLine, EmoteSpan, MoodState, Verdict
from bot.errors import StorageError
from bot.storage.devdb import DevDb
from bot.storage.documents import MessageDoc
from bot.storage.store import Storage, open_storage
from bot.storage.writer import SPOOL_FILE

BASE = datetime(2024, 5, 1, 18, 0, 0, tzinfo=UTC)


def chat(i: int, *, channel: str = "somechannel", text: str | None = None, user: str | None = None) -> ChatLine:
    login = user or f"viewer{i % 7}"
    return ChatLine(
        message_id=f"msg-{i:06d}",
        channel=channel,
        user_id=f"u{i % 7}",
        user_login=login,
        user_name=login.capitalize(),
        text=text if text is not None else f"message number {i} Kappa",
        sent_at=BASE + timedelta(milliseconds=250 * i),
    )


def verdict(label: str, model: str = "test-model") -> Verdict:
    other = "neutral" if label != "neutral" else "hype"
    return Verdict(label=label, confidence=0.75, probs={label: 0.75, other: 0.25}, model=model)


async def eventually(check: Callable[[], Any], within: float = 10.0) -> None:
    """Poll an async predicate until it holds (the writer works in the background)."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def raw_ids(url: str, database: str) -> list[str]:
    """The message ids in the server's natural (insertion) order, read with a separate client."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, serverSelectionTimeoutMS=3000)
    try:
        cursor = client[database]["messages"].find({}, {"_id": 1})
        return [str(d["_id"]) async for d in cursor]
    finally:
        await client.close()


def spool_lines(spool_dir: Path) -> list[dict[str, Any]]:
    path = spool_dir / SPOOL_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def config_for(db: DevDb, base: StorageConfig, **overrides: Any) -> StorageConfig:
    return base.model_copy(update={"mongodb_url": SecretStr(db.url), **overrides})


class TestDocuments:
    async def test_message_round_trip(self, storage: Storage) -> None:
        """Every field of a chat line survives the trip, emote spans as flat parallel arrays."""
        line = ChatLine(
            message_id="abc-123",
            channel="somechannel",
            channel_id="4242",
            user_id="77",
            user_login="kappa_fan",
            user_name="Kappa_Fan",
            text="Kappa hello PogChamp",
            sent_at=datetime(2024, 5, 1, 18, 0, 1, 123000, tzinfo=UTC),
            badges=frozenset({"subscriber", "vip"}),
            emotes=(EmoteSpan("25", 0, 5), EmoteSpan("88", 12, 20)),
            reply_to="parent-1",
        )
        storage.writer.submit(line)
        await storage.writer.flush()
        doc = await storage.get_message("abc-123")
        assert doc is not None
        assert (doc.channel, doc.channel_id, doc.user_id, doc.user_login, doc.user_name) == (
            "somechannel",
            "4242",
            "77",
            "kappa_fan",
            "Kappa_Fan",
        )
        assert doc.text == "Kappa hello PogChamp"
        assert doc.sent_at == line.sent_at
        assert doc.badges == ["subscriber", "vip"]
        assert (doc.emote_ids, doc.emote_begins, doc.emote_ends) == (["25", "88"], [0, 12], [5, 20])
        assert doc.reply_to == "parent-1"
        assert doc.received_at.tzinfo is not None
        assert doc.label is None and doc.classified_at is None

    async def test_nul_characters_are_stripped(self, storage: Storage) -> None:
        """NUL characters never reach the database (MongoDB and FerretDB refuse them)."""
        storage.writer.submit(chat(1, text="bad\x00text\x00"))
        await storage.writer.flush()
        doc = await storage.get_message("msg-000001")
        assert doc is not None and doc.text == "badtext"
        assert storage.writer.stats.failed_batches == 0

    async def test_verdict_lands_on_its_message(self, storage: Storage) -> None:
        """A verdict queued right after its message is applied after the insert, in the same flush."""
        storage.writer.submit(chat(1))
        storage.writer.submit_verdict("msg-000001", verdict("hype"))
        await storage.writer.flush()
        doc = await storage.get_message("msg-000001")
        assert doc is not None
        assert (doc.label, doc.confidence, doc.model) == ("hype", 0.75, "test-model")
        assert doc.probs == {"hype": 0.75, "neutral": 0.25}
        assert doc.classified_at is not None
        assert storage.writer.stats.verdicts_applied == 1

    async def test_verdict_for_unknown_message_creates_nothing(self, storage: Storage) -> None:
        """A verdict whose message was never stored is counted, not turned into a half document."""
        storage.writer.submit_verdict("nope", verdict("sad"))
        await storage.writer.flush()
        assert await storage.get_message("nope") is None
        assert storage.writer.stats.verdicts_unmatched == 1


class TestDeduplication:
    async def test_redelivered_messages_are_stored_once(self, storage: Storage) -> None:
        """Redeliveries (same batch or later ones) meet the unique _id: counted as duplicates, not failures."""
        for _ in range(3):
            storage.writer.submit(chat(1))
        storage.writer.submit(chat(2))
        await storage.writer.flush()
        storage.writer.submit(chat(1))
        await storage.writer.flush()
        stats = storage.writer.stats
        assert await storage.count_messages() == 2
        assert (stats.received, stats.inserted, stats.duplicates) == (5, 2, 3)
        assert stats.failed_batches == 0 and stats.rejected == 0


class TestRefusedWrites:
    async def test_an_update_the_database_refuses_is_kept_aside(self, storage: Storage) -> None:
        """A write the database refuses for good (here a verdict with a dotted key) is not retried forever
        and not lost: it goes, with the reason, to rejected.jsonl, and the writer carries on."""
        storage.writer.submit(chat(1))
        storage.writer.submit_verdict(
            "msg-000001", Verdict(label="hype", confidence=1.0, probs={"bad.key": 1.0}, model="m")
        )
        await storage.writer.flush()
        stats = storage.writer.stats
        assert (stats.inserted, stats.rejected, stats.failed_batches) == (1, 1, 1)
        rejected = [json.loads(line) for line in storage.writer.rejected_path.read_text().splitlines()]
        assert [(r["entry"]["op"], r["entry"]["id"]) for r in rejected] == [("verdict", "msg-000001")]
        assert rejected[0]["reason"]
        storage.writer.submit_verdict("msg-000001", verdict("hype"))
        await storage.writer.flush()
        doc = await storage.get_message("msg-000001")
        assert doc is not None and doc.label == "hype"

    async def test_broken_unicode_is_repaired_not_refused(self, storage: Storage, spool_dir: Path) -> None:
        """A lone surrogate (a broken escape in a replayed JSON log) becomes U+FFFD; the message is stored."""
        storage.writer.submit(chat(1, text="hi \ud83d there"))
        await storage.writer.flush()
        doc = await storage.get_message("msg-000001")
        assert doc is not None and doc.text == "hi \ufffd there"
        assert storage.writer.stats.rejected == 0


class TestBatching:
    async def test_batches_by_size(self, ferretdb: DevDb, storage_config: StorageConfig, spool_dir: Path) -> None:
        """With a long time window, a batch goes out exactly when batch_size operations wait."""
        cfg = storage_config.model_copy(update={"batch_size": 10, "flush_interval_ms": 60_000})
        async with open_storage(cfg, spool_dir=spool_dir) as st:
            for i in range(9):
                st.writer.submit(chat(i))
            await asyncio.sleep(0.3)
            assert await st.count_messages() == 0
            st.writer.submit(chat(9))
            await eventually(lambda: st.writer.stats.inserted == 10)
            assert st.writer.stats.batches == 1
            for i in range(10, 35):
                st.writer.submit(chat(i))
                await asyncio.sleep(0)
            await eventually(lambda: st.writer.stats.inserted == 30)
            await asyncio.sleep(0.2)
            assert st.writer.stats.inserted == 30 and st.writer.stats.buffered == 5
            assert st.writer.stats.batches == 3
            await st.writer.flush()
            assert await st.count_messages() == 35

    async def test_batches_by_time_window(self, storage_config: StorageConfig, spool_dir: Path) -> None:
        """A partial batch waits for flush_interval_ms on the injected clock, then goes out as one insert."""
        clock = FakeClock()
        cfg = storage_config.model_copy(update={"batch_size": 1000, "flush_interval_ms": 5_000})
        async with open_storage(cfg, spool_dir=spool_dir, clock=clock) as st:
            for i in range(3):
                st.writer.submit(chat(i))
            st.writer.poke()
            await asyncio.sleep(0.2)
            assert st.writer.stats.inserted == 0
            clock.advance(4.9)
            st.writer.poke()
            await asyncio.sleep(0.2)
            assert st.writer.stats.inserted == 0
            clock.advance(0.2)
            st.writer.poke()
            await eventually(lambda: st.writer.stats.inserted == 3)
            assert st.writer.stats.batches == 1
            assert await st.count_messages() == 3

    async def test_shutdown_flushes(self, storage_config: StorageConfig, spool_dir: Path) -> None:
        """Leaving open_storage writes what is still queued, however long the time window."""
        cfg = storage_config.model_copy(update={"batch_size": 1000, "flush_interval_ms": 60_000})
        async with open_storage(cfg, spool_dir=spool_dir) as st:
            for i in range(25):
                st.writer.submit(chat(i))
        async with open_storage(cfg, spool_dir=spool_dir) as st:
            assert await st.count_messages() == 25
        assert not (spool_dir / SPOOL_FILE).exists()

    async def test_large_batches_of_verdicts(self, storage_config: StorageConfig, spool_dir: Path) -> None:
        """At the default batch size hundreds of verdicts share a batch; all land, nothing is spooled.

        (FerretDB 1.24.2 never answers an update command of 100 or more statements, so the writer
        chunks them; a single bulk_write here used to time out and be mistaken for an outage.)"""
        cfg = storage_config.model_copy(update={"batch_size": 500, "flush_interval_ms": 60_000})
        async with open_storage(cfg, spool_dir=spool_dir) as st:
            for i in range(300):
                st.writer.submit(chat(i))
            await st.writer.flush()
            for i in range(300):
                st.writer.submit_verdict(f"msg-{i:06d}", verdict("hype"))
            await st.writer.flush()
            stats = st.writer.stats
            assert stats.inserted == 300 and stats.verdicts_applied == 300
            assert stats.spooled == 0 and stats.outages == 0
            assert len(await st.recent_messages("somechannel", 500, classified_only=True)) == 300


class TestOutage:
    """The database server is really stopped (its process terminated) and started again on the same port."""

    async def test_spool_while_down_then_write_back_in_order(
        self, own_ferretdb: DevDb, storage_config: StorageConfig, spool_dir: Path
    ) -> None:
        """Messages arriving during an outage are spooled to disk and written back in order, exactly once."""
        cfg = config_for(own_ferretdb, storage_config, batch_size=20)
        async with open_storage(cfg, spool_dir=spool_dir) as st:
            for i in range(50):
                st.writer.submit(chat(i))
            await st.writer.flush()
            assert await st.count_messages() == 50

            await own_ferretdb.astop()
            for i in range(50, 150):
                st.writer.submit(chat(i))
                if i % 10 == 0:
                    await asyncio.sleep(0.01)
            st.writer.submit(chat(60))  # a redelivery during the outage
            st.writer.submit_verdict("msg-000100", verdict("sad"))
            st.writer.submit_verdict("msg-000100", verdict("hype"))  # the later verdict must win
            await st.writer.flush()
            stats = st.writer.stats
            assert stats.spooling and stats.outages == 1 and stats.buffered == 0
            spooled = spool_lines(spool_dir)
            assert len(spooled) == stats.spool_pending == 103  # 100 new, 1 redelivery, 2 verdicts
            assert [e["doc"]["_id"] for e in spooled if e["op"] == "insert"][:3] == [
                "msg-000050",
                "msg-000051",
                "msg-000052",
            ]
            with pytest.raises(StorageError):
                await st.count_messages()

            await own_ferretdb.astart()
            st.writer.submit(chat(150))  # arrives after the restart, before the write-back
            await st.writer.flush()
            stats = st.writer.stats
            assert not stats.spooling and stats.spool_pending == 0
            assert not (spool_dir / SPOOL_FILE).exists()
            assert await st.count_messages() == 151
            assert stats.duplicates == 1 and stats.failed_batches == 0
            doc = await st.get_message("msg-000100")
            assert doc is not None and doc.label == "hype"
        ids = await raw_ids(own_ferretdb.url, cfg.database)
        assert ids == [f"msg-{i:06d}" for i in range(151)]  # insertion order = submission order

    async def test_background_retry_recovers_without_flush(
        self, own_ferretdb: DevDb, storage_config: StorageConfig, spool_dir: Path
    ) -> None:
        """No one has to call flush(): the flusher's retry notices the server is back and writes the spool."""
        cfg = config_for(own_ferretdb, storage_config, batch_size=10, flush_interval_ms=20)
        async with open_storage(cfg, spool_dir=spool_dir) as st:
            await own_ferretdb.astop(kill=True)  # a crash this time
            for i in range(40):
                st.writer.submit(chat(i))
                await asyncio.sleep(0.005)
            await eventually(lambda: st.writer.stats.spool_pending == 40)
            await own_ferretdb.astart()
            await eventually(lambda: not st.writer.stats.spooling and st.writer.stats.buffered == 0, within=15)
            assert st.writer.stats.inserted == 40
            assert await st.count_messages() == 40

    async def test_spool_survives_a_restart_of_the_process(
        self, own_ferretdb: DevDb, storage_config: StorageConfig, spool_dir: Path
    ) -> None:
        """A spool left at shutdown (the server still down) is written back by the next Storage at startup,
        skipping a line torn by a crash."""
        cfg = config_for(own_ferretdb, storage_config, batch_size=10)
        async with open_storage(cfg, spool_dir=spool_dir) as st:
            st.writer.submit(chat(0))
            await st.writer.flush()
            await own_ferretdb.astop()
            for i in range(1, 31):
                st.writer.submit(chat(i))
            st.writer.submit_verdict("msg-000005", verdict("funny"))
        assert len(spool_lines(spool_dir)) == 31
        torn = (spool_dir / SPOOL_FILE).read_bytes() + b'{"op":"insert","doc":{"_id":"torn'
        (spool_dir / SPOOL_FILE).write_bytes(torn)  # a write cut short by a crash

        await own_ferretdb.astart()
        async with open_storage(cfg, spool_dir=spool_dir) as st:
            assert st.writer.stats.spooling
            st.writer.submit(chat(31))
            await st.writer.flush()
            stats = st.writer.stats
            assert not stats.spooling and stats.spool_corrupt == 1
            assert await st.count_messages() == 32
            doc = await st.get_message("msg-000005")
            assert doc is not None and doc.label == "funny"
        assert not (spool_dir / SPOOL_FILE).exists()
        assert await raw_ids(own_ferretdb.url, cfg.database) == [f"msg-{i:06d}" for i in range(32)]

    async def test_start_with_the_database_down(
        self, own_ferretdb: DevDb, storage_config: StorageConfig, spool_dir: Path
    ) -> None:
        """open_storage does not fail when the database is down: it spools, and binds Beanie once it is back."""
        await own_ferretdb.astop()
        cfg = config_for(own_ferretdb, storage_config)
        async with open_storage(cfg, spool_dir=spool_dir) as st:
            assert not st.ready and st.writer.stats.spooling
            assert not await st.ping()
            for i in range(20):
                st.writer.submit(chat(i))
            await st.writer.flush()
            assert st.writer.stats.spool_pending == 20
            with pytest.raises(StorageError, match="recent_messages"):
                await st.recent_messages("somechannel")
            await own_ferretdb.astart()
            await st.writer.flush()
            assert st.ready and await st.ping()
            recent = await st.recent_messages("somechannel", limit=5)
            assert [m.id for m in recent] == [f"msg-{i:06d}" for i in (19, 18, 17, 16, 15)]
            assert await st.count_messages() == 20

    async def test_memory_stays_bounded(
        self, own_ferretdb: DevDb, storage_config: StorageConfig, spool_dir: Path
    ) -> None:
        """Past max_buffered operations the memory queue moves to the spool; order and count are kept."""
        cfg = config_for(own_ferretdb, storage_config, batch_size=1000, flush_interval_ms=60_000, max_buffered=100)
        async with open_storage(cfg, spool_dir=spool_dir) as st:
            await own_ferretdb.astop(kill=True)
            for i in range(250):
                st.writer.submit(chat(i))
                assert st.writer.stats.buffered <= 100
            assert st.writer.stats.overflows == 2
            assert len(spool_lines(spool_dir)) == 200
            await own_ferretdb.astart()
            await st.writer.flush()
            assert await st.count_messages() == 250
            assert st.writer.stats.duplicates == 0
        assert await raw_ids(own_ferretdb.url, cfg.database) == [f"msg-{i:06d}" for i in range(250)]

    async def test_one_process_per_spool_folder(self, storage: Storage, storage_config: StorageConfig) -> None:
        """A second writer on the same spool folder is refused with a clear error."""
        with pytest.raises(StorageError, match="in use"):
            async with open_storage(storage_config, spool_dir=storage.writer.spool_dir):
                pass


class TestQueries:
    async def test_latest_and_recent_messages(self, storage: Storage) -> None:
        """latest_message_by finds a user's newest message; recent_messages is newest first, filterable."""
        for i in range(10):
            storage.writer.submit(chat(i, user="alice" if i % 2 else "bob"))
        storage.writer.submit(chat(99, channel="otherchannel", user="alice"))
        storage.writer.submit_verdict("msg-000003", verdict("love"))
        storage.writer.submit_verdict("msg-000004", verdict("angry"))
        await storage.writer.flush()
        latest = await storage.latest_message_by("somechannel", "@Alice")
        assert latest is not None and latest.id == "msg-000009"
        assert await storage.latest_message_by("somechannel", "carol") is None
        recent = await storage.recent_messages("somechannel", limit=3)
        assert [m.id for m in recent] == ["msg-000009", "msg-000008", "msg-000007"]
        classified = await storage.recent_messages("somechannel", limit=10, classified_only=True)
        assert [m.id for m in classified] == ["msg-000004", "msg-000003"]
        assert await storage.count_messages("somechannel") == 10
        assert await storage.count_messages() == 11
        assert await storage.classified_counts("somechannel") == {"love": 1, "angry": 1}
        assert await storage.classified_counts("somechannel", since=BASE + timedelta(seconds=1)) == {"angry": 1}

    async def test_labelled_examples_and_counts(self, storage: Storage) -> None:
        """One example per message (a new label replaces it); imports are idempotent; counts use $sum."""
        t0 = BASE
        await storage.add_labeled_example(
            prompt="lets gooo", completion="hype", labelled_by="Mod1", message_id="m1", channel="c", at=t0
        )
        await storage.add_labeled_example(
            prompt="lets gooo",
            completion="funny",
            labelled_by="mod2",
            message_id="m1",
            channel="c",
            at=t0 + timedelta(seconds=1),
        )
        for _ in range(2):
            await storage.add_labeled_example(
                prompt="so sad\x00", completion="sad", labelled_by="importer", source="import", at=t0
            )
        await storage.add_labeled_example(prompt="gg", completion="funny", labelled_by="mod1", channel="c", at=t0)
        examples = await storage.labeled_examples()
        assert len(examples) == 3
        linked = next(e for e in examples if e.message_id == "m1")
        assert (linked.completion, linked.labelled_by) == ("funny", "mod2")
        assert {e.prompt for e in examples} == {"lets gooo", "so sad", "gg"}
        assert await storage.label_counts() == {"funny": 2, "sad": 1}
        assert await storage.label_counts(channel="c") == {"funny": 2}
        assert [e.prompt for e in await storage.labeled_examples(source="import")] == ["so sad"]

    async def test_snapshots(self, storage: Storage) -> None:
        """Snapshots are kept per (channel, bucket), returned oldest first from `since`; re-saving replaces."""
        for minute, label in enumerate(["hype", "funny", "sad"]):
            state = MoodState(
                channel="somechannel",
                label=label,
                share=0.5,
                valence=0.2 * minute,
                colour="#ff8c00",
                shares={label: 0.5, "neutral": 0.5},
                messages=10 * minute,
                skipped=minute,
                at=BASE + timedelta(minutes=minute),
            )
            await storage.save_snapshot(state, counts={label: 5, "neutral": 5})
        await storage.save_snapshot(
            MoodState(channel="somechannel", label="love", share=1.0, valence=1.0, colour="#ff4fa3"),
            bucket=BASE + timedelta(minutes=2),
        )
        await storage.save_snapshot(
            MoodState(channel="elsewhere", label="sad", share=1.0, valence=-1.0, colour="#3b6fd8", at=BASE)
        )
        snaps = await storage.snapshots("somechannel", since=BASE + timedelta(minutes=1))
        assert [(s.label, s.bucket) for s in snaps] == [
            ("funny", BASE + timedelta(minutes=1)),
            ("love", BASE + timedelta(minutes=2)),
        ]
        assert snaps[0].counts == {"funny": 5, "neutral": 5} and snaps[0].messages == 10
        assert len(await storage.snapshots("somechannel")) == 3
        until = await storage.snapshots("somechannel", until=BASE + timedelta(minutes=1))
        assert [s.label for s in until] == ["hype"]

    async def test_stream_sessions(self, storage: Storage) -> None:
        """A repeated online notice keeps one open session; offline closes it; the next online opens another."""
        first = await storage.open_session("somechannel", BASE)
        again = await storage.open_session("somechannel", BASE + timedelta(seconds=5))
        assert again.id == first.id and again.started == BASE
        closed = await storage.close_session("somechannel", BASE + timedelta(hours=2))
        assert closed is not None and closed.ended == BASE + timedelta(hours=2)
        assert await storage.close_session("somechannel", BASE + timedelta(hours=3)) is None
        await storage.open_session("somechannel", BASE + timedelta(days=1))
        sessions = await storage.sessions("somechannel")
        assert [(s.started, s.ended) for s in sessions] == [
            (BASE, BASE + timedelta(hours=2)),
            (BASE + timedelta(days=1), None),
        ]
        current = await storage.current_session("somechannel")
        assert current is not None and current.started == BASE + timedelta(days=1)

    async def test_message_doc_reads_what_the_writer_wrote(self, storage: Storage) -> None:
        """The writer inserts plain dicts; Beanie's MessageDoc must parse every one of them."""
        for i in range(5):
            storage.writer.submit(chat(i))
        await storage.writer.flush()
        docs = await MessageDoc.find({"channel": "somechannel"}).to_list()
        assert sorted(d.id for d in docs) == [f"msg-{i:06d}" for i in range(5)]
