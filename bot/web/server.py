"""The overlay web app: an OBS browser-source page, a dashboard, a small JSON API.

``create_overlay_app(...)`` returns an :class:`aiohttp.web.Application`; the app's
owner embeds it with ``AppRunner`` + ``TCPSite`` (bound to ``cfg.host``, 127.0.0.1 by
default). Routes::

    GET  /overlay/{channel}    transparent page; ?style=bar|glow|orb &label=1|0 &size=N
                               (alias thickness=N) &position=top|bottom (bar) &token=
    GET  /ws/{channel}         WebSocket: the current mood on connect, then every change
    GET  /dashboard/{channel}  mood, chart, recent messages, label counts, personas, reset (token)
    GET  /api/mood/{channel}   the current mood as JSON
    GET  /api/timeline/{channel}?since=   snapshots since an ISO time or N seconds ago
    GET  /api/messages/{channel}          recent classified messages (token)
    POST /api/reset/{channel}  reset the mood (token in a header, never a cookie alone)
    GET  /healthz              database, model, Twitch per bot, personas; 200 healthy, else 503
    GET  /vibes?q=             channels ranked by how their chat fits a description (token; bot/web/vibes.py)
    GET  /api/vibes?q=&top=    the same as JSON (token)

Every route names the query parameters it takes: a bad value, an unknown name or a name given twice is a
400 that names the parameter (JSON ``{"error": ...}`` on the API), never a 500.

Chat text is hostile. It reaches HTML only through Jinja2 autoescaping (server side)
or ``textContent`` (client side); every response carries a strict
Content-Security-Policy with no inline script or style at all, so page data travels
in ``data-*`` attributes or fetched JSON. Tokens are compared in constant time.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp_jinja2
import jinja2
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from bot.config import Category, OverlayConfig
from bot.domain import MoodState
from bot.mood.hub import MoodHub, Subscription
from bot.web import guard as guard
from bot.web.guard import ParamError
from bot.web.vibes import Search, add_vibes_routes

T = TypeVar("T")
log = structlog.get_logger(__name__)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = ROOT / "overlay_templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDOR_JS = Path("vendor") / "uPlot.iife.min.js"
VENDOR_CSS = Path("vendor") / "uPlot.min.css"

_CHANNEL = re.compile(r"^[a-z0-9_]{1,25}$")
HEALTH_TIMEOUT_S = 5.0
HEADER_TIMEOUT_S = 15.0  # a client must send its request line and headers within this (see overlay_runner)
CLOSE_TIMEOUT_S = 2.0  # how long a closing socket waits for the browser's answer
RECENT_LIMIT = 50
MAX_POINTS = 2000


class MessageView(Protocol):
    """What the dashboard reads from a stored message (``storage.MessageDoc``)."""

    @property
    def text(self) -> str: ...
    @property
    def user_name(self) -> str: ...
    @property
    def label(self) -> str | None: ...
    @property
    def confidence(self) -> float | None: ...
    @property
    def sent_at(self) -> datetime: ...


class SnapshotView(Protocol):
    """What the chart reads from a mood snapshot (``storage.MoodSnapshotDoc``)."""

    @property
    def bucket(self) -> datetime: ...
    @property
    def valence(self) -> float: ...
    @property
    def shares(self) -> Mapping[str, float]: ...
    @property
    def label(self) -> str: ...
    @property
    def colour(self) -> str: ...
    @property
    def messages(self) -> int: ...


class OverlayStorage(Protocol):
    """The part of ``storage.Storage`` the overlay uses (read-only)."""

    async def recent_messages(self, channel: str, limit: int, /) -> Sequence[MessageView]: ...
    async def label_counts(self) -> Mapping[str, int]: ...
    async def snapshots(self, channel: str, since: datetime, /) -> Sequence[SnapshotView]: ...


CFG_KEY = web.AppKey("cfg", OverlayConfig)
CATEGORIES_KEY = web.AppKey("categories", tuple[Category, ...])
HUB_KEY = web.AppKey("hub", MoodHub)
MOOD_STATE_KEY: web.AppKey[Callable[[str], MoodState]] = web.AppKey("mood_state")
STORAGE_KEY: web.AppKey[OverlayStorage | None] = web.AppKey("storage")
RESET_KEY: web.AppKey[Callable[[str], MoodState]] = web.AppKey("reset")
HEALTH_KEY: web.AppKey[Callable[[], Awaitable[Mapping[str, Any]]]] = web.AppKey("health")
PERSONAS_KEY: web.AppKey[Callable[[], Mapping[str, Mapping[str, Any]]] | None] = web.AppKey("personas")
AUTH_KEY = web.AppKey("auth", guard.TokenAuth)
SOCKETS_KEY: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("sockets")
CHART_KEY = web.AppKey("chart_available", bool)


def mood_payload(state: MoodState) -> dict[str, Any]:
    """The JSON shape of a mood, shared by ``/api/mood`` and the WebSocket."""
    return {
        "channel": state.channel,
        "label": state.label,
        "share": round(state.share, 4),
        "valence": round(state.valence, 4),
        "colour": state.colour,
        "shares": {k: round(v, 4) for k, v in state.shares.items()},
        "lean": state.lean,
        "strength": round(state.strength, 4),
        "messages": state.messages,
        "skipped": state.skipped,
        "first_at": state.first_at.isoformat() if state.first_at else None,
        "at": state.at.isoformat() if state.at else None,
    }


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def message_json(doc: MessageView) -> dict[str, Any]:
    """A stored message for the dashboard; the browser renders ``text`` with textContent."""
    return {
        "text": doc.text,
        "user_name": doc.user_name,
        "label": doc.label,
        "confidence": None if doc.confidence is None else round(doc.confidence, 3),
        "sent_at": _iso(doc.sent_at),
    }


def timeline_columns(
    channel: str, since: datetime, categories: Sequence[str], snaps: Sequence[SnapshotView]
) -> dict[str, Any]:
    """Snapshots as columns (the chart's native shape): ``t`` in epoch seconds, then one list per series.

    Long windows are thinned to at most :data:`MAX_POINTS` points by keeping every n-th snapshot.
    """
    step = max(1, -(-len(snaps) // MAX_POINTS))
    picked = [s for i, s in enumerate(sorted(snaps, key=lambda s: s.bucket)) if i % step == 0]
    return {
        "channel": channel,
        "since": _iso(since),
        "categories": list(categories),
        "t": [round(s.bucket.timestamp(), 3) for s in picked],
        "valence": [round(s.valence, 4) for s in picked],
        "shares": {c: [round(float(s.shares.get(c, 0.0)), 4) for s in picked] for c in categories},
        "label": [s.label for s in picked],
        "colour": [s.colour for s in picked],
        "messages": [s.messages for s in picked],
    }


def all_ok(report: Mapping[str, Any]) -> bool:
    """Healthy when every nested ``"ok"`` flag in the report is true."""
    for key, value in report.items():
        if key == "ok" and value is not True:
            return False
        if isinstance(value, Mapping) and not all_ok(value):
            return False
    return True


def _channel(request: web.Request) -> str:
    channel = request.match_info["channel"].lower()
    if not _CHANNEL.match(channel):
        raise web.HTTPNotFound(text="not a Twitch channel name: use 1-25 of a-z, 0-9, _\n")
    return channel


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


# ------------------------------------------------------------------------------------------- pages


@aiohttp_jinja2.template("overlay.html")
async def overlay_page(request: web.Request) -> dict[str, Any]:
    channel = _channel(request)
    app = request.app
    app[AUTH_KEY].require_read(request)
    try:
        guard.check_query(request.query, guard.OVERLAY_PARAMS)
        params = guard.parse_overlay_params(request.query)
    except ParamError as e:
        raise web.HTTPBadRequest(text=f"{e}\n") from None
    state = app[MOOD_STATE_KEY](channel)
    return {"channel": channel, "params": params, "state": state, "token": request.query.get("token", "")}


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """Send the current mood, then each change; read the socket to notice a closed browser."""
    channel = _channel(request)
    app = request.app
    app[AUTH_KEY].require_read(request)
    try:
        guard.check_query(request.query, ("token",))
    except ParamError as e:
        raise web.HTTPBadRequest(text=f"{e}\n") from None
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096, timeout=CLOSE_TIMEOUT_S)
    await ws.prepare(request)
    sockets = app[SOCKETS_KEY]
    sockets.add(ws)
    log.info("overlay_ws_open", channel=channel, sockets=len(sockets))
    try:
        async with app[HUB_KEY].subscribe(channel) as sub:
            await ws.send_json(mood_payload(app[MOOD_STATE_KEY](channel)))
            pusher = asyncio.create_task(_push(ws, sub), name=f"overlay-ws-push:{channel}")
            try:
                async for msg in ws:  # the browser has nothing to say; this is how we see it leave
                    if msg.type is WSMsgType.ERROR:
                        break
            finally:
                pusher.cancel()
                try:
                    await pusher
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
    except (ConnectionResetError, ConnectionError):
        pass  # the browser left while we were sending the first state
    finally:
        sockets.discard(ws)
        log.info("overlay_ws_closed", channel=channel, sockets=len(sockets))
    return ws


async def _push(ws: web.WebSocketResponse, sub: Subscription) -> None:
    """Forward the subscription's states until the socket or the subscription closes."""
    async for state in sub:
        if ws.closed:
            return
        try:
            await ws.send_json(mood_payload(state))
        except (ConnectionResetError, ConnectionError):
            await ws.close()
            return


@aiohttp_jinja2.template("dashboard.html")
async def dashboard_page(request: web.Request) -> dict[str, Any] | web.StreamResponse:
    channel = _channel(request)
    app = request.app
    auth = app[AUTH_KEY]
    redirect = auth.require_dashboard(request)
    if redirect is not None:
        return redirect
    range_name = request.query.get("range", "1h")
    if range_name not in guard.RANGES:
        raise web.HTTPBadRequest(
            text=f"range must be one of {', '.join(guard.RANGES)}, got {guard.shown(range_name)}\n"
        )
    try:
        guard.check_query(request.query, ("range",))
    except ParamError as e:
        raise web.HTTPBadRequest(text=f"{e}\n") from None
    storage = app[STORAGE_KEY]
    messages: Sequence[Any] = ()
    counts: Mapping[str, int] = {}
    problem = "" if storage is not None else "no database is configured"
    if storage is not None:
        try:
            messages = await storage.recent_messages(channel, RECENT_LIMIT)
            counts = await storage.label_counts()
        except Exception as e:  # noqa: BLE001 - one failing query shows a notice instead of a broken page
            log.warning("dashboard_storage_failed", channel=channel, error=repr(e))
            problem = "the database did not answer; the data below may be incomplete"
    categories = app[CATEGORIES_KEY]
    return {
        "channel": channel,
        "state": app[MOOD_STATE_KEY](channel),
        "categories": categories,
        "messages": messages,
        "counts": [(c, int(counts.get(c.name, 0))) for c in categories],
        "target": guard.LABEL_TARGET,
        "ranges": guard.RANGES,
        "range": range_name,
        "range_s": guard.RANGES[range_name],
        "csrf": auth.csrf_token,
        "chart_available": app[CHART_KEY],
        "problem": problem,
        "personas": persona_rows(app[PERSONAS_KEY]),
    }


def persona_rows(personas: Callable[[], Mapping[str, Mapping[str, Any]]] | None) -> list[dict[str, Any]]:
    """Each persona's state for the dashboard (the same report ``/healthz`` gives under ``personas``)."""
    if personas is None:
        return []
    return [{"bot": name, **info} for name, info in personas().items()]


# --------------------------------------------------------------------------------------------- api


async def _from_storage(
    app: web.Application, what: str, channel: str, query: Callable[[OverlayStorage], Awaitable[T]]
) -> T | web.Response:
    """A storage query for an API answer, or the 503 that says why there is none (the page keeps serving)."""
    storage = app[STORAGE_KEY]
    if storage is None:
        return _json_error(503, "no database is configured")
    try:
        return await query(storage)
    except Exception as e:  # noqa: BLE001 - the database is down: say so, keep serving
        log.warning(f"{what}_storage_failed", channel=channel, error=repr(e))
        return _json_error(503, "the database did not answer")


async def api_mood(request: web.Request) -> web.Response:
    channel = _channel(request)
    request.app[AUTH_KEY].require_read(request)
    try:
        guard.check_query(request.query, ("token",))
    except ParamError as e:
        return _json_error(400, str(e))
    return web.json_response(mood_payload(request.app[MOOD_STATE_KEY](channel)))


async def api_timeline(request: web.Request) -> web.Response:
    channel = _channel(request)
    app = request.app
    app[AUTH_KEY].require_read(request)
    try:
        guard.check_query(request.query, ("since", "token"))
        since = guard.parse_since(request.query.get("since"))
    except ParamError as e:
        return _json_error(400, str(e))
    snaps = await _from_storage(app, "timeline", channel, lambda st: st.snapshots(channel, since))
    if isinstance(snaps, web.Response):
        return snaps
    names = [c.name for c in app[CATEGORIES_KEY]]
    return web.json_response(timeline_columns(channel, since, names, snaps))


async def api_messages(request: web.Request) -> web.Response:
    channel = _channel(request)
    app = request.app
    app[AUTH_KEY].require_token(request)
    try:
        guard.check_query(request.query, ("limit",))
        limit = guard.parse_int(request.query.get("limit"), "limit", default=RECENT_LIMIT, low=1, high=500)
    except ParamError as e:
        return _json_error(400, str(e))
    docs = await _from_storage(app, "messages", channel, lambda st: st.recent_messages(channel, limit))
    if isinstance(docs, web.Response):
        return docs
    return web.json_response({"channel": channel, "messages": [message_json(d) for d in docs]})


async def api_reset(request: web.Request) -> web.Response:
    channel = _channel(request)
    app = request.app
    app[AUTH_KEY].require_write(request)
    try:
        guard.check_query(request.query, ())
    except ParamError as e:
        return _json_error(400, str(e))
    state = app[RESET_KEY](channel)
    log.info("mood_reset_via_dashboard", channel=channel)
    return web.json_response({"ok": True, "mood": mood_payload(state)})


async def healthz(request: web.Request) -> web.Response:
    try:
        guard.check_query(request.query, ())
    except ParamError as e:
        return _json_error(400, str(e))
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            report = dict(await request.app[HEALTH_KEY]())
    except TimeoutError:
        return web.json_response({"ok": False, "error": "health check timed out"}, status=503)
    except Exception as e:  # noqa: BLE001 - a failing probe is itself an unhealthy answer
        log.warning("health_check_failed", error=repr(e))
        return web.json_response({"ok": False, "error": f"health check failed: {type(e).__name__}"}, status=503)
    ok = all_ok(report)
    report["ok"] = ok
    return web.json_response(report, status=200 if ok else 503)


# ------------------------------------------------------------------------------------------ wiring


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in guard.SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith(("/api/", "/dashboard/", "/healthz", "/vibes")):
        response.headers.setdefault("Cache-Control", "no-store")


async def _close_sockets(app: web.Application) -> None:
    """At shutdown, say goodbye to every browser so they reconnect to the next server."""
    sockets = app[SOCKETS_KEY]
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for ws in tuple(sockets)),
        return_exceptions=True,
    )


def overlay_runner(app: web.Application, *, header_timeout_s: float = HEADER_TIMEOUT_S, **kwargs: Any) -> web.AppRunner:
    """The ``AppRunner`` every owner embeds the app with (``kwargs`` go to aiohttp).

    aiohttp has no separate header read timeout: from 3.14.4 its keep-alive timer runs from the moment a
    connection opens and closes it if no complete request has arrived by then, so ``header_timeout_s`` bounds a
    client that sends its headers a byte at a time (and an idle keep-alive connection). Requests in progress,
    WebSockets included, are not affected."""
    return web.AppRunner(app, keepalive_timeout=header_timeout_s, **kwargs)


def create_overlay_app(
    *,
    cfg: OverlayConfig,
    categories: Sequence[Category],
    hub: MoodHub,
    mood_state: Callable[[str], MoodState],
    storage: OverlayStorage | None,
    reset: Callable[[str], MoodState],
    health: Callable[[], Awaitable[Mapping[str, Any]]],
    access_token: str,
    templates_dir: Path = TEMPLATES_DIR,
    static_dir: Path = STATIC_DIR,
    personas: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
    vibes: Search | None = None,
) -> web.Application:
    """The overlay, dashboard and API as one aiohttp application (see the module docstring).

    ``access_token`` "" disables the dashboard and writes. ``mood_state(channel)`` is the channel's current
    mood; ``reset(channel)`` resets it, publishes and returns the fresh state; ``health()`` returns a mapping
    whose nested ``"ok"`` flags decide 200 or 503; ``personas()`` (optional) reports each bot's persona;
    ``vibes(query, top)`` (optional) answers ``/vibes``.
    """
    app = web.Application(client_max_size=64 * 1024)
    app[CFG_KEY] = cfg
    app[CATEGORIES_KEY] = tuple(categories)
    app[HUB_KEY] = hub
    app[MOOD_STATE_KEY] = mood_state
    app[STORAGE_KEY] = storage
    app[RESET_KEY] = reset
    app[HEALTH_KEY] = health
    app[PERSONAS_KEY] = personas
    app[AUTH_KEY] = guard.TokenAuth(access_token, overlay_requires_token=cfg.overlay_requires_token)
    sockets: set[web.WebSocketResponse] = set()
    app[SOCKETS_KEY] = sockets
    app[CHART_KEY] = (static_dir / VENDOR_JS).is_file() and (static_dir / VENDOR_CSS).is_file()
    if not app[CHART_KEY]:
        log.warning("chart_library_missing", path=str(static_dir / VENDOR_JS), hint="run `make setup`")
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=jinja2.select_autoescape(["html", "htm", "xml"], default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
    )
    app.on_response_prepare.append(_security_headers)
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/overlay/{channel}", overlay_page)
    app.router.add_get("/ws/{channel}", websocket)
    app.router.add_get("/dashboard/{channel}", dashboard_page)
    app.router.add_get("/api/mood/{channel}", api_mood)
    app.router.add_get("/api/timeline/{channel}", api_timeline)
    app.router.add_get("/api/messages/{channel}", api_messages)
    app.router.add_post("/api/reset/{channel}", api_reset)
    app.router.add_get("/healthz", healthz)
    if vibes is not None:
        add_vibes_routes(app, vibes, auth=app[AUTH_KEY], categories=categories)
    app.router.add_static("/static/", static_dir, follow_symlinks=False, show_index=False)
    return app
