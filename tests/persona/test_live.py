"""Personas in ``chatmood run`` against the in-repo fake Twitch and a real FerretDB, with real llama.cpp on a tiny
generated GGUF: mentions answered once through the send limiter, joins within their gap, no bot answering a bot,
and a SIGHUP that changes a persona's prompt without reconnecting EventSub."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from pydantic import SecretStr
from structlog.testing import capture_logs

from bot.config import load_config
from bot.storage.devdb import DevDb
from bot.twitch.tokens import TokenSet, TokenStore
from tests.fakes.gguf import write_tiny_llama
from tests.fakes.twitch import FakeTwitch, chat_event
from tests.test_app import ENV, Bot, environ

STREAMER, BOT_ID, A_ID, B_ID = "600", "500", "501", "502"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("live") / "tiny-chat.gguf")


@pytest_asyncio.fixture(loop_scope="function")
async def fake() -> AsyncIterator[FakeTwitch]:
    async with FakeTwitch(keepalive_s=2) as f:
        for login, uid in (("moodbot", BOT_ID), ("chatty_a", A_ID), ("chatty_b", B_ID), ("streamer", STREAMER)):
            f.add_user(login, uid)
        for i, login in enumerate(("viewer_vic", "viewer_val", "viewer_viv", "modmia")):
            f.add_user(login, str(700 + i))
        yield f


def toml_value(v: Any) -> str:
    return json.dumps(v)  # strings, numbers, booleans and lists of them read the same in TOML


def write_config(tmp_path: Path, fake: FakeTwitch, db_url: str, database: str,
                 personas: dict[str, dict[str, Any]]) -> Path:
    """bots.toml with the plain mood bot ``main`` and one persona bot per entry (name -> persona settings)."""
    accounts = {"main": "moodbot", "a": "chatty_a", "b": "chatty_b"}
    text = fake.toml(db_url, database) + """
[classifier]
embedding_model = ""

[overlay]
port = 0
access_token = "dashboard-token-123"
"""
    for name in ("main", *personas):
        access, refresh = fake.issue_token(accounts[name])
        TokenStore(tmp_path / f"{name}.json").save(TokenSet(SecretStr(access), SecretStr(refresh)))
        text += f'\n[[bots]]\nname = "{name}"\naccount = "{accounts[name]}"\ntoken_file = "{name}.json"\n'
        text += 'channels = ["streamer"]\n'
        if name in personas:
            text += "[bots.persona]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in personas[name].items())
    path = tmp_path / "bots.toml"
    path.write_text(text)
    return path


def persona(tiny: Path, **kw: Any) -> dict[str, Any]:
    return {"model": str(tiny), "temperature": 0.0, "user_cooldown_s": 0.0, **kw}


async def healthz(bot: Bot) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{bot.base.result()}/healthz") as r:
        report: dict[str, Any] = await r.json()
    return report


async def idle(bot: Bot, *names: str) -> dict[str, Any]:
    """Wait until the personas have written everything queued; their health report then."""
    async with asyncio.timeout(30):
        while True:
            report = await healthz(bot)
            personas = report["personas"]
            if all(personas[n]["model_loaded"] and personas[n]["pending"] == 0 for n in names):
                return personas
            await asyncio.sleep(0.1)


async def live(fake: FakeTwitch) -> None:
    """The channel goes live and chat is read. (The fake, like the Twitch CLI, allows one ``stream.online``
    subscription per channel, so the first bot reads the chat; ingest takes each line once whoever reads it, and
    each persona still sends as its own account.)"""
    await fake.wait_for(lambda: len(fake.subs_of("stream.online")) >= 1)
    await fake.go_live("streamer")
    await fake.wait_for(lambda: len(fake.subs_of("channel.chat.message")) >= 1)


async def say(fake: FakeTwitch, login: str, text: str, *, message_id: str | None = None,
              reply_to: str | None = None) -> str:
    """A chat line in the streamer's channel, as EventSub delivers it (to the first bot's subscription)."""
    u = fake.users
    event = chat_event(u["streamer"], u[login], text, message_id=message_id, reply_parent_id=reply_to)
    await fake.notify("channel.chat.message", event)
    return str(event["message_id"])


class TestMentions:
    async def test_a_mention_gets_exactly_one_reply_through_the_limiter(
        self, tmp_path: Path, fake: FakeTwitch, ferretdb: DevDb, storage_config: Any, tiny: Path
    ) -> None:
        """Each mention is answered once, as a Twitch reply by the persona's account (a redelivery is not answered
        again), and the account's limiter spaces two replies in one channel by Twitch's 1 s slow mode."""
        path = write_config(tmp_path, fake, ferretdb.url, storage_config.database, {"a": persona(tiny)})
        async with Bot(load_config(path, ENV)) as bot:
            await live(fake)
            await idle(bot, "a")
            vic = await say(fake, "viewer_vic", "@chatty_a what do you think of this run?")
            await say(fake, "viewer_vic", "@chatty_a what do you think of this run?", message_id=vic)  # redelivered
            val = await say(fake, "viewer_val", "@Chatty_A are you a bot?")
            await fake.wait_for(lambda: len(fake.sent) >= 2, 30)
            report = await idle(bot, "a")
        assert len(fake.sent) == 2
        assert {m["reply_parent_message_id"] for m in fake.sent} == {vic, val}
        assert all(m["sender_id"] == A_ID and m["broadcaster_id"] == STREAMER for m in fake.sent)
        assert fake.sent_times[1] - fake.sent_times[0] >= 0.95  # the limiter's slow mode, not the model's pace
        assert report["a"]["replies_sent"] == 2 and report["a"]["replies_dropped"] == 0
        assert report["a"]["last_reply_at"] is not None

    async def test_no_mention_no_reply_at_join_chance_zero_and_own_lines_ignored(
        self, tmp_path: Path, fake: FakeTwitch, ferretdb: DevDb, storage_config: Any, tiny: Path
    ) -> None:
        """Chat without a mention (some lines addressed to other viewers, one by the persona's own account naming
        itself) gets nothing; the one mention that follows is answered, so the persona was listening."""
        path = write_config(tmp_path, fake, ferretdb.url, storage_config.database,
                            {"a": persona(tiny, join_chance=0.0)})
        fake.echo_chat = True  # the persona's own reply comes back as its chat line, like on Twitch
        async with Bot(load_config(path, ENV)) as bot:
            await live(fake)
            await idle(bot, "a")
            for i in range(20):
                await say(fake, ("viewer_vic", "viewer_val")[i % 2], f"gg that was close {i} @viewer_viv")
            await say(fake, "chatty_a", "@chatty_a talking to myself again")
            await idle(bot, "a")
            assert fake.sent == []
            mention = await say(fake, "viewer_viv", "@chatty_a hi!")
            await fake.wait_for(lambda: len(fake.sent) == 1, 30)
            await asyncio.sleep(0.5)  # the echo of its reply reaches it too
            report = await idle(bot, "a")
        assert len(fake.sent) == 1 and fake.sent[0]["reply_parent_message_id"] == mention
        assert report["a"]["replies_sent"] == 1


class TestJoining:
    async def test_join_chance_one_honours_min_gap_under_a_burst(
        self, tmp_path: Path, fake: FakeTwitch, ferretdb: DevDb, storage_config: Any, tiny: Path
    ) -> None:
        path = write_config(tmp_path, fake, ferretdb.url, storage_config.database,
                            {"a": persona(tiny, join_chance=1.0, min_gap_s=3600.0)})
        async with Bot(load_config(path, ENV)) as bot:
            await live(fake)
            await idle(bot, "a")
            with capture_logs() as logs:
                for i in range(30):
                    await say(fake, ("viewer_vic", "viewer_val", "viewer_viv")[i % 3], f"burst line {i} LETSGO")
                await fake.wait_for(lambda: len(fake.sent) >= 1, 30)
                report = await idle(bot, "a")
        written = [e for e in logs if e["event"] in ("persona_replied", "persona_reply_dropped")]
        assert len(written) == 1 and written[0]["kind"] == "join"
        assert len(fake.sent) == 1 and fake.sent[0].get("reply_parent_message_id") in (None, "")
        assert fake.sent[0]["sender_id"] == A_ID and report["a"]["replies_sent"] == 1


class TestTwoPersonas:
    async def test_fifty_messages_and_no_bot_ever_answers_a_bot(
        self, tmp_path: Path, fake: FakeTwitch, ferretdb: DevDb, storage_config: Any, tiny: Path
    ) -> None:
        """Two personas that answer every mention and join in freely, their lines echoed back as chat, and
        lines from their accounts that mention each other: every reply answers a viewer, never a bot."""
        settings = {"join_chance": 0.5, "min_gap_s": 0.0, "max_tokens": 12}
        path = write_config(tmp_path, fake, ferretdb.url, storage_config.database,
                            {"a": persona(tiny, **settings), "b": persona(tiny, **settings)})
        fake.echo_chat = True
        viewers = ("viewer_vic", "viewer_val", "viewer_viv")
        bot_lines: list[str] = []
        viewer_lines: dict[str, str] = {}  # id -> who was mentioned first ("" for none)
        async with Bot(load_config(path, ENV)) as bot:
            await live(fake)
            await idle(bot, "a", "b")
            with capture_logs() as logs:
                for i in range(50):
                    if i % 5 == 4:  # the bots talk to each other (and to themselves)
                        who, other = ("chatty_a", "chatty_b") if i % 2 else ("chatty_b", "chatty_a")
                        bot_lines.append(await say(fake, who, f"@{other} what do you think? @{who}"))
                    elif i % 5 == 3 and fake.sent_ids:  # a viewer replies to a persona's line
                        viewer_lines[await say(fake, viewers[i % 3], "lol true", reply_to=fake.sent_ids[-1])] = "?"
                    else:
                        target = ("@chatty_a ", "@chatty_b ", "")[i % 3]
                        viewer_lines[await say(fake, viewers[i % 3], f"{target}line {i} of chat")] = target.strip()
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)
                await idle(bot, "a", "b")
                await asyncio.sleep(0.5)  # the last echoes
                report = await idle(bot, "a", "b")
        answered = [e for e in logs if e["event"] in ("persona_replied", "persona_reply_dropped")]
        triggers = [e["message_id"] for e in answered]
        echoes = set(fake.sent_ids)
        assert answered, "the personas answered nobody"
        assert all(t in viewer_lines for t in triggers)  # never a bot's line, never an echo of one
        assert not set(triggers) & (set(bot_lines) | echoes)
        assert len(triggers) == len(set(triggers))  # at most one persona per line
        for m in fake.sent:
            parent = m.get("reply_parent_message_id")
            assert parent in (None, "") or parent in viewer_lines
            if parent and viewer_lines[parent].startswith("@"):  # a mention is answered by the one mentioned
                assert m["sender_id"] == {"@chatty_a": A_ID, "@chatty_b": B_ID}[viewer_lines[parent]]
        mentions = [i for i, t in viewer_lines.items() if t.startswith("@")]
        replies = [e for e in answered if e["kind"] == "reply"]
        assert {e["message_id"] for e in replies} >= set(mentions)
        # handed to the outbox; the limiter sends them at Twitch's pace (and drops repeated texts)
        assert 1 <= len(fake.sent) <= report["a"]["replies_sent"] + report["b"]["replies_sent"]


class TestReload:
    async def test_sighup_changes_the_system_prompt_without_reconnecting(
        self, tmp_path: Path, fake: FakeTwitch, ferretdb: DevDb, storage_config: Any, tiny: Path
    ) -> None:
        (tmp_path / "prompts").mkdir()
        prompt = tmp_path / "prompts" / "chatty.txt"
        prompt.write_text("You are Chatty, who loves speedruns.\n")
        path = write_config(tmp_path, fake, ferretdb.url, storage_config.database,
                            {"a": persona(tiny, system_prompt_file="chatty.txt")})
        with environ(ENV):
            async with Bot(load_config(path, os.environ)) as bot:
                await live(fake)
                report = await idle(bot, "a")
                assert report["a"]["system_prompt"] == "You are Chatty, who loves speedruns."
                connects, subs = fake.connects, {s["id"] for s in fake.subscriptions.values()}

                prompt.write_text("You are Chatty, who only talks about cats.\n")
                os.kill(os.getpid(), signal.SIGHUP)
                async with asyncio.timeout(10):
                    while (await healthz(bot))["personas"]["a"]["system_prompt"] != (  # noqa: ASYNC110 - polling
                            "You are Chatty, who only talks about cats."):
                        await asyncio.sleep(0.05)
                mention = await say(fake, "viewer_vic", "@chatty_a still there?")
                await fake.wait_for(lambda: len(fake.sent) == 1, 30)
                assert fake.sent[0]["reply_parent_message_id"] == mention
                assert fake.connects == connects and {s["id"] for s in fake.subscriptions.values()} == subs

                prompt.unlink()  # a file that cannot be read is a rejected reload: the old prompt stays
                with capture_logs() as logs:
                    os.kill(os.getpid(), signal.SIGHUP)
                    async with asyncio.timeout(10):
                        while not any(e["event"] == "config_reload_rejected" for e in logs):  # noqa: ASYNC110
                            await asyncio.sleep(0.05)
                assert (await healthz(bot))["personas"]["a"]["system_prompt"].endswith("only talks about cats.")
