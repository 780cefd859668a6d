"""The whole bot wired together: the in-repo fake Twitch, a real FerretDB over TCP, the real
classifier (cold-start head, no model files), the overlay server, and bots.toml reloads."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from pydantic import SecretStr
from structlog.testing import capture_logs

from bot.app import _overlay_token_for_run, cmd_demo, cmd_run
from bot.config import Config, load_config
from bot.replay.run import cmd_replay
from bot.storage.devdb import DevDb
from bot.twitch.tokens import TokenSet, TokenStore
from tests.fakes.gguf import write_tiny_llama
from tests.fakes.twitch import FakeTwitch, chat_event

ROOT = Path(__file__).resolve().parents[1]


def bots_toml(fake: FakeTwitch, db_url: str, database: str, *, channels: list[str], half_life: float = 60.0) -> str:
    return fake.toml(db_url, database) + f"""
[[bots]]
name = "main"
account = "moodbot"
token_file = "moodbot.json"
channels = {json.dumps(channels)}

[classifier]
embedding_model = ""

[mood]
half_life_s = {half_life}
snapshot_interval_s = 0.5

[commands.mood]
cooldown_channel_s = 0
cooldown_user_s = 0

[overlay]
port = 0
access_token = "dashboard-token-123"
"""


ENV = {"FAKE_TWITCH_SECRET": "clientsecret"}


class Bot:
    """`chatmood run` in this process, with a handle to stop it."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stop = asyncio.Event()
        self.base = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[int] | None = None

    async def __aenter__(self) -> Bot:
        self.task = asyncio.create_task(
            cmd_run(self.cfg, host="127.0.0.1", stop=self.stop, ready=self.base.set_result), name="bot-under-test"
        )
        done, _ = await asyncio.wait({self.task, self.base}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if self.task in done:
            self.task.result()  # raises what stopped it
        assert self.base.done(), "the bot did not start within 60 s"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.stop.set()
        assert await asyncio.wait_for(self.task, 60) == 0


@pytest_asyncio.fixture(loop_scope="function")
async def fake() -> AsyncIterator[FakeTwitch]:
    async with FakeTwitch(keepalive_s=2) as f:
        for login, uid in (("moodbot", "500"), ("streamer", "600"), ("other", "601")):
            f.add_user(login, uid)
        for i, login in enumerate(("modmia", "viewer_vic", "viewer_val")):
            f.add_user(login, str(700 + i))
        yield f


def make_config(tmp_path: Path, fake: FakeTwitch, ferretdb: DevDb, database: str, **kw: Any) -> Path:
    access, refresh = fake.issue_token("moodbot")
    TokenStore(tmp_path / "moodbot.json").save(TokenSet(SecretStr(access), SecretStr(refresh)))
    path = tmp_path / "bots.toml"
    path.write_text(bots_toml(fake, ferretdb.url, database, **kw))
    return path


async def eventually(predicate: Any, within_s: float = 20.0) -> None:
    async with asyncio.timeout(within_s):
        while not await predicate():  # noqa: ASYNC110 - polling the database: there is no event to wait on
            await asyncio.sleep(0.05)


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Any:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class TestLiveBot:
    """Live -> chat stored and classified -> commands answered through the limiter -> offline stops reading."""

    async def test_end_to_end(
        self, tmp_path: Path, fake: FakeTwitch, ferretdb: DevDb, storage_config: Any, db: Any
    ) -> None:
        path = make_config(tmp_path, fake, ferretdb, storage_config.database, channels=["streamer"])
        cfg = load_config(path, ENV)
        u = fake.users
        async with Bot(cfg) as bot:
            await fake.wait_for(lambda: len(fake.subs_of("stream.online")) == 1)
            assert fake.subs_of("channel.chat.message") == []  # offline: chat is not read

            await fake.go_live("streamer")
            await fake.wait_for(lambda: len(fake.subs_of("channel.chat.message")) == 1)
            await eventually(lambda: db.stream_sessions.count_documents({"channel": "streamer", "ended": None}))

            hype = ["LETS GOOOO PogChamp", "POGGERS what a clutch", "HOLY that play was insane", "W streamer LETSGO"]
            for i, text in enumerate(hype):
                await fake.notify(
                    "channel.chat.message", chat_event(u["streamer"], u["viewer_vic"], text, message_id=f"m-hype-{i}")
                )
            # A redelivery of the same notification must not store the message twice.
            await fake.notify(
                "channel.chat.message", chat_event(u["streamer"], u["viewer_vic"], hype[0], message_id="m-hype-0")
            )

            async def classified() -> bool:
                n = await db.messages.count_documents({"channel": "streamer", "label": {"$exists": True}})
                return n == len(hype)

            await eventually(classified)
            assert await db.messages.count_documents({}) == len(hype)
            labels = {d["label"] async for d in db.messages.find({})}
            assert labels <= set(cfg.category_names)

            await fake.notify("channel.chat.message", chat_event(u["streamer"], u["viewer_val"], "!mood"))
            await fake.wait_for(lambda: any(m.get("message", "").startswith("chat mood:") for m in fake.sent))
            reply = next(m for m in fake.sent if m["message"].startswith("chat mood:"))
            assert reply["broadcaster_id"] == "600" and reply["sender_id"] == "500"
            assert "msgs" in reply["message"]

            # A viewer may not label; a moderator may.
            await fake.notify(
                "channel.chat.message", chat_event(u["streamer"], u["viewer_val"], "!label sad @viewer_vic")
            )
            await fake.notify(
                "channel.chat.message",
                chat_event(u["streamer"], u["modmia"], "!label hype @viewer_vic", badges=["moderator"]),
            )
            await eventually(lambda: db.labeled_examples.count_documents({}))
            examples = [d async for d in db.labeled_examples.find({})]
            assert len(examples) == 1
            assert examples[0]["completion"] == "hype" and examples[0]["labelled_by"] == "modmia"
            assert examples[0]["prompt"] == hype[-1]  # viewer_vic's latest message
            await fake.wait_for(lambda: any("hype" in m["message"] and "label" in m["message"] for m in fake.sent))

            # The API reflects the chat.
            async with aiohttp.ClientSession() as http, http.get(f"{bot.base.result()}/api/mood/streamer") as r:
                mood = await r.json()
            assert r.status == 200 and mood["messages"] == len(hype)
            assert mood["label"] in cfg.category_names and mood["colour"].startswith("#")

            chat_sub = fake.subs_of("channel.chat.message")[0]
            await fake.go_offline("streamer")
            await fake.wait_for(lambda: fake.subs_of("channel.chat.message") == [])
            await eventually(
                lambda: db.stream_sessions.count_documents({"channel": "streamer", "ended": {"$ne": None}})
            )
            # A late delivery on the deleted subscription is not read.
            await fake.notify_sub(
                chat_sub, chat_event(u["streamer"], u["viewer_vic"], "after the stream", message_id="m-late")
            )
            await asyncio.sleep(0.5)
            assert await db.messages.count_documents({"_id": "m-late"}) == 0


class TestReload:
    """SIGHUP: a bad file is rejected and logged, a good one applies without dropping connections."""

    async def test_sighup(self, tmp_path: Path, fake: FakeTwitch, ferretdb: DevDb, storage_config: Any) -> None:
        path = make_config(tmp_path, fake, ferretdb, storage_config.database, channels=["streamer"])
        with environ(ENV):
            cfg = load_config(path, os.environ)
            bot = Bot(cfg)
            async with bot:
                base = bot.base.result()
                await fake.wait_for(lambda: len(fake.subs_of("stream.online")) == 1)
                connects = fake.connects
                async with aiohttp.ClientSession() as http, http.ws_connect(f"{base}/ws/streamer") as ws:
                    first = await ws.receive_json(timeout=5)
                    assert first["channel"] == "streamer"

                    good = path.read_text()
                    path.write_text(good.replace("[mood]", "[mood]\nhalf_lfe_s = 3"))
                    with capture_logs() as logs:
                        os.kill(os.getpid(), signal.SIGHUP)
                        await eventually(self.logged(logs, "config_reload_rejected"), 10)
                    rejected = next(e for e in logs if e["event"] == "config_reload_rejected")
                    assert any("mood.half_lfe_s: unknown key" in p for p in rejected["problems"])

                    path.write_text(
                        bots_toml(fake, ferretdb.url, storage_config.database, channels=["streamer", "other"])
                    )
                    os.kill(os.getpid(), signal.SIGHUP)
                    await fake.wait_for(lambda: len(fake.subs_of("stream.online")) == 2)
                    assert fake.connects == connects  # the EventSub connection was kept
                    assert not ws.closed
                    async with http.get(f"{base}/api/mood/streamer") as r:
                        assert r.status == 200

    @staticmethod
    def logged(logs: list[dict[str, Any]], event: str) -> Any:
        async def check() -> bool:
            return any(e["event"] == event for e in logs)

        return check


class TestReplayCommand:
    """`chatmood replay` stores and classifies a log; a second replay stores nothing new."""

    async def test_replay_twice(self, tmp_path: Path, ferretdb: DevDb, storage_config: Any, db: Any) -> None:
        log = ROOT / "tests" / "data" / "small.jsonl"
        cfg_path = tmp_path / "bots.toml"
        cfg_path.write_text(
            f'[storage]\nmongodb_url = "{ferretdb.url}"\ndatabase = "{storage_config.database}"\n'
            '[classifier]\nembedding_model = ""\n'
        )
        cfg = load_config(cfg_path, {})
        total = sum(1 for line in log.read_text().splitlines() if line.strip())


        first, second = io.StringIO(), io.StringIO()
        assert await cmd_replay(cfg, log, max_rate=10_000, out=first) == 0
        stored = await db.messages.count_documents({})
        assert stored >= 1
        assert f"stored: {stored} new" in first.getvalue()
        assert (
            await db.messages.count_documents({"label": {"$exists": True}})
            + await db.messages.count_documents({"text": {"$regex": "^!"}})
            == stored
        )
        assert await cmd_replay(cfg, log, max_rate=10_000, out=second) == 0
        assert await db.messages.count_documents({}) == stored
        assert "stored: 0 new" in second.getvalue()
        assert total >= stored


class TestOverlayToken:
    """`chatmood run` without overlay.access_token keeps a generated token in tokens/overlay-token, mode 0600,
    whatever file stood there before; it is never logged."""

    def _cfg(self, tmp_path: Path) -> Config:
        return Config().model_copy(update={"source": tmp_path / "bots.toml"})

    def test_an_existing_empty_0644_file_gets_a_token_and_mode_0600(self, tmp_path: Path) -> None:
        path = tmp_path / "tokens" / "overlay-token"
        path.parent.mkdir()
        path.write_text("")
        os.chmod(path, 0o644)
        with capture_logs() as logs:
            token = _overlay_token_for_run(self._cfg(tmp_path))
        assert token and path.read_text() == token + "\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert token not in repr(logs)

    def test_an_existing_token_is_kept_and_its_loose_mode_fixed(self, tmp_path: Path) -> None:
        path = tmp_path / "tokens" / "overlay-token"
        path.parent.mkdir()
        path.write_text("kept-token\n")
        os.chmod(path, 0o644)
        with capture_logs() as logs:
            assert _overlay_token_for_run(self._cfg(tmp_path)) == "kept-token"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert any(e["event"] == "token_file_permissions_fixed" for e in logs)

    def test_a_new_file_is_0600(self, tmp_path: Path) -> None:
        token = _overlay_token_for_run(self._cfg(tmp_path))
        path = tmp_path / "tokens" / "overlay-token"
        assert path.read_text().strip() == token and stat.S_IMODE(path.stat().st_mode) == 0o600
        assert _overlay_token_for_run(self._cfg(tmp_path)) == token  # read back, not made again


class TestDemoHealth:
    """`chatmood demo`'s /healthz asks the database like `chatmood run`'s does: a hung database is a 503."""

    async def test_sigstopped_database_is_503(self, tmp_path: Path, own_ferretdb: DevDb) -> None:
        cfg_path = tmp_path / "bots.toml"
        tiny = write_tiny_llama(tmp_path / "tiny-llama.gguf")  # the demo's persona, so every part can be healthy
        cfg_path.write_text(
            f'[storage]\nmongodb_url = "{own_ferretdb.url}"\ndatabase = "demo_health"\nserver_timeout_ms = 400\n'
            '[classifier]\nembedding_model = ""\n'
            f'[[bots]]\nname = "pal"\naccount = "pal_bot"\nchannels = ["demo"]\n[bots.persona]\nmodel = "{tiny}"\n',
            encoding="utf-8",
        )
        cfg = load_config(cfg_path, {})


        out = io.StringIO()
        demo = asyncio.create_task(cmd_demo(cfg, host="127.0.0.1", port=0, speed=0.05, out=out), name="demo")
        process = own_ferretdb.process
        assert process is not None
        stopped = False
        try:
            async with asyncio.timeout(60):
                while "overlay:" not in out.getvalue():
                    assert not demo.done(), out.getvalue()
                    await asyncio.sleep(0.05)
            base = out.getvalue().split("overlay:", 1)[1].split()[0].split("/overlay/")[0]
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/healthz") as r:
                    assert r.status == 200, await r.text()
                process.send_signal(signal.SIGSTOP)
                stopped = True
                # Asked until it says so (a probe already answered may still be in flight on a loaded machine);
                # the demo's old report never looked at the database and stayed 200 for good.
                answers: list[tuple[int, Any]] = []
                async with asyncio.timeout(20):
                    while not answers or answers[-1][0] != 503:
                        async with http.get(f"{base}/healthz") as r:
                            answers.append((r.status, await r.json()))
                        await asyncio.sleep(0.2)
                body = answers[-1][1]
                assert body["ok"] is False and body["database"]["ok"] is False, answers
        finally:
            if stopped:
                process.send_signal(signal.SIGCONT)
            demo.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await demo
