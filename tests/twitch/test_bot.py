"""The Twitch connection against the in-repo fake Twitch (EventSub WebSocket, Helix, OAuth on loopback).

twitchAPI's real EventSub client runs here, on its own thread, talking to the fake over TCP.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import structlog
from pydantic import SecretStr

from bot.config import BotConfig, TwitchConfig
from bot.domain import ChatLine, EmoteSpan
from bot.errors import AuthError
from bot.twitch.bot import Backoff, TwitchBot
from bot.twitch.events import chat_line_from_event, parse_ts
from bot.twitch.tokens import TokenSet, TokenStore
from tests.fakes.twitch import FakeTwitch, FakeUser, chat_event, emote_fragment, text_fragment

META = {"message_id": "m-1", "message_type": "notification", "message_timestamp": "2024-05-01T12:00:01.123456789Z"}


@dataclass
class Recorder:
    chat: list[ChatLine] = field(default_factory=list)
    live: list[tuple[str, bool]] = field(default_factory=list)

    def on_chat(self, line: ChatLine) -> None:
        self.chat.append(line)

    async def on_live(self, channel: str, live: bool, at: datetime) -> None:
        assert at.tzinfo is not None
        self.live.append((channel, live))


@pytest.fixture(autouse=True)
def no_library_thread_left() -> Iterator[None]:
    """Every test ends with twitchAPI's socket threads finished: the bot always stops the library."""
    yield
    left = [t.name for t in threading.enumerate() if "run_socket" in t.name and t.is_alive()]
    assert not left, f"twitchAPI threads still running: {left}"


@pytest_asyncio.fixture(loop_scope="function")
async def fake() -> AsyncIterator[FakeTwitch]:
    async with FakeTwitch(keepalive_s=2) as f:
        f.add_user("moodbot", "500")
        f.add_user("streamer", "600")
        f.add_user("other", "601")
        f.add_user("third", "602")
        yield f


def make_bot(fake: FakeTwitch, tmp_path: Path, rec: Recorder, channels: tuple[str, ...] = ("streamer", "other"),
             **kw: Any) -> TwitchBot:
    access, refresh = fake.issue_token("moodbot")
    store = TokenStore(tmp_path / "moodbot.json")
    store.save(TokenSet(SecretStr(access), SecretStr(refresh)))
    cfg = TwitchConfig(client_id=FakeTwitch.CLIENT_ID, client_secret=SecretStr("clientsecret"),
                       api_url=fake.api_url, auth_url=fake.auth_url, eventsub_url=fake.eventsub_url)
    bot_cfg = BotConfig(name="main", account="moodbot", channels=channels)
    kw.setdefault("health_interval_s", 0.1)
    kw.setdefault("dead_after_s", 3.0)
    kw.setdefault("timeout_s", 10.0)
    kw.setdefault("backoff", Backoff(0.1, 0.5))
    return TwitchBot(cfg, bot_cfg, token_store=store, on_chat=rec.on_chat, on_live=rec.on_live, **kw)


def user(fake: FakeTwitch, login: str) -> FakeUser:
    return fake.users[login]


async def chat_ready(fake: FakeTwitch, bot: TwitchBot, channel: str = "streamer", n: int = 1) -> None:
    """Both sides know the chat subscription: the fake has it and twitchAPI has registered its callback
    (a notification that beats the callback is dropped by twitchAPI as 'unknown subscription')."""
    await fake.wait_for(lambda: len(fake.subs_of("channel.chat.message")) == n and bool(fake.sockets)
                        and set(bot.subscription_ids("channel.chat.message", channel))
                        <= set(fake.subscriptions) and bool(bot.subscription_ids("channel.chat.message", channel)),
                        within_s=20)


class TestChatLineConversion:
    """Documented channel.chat.message payloads become ChatLines."""

    def test_fields_badges_reply_and_timestamp(self) -> None:
        b, c = FakeUser("600", "streamer", "Streamer"), FakeUser("42", "viewer", "Viewer")
        ev = chat_event(b, c, "hello there", message_id="abc", badges=["moderator", "subscriber"],
                        reply_parent_id="parent-1")
        line = chat_line_from_event(ev, META)
        assert (line.message_id, line.channel, line.channel_id) == ("abc", "streamer", "600")
        assert (line.user_id, line.user_login, line.user_name, line.text) == ("42", "viewer", "Viewer", "hello there")
        assert line.badges == frozenset({"moderator", "subscriber"}) and line.is_privileged
        assert line.reply_to == "parent-1"
        assert line.sent_at == datetime(2024, 5, 1, 12, 0, 1, 123456, tzinfo=UTC)

    def test_emote_spans_are_code_point_offsets(self) -> None:
        b, c = FakeUser("600", "streamer", "Streamer"), FakeUser("42", "viewer", "Viewer")
        frags = [text_fragment("🟧 gg "), emote_fragment("Kappa", "25"), text_fragment(" ok "),
                 emote_fragment("PogChamp", "88")]
        text = "🟧 gg Kappa ok PogChamp"
        line = chat_line_from_event(chat_event(b, c, text, fragments=frags), META)
        assert line.emotes == (EmoteSpan("25", 5, 10), EmoteSpan("88", 14, 22))
        assert [line.text[e.begin:e.end] for e in line.emotes] == ["Kappa", "PogChamp"]

    def test_nul_is_stripped_and_offsets_follow(self) -> None:
        b, c = FakeUser("600", "streamer", "Streamer"), FakeUser("42", "viewer", "Viewer")
        frags = [text_fragment("a\x00b "), emote_fragment("Kappa", "25")]
        line = chat_line_from_event(chat_event(b, c, "a\x00b Kappa", fragments=frags), META)
        assert line.text == "ab Kappa"
        assert line.emotes == (EmoteSpan("25", 3, 8),)

    def test_fragments_that_do_not_tile_the_text_give_no_emotes(self) -> None:
        b, c = FakeUser("600", "streamer", "Streamer"), FakeUser("42", "viewer", "Viewer")
        line = chat_line_from_event(chat_event(b, c, "other text", fragments=[emote_fragment("Kappa", "25")]), META)
        assert line.emotes == () and line.reply_to is None and line.badges == frozenset()

    def test_parse_ts_accepts_nanoseconds_and_plain(self) -> None:
        assert parse_ts("2024-05-01T12:00:00Z") == datetime(2024, 5, 1, 12, tzinfo=UTC)
        assert parse_ts("2024-05-01T12:00:00.5Z").microsecond == 500000


class TestBackoff:
    """Backoff is capped and jittered."""

    def test_backoff_is_capped_and_resets(self) -> None:
        import random
        b = Backoff(1.0, 8.0, random.Random(7))
        delays = [b.next_delay() for _ in range(8)]
        assert all(0.5 <= d <= 8.0 for d in delays)
        assert max(delays[4:]) <= 8.0 and min(delays[4:]) >= 4.0
        b.reset()
        assert b.next_delay() <= 1.0


class TestLiveAndChat:
    """stream.online/offline drive chat subscriptions; chat reaches on_chat once per message."""

    async def test_startup_asks_get_streams_and_reads_chat_of_live_channels(self, fake: FakeTwitch,
                                                                            tmp_path: Path) -> None:
        fake.live["streamer"] = datetime.now(UTC)
        rec = Recorder()
        async with make_bot(fake, tmp_path, rec) as bot:
            await fake.wait_for(lambda: rec.live == [("streamer", True)])
            await chat_ready(fake, bot)
            assert fake.requests["streams"] >= 1
            assert {s["condition"]["broadcaster_user_id"] for s in fake.subs_of("stream.online")} == {"600", "601"}
            assert {s["condition"]["broadcaster_user_id"] for s in fake.subs_of("stream.offline")} == {"600", "601"}
            assert fake.subs_of("channel.chat.message")[0]["condition"] == {"broadcaster_user_id": "600",
                                                                             "user_id": "500"}
            await fake.notify("channel.chat.message", chat_event(user(fake, "streamer"), user(fake, "third"), "hi"))
            await fake.wait_for(lambda: len(rec.chat) == 1)
            assert rec.chat[0].channel == "streamer" and rec.chat[0].text == "hi"
            st = bot.status()
            assert st.connected and st.live_channels == ("streamer",) and st.last_event_at is not None

    async def test_online_subscribes_chat_and_offline_unsubscribes_and_closes(self, fake: FakeTwitch,
                                                                              tmp_path: Path) -> None:
        rec = Recorder()
        async with make_bot(fake, tmp_path, rec) as bot:
            assert fake.subs_of("channel.chat.message") == []
            await fake.go_live("other")
            await chat_ready(fake, bot, "other")
            assert rec.live == [("other", True)]
            ev = chat_event(user(fake, "other"), user(fake, "third"), "pog", badges=["vip"])
            await fake.notify("channel.chat.message", ev)
            await fake.wait_for(lambda: len(rec.chat) == 1)
            await fake.go_offline("other")
            await fake.wait_for(lambda: rec.live == [("other", True), ("other", False)])
            assert fake.subs_of("channel.chat.message") == [] and len(fake.deleted) == 1
            assert bot.status().live_channels == ()

    async def test_chat_arriving_after_offline_is_not_read(self, fake: FakeTwitch, tmp_path: Path) -> None:
        fake.live["streamer"] = datetime.now(UTC)
        rec = Recorder()
        async with make_bot(fake, tmp_path, rec) as bot:
            await chat_ready(fake, bot)
            chat_sub = fake.subs_of("channel.chat.message")[0]
            await fake.go_offline("streamer")
            await fake.wait_for(lambda: ("streamer", False) in rec.live and not fake.subs_of("channel.chat.message"))
            await fake.notify_sub(chat_sub, chat_event(user(fake, "streamer"), user(fake, "third"), "late"))
            await fake.notify("stream.online", {  # a later event proves the late one was processed (and dropped)
                "id": "9", "broadcaster_user_id": "601", "broadcaster_user_login": "other",
                "broadcaster_user_name": "Other", "type": "live", "started_at": "2024-05-01T12:00:00Z"},
                condition={"broadcaster_user_id": "601"})
            await fake.wait_for(lambda: ("other", True) in rec.live)
            assert rec.chat == []

    async def test_redelivered_notifications_reach_on_chat_once(self, fake: FakeTwitch, tmp_path: Path) -> None:
        fake.live["streamer"] = datetime.now(UTC)
        rec = Recorder()
        async with make_bot(fake, tmp_path, rec) as bot:
            await chat_ready(fake, bot)
            ev = chat_event(user(fake, "streamer"), user(fake, "third"), "once")
            await fake.notify("channel.chat.message", ev, message_id="dup-1")
            await fake.notify("channel.chat.message", ev, message_id="dup-1")
            await fake.notify("channel.chat.message", chat_event(user(fake, "streamer"), user(fake, "third"), "two"))
            await fake.wait_for(lambda: len(rec.chat) == 2)
            await asyncio.sleep(0.2)
            assert [c.text for c in rec.chat] == ["once", "two"]

    async def test_a_message_with_an_unstorable_id_is_logged_and_dropped_alone(self, fake: FakeTwitch,
                                                                               tmp_path: Path) -> None:
        fake.live["streamer"] = datetime.now(UTC)
        rec = Recorder()
        b, c = user(fake, "streamer"), user(fake, "third")
        with structlog.testing.capture_logs() as logs:
            async with make_bot(fake, tmp_path, rec) as bot:
                await chat_ready(fake, bot)
                await fake.notify("channel.chat.message", chat_event(b, c, "before"))
                # json.dumps writes the lone surrogate as a \ud83d escape, which Python's json reads back as is.
                await fake.notify("channel.chat.message", chat_event(b, c, "bad id", message_id="id-\ud83d"))
                await fake.notify("channel.chat.message", chat_event(b, c, "bad reply", reply_parent_id="\udc00"))
                await fake.notify("channel.chat.message", chat_event(b, c, "half an emoji \ud83d"))
                await fake.wait_for(lambda: len(rec.chat) == 2)
                await asyncio.sleep(0.2)
        assert [x.text for x in rec.chat] == ["before", "half an emoji \ufffd"]
        refused = [e for e in logs if e["event"] == "chat_message_refused"]
        assert [e["field"] for e in refused] == ["message_id", "reply_to"]
        assert not [e for e in logs if e["event"] == "notification_failed"]

    async def test_chat_subscription_refused_is_logged_and_the_bot_keeps_going(self, fake: FakeTwitch,
                                                                               tmp_path: Path) -> None:
        fake.fail_subscribe.add("channel.chat.message")
        rec = Recorder()
        with structlog.testing.capture_logs() as logs:
            async with make_bot(fake, tmp_path, rec) as bot:
                await fake.go_live("streamer")
                await fake.wait_for(lambda: any(e["event"] == "chat_subscribe_failed" for e in logs))
                assert rec.live == [("streamer", True)] and bot.status().connected

    async def test_own_messages_teach_the_limiter_mod_status(self, fake: FakeTwitch, tmp_path: Path) -> None:
        fake.live["streamer"] = datetime.now(UTC)
        rec = Recorder()
        async with make_bot(fake, tmp_path, rec) as bot:
            await chat_ready(fake, bot)
            assert not bot.limiter.is_privileged("streamer")
            await fake.notify("channel.chat.message",
                              chat_event(user(fake, "streamer"), user(fake, "moodbot"), "x", badges=["moderator"]))
            await fake.wait_for(lambda: bot.limiter.is_privileged("streamer"))

    async def test_set_channels_adds_and_removes_without_touching_others(self, fake: FakeTwitch,
                                                                         tmp_path: Path) -> None:
        fake.live["streamer"] = fake.live["other"] = datetime.now(UTC)
        rec = Recorder()
        async with make_bot(fake, tmp_path, rec) as bot:
            await fake.wait_for(lambda: len(fake.subs_of("channel.chat.message")) == 2)
            kept = {s["id"] for s in fake.subscriptions.values() if s["condition"]["broadcaster_user_id"] == "600"}
            fake.live["third"] = datetime.now(UTC)
            await bot.set_channels(["streamer", "third"])
            await fake.wait_for(lambda: ("third", True) in rec.live)
            assert ("other", False) in rec.live
            ids = {s["condition"]["broadcaster_user_id"] for s in fake.subscriptions.values()}
            assert ids == {"600", "602"}
            assert kept <= set(fake.subscriptions)  # streamer's subscriptions were left alone
            assert bot.status().channels == ("streamer", "third")


class TestReconnect:
    """session_reconnect, dropped sockets and lost keepalives all end with chat flowing again."""

    async def chat_flows(self, fake: FakeTwitch, bot: TwitchBot, rec: Recorder, text: str) -> None:
        await chat_ready(fake, bot)
        await fake.notify("channel.chat.message", chat_event(user(fake, "streamer"), user(fake, "third"), text))
        await fake.wait_for(lambda: any(c.text == text for c in rec.chat))

    async def test_session_reconnect_is_honoured(self, fake: FakeTwitch, tmp_path: Path) -> None:
        fake.live["streamer"] = datetime.now(UTC)
        rec = Recorder()
        async with make_bot(fake, tmp_path, rec) as bot:
            await self.chat_flows(fake, bot, rec, "before")
            session = bot.status().session_id
            posts = len(fake.subscribe_posts)
            await fake.request_reconnect()
            await fake.wait_for(lambda: len(fake.sockets) == 1 and fake.sockets[0].ws is not None)
            await asyncio.sleep(0.3)
            await self.chat_flows(fake, bot, rec, "after")
            assert fake.connects == 1  # moved to the reconnect URL, no fresh connection
            assert len(fake.subscribe_posts) == posts  # subscriptions carried over, none re-created
            assert bot.status().session_id == session

    async def test_closed_socket_reconnects_and_resubscribes(self, fake: FakeTwitch, tmp_path: Path) -> None:
        fake.live["streamer"] = datetime.now(UTC)
        rec = Recorder()
        async with make_bot(fake, tmp_path, rec) as bot:
            await self.chat_flows(fake, bot, rec, "before")
            await fake.drop_sockets(4006)
            await fake.wait_for(lambda: fake.connects >= 2, within_s=20)
            await self.chat_flows(fake, bot, rec, "after")
            await fake.wait_for(lambda: bot.status().reconnects >= 1)
            assert rec.live == [("streamer", True)]  # no spurious offline

    async def test_missed_transition_during_an_outage_is_caught_by_get_streams(self, fake: FakeTwitch,
                                                                               tmp_path: Path) -> None:
        rec = Recorder()
        async with make_bot(fake, tmp_path, rec):
            fake.keepalive_enabled = False
            await fake.drop_sockets(4006)
            fake.live["other"] = datetime.now(UTC)  # went live while we were away: no event for us
            fake.keepalive_enabled = True
            await fake.wait_for(lambda: ("other", True) in rec.live, within_s=20)

    async def test_keepalive_loss_leads_to_a_new_session(self, fake: FakeTwitch, tmp_path: Path) -> None:
        fake.live["streamer"] = datetime.now(UTC)
        rec = Recorder()
        async with make_bot(fake, tmp_path, rec) as bot:
            await self.chat_flows(fake, bot, rec, "before")
            first = bot.status().session_id
            fake.keepalive_enabled = False
            await fake.wait_for(lambda: fake.connects >= 2, within_s=20)
            fake.keepalive_enabled = True
            await fake.wait_for(lambda: bot.status().session_id not in (None, first), within_s=20)
            await self.chat_flows(fake, bot, rec, "after")

    async def test_unreachable_eventsub_is_retried_with_backoff(self, fake: FakeTwitch, tmp_path: Path,
                                                                unused_tcp_port: int) -> None:
        rec = Recorder()
        bot = make_bot(fake, tmp_path, rec, timeout_s=8.0)
        bot._cfg = bot._cfg.model_copy(update={"eventsub_url": f"ws://127.0.0.1:{unused_tcp_port}/ws"})
        with structlog.testing.capture_logs() as logs:
            async with bot:
                assert not bot.status().connected
                await fake.wait_for(lambda: any(e["event"] == "eventsub_reconnect_failed" for e in logs), 30)


class TestSendAndAuth:
    """Replies go through the limiter to Helix; drops are reported; token trouble is handled."""

    async def test_send_posts_chat_message(self, fake: FakeTwitch, tmp_path: Path) -> None:
        rec = Recorder()
        async with make_bot(fake, tmp_path, rec) as bot:
            res = await bot.send("streamer", "chat mood: hype 61% 🟧", reply_to="parent-9")
            assert res.sent and res.message_id
            assert fake.sent == [{"broadcaster_id": "600", "sender_id": "500", "message": "chat mood: hype 61% 🟧",
                                  "reply_parent_message_id": "parent-9"}]
            again = await bot.send("streamer", "chat mood: hype 61% 🟧")
            assert not again.sent and again.drop_reason == "rate_limited" and len(fake.sent) == 1

    async def test_is_sent_false_is_reported_and_logged(self, fake: FakeTwitch, tmp_path: Path) -> None:
        fake.drop_next.append(("msg_duplicate", "The message is a duplicate."))
        rec = Recorder()
        async with make_bot(fake, tmp_path, rec) as bot:
            with structlog.testing.capture_logs() as logs:
                res = await bot.send("other", "hello")
            assert not res.sent and res.drop_reason == "msg_duplicate"
            assert any(e["event"] == "send_dropped_by_twitch" and e["code"] == "msg_duplicate" for e in logs)

    async def test_expired_token_is_refreshed_on_401_and_saved(self, fake: FakeTwitch, tmp_path: Path) -> None:
        rec = Recorder()
        async with make_bot(fake, tmp_path, rec) as bot:
            before = TokenStore(tmp_path / "moodbot.json").load()
            fake.expire_access_tokens()
            res = await bot.send("streamer", "still here")
            assert res.sent
            after = TokenStore(tmp_path / "moodbot.json").load()
            assert before is not None and after is not None and after.access_token != before.access_token

    async def test_expired_token_is_refreshed_when_a_subscription_is_refused(self, fake: FakeTwitch,
                                                                              tmp_path: Path) -> None:
        rec = Recorder()
        async with make_bot(fake, tmp_path, rec) as bot:
            fake.expire_access_tokens()
            await fake.go_live("streamer")
            await chat_ready(fake, bot)
            assert fake.requests["token"] == 1

    async def test_revoked_token_at_startup_is_an_auth_error(self, fake: FakeTwitch, tmp_path: Path) -> None:
        rec = Recorder()
        bot = make_bot(fake, tmp_path, rec)
        fake.revoke_all()
        with pytest.raises(AuthError, match="chatmood auth"):
            async with bot:
                pass

    async def test_revocation_found_by_periodic_validation_stops_the_bot(self, fake: FakeTwitch,
                                                                         tmp_path: Path) -> None:
        rec = Recorder()
        async with make_bot(fake, tmp_path, rec, validate_interval_s=0.3) as bot:
            fake.revoke_all()
            with pytest.raises(AuthError, match="chatmood auth --bot main"):
                await asyncio.wait_for(bot.wait(), 10)
            await fake.wait_for(lambda: not bot.status().connected)
