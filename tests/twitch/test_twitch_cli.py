"""TwitchBot against the official Twitch CLI: its mock EventSub WebSocket server and its mock Helix API.

``tools/twitch-cli/build.sh`` builds the CLI (github.com/twitchdev/twitch-cli v1.1.25 plus 8 upstream commits) from
the Go module proxy or, where the proxy refuses the module, from the upstream source tarball beside the repository
after checking its sha256. Where neither exists the build records why in ``.tools/twitch-cli.unavailable`` and these
tests skip with that reason; ``CHATMOOD_REQUIRE_TWITCH_CLI=1`` (CI sets it) turns a missing CLI into a failure.

Checked against the Twitch CLI:

- ``event websocket start-server``: the welcome and its session id; ``POST /eventsub/subscriptions`` for
  ``stream.online``/``stream.offline`` (202) and ``GET`` of the same list (``Client-Id: debug`` shows every one);
- ``event trigger stream.online|stream.offline --transport=websocket``: transitions of two channels arriving on one
  connection, each routed to its channel by broadcaster id; chat tried on online and dropped on offline;
- subscriptions the mock refuses: ``channel.chat.message`` (400, not mocked) and a second subscription of one type
  on one connection (409: the CLI's conflict check ignores the condition, so only the first channel gets its pair).
  Both are logged; the connection and the accepted subscriptions carry on;
- ``websocket reconnect`` while subscribed: ``session_reconnect`` moves the bot to the new server with its
  subscriptions carried over (same ids, listed on the new session), events keep arriving, Get Streams reconciles;
- ``websocket close --reason=N`` for every close code Twitch documents (4000-4007): a new session within seconds
  (twitchAPI alone would notice the close only at its keepalive deadline, about 20 s later; the supervisor replaces
  a socket closed for ``DEAD_AFTER_S``), the subscriptions made anew (the old ones disabled with the status Twitch
  gives that code), Get Streams reconciles, events arrive.
  The CLI answers ``--reason=4004`` with the frame and status of 4005 (its ``GetCloseMessageFromCode``), so 4004's
  own frame is never sent;
- keepalive loss (``websocket keepalive --enabled=false``): twitchAPI gives up on the silent session after twice
  the keepalive timeout and connects anew;
- ``mock-api start`` on its own port: the startup Get Users and Get Streams are answered by the CLI's mock Helix API,
  with a user token from its mock auth server (``POST /auth/authorize``, grant ``user_token``) for its generated
  users, client and streams (``mock-api generate``; read back through its ``/units/*`` endpoints); Get Streams again
  after a session change.

Only against the in-repo fake (``tests/twitch/test_bot.py``, ``tests/fakes/twitch.py``), and why:

- chat: the CLI mocks neither ``channel.chat.message`` (subscribing answers 400, there is no trigger for it) nor
  Send Chat Message (the mock API has no ``POST /chat/messages``), so chat lines, commands and sending;
- OAuth: ``/oauth2/validate`` here is the fake, for every test. The CLI's mock auth refuses the chat scopes
  (``user:read:chat``, ``user:write:chat``, ``user:bot`` are not in its list), issues no refresh tokens and has no
  device flow, and chatmood refuses a token without those scopes. In the mock-API test the fake vouches for the
  token the mock issued (same string, same user), so Helix and EventSub are the CLI's and only validation is ours;
- two channels with a subscription pair each, and unsubscribing (``DELETE``): the 409 above, and twitchAPI sends
  DELETE to the Helix URL, which the mock API does not serve for EventSub;
- token expiry and revocation mid-run, Twitch's ``revocation`` messages (the CLI sends revocations as
  notifications), and delivery only for subscribed conditions: the CLI's server (started without
  ``--require-subscription``) forwards every triggered event to every connected client.

The CLI's facts these tests rely on, from its source: the event server's control RPC listens on the fixed port
44747 (one server at a time, so these tests never run in parallel with each other); ``websocket reconnect`` closes
the old server's clients 30 s later and refuses ``close`` meanwhile; notifications carry the trigger's
``--subscription-id`` and ``--to-user`` (as the broadcaster id); ``mock-api start`` defaults to port 8080 like the
event server, and binds all interfaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import structlog
from pydantic import SecretStr

from bot.config import BotConfig, TwitchConfig
from bot.twitch.bot import Backoff, TwitchBot
from bot.twitch.events import parse_ts
from bot.twitch.tokens import TokenSet, TokenStore
from tests.fakes.twitch import FakeTwitch

pytestmark = pytest.mark.twitch_cli

ROOT = Path(__file__).resolve().parents[2]
RPC_PORT = 44747
BROADCASTER_ID = "600"
SECOND_ID = "601"
# The subscription status the CLI gives a closed client's subscriptions, by the close code asked for
# (mock_server/subscription.go getStatusFromCloseMessage; 4004 is sent as 4005, see the module docstring).
CLOSE_STATUS = {
    4000: "websocket_internal_error",
    4001: "websocket_received_inbound_traffic",
    4002: "websocket_failed_ping_pong",
    4003: "websocket_connection_unused",
    4004: "network_timeout",
    4005: "network_timeout",
    4006: "websocket_network_error",
    4007: "websocket_disconnected",
}


def cli_binary() -> Path:
    path = Path(os.environ.get("TWITCH_CLI", ROOT / ".tools" / "bin" / "twitch-cli"))
    if not path.is_file() or not os.access(path, os.X_OK):
        why = f"the Twitch CLI is missing at {path}: `make setup` builds it (tools/twitch-cli/build.sh)"
        unavailable = ROOT / ".tools" / "twitch-cli.unavailable"
        if unavailable.is_file() and not os.environ.get("CHATMOOD_REQUIRE_TWITCH_CLI"):
            pytest.skip(f"{why}, but it could not be built here: {unavailable.read_text().strip()[:300]}")
        pytest.fail(why)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def cli_env(home: Path) -> dict[str, str]:
    return os.environ | {"CI": "true", "TWITCH_DISABLE_UPDATE_CHECKS": "true", "HOME": str(home),
                         "XDG_CONFIG_HOME": str(home / ".config")}


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class CliServer:
    """``twitch-cli event websocket start-server`` on a free port, and the CLI commands that drive it."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.env = cli_env(home)
        self.log = home / "twitch-cli.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if port_open(RPC_PORT):
            pytest.fail(f"port {RPC_PORT} (the Twitch CLI's fixed RPC port) is already in use")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(self.binary), "event", "websocket", "start-server", "--ip", "127.0.0.1", "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
        for _ in range(200):
            if self.proc.poll() is not None:
                pytest.fail(f"twitch-cli exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if port_open(self.port) and port_open(RPC_PORT):
                return
            time.sleep(0.05)
        pytest.fail(f"twitch-cli did not listen on {self.port} and {RPC_PORT}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        stop_process(self.proc)

    @property
    def eventsub_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def subscription_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def run(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(str(self.binary), *args, env=self.env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                    stdin=asyncio.subprocess.DEVNULL)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        return proc.returncode or 0, out.decode("utf-8", "replace")

    async def trigger(self, event: str, subscription_id: str = "", to_user: str = BROADCASTER_ID) -> None:
        args = ["event", "trigger", event, "--transport=websocket", f"--to-user={to_user}"]
        if subscription_id:
            args.append(f"--subscription-id={subscription_id}")
        rc, out = await self.run(*args)
        assert rc == 0, f"twitch-cli event trigger {event} failed: {out}"

    async def subscriptions(self) -> list[dict[str, Any]]:
        """The mock's own list (``Client-Id: debug`` lists every client's), as Get EventSub Subscriptions."""
        async with (aiohttp.ClientSession() as s,
                    s.get(f"{self.subscription_url}eventsub/subscriptions", headers={"Client-Id": "debug"}) as r):
            assert r.status == 200, await r.text()
            return list((await r.json())["data"])


@dataclass(frozen=True)
class MockUser:
    id: str
    login: str


class MockApi:
    """``twitch-cli mock-api start`` on a free port, over the data ``mock-api generate`` made."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.home = home
        self.port = free_port()
        self.env = cli_env(home)
        self.log = home / "mock-api.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # A fresh database: users (the first one always live), their streams, one client with a secret.
        gen = subprocess.run([str(self.binary), "mock-api", "generate", "--count", "8"], env=self.env,
                             stdin=subprocess.DEVNULL, capture_output=True, timeout=110)
        if gen.returncode != 0:
            pytest.fail(f"twitch-cli mock-api generate failed: {gen.stdout.decode()[-2000:]}{gen.stderr.decode()}")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([str(self.binary), "mock-api", "start", "--port", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
        for _ in range(600):
            if self.proc.poll() is not None:
                pytest.fail(f"twitch-cli mock-api exited with {self.proc.returncode}: {self.output()[-2000:]}")
            if port_open(self.port):
                return
            time.sleep(0.05)
        pytest.fail(f"twitch-cli mock-api did not listen on {self.port}: {self.output()[-2000:]}")

    def stop(self) -> None:
        stop_process(self.proc)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def helix_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mock/"

    def _call(self, method: str, path: str, query: dict[str, str] | None = None) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
            return json.loads(r.read())

    def client(self) -> tuple[str, str]:
        (c,) = self._call("GET", "/units/clients")["data"]
        return str(c["ID"]), str(c["Secret"])

    def users(self) -> list[MockUser]:
        return [MockUser(str(u["id"]), str(u["login"])) for u in self._call("GET", "/units/users")["data"]]

    def streams(self) -> dict[str, str]:
        """Live user id -> started_at."""
        return {str(s["user_id"]): str(s["started_at"]) for s in self._call("GET", "/units/streams")["data"]
                if s["type"] == "live"}

    def user_token(self, user_id: str) -> str:
        """A user access token from the mock auth server (no scopes: it refuses the chat scopes)."""
        client_id, secret = self.client()
        body = self._call("POST", "/auth/authorize", {"client_id": client_id, "client_secret": secret,
                                                      "grant_type": "user_token", "user_id": user_id, "scope": ""})
        return str(body["access_token"])


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[CliServer]:
    server = CliServer(cli_binary(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mock_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockApi]:
    api = MockApi(cli_binary(), tmp_path_factory.mktemp("twitch-mock-api"))
    api.start()
    try:
        yield api
    finally:
        api.stop()


@pytest_asyncio.fixture(loop_scope="function")
async def fake() -> AsyncIterator[FakeTwitch]:
    async with FakeTwitch() as f:
        f.add_user("moodbot", "500")
        f.add_user("streamer", BROADCASTER_ID)
        f.add_user("second", SECOND_ID)
        yield f


class Recorder:
    def __init__(self) -> None:
        self.live: list[tuple[str, bool]] = []
        self.at: dict[str, datetime] = {}

    def on_chat(self, line: Any) -> None:
        raise AssertionError("the Twitch CLI has no chat")

    def on_live(self, channel: str, live: bool, at: datetime) -> None:
        self.live.append((channel, live))
        self.at[channel] = at


def make_bot(cfg: TwitchConfig, store: TokenStore, rec: Recorder, account: str = "moodbot",
             channels: tuple[str, ...] = ("streamer",)) -> TwitchBot:
    bot_cfg = BotConfig(name="main", account=account, channels=channels)
    # dead_after_s is the product's default: a closed socket is replaced after that, not after twitchAPI's
    # keepalive deadline.
    return TwitchBot(cfg, bot_cfg, token_store=store, on_chat=rec.on_chat, on_live=rec.on_live,
                     health_interval_s=0.1, timeout_s=15.0, backoff=Backoff(0.2, 2.0))


def fake_helix_bot(fake: FakeTwitch, cli: CliServer, tmp_path: Path, rec: Recorder,
                   channels: tuple[str, ...] = ("streamer",)) -> TwitchBot:
    """EventSub from the CLI; Helix and OAuth from the fake."""
    access, refresh = fake.issue_token("moodbot")
    store = TokenStore(tmp_path / "moodbot.json")
    store.save(TokenSet(SecretStr(access), SecretStr(refresh)))
    cfg = TwitchConfig(client_id=FakeTwitch.CLIENT_ID, api_url=fake.api_url, auth_url=fake.auth_url,
                       eventsub_url=cli.eventsub_url, eventsub_subscription_url=cli.subscription_url)
    return make_bot(cfg, store, rec, channels=channels)


async def eventually(predicate: Any, within_s: float = 15.0) -> None:
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110 - state changes on twitchAPI's thread and in the CLI
            await asyncio.sleep(0.05)


def sub_of(bot: TwitchBot, sub_type: str, channel: str = "streamer") -> str:
    ids = bot.subscription_ids(sub_type, channel)
    return ids[0] if ids else ""


def online_sub(bot: TwitchBot) -> str:
    return sub_of(bot, "stream.online")


def both_subs(bot: TwitchBot) -> bool:
    return online_sub(bot) != "" and sub_of(bot, "stream.offline") != ""


def failures(logs: Sequence[Mapping[str, Any]], event: str) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == event]


class TestLiveTransitions:
    """stream.online / stream.offline triggered by the CLI, for one and for two channels."""

    async def test_online_tries_chat_and_offline_closes_the_session(self, cli: CliServer, fake: FakeTwitch,
                                                                    tmp_path: Path) -> None:
        rec = Recorder()
        with structlog.testing.capture_logs() as logs:
            async with fake_helix_bot(fake, cli, tmp_path, rec) as bot:
                await eventually(lambda: both_subs(bot))
                fake.live["streamer"] = datetime.now(UTC)
                await cli.trigger("stream.online", online_sub(bot))
                await eventually(lambda: rec.live == [("streamer", True)])
                # The CLI does not mock channel.chat.message: the attempt is made, refused, logged.
                await eventually(lambda: bool(failures(logs, "chat_subscribe_failed")))
                assert "type and version fields is not valid" in failures(logs, "chat_subscribe_failed")[0]["error"]
                assert bot.status().connected and bot.status().live_channels == ("streamer",)
                fake.live.pop("streamer")
                await cli.trigger("stream.offline", sub_of(bot, "stream.offline"))
                await eventually(lambda: rec.live == [("streamer", True), ("streamer", False)])
                assert bot.status().live_channels == ()

    async def test_two_channels_share_one_connection(self, cli: CliServer, fake: FakeTwitch, tmp_path: Path) -> None:
        rec = Recorder()
        async with fake_helix_bot(fake, cli, tmp_path, rec, channels=("streamer", "second")) as bot:
            await eventually(lambda: both_subs(bot))
            session = bot.status().session_id
            steps = [("stream.online", BROADCASTER_ID, ("streamer", True)),
                     ("stream.online", SECOND_ID, ("second", True)),
                     ("stream.offline", BROADCASTER_ID, ("streamer", False)),
                     ("stream.offline", SECOND_ID, ("second", False))]
            for i, (event, to_user, expected) in enumerate(steps):
                await cli.trigger(event, to_user=to_user)
                await eventually(lambda i=i: len(rec.live) == i + 1)
                assert rec.live[i] == expected
                if i == 1:
                    assert bot.status().live_channels == ("second", "streamer")
            assert bot.status().live_channels == ()
            assert bot.status().session_id == session and bot.status().reconnects == 0
        assert "Connections: (1)" in cli.output() and "Connections: (2)" not in cli.output()

    async def test_refused_subscriptions_are_logged_and_the_rest_carries_on(self, cli: CliServer, fake: FakeTwitch,
                                                                            tmp_path: Path) -> None:
        rec = Recorder()
        with structlog.testing.capture_logs() as logs:
            async with fake_helix_bot(fake, cli, tmp_path, rec, channels=("streamer", "second")) as bot:
                await eventually(lambda: both_subs(bot) and len(failures(logs, "subscribe_failed")) == 2)
                refused = failures(logs, "subscribe_failed")
                assert {(e["channel"], e["type"]) for e in refused} == {("second", "stream.online"),
                                                                       ("second", "stream.offline")}
                assert all("already exists" in e["error"] for e in refused)  # the CLI's 409 Conflict
                assert bot.subscription_ids("stream.online", "second") == []
                held = {sub_of(bot, "stream.online"), sub_of(bot, "stream.offline")}
                listed = await cli.subscriptions()
                assert {s["id"] for s in listed} == held
                assert {(s["type"], s["status"], s["transport"]["session_id"]) for s in listed} == {
                    ("stream.online", "enabled", bot.status().session_id),
                    ("stream.offline", "enabled", bot.status().session_id)}
                assert all(s["condition"]["broadcaster_user_id"] == BROADCASTER_ID for s in listed)
                # The chat subscription on going live is refused too (400); the connection stays.
                await cli.trigger("stream.online", online_sub(bot))
                await eventually(lambda: bool(failures(logs, "chat_subscribe_failed")))
                assert rec.live == [("streamer", True)] and bot.status().connected
                await cli.trigger("stream.offline", sub_of(bot, "stream.offline"))
                await eventually(lambda: rec.live == [("streamer", True), ("streamer", False)])
                assert len(await cli.subscriptions()) == 2


class TestConnectionFailures:
    """The failures the CLI drills: a server restart, closed sockets, silence."""

    async def test_reconnect_message_moves_to_the_new_server(self, cli: CliServer, fake: FakeTwitch,
                                                             tmp_path: Path) -> None:
        rec = Recorder()
        async with fake_helix_bot(fake, cli, tmp_path, rec) as bot:
            await eventually(lambda: both_subs(bot))
            first, held = bot.status().session_id, (online_sub(bot), sub_of(bot, "stream.offline"))
            assert first is not None
            streams_asked = fake.requests["streams"]
            rc, out = await cli.run("event", "websocket", "reconnect")
            assert rc == 0, out
            await eventually(lambda: bot.status().session_id not in (None, first) and bot.status().connected)
            new = bot.status().session_id
            assert new is not None and new.split("_")[0] != first.split("_")[0]  # another server
            # session_reconnect keeps the subscriptions: same ids, now on the new session.
            assert (online_sub(bot), sub_of(bot, "stream.offline")) == held
            listed = await cli.subscriptions()
            assert {s["id"] for s in listed} == set(held)
            assert {s["transport"]["session_id"] for s in listed} == {new}
            await eventually(lambda: fake.requests["streams"] > streams_asked)  # reconciled after the change
            assert bot.status().reconnects == 1
            await cli.trigger("stream.online", held[0])
            await eventually(lambda: rec.live == [("streamer", True)])
            await cli.trigger("stream.offline", held[1])
            await eventually(lambda: rec.live == [("streamer", True), ("streamer", False)])

    @pytest.mark.parametrize("code", sorted(CLOSE_STATUS))
    async def test_closed_socket_reconnects_and_resubscribes(self, code: int, cli: CliServer, fake: FakeTwitch,
                                                             tmp_path: Path) -> None:
        rec = Recorder()
        async with fake_helix_bot(fake, cli, tmp_path, rec) as bot:
            await eventually(lambda: both_subs(bot))
            first, first_subs = bot.status().session_id, {online_sub(bot), sub_of(bot, "stream.offline")}
            streams_asked = fake.requests["streams"]
            rc, out = await cli.run("event", "websocket", "close", f"--session={first}", f"--reason={code}")
            assert rc == 0, out
            closed_at = time.monotonic()
            # Back well before twitchAPI's own keepalive deadline (20 s here) would have noticed the close.
            await eventually(lambda: bot.status().session_id not in (None, first) and both_subs(bot)
                             and not {online_sub(bot), sub_of(bot, "stream.offline")} & first_subs, within_s=30)
            assert time.monotonic() - closed_at < 15
            sent = 4005 if code == 4004 else code
            assert f"Disconnected client [{first.split('_')[1]}] with code [{sent}]" in cli.output()  # type: ignore[union-attr]
            listed = {s["id"]: s for s in await cli.subscriptions()}
            assert {listed[i]["status"] for i in first_subs} == {CLOSE_STATUS[code]}
            now_held = {online_sub(bot), sub_of(bot, "stream.offline")}
            assert {listed[i]["status"] for i in now_held} == {"enabled"}
            assert {listed[i]["transport"]["session_id"] for i in now_held} == {bot.status().session_id}
            await eventually(lambda: fake.requests["streams"] > streams_asked)
            await cli.trigger("stream.online", online_sub(bot))
            await eventually(lambda: rec.live == [("streamer", True)])

    async def test_keepalive_loss_leads_to_a_new_session(self, cli: CliServer, fake: FakeTwitch,
                                                         tmp_path: Path) -> None:
        rec = Recorder()
        async with fake_helix_bot(fake, cli, tmp_path, rec) as bot:
            await eventually(lambda: both_subs(bot))
            first, first_sub = bot.status().session_id, online_sub(bot)
            rc, out = await cli.run("event", "websocket", "keepalive", f"--session={first}", "--enabled=false")
            assert rc == 0, out
            await eventually(lambda: bot.status().session_id not in (None, first) and online_sub(bot) not in
                             ("", first_sub) and bot.status().connected, within_s=40)
            await cli.trigger("stream.online", online_sub(bot))
            await eventually(lambda: rec.live == [("streamer", True)])


class TestMockApi:
    """The CLI's mock Helix API answering the startup lookups, beside its EventSub server."""

    async def test_startup_get_streams_comes_from_the_mock_api(self, cli: CliServer, mock_api: MockApi,
                                                              fake: FakeTwitch, tmp_path: Path) -> None:
        users = mock_api.users()
        streams = mock_api.streams()
        live = next(u for u in users if u.id in streams)
        idle = [u for u in users if u.id not in streams]
        assert len(idle) >= 2, "mock-api generate made too few offline users"
        offline, account = idle[0], idle[1]
        client_id, _ = mock_api.client()
        # OAuth stays with the fake (see the module docstring): it vouches for the mock's token, for the same user.
        fake.add_user(account.login, account.id)
        access, refresh = fake.issue_token(account.login, access=mock_api.user_token(account.id))
        store = TokenStore(tmp_path / "moodbot.json")
        store.save(TokenSet(SecretStr(access), SecretStr(refresh)))
        cfg = TwitchConfig(client_id=client_id, api_url=mock_api.helix_url, auth_url=fake.auth_url,
                           eventsub_url=cli.eventsub_url, eventsub_subscription_url=cli.subscription_url)
        rec = Recorder()
        asked_before = mock_api.output().count("GET /mock/streams")
        async with make_bot(cfg, store, rec, account=account.login, channels=(live.login, offline.login)) as bot:
            await eventually(lambda: rec.live == [(live.login, True)])
            assert rec.at[live.login] == parse_ts(streams[live.id])
            assert bot.status().live_channels == (live.login,)
            assert bot.subscription_ids("stream.online", live.login)  # ids resolved by the mock's Get Users
            assert mock_api.output().count("GET /mock/streams") == asked_before + 1
            assert "GET /mock/users" in mock_api.output()
            assert fake.requests["streams"] == 0 and fake.requests["users"] == 0
            # A session change asks the mock again.
            rc, out = await cli.run("event", "websocket", "close", f"--session={bot.status().session_id}",
                                    "--reason=4006")
            assert rc == 0, out
            await eventually(lambda: mock_api.output().count("GET /mock/streams") == asked_before + 2, within_s=30)
            await cli.trigger("stream.offline", sub_of(bot, "stream.offline", live.login), to_user=live.id)
            await eventually(lambda: rec.live == [(live.login, True), (live.login, False)])
