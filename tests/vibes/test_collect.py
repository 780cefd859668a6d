"""``chatmood collect`` against the in-repo fake Twitch and a real FerretDB: Get Streams paging, chat in several
channels at once over several EventSub connections, a channel going offline mid-collection, refused
subscriptions (Twitch's own refusal and its per-account limits) and every message stored exactly once."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from bot.config import Config, StorageConfig, parse_config
from bot.errors import TwitchError
from bot.storage.devdb import DevDb
from bot.twitch.collector import Channel, ChatCollector, LiveStream
from bot.twitch.tokens import TokenSet, TokenStore
from bot.vibes.collect import cmd_collect, progress_line
from tests.fakes.clock import FakeClock
from tests.fakes.gguf import write_tiny_bert
from tests.fakes.twitch import FakeTwitch, chat_event

VIEWERS = {"big_one": 9000, "second": 7000, "refuser": 6000, "fourth": 5000, "fifth": 4000, "sixth": 3000,
           "german": 8000, "small": 10}


@pytest.fixture(autouse=True)
def no_library_thread_left() -> Iterator[None]:
    yield
    left = [t.name for t in threading.enumerate() if "run_socket" in t.name and t.is_alive()]
    assert not left, f"twitchAPI threads still running: {left}"


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert.gguf")


@pytest_asyncio.fixture(loop_scope="function")
async def fake() -> AsyncIterator[FakeTwitch]:
    async with FakeTwitch(keepalive_s=2) as f:
        f.add_user("moodbot", "500")
        for login, viewers in VIEWERS.items():
            f.start_stream(login, viewers=viewers, language="de" if login == "german" else "en",
                           game="Chess" if login == "small" else "Just Chatting")
        yield f


def make_cfg(fake: FakeTwitch, storage_config: StorageConfig, tmp_path: Path, bert: Path) -> Config:
    access, refresh = fake.issue_token("moodbot")
    TokenStore(tmp_path / "moodbot.json").save(TokenSet(SecretStr(access), SecretStr(refresh)))
    return parse_config({
        "storage": {**storage_config.model_dump(), "mongodb_url": storage_config.mongodb_url.get_secret_value(),
                    "spool_dir": str(tmp_path / "spool")},
        "twitch": {"client_id": FakeTwitch.CLIENT_ID, "client_secret": "clientsecret", "api_url": fake.api_url,
                   "auth_url": fake.auth_url, "eventsub_url": fake.eventsub_url},
        "bots": [{"name": "main", "account": "moodbot", "token_file": str(tmp_path / "moodbot.json"),
                  "channels": ["moodbot"]}],
        "classifier": {"embedding_model": ""},
        "vibes": {"embedding_model": str(bert)},
    }, {})


async def stored(url: str, database: str) -> list[dict[str, object]]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url, serverSelectionTimeoutMS=3000)
    try:
        return [d async for d in client[database]["messages"].find({}, {"_id": 1, "channel": 1})]
    finally:
        await client.close()


async def stored_soon(url: str, database: str, message_id: str) -> None:
    """Wait (at most 10 s) until the writer has stored ``message_id``."""
    for _ in range(200):
        if message_id in {str(r["_id"]) for r in await stored(url, database)}:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{message_id} was never stored")


class TestCollect:
    async def test_collects_top_channels_stores_every_message_once(
        self, fake: FakeTwitch, storage_config: StorageConfig, ferretdb: DevDb, tmp_path: Path, bert_path: Path
    ) -> None:
        cfg = make_cfg(fake, storage_config, tmp_path, bert_path)
        fake.refuse_chat[fake.users["refuser"].user_id] = (403, "the broadcaster has banned this user")
        fake.max_subs_per_session = 2  # as Twitch's 300, scaled down: the collector must pack and spill over
        clock = FakeClock()
        out = io.StringIO()
        task = asyncio.create_task(cmd_collect(
            cfg, top=6, minutes=5, language="en", out=out, progress=io.StringIO(), clock=clock,
            collector_options={"poll_s": 0.2, "per_connection": 2, "max_connections": 2, "subscribe_rate": 1000,
                               "timeout_s": 10}))
        await fake.wait_for(lambda: len(fake.subs_of("channel.chat.message")) == 4 or task.done(), within_s=30)
        assert not task.done(), out.getvalue()
        joined = ["big_one", "second", "fourth", "fifth"]
        sessions = {s["transport"]["session_id"] for s in fake.subs_of("channel.chat.message")}
        assert len(sessions) == 2  # two connections of two subscriptions each
        sent: dict[str, int] = dict.fromkeys(joined, 0)
        for i in range(40):  # interleaved across the channels and their connections
            ch = joined[i % 4]
            mid = await fake.chat(ch, f"message {i} in {ch}", message_id=f"m-{i}")
            sent[ch] += 1
            if i % 10 == 0:  # Twitch delivers at least once: the same notification again
                await fake.chat(ch, f"message {i} in {ch}", message_id=f"m-{i}", notification_id=mid)
        sub = next(s for s in fake.subs_of("channel.chat.message")
                   if s["condition"]["broadcaster_user_id"] == fake.users["fifth"].user_id)
        await fake.go_offline("fifth", notify=False)
        await fake.wait_for(lambda: fake.users["fifth"].user_id not in
                            {s["condition"]["broadcaster_user_id"] for s in fake.subs_of("channel.chat.message")},
                            within_s=10)
        await fake.notify_sub(sub, {**_late_event(fake), "message_id": "late-1"})  # in flight during unsubscribe
        sent["fifth"] += 1
        await stored_soon(ferretdb.url, storage_config.database, "late-1")
        assert not task.done()
        clock.advance(5 * 60)
        assert await asyncio.wait_for(task, 60) == 0
        text = out.getvalue()

        rows = await stored(ferretdb.url, storage_config.database)
        ids = [str(r["_id"]) for r in rows]
        assert len(ids) == len(set(ids)) == sum(sent.values())
        for ch, n in sent.items():
            assert sum(1 for r in rows if r["channel"] == ch) == n, ch
        assert fake.requests["streams_pages"] >= 1 and fake.requests["games"] == 0
        assert "collected 41 messages from 4 of 6 channels" in text
        assert "refuser: Twitch refused the chat subscription: the broadcaster has banned this user" in text
        assert "sixth: over Twitch's limit for one account: 2 EventSub connections of 2 subscriptions" in text
        assert "german" not in text and "small" not in text  # language filter
        fifth = next(line for line in text.splitlines() if line.strip().startswith("fifth"))
        assert "went offline after" in fifth
        assert "profiles: 4 channels profiled" in text

    async def test_paging_and_a_category(self, fake: FakeTwitch, storage_config: StorageConfig, tmp_path: Path,
                                         bert_path: Path) -> None:
        """Get Streams pages of at most 100 are followed until N are found; --game is looked up by name."""
        for i in range(150):
            fake.start_stream(f"chess{i:03d}", viewers=1000 - i, game="Chess")
        cfg = make_cfg(fake, storage_config, tmp_path, bert_path)
        async with ChatCollector(cfg.twitch, cfg.bots[0], token_store=TokenStore(tmp_path / "moodbot.json"),
                                 on_chat=lambda line: None) as c:
            streams = await c.top_streams(120, game="Chess")
            assert [s.login for s in streams[:2]] == ["chess000", "chess001"]
            assert len(streams) == 120 and len({s.user_id for s in streams}) == 120
            assert all(s.game == "Chess" for s in streams)
            assert fake.requests["streams_pages"] == 2 and fake.requests["games"] == 1
            with pytest.raises(TwitchError, match="no category named 'Nope'"):
                await c.top_streams(5, game="Nope")


def _late_event(fake: FakeTwitch) -> dict[str, object]:
    return chat_event(fake.users["fifth"], fake.users["moodbot"], "a late one")



class TestProgress:
    def test_progress_line_shows_time_left_and_the_busiest_channels(self) -> None:
        def channel(login: str, messages: int, *, offline: bool = False) -> Channel:
            now = datetime.now(UTC)
            s = LiveStream(login, login, login, 10, "", "en", "", now)
            return Channel(s, connection=0, joined_at=now, messages=messages, offline_at=now if offline else None)

        line = progress_line([channel("a", 5), channel("b", 120), channel("c", 0), channel("d", 40, offline=True)],
                             left_s=90, total_s=120, elapsed_s=30)
        assert line.startswith("[#####---------------] 1:30 left  3 channels  165 msgs (5.5/s)")
        assert line.endswith("top: b 120, d 40, a 5")
