"""Channel profiles in a real FerretDB, embedded by a real (tiny) llama.cpp BERT: they match the stored messages,
whether built in one refresh or many, and a ranking of a fixed store is always the same."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from bot.config import Config, parse_config
from bot.domain import ChatLine, EmoteSpan, Verdict
from bot.storage.documents import MessageDoc, message_document, verdict_fields
from bot.storage.store import Storage
from bot.vibes.embedder import ChatEmbedder
from bot.vibes.profile import Profile, text_key
from bot.vibes.rank import Catalogue, Ranker, rank
from bot.vibes.store import ProfileStore
from tests.fakes.gguf import write_tiny_bert

T0 = datetime(2025, 3, 1, 20, 0, tzinfo=UTC)
TEXTS = {
    "arena": ["pog what a play", "gg ez", "POGGERS clutch", "what a game", "pog pog pog", "gg ez"],
    "cozy": ["good stream", "this is so good", "love the chat", "what a great stream", "good good"],
    "salty": ["lag is bad", "no way that is bad", "that play is so bad", "bad game", "lag lag lag"],
}
LABELS = {"arena": "hype", "cozy": "love", "salty": "angry"}


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert.gguf")


def make_cfg(**vibes: object) -> Config:
    return parse_config({"vibes": vibes}, {})


@pytest_asyncio.fixture(loop_scope="function")
async def embedder(bert_path: Path) -> AsyncIterator[ChatEmbedder]:
    e = ChatEmbedder(str(bert_path), bert_path.parent)
    yield e
    e.close()


def lines(channel: str, start: int = 0) -> list[ChatLine]:
    return [
        ChatLine(message_id=f"{channel}-{start + i}", channel=channel, user_id=f"u{i}", user_login=f"user{i}",
                 user_name=f"User{i}", text=text, sent_at=T0 + timedelta(seconds=15 * (start + i)),
                 emotes=(EmoteSpan("1", 0, 3),) if text.startswith("pog") else ())
        for i, text in enumerate(TEXTS[channel])
    ]


def verdict_for(line: ChatLine) -> Verdict:
    label = LABELS[line.channel] if len(line.text) > 8 else "neutral"
    return Verdict(label, 0.8, {label: 0.8, "neutral": 0.2} if label != "neutral" else {"neutral": 1.0}, "test")


async def store_chat(storage: Storage, chat: Sequence[ChatLine], *, verdicts: bool = True) -> None:
    for line in chat:
        storage.writer.submit(line)
        if verdicts:
            storage.writer.submit_verdict(line.message_id, verdict_for(line))
    await storage.writer.flush()


async def expected(storage: Storage, cfg: Config, channel: str) -> Profile:
    """The profile computed straight from what the database holds, in one go."""
    valence = {c.name: c.valence for c in cfg.categories}
    p = Profile(channel, cfg.category_names, sample_size=cfg.vibes.sample_size)
    for doc in await MessageDoc.find({"channel": channel}).to_list():
        p.add_message(doc.text, doc.sent_at, label=doc.label,
                      spans=list(zip(doc.emote_begins, doc.emote_ends, strict=True)))
        if doc.label:
            p.add_verdict(doc.label, doc.probs, valence)
    p.end_pass()
    return p


def same(a: Profile, b: Profile) -> None:
    assert (a.channel, a.messages, a.classified, a.first_at, a.last_at) == \
        (b.channel, b.messages, b.classified, b.first_at, b.last_at)
    assert a.label_counts == b.label_counts
    assert a.valence_sum == pytest.approx(b.valence_sum)
    assert a.words == b.words and a.emotes == b.emotes
    assert sorted(a.sample) == sorted(b.sample)


class TestProfileStore:
    async def test_profiles_match_the_stored_messages(self, storage: Storage, embedder: ChatEmbedder) -> None:
        """Counts, moods, valence, terms and sample equal a direct reading of the database, and the chat
        embedding is the mean direction of the embedded distinct texts."""
        cfg = make_cfg()
        for ch in TEXTS:
            await store_chat(storage, lines(ch))
        store = ProfileStore(storage, cfg, embedder)
        report = await store.refresh()
        assert (report.channels, report.messages, report.verdicts) == (3, 16, 16)
        got = {p.channel: p for p in await store.load()}
        assert sorted(got) == ["arena", "cozy", "salty"]
        for ch in TEXTS:
            same(got[ch], await expected(storage, cfg, ch))
        arena = got["arena"]
        assert arena.label_counts == {"hype": 4, "neutral": 2}
        assert arena.top_emotes(2) == [("pog", 4), ("POGGERS", 1)]
        assert arena.top_words(3) == [("ez", 2), ("gg", 2), ("clutch", 1)]
        distinct = sorted({text_key(t): t for t in TEXTS["arena"]}.values())
        mean = (await embedder.embed(distinct)).astype(np.float64).sum(axis=0)
        e = arena.embedding
        assert e is not None
        assert float(e @ (mean / np.linalg.norm(mean))) == pytest.approx(1.0, abs=1e-5)

    async def test_incremental_refresh_equals_a_rebuild(self, storage: Storage, embedder: ChatEmbedder) -> None:
        """New messages, verdicts that arrive after their message was profiled, and a sample that must evict
        lines: three refreshes end where one rebuild does."""
        cfg = make_cfg(sample_size=8)
        store = ProfileStore(storage, cfg, embedder)
        await store_chat(storage, lines("arena"), verdicts=False)
        await store.refresh()
        first = (await store.load(["arena"]))[0]
        assert (first.messages, first.classified) == (6, 0)
        for line in lines("arena"):  # verdicts arrive later
            storage.writer.submit_verdict(line.message_id, verdict_for(line))
        await store_chat(storage, lines("salty") + [
            ChatLine(message_id=f"more-{i}", channel="arena", user_id="x", user_login="x", user_name="X",
                     text=f"pog number {w}", sent_at=T0 + timedelta(minutes=5, seconds=i))
            for i, w in enumerate(("one", "two", "three", "four", "five", "six", "seven", "eight"))])
        await store.refresh()
        assert (await store.refresh()).channels == 0  # nothing new: nothing written
        incremental = {p.channel: p for p in await store.load()}
        await store.refresh(rebuild=True)
        rebuilt = {p.channel: p for p in await store.load()}
        assert sorted(incremental) == sorted(rebuilt) == ["arena", "salty"]
        for ch in rebuilt:
            same(incremental[ch], rebuilt[ch])
            same(rebuilt[ch], await expected(storage, cfg, ch))
            a, b = incremental[ch].embedding, rebuilt[ch].embedding
            assert a is not None and b is not None and float(a @ b) == pytest.approx(1.0, abs=1e-5)
        assert incremental["arena"].messages == 14 and len(incremental["arena"].sample) == 8

    async def test_a_window_profiles_recent_chat_only(self, storage: Storage, embedder: ChatEmbedder) -> None:
        cfg = make_cfg()
        now = datetime.now(UTC)
        old = [ChatLine(f"old-{i}", "arena", "u", "u", "U", "old news", now - timedelta(hours=3)) for i in range(3)]
        new = [ChatLine(f"new-{i}", "arena", "u", "u", "U", f"fresh {i}", now - timedelta(minutes=5))
               for i in range(2)]
        await store_chat(storage, old + new, verdicts=False)
        store = ProfileStore(storage, cfg, embedder)
        (p,) = await store.window(now - timedelta(hours=1))
        assert p.messages == 2 and {s.text for s in p.sample_lines()} == {"fresh 0", "fresh 1"}
        assert await store.load() == []  # a window is stored nowhere

    async def test_ranking_a_fixed_store_is_deterministic(self, storage: Storage, embedder: ChatEmbedder) -> None:
        """Same store, same query: the same order and the same numbers, whether ranked from one load or another."""
        cfg = make_cfg()
        for ch in TEXTS:
            await store_chat(storage, lines(ch))
        store = ProfileStore(storage, cfg, embedder)
        await store.refresh()
        ranker = Ranker(cfg.categories, embedder, cfg.vibes.mood_weight)
        runs = []
        for _ in range(3):
            q = await ranker.query("angry chat about lag")
            ranked = rank(q, Catalogue(await store.load(), cfg.category_names, q.vec.shape[0]),
                          mood_weight=cfg.vibes.mood_weight)
            runs.append(json.dumps([r.as_json() for r in ranked]))
        assert runs[0] == runs[1] == runs[2]
        order = [r["channel"] for r in json.loads(runs[0])]
        assert order[0] == "salty"  # the query names a mood: angry chat wins it

    async def test_writes_that_land_late_are_counted_once(self, storage: Storage, embedder: ChatEmbedder) -> None:
        """A message written after a refresh with a ``seq`` before its cursor (another writer's batch) and a
        verdict written late are folded in by the next refresh, once; older than the lookback they are not."""
        cfg = make_cfg(lookback_s=60)
        store = ProfileStore(storage, cfg, embedder)
        await store_chat(storage, lines("cozy"))
        await store.refresh()
        (before,) = await store.load(["cozy"])
        coll = storage.db["messages"]
        late = ChatLine("late-1", "cozy", "u", "u", "U", "good vibes only", T0)
        too_late = ChatLine("late-2", "cozy", "u", "u", "U", "ancient history", T0)
        now = datetime.now(UTC)
        await coll.insert_many([message_document(late, now, before.seq_through - 5 * 10**9),
                                message_document(too_late, now, before.seq_through - 90 * 10**9)])
        await coll.update_one({"_id": "late-1"}, {"$set": verdict_fields(verdict_for(late), now)})
        for _ in range(2):
            await store.refresh()
        (after,) = await store.load(["cozy"])
        assert after.messages == before.messages + 1 and after.classified == before.classified + 1
        assert "good vibes only" in {s.text for s in after.sample_lines()}
        assert "ancient history" not in {s.text for s in after.sample_lines()}
