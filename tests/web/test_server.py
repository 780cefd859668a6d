"""The overlay web app over real HTTP on loopback: security headers, tokens, parameter checks,
the WebSocket's lifecycle, the JSON API and escaping of hostile chat text."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from bot.domain import ChatLine, MoodState, Verdict
from bot.storage.devdb import DevDb
from bot.storage.store import Storage, open_storage
from bot.web.guard import CSRF_HEADER, ParamError, TokenAuth, parse_overlay_params, parse_since
from bot.web.server import OverlayStorage
from tests.conftest import make_storage_config
from tests.web.overlay_env import TOKEN, OverlayEnv, serve

COLOUR = re.compile(r"^#[0-9a-f]{6}$")


@pytest.fixture
def env() -> OverlayEnv:
    return OverlayEnv()


@pytest_asyncio.fixture(loop_scope="function")
async def base(env: OverlayEnv) -> AsyncIterator[str]:
    async with serve(env) as url:
        yield url


@pytest_asyncio.fixture(loop_scope="function")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # An unsafe cookie jar: the server is an IP address (127.0.0.1), whose cookies the default jar drops.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


def state(channel: str, label: str = "hype", colour: str = "#ff8c00") -> MoodState:
    return MoodState(channel=channel, label=label, share=0.7, valence=0.5, colour=colour, shares={label: 0.7})


async def wait_for(predicate: Callable[[], bool], what: str, limit_s: float = 5.0) -> None:
    """Wait until ``predicate()`` is true, failing with ``what`` after ``limit_s`` seconds."""
    try:
        async with asyncio.timeout(limit_s):
            # Polling: these are effects inside the server (a handler unsubscribing) with no event to await.
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for: {what}") from None


class TestSecurityHeaders:
    """Every response carries a strict CSP and friends; pages have no inline script or style."""

    @pytest.mark.parametrize(
        "path",
        [
            "/overlay/somechan",
            "/overlay/somechan?style=nope",
            "/overlay/Bad-Name!",
            "/api/mood/somechan",
            "/dashboard/somechan",
            "/static/overlay.js",
            "/healthz",
            "/nowhere",
        ],
    )
    async def test_headers_everywhere(self, base: str, http: aiohttp.ClientSession, path: str) -> None:
        """Pages, errors, API answers and static files all get the same security headers."""
        async with http.get(base + path, allow_redirects=False) as r:
            csp = r.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "script-src 'self';" in csp and "style-src 'self';" in csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert "connect-src 'self' ws: wss:" in csp and "frame-ancestors 'none'" in csp
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Referrer-Policy"] == "no-referrer"

    async def test_overlay_page_has_no_inline_script_or_style(self, base: str, http: aiohttp.ClientSession) -> None:
        """Every <script> has a src and is empty; no style attributes or <style> blocks; data rides data-*."""
        for style in ("bar", "glow", "orb"):
            async with http.get(f"{base}/overlay/somechan?style={style}") as r:
                assert r.status == 200
                html = await r.text()
            scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
            assert scripts and all('src="/static/' in attrs and body.strip() == "" for attrs, body in scripts)
            assert " style=" not in html and "<style" not in html and "javascript:" not in html
            assert 'data-channel="somechan"' in html and f"style-{style}" in html

    def test_binds_loopback_by_default(self) -> None:
        """The default overlay config listens on 127.0.0.1 only."""
        from bot.config import OverlayConfig

        assert OverlayConfig().host == "127.0.0.1"


class TestTokens:
    """Dashboard, private reads and writes need the access token; writes need it in a header."""

    async def test_dashboard_needs_the_token(self, base: str, http: aiohttp.ClientSession) -> None:
        """No credentials: 401; a wrong token: 403; Bearer: 200."""
        async with http.get(f"{base}/dashboard/somechan") as r:
            assert r.status == 401 and "token" in await r.text()
        async with http.get(f"{base}/dashboard/somechan", headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 403
        async with http.get(f"{base}/dashboard/somechan?token=nope") as r:
            assert r.status == 403
        async with http.get(f"{base}/dashboard/somechan", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200 and "text/html" in r.headers["Content-Type"]

    async def test_query_token_becomes_a_cookie(self, base: str, http: aiohttp.ClientSession) -> None:
        """``?token=`` once: a redirect that drops the token from the address and sets an HttpOnly,
        SameSite=Strict cookie that opens the dashboard afterwards."""
        async with http.get(f"{base}/dashboard/somechan?token={TOKEN}&range=6h", allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"] == "/dashboard/somechan?range=6h"
            cookie = r.cookies["chatmood_dashboard"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
            assert TOKEN not in cookie.value
        async with http.get(f"{base}/dashboard/somechan?range=6h") as r:
            assert r.status == 200
            assert 'aria-current="page">6h<' in await r.text()

    async def test_non_ascii_and_odd_length_tokens_are_refused_cleanly(
        self, base: str, http: aiohttp.ClientSession
    ) -> None:
        """Tokens are compared as bytes in constant time: unicode or wrong-length guesses get 403, never 500."""
        for guess in ("ü" * 20, TOKEN[:-1], TOKEN + "x", ""):
            async with http.get(f"{base}/dashboard/somechan", params={"token": guess}) as r:
                assert r.status == 403, guess

    async def test_reset_needs_a_header_not_just_the_cookie(
        self, env: OverlayEnv, base: str, http: aiohttp.ClientSession
    ) -> None:
        """A signed-in browser's cookie alone can't reset (CSRF): it needs the page's X-CSRF-Token too.
        Scripts use Bearer. Nothing is reset by refused requests."""
        async with http.get(f"{base}/dashboard/somechan?token={TOKEN}") as r:
            assert r.status == 200
            csrf = re.search(r'data-csrf="([0-9a-f]{64})"', await r.text())
        assert csrf is not None
        async with http.post(f"{base}/api/reset/somechan") as r:  # cookie only
            assert r.status == 401
        async with http.post(f"{base}/api/reset/somechan", headers={CSRF_HEADER: "0" * 64}) as r:
            assert r.status == 403
        async with http.post(f"{base}/api/reset/somechan", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 403
        async with aiohttp.ClientSession() as fresh:  # the CSRF token without the cookie is not enough either
            async with fresh.post(f"{base}/api/reset/somechan", headers={CSRF_HEADER: csrf.group(1)}) as r:
                assert r.status == 403
        assert env.resets == []
        async with http.post(f"{base}/api/reset/somechan", headers={CSRF_HEADER: csrf.group(1)}) as r:
            assert r.status == 200
            assert (await r.json())["ok"] is True
        async with aiohttp.ClientSession() as fresh:
            async with fresh.post(f"{base}/api/reset/somechan", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 200
        assert env.resets == ["somechan", "somechan"]

    async def test_reset_publishes_the_fresh_mood(
        self, env: OverlayEnv, base: str, http: aiohttp.ClientSession
    ) -> None:
        """After a reset the overlays hear the neutral state at once."""
        env.feed("somechan", "angry", 20)
        async with http.post(f"{base}/api/reset/somechan", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            body = await r.json()
        assert body["mood"]["label"] == "neutral" and body["mood"]["messages"] == 0
        latest = env.hub.latest("somechan")
        assert latest is not None and latest.label == "neutral"

    async def test_no_token_configured_disables_dashboard_and_writes(self, http: aiohttp.ClientSession) -> None:
        """Without overlay.access_token the dashboard and reset say they are disabled; the overlay works."""
        env = OverlayEnv(token="")
        async with serve(env) as url:
            async with http.get(f"{url}/dashboard/somechan?token=") as r:
                assert r.status == 403 and "access_token" in await r.text()
            async with http.post(f"{url}/api/reset/somechan", headers={"Authorization": "Bearer "}) as r:
                assert r.status == 403
            async with http.get(f"{url}/overlay/somechan") as r:
                assert r.status == 200
        assert env.resets == []

    async def test_keyed_overlay(self, http: aiohttp.ClientSession) -> None:
        """With overlay_requires_token the overlay, its WebSocket and the read API need the token too."""
        env = OverlayEnv(overlay_requires_token=True)
        async with serve(env) as url:
            for path in ("/overlay/somechan", "/api/mood/somechan", "/ws/somechan"):
                async with http.get(url + path) as r:
                    assert r.status == 401, path
                async with http.get(url + path, params={"token": "wrong"}) as r:
                    assert r.status == 403, path
            async with http.get(f"{url}/overlay/somechan", params={"token": TOKEN}) as r:
                assert r.status == 200
                assert f'data-token="{TOKEN}"' in await r.text()
            async with http.ws_connect(f"{url}/ws/somechan?token={TOKEN}") as ws:
                assert (await ws.receive_json(timeout=5))["channel"] == "somechan"

    def test_token_auth_repr_hides_the_token(self) -> None:
        """The auth object never shows the token."""
        assert TOKEN not in repr(TokenAuth(TOKEN, overlay_requires_token=False))


class TestOverlayParams:
    """Query parameters are checked; bad ones get 400 naming the parameter; bad channels 404."""

    @pytest.mark.parametrize(
        ("query", "expect"),
        [
            (
                "style=bar&position=top&thickness=20&label=0",
                ["style-bar", "position-top", "no-label", 'data-size="20"'],
            ),
            ("style=orb&size=300", ["style-orb", 'data-size="300"']),
            ("", ["style-glow", 'data-size="48"']),
        ],
    )
    async def test_good(self, base: str, http: aiohttp.ClientSession, query: str, expect: list[str]) -> None:
        """Valid combinations render the matching classes and data attributes."""
        async with http.get(f"{base}/overlay/somechan?{query}") as r:
            assert r.status == 200
            html = await r.text()
        for needle in expect:
            assert needle in html

    @pytest.mark.parametrize(
        ("query", "words"),
        [
            ("style=rainbow", ["style", "rainbow"]),
            ("label=yes", ["label", "yes"]),
            ("size=huge", ["size", "huge"]),
            ("size=0", ["size", "between"]),
            ("size=99999", ["size", "between"]),
            ("thickness=10&size=12", ["size and thickness"]),
            ("position=left", ["position", "left"]),
            ("stlye=orb", ["unknown", "stlye"]),
        ],
    )
    async def test_bad(self, base: str, http: aiohttp.ClientSession, query: str, words: list[str]) -> None:
        """Each bad value is refused with a message naming it."""
        async with http.get(f"{base}/overlay/somechan?{query}") as r:
            assert r.status == 400
            text = await r.text()
        for word in words:
            assert word in text

    @pytest.mark.parametrize("channel", ["bad-name", "x" * 26, "%3Cscript%3E", "a.b"])
    async def test_bad_channel_is_404(self, base: str, http: aiohttp.ClientSession, channel: str) -> None:
        """Names that can't be Twitch logins are not found, on every route."""
        for prefix in ("/overlay/", "/api/mood/", "/ws/", "/api/timeline/"):
            async with http.get(base + prefix + channel) as r:
                assert r.status == 404, prefix + channel

    def test_parser_directly(self) -> None:
        """The parser's defaults follow the style; thickness is size's alias."""
        p = parse_overlay_params({"style": "bar", "thickness": "7"})
        assert (p.style, p.size, p.label, p.position) == ("bar", 7, True, "bottom")
        with pytest.raises(ParamError, match="label"):
            parse_overlay_params({"label": "true"})


class TestWebSocket:
    """The socket sends the current mood on connect, then changes; closed browsers are noticed."""

    async def test_current_state_then_updates(self, env: OverlayEnv, base: str, http: aiohttp.ClientSession) -> None:
        """The first frame is the tracker's current state; each publish sends a new frame."""
        env.feed("somechan", "love", 10)
        async with http.ws_connect(f"{base}/ws/somechan") as ws:
            first = await ws.receive_json(timeout=5)
            assert first["label"] == "love" and first["messages"] == 10
            await wait_for(lambda: env.hub.subscriber_count("somechan") == 1, "subscribed")
            published = env.feed("somechan", "angry", 40)
            frame = await ws.receive_json(timeout=5)
            assert frame["label"] == "angry" == published.label
            assert frame["colour"] == published.colour and frame["messages"] == 50

    async def test_closed_browser_is_noticed(self, env: OverlayEnv, base: str, http: aiohttp.ClientSession) -> None:
        """When the browser goes away without anything being published, the handler still ends and
        unsubscribes: it reads from its socket."""
        async with http.ws_connect(f"{base}/ws/somechan") as ws:
            await ws.receive_json(timeout=5)
            await wait_for(lambda: env.hub.subscriber_count("somechan") == 1, "subscribed")
        await wait_for(lambda: env.hub.subscriber_count("somechan") == 0, "unsubscribed after close")

    async def test_many_browsers_one_slow(self, env: OverlayEnv, base: str, http: aiohttp.ClientSession) -> None:
        """Two browsers each get the newest state after a burst of publishes."""
        async with http.ws_connect(f"{base}/ws/somechan") as a, http.ws_connect(f"{base}/ws/somechan") as b:
            await a.receive_json(timeout=5)
            await b.receive_json(timeout=5)
            await wait_for(lambda: env.hub.subscriber_count("somechan") == 2, "both subscribed")
            for label, n in (("hype", 10), ("funny", 20), ("sad", 60)):
                env.feed("somechan", label, n)
            for ws in (a, b):
                last = None
                while last is None or last["label"] != "sad":
                    last = await ws.receive_json(timeout=5)

    async def test_server_shutdown_closes_sockets(self, http: aiohttp.ClientSession) -> None:
        """Stopping the server closes browsers' sockets with 1001 so their pages reconnect to the next one."""
        env = OverlayEnv()
        async with serve(env) as url:
            ws = await http.ws_connect(f"{url}/ws/somechan")
            await ws.receive_json(timeout=5)
            # A browser keeps reading, so it answers the server's close frame at once.
            reader = asyncio.create_task(ws.receive(timeout=10), name="test-ws-reader")
        msg = await reader
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
        await ws.close()
        assert env.hub.subscriber_count() == 0


class TestApi:
    """/api/mood, /api/timeline's since= checks, /healthz."""

    async def test_mood_shape(self, env: OverlayEnv, base: str, http: aiohttp.ClientSession) -> None:
        """The mood carries label, valence, colour as #rrggbb, messages, shares, skipped and share."""
        env.feed("somechan", "hype", 12)
        env.tracker.add_skipped("somechan", 4)
        async with http.get(f"{base}/api/mood/somechan") as r:
            assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
            body = await r.json()
        assert body["label"] == "hype" and body["messages"] == 12 and body["skipped"] == 4
        assert COLOUR.match(body["colour"]) and -1 <= body["valence"] <= 1 and body["valence"] > 0
        assert set(body["shares"]) == {"hype", "funny", "love", "neutral", "sad", "angry"}
        assert body["share"] == pytest.approx(body["shares"]["hype"], abs=1e-3)

    async def test_unseen_channel_is_neutral(self, base: str, http: aiohttp.ClientSession) -> None:
        """A channel nobody talked in yet is neutral with no messages."""
        async with http.get(f"{base}/api/mood/quietchan") as r:
            body = await r.json()
        assert body["label"] == "neutral" and body["messages"] == 0

    @pytest.mark.parametrize("since", ["yesterday", "-5", "0", "8d", "2999-01-01T00:00:00Z", "12:00", "1e9"])
    async def test_timeline_since_is_validated(self, base: str, http: aiohttp.ClientSession, since: str) -> None:
        """Bad since= values get 400 with a JSON error naming the parameter."""
        async with http.get(f"{base}/api/timeline/somechan", params={"since": since}) as r:
            assert r.status == 400, since
            assert "since" in (await r.json())["error"]

    async def test_timeline_without_database(self, base: str, http: aiohttp.ClientSession) -> None:
        """With no database configured a valid request says so with 503."""
        async with http.get(f"{base}/api/timeline/somechan", params={"since": "15m"}) as r:
            assert r.status == 503 and "database" in (await r.json())["error"]

    def test_since_parser(self) -> None:
        """since= takes ISO times (Z, offsets, naive as UTC) and seconds ago with optional units."""
        now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
        assert parse_since("900", now=now) == now - timedelta(seconds=900)
        assert parse_since("6h", now=now) == now - timedelta(hours=6)
        assert parse_since(None, now=now) == now - timedelta(hours=1)
        assert parse_since("2026-05-01T11:00:00Z", now=now) == now - timedelta(hours=1)
        assert parse_since("2026-05-01T13:00:00+02:00", now=now) == now - timedelta(hours=1)
        assert parse_since("2026-05-01T13:00:00 02:00", now=now) == now - timedelta(hours=1)  # '+' lost in a URL
        assert parse_since("2026-05-01T11:30:00", now=now) == now - timedelta(minutes=30)

    async def test_healthz(self, env: OverlayEnv, base: str, http: aiohttp.ClientSession) -> None:
        """200 while every part reports ok; 503 when one bot's Twitch connection is down or the probe fails."""
        async with http.get(f"{base}/healthz") as r:
            body = await r.json()
            assert r.status == 200 and body["ok"] is True and body["twitch"]["bot1"]["connected"] is True
        env.health_report["twitch"]["bot1"] = {"ok": False, "connected": False}
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 503 and (await r.json())["ok"] is False
        env.health_error = RuntimeError("boom")
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 503 and "RuntimeError" in (await r.json())["error"]


class TestEveryParameter:
    """Every route answers a bad query parameter with 400 naming it, never 500 and never silence."""

    @pytest.mark.parametrize(
        "since",
        ["99999999999d", "9" * 400, "9" * 400 + ".5s", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"],
    )
    async def test_out_of_range_since_is_400_not_500(self, base: str, http: aiohttp.ClientSession, since: str) -> None:
        async with http.get(f"{base}/api/timeline/somechan", params={"since": since}) as r:
            assert r.status == 400, since
            error = (await r.json())["error"]
            assert error.startswith("since ") and len(error) < 200

    @pytest.mark.parametrize("since", ["99999999999d", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
    def test_since_parser_raises_only_param_errors(self, since: str) -> None:
        with pytest.raises(ParamError, match="since"):
            parse_since(since)

    ROUTES = (
        ("GET", "/overlay/chan", "text"),
        ("GET", "/ws/chan", "text"),
        ("GET", "/dashboard/chan", "text"),
        ("GET", "/api/mood/chan", "json"),
        ("GET", "/api/timeline/chan", "json"),
        ("GET", "/api/messages/chan", "json"),
        ("POST", "/api/reset/chan", "json"),
        ("GET", "/healthz", "json"),
    )

    @pytest.mark.parametrize(("method", "path", "kind"), ROUTES)
    async def test_unknown_parameter_is_400_naming_it(
        self, base: str, http: aiohttp.ClientSession, method: str, path: str, kind: str
    ) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.request(method, f"{base}{path}", params={"bogus_param": "1"}, headers=headers) as r:
            assert r.status == 400, path
            body = (await r.json())["error"] if kind == "json" else await r.text()
            assert "bogus_param" in body

    @pytest.mark.parametrize(
        ("path", "name"),
        [("/api/timeline/chan?since=1h&since=2h", "since"), ("/api/messages/chan?limit=5&limit=6", "limit"),
         ("/overlay/chan?style=bar&style=orb", "style"), ("/dashboard/chan?range=1h&range=6h", "range")],
    )
    async def test_a_parameter_given_twice_is_400(
        self, base: str, http: aiohttp.ClientSession, path: str, name: str
    ) -> None:
        async with http.get(f"{base}{path}", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 400 and f"{name} is given more than once" in await r.text()

    async def test_a_long_bad_value_is_not_echoed_whole(self, base: str, http: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(f"{base}/api/messages/chan", params={"limit": "x" * 5000}, headers=headers) as r:
            assert r.status == 400 and len((await r.json())["error"]) < 200


class TestSlowClients:
    """A client that never finishes its request headers is closed after the header timeout; a WebSocket,
    once open, is not."""

    async def test_a_slow_header_client_is_closed(self, env: OverlayEnv) -> None:
        async with serve(env, header_timeout_s=0.5) as url:
            reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))

            async def trickle() -> None:
                with contextlib.suppress(ConnectionError):
                    for byte in b"GET /api/mood/chan HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
                        writer.write(bytes([byte]))
                        await writer.drain()
                        await asyncio.sleep(0.05)

            loop = asyncio.get_running_loop()
            started = loop.time()
            sender = asyncio.create_task(trickle(), name="slow-client")
            try:
                async with asyncio.timeout(10):
                    assert await reader.read() == b""  # closed without an answer
                assert 0.4 <= loop.time() - started < 5
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
                writer.close()

    async def test_an_open_websocket_outlives_the_header_timeout(
        self, env: OverlayEnv, http: aiohttp.ClientSession
    ) -> None:
        async with serve(env, header_timeout_s=0.3) as url, http.ws_connect(f"{url}/ws/somechan") as ws:
            await ws.receive_json(timeout=5)
            await wait_for(lambda: env.hub.subscriber_count("somechan") == 1, "subscribed")
            await asyncio.sleep(1.0)
            env.feed("somechan", "angry", 5)
            assert (await ws.receive_json(timeout=5))["label"] == "angry"


class TestDashboardWithoutStorage:
    """The dashboard degrades to notices rather than breaking."""

    async def test_no_database_and_no_chart_library(self, tmp_path: Path, http: aiohttp.ClientSession) -> None:
        """Without a database and without the vendor files the page still renders, saying what is missing,
        and does not load the chart script."""
        (tmp_path / "overlay.js").write_text("")
        env = OverlayEnv(static_dir=tmp_path)
        async with serve(env) as url:
            async with http.get(f"{url}/dashboard/somechan", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 200
                html = await r.text()
        assert "no database is configured" in html
        assert "chart library is not installed" in html and "make setup" in html
        assert "uPlot.iife.min.js" not in html

    async def test_bad_range_is_400(self, base: str, http: aiohttp.ClientSession) -> None:
        """Only the offered ranges are accepted."""
        async with http.get(f"{base}/dashboard/somechan?range=2y", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 400 and "range" in await r.text()


def chat_line(channel: str, n: int, text: str, user: str = "viewer", at: datetime | None = None) -> ChatLine:
    return ChatLine(
        message_id=f"m-{channel}-{n}",
        channel=channel,
        user_id=str(1000 + n),
        user_login=user.lower(),
        user_name=user,
        text=text,
        sent_at=at or datetime.now(UTC),
    )


HOSTILE = '<img src=x onerror=alert(1)><script>alert(2)</script>" onmouseover="alert(3)'


class TestDashboardWithStorage:
    """The dashboard and the timeline read a real database (FerretDB over TCP)."""

    @pytest_asyncio.fixture(loop_scope="function")
    async def served(self, storage: Storage) -> AsyncIterator[tuple[OverlayEnv, str]]:
        typed: OverlayStorage = storage  # the real Storage satisfies the overlay's protocol (checked by mypy)
        env = OverlayEnv(storage=typed)
        async with serve(env) as url:
            yield env, url

    async def test_hostile_chat_is_text(
        self, storage: Storage, served: tuple[OverlayEnv, str], http: aiohttp.ClientSession
    ) -> None:
        """Markup in chat text and display names arrives escaped in the page, and verbatim (as data) in JSON."""
        _, url = served
        now = datetime.now(UTC)
        storage.writer.submit(chat_line("somechan", 1, "hello chat", at=now - timedelta(seconds=2)))
        storage.writer.submit(chat_line("somechan", 2, HOSTILE, user="<b>Evil</b>", at=now - timedelta(seconds=1)))
        await storage.writer.flush()
        storage.writer.submit_verdict("m-somechan-2", Verdict("angry", 0.9, {"angry": 0.9}, "test"))
        await storage.writer.flush()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(f"{url}/dashboard/somechan", headers=auth) as r:
            assert r.status == 200
            html = await r.text()
        assert "&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in html
        assert "&#34; onmouseover=&#34;alert(3)" in html
        assert "<img src=x" not in html and "<script>alert" not in html and "<b>Evil" not in html
        assert "&lt;b&gt;Evil&lt;/b&gt;" in html and "hello chat" in html
        assert re.search(r'class="label">angry <span class="conf">90%', html)
        async with http.get(f"{url}/api/messages/somechan?limit=10", headers=auth) as r:
            assert r.status == 200 and r.content_type == "application/json"
            messages = (await r.json())["messages"]
        assert [m["text"] for m in messages] == [HOSTILE, "hello chat"]
        assert messages[0]["user_name"] == "<b>Evil</b>" and messages[0]["label"] == "angry"

    async def test_messages_api_needs_the_token(
        self, served: tuple[OverlayEnv, str], http: aiohttp.ClientSession
    ) -> None:
        """Chat (with usernames) is private to the streamer: /api/messages needs the token; limit is checked."""
        _, url = served
        async with http.get(f"{url}/api/messages/somechan") as r:
            assert r.status == 401
        async with http.get(f"{url}/api/messages/somechan?limit=0", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 400 and "limit" in (await r.json())["error"]

    async def test_label_counts_against_the_mark(
        self, storage: Storage, served: tuple[OverlayEnv, str], http: aiohttp.ClientSession
    ) -> None:
        """Each category shows its labelled examples and how many remain to 100."""
        _, url = served
        for i in range(3):
            await storage.add_labeled_example(prompt=f"lets go {i}", completion="hype", labelled_by="mod")
        await storage.add_labeled_example(prompt="so sad", completion="sad", labelled_by="mod")
        async with http.get(f"{url}/dashboard/somechan", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            html = await r.text()
        rows = dict(re.findall(r'</svg>\s*(\w+)</td>\s*<td class="num">(\d+)</td>', html))
        assert rows == {"hype": "3", "funny": "0", "love": "0", "neutral": "0", "sad": "1", "angry": "0"}
        assert "97 to go" in html and "99 to go" in html and 'max="100" value="3"' in html

    async def test_timeline_reads_snapshots(
        self, storage: Storage, served: tuple[OverlayEnv, str], http: aiohttp.ClientSession
    ) -> None:
        """since= selects the window; the answer is columns in time order with a share series per category."""
        env, url = served
        now = datetime.now(UTC).replace(microsecond=0)
        for minutes_ago, label, n in ((120, "sad", 30), (30, "hype", 60), (10, "angry", 150)):
            env.feed("somechan", label, n)
            await storage.save_snapshot(env.tracker.state("somechan"), bucket=now - timedelta(minutes=minutes_ago))
        await storage.save_snapshot(env.tracker.state("otherchan"), bucket=now - timedelta(minutes=5))
        async with http.get(f"{url}/api/timeline/somechan?since=1h") as r:
            assert r.status == 200
            tl = await r.json()
        assert tl["label"] == ["hype", "angry"]
        assert tl["t"] == [(now - timedelta(minutes=m)).timestamp() for m in (30, 10)]
        assert set(tl["shares"]) == set(tl["categories"]) and len(tl["shares"]["angry"]) == 2
        assert tl["shares"]["angry"][1] > tl["shares"]["angry"][0] and tl["valence"][1] < tl["valence"][0]
        assert all(COLOUR.match(c) for c in tl["colour"])
        since = (now - timedelta(hours=3)).isoformat().replace("+00:00", "Z")
        async with http.get(f"{url}/api/timeline/somechan", params={"since": since}) as r:
            assert (await r.json())["label"] == ["sad", "hype", "angry"]


class TestDatabaseDown:
    """With the database really stopped, the API answers 503 and says so; the overlay keeps serving."""

    async def test_api_says_the_database_did_not_answer(
        self, own_ferretdb: DevDb, spool_dir: Path, http: aiohttp.ClientSession
    ) -> None:
        async with open_storage(make_storage_config(own_ferretdb.url), spool_dir=spool_dir) as storage:
            env = OverlayEnv(storage=storage)
            async with serve(env) as base:
                await own_ferretdb.astop()
                try:
                    auth = {"Authorization": f"Bearer {TOKEN}"}
                    for path in ("/api/timeline/somechan?since=15m", "/api/messages/somechan"):
                        async with http.get(base + path, headers=auth) as r:
                            assert r.status == 503, path
                            assert "did not answer" in (await r.json())["error"]
                    async with http.get(f"{base}/api/mood/somechan") as r:
                        assert r.status == 200
                finally:
                    await own_ferretdb.astart()
