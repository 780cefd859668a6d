"""An in-repo fake of the parts of Twitch the Twitch CLI does not mock, as a real aiohttp app on loopback.

Built from Twitch's documented envelopes and payloads (EventSub WebSocket messages, Helix and OAuth
responses). Tests select it through URLs: ``api_url`` (``/helix/``), ``auth_url`` (``/``, so OAuth
lives at ``/oauth2/...``) and ``eventsub_url`` (``/ws``). The test drives it: push notifications,
ask for a reconnect, drop sockets, stop keepalives, flip live state, approve device codes, revoke
tokens; and reads what happened: subscriptions, sent chat messages, request counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSCloseCode, web


def ts(at: datetime | None = None) -> str:
    """Twitch's RFC3339 timestamps with nanoseconds."""
    at = at or datetime.now(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


@dataclass
class FakeUser:
    user_id: str
    login: str
    display_name: str


@dataclass
class FakeToken:
    login: str
    user_id: str
    scopes: list[str]
    client_id: str
    expires_in: int = 14_000


@dataclass
class FakeSocket:
    ws: web.WebSocketResponse
    session_id: str
    keepalive: asyncio.Task[None] | None = None


def chat_event(
    broadcaster: FakeUser,
    chatter: FakeUser,
    text: str,
    *,
    message_id: str | None = None,
    badges: list[str] = (),  # type: ignore[assignment]
    fragments: list[dict[str, Any]] | None = None,
    reply_parent_id: str | None = None,
) -> dict[str, Any]:
    """A ``channel.chat.message`` event body as documented."""
    reply = None
    if reply_parent_id:
        reply = {
            "parent_message_id": reply_parent_id, "parent_message_body": "earlier", "parent_user_id": "1",
            "parent_user_name": "Someone", "parent_user_login": "someone",
            "thread_message_id": reply_parent_id, "thread_user_id": "1", "thread_user_name": "Someone",
            "thread_user_login": "someone",
        }
    frags = fragments if fragments is not None else [
        {"type": "text", "text": text, "cheermote": None, "emote": None, "mention": None}
    ]
    return {
        "broadcaster_user_id": broadcaster.user_id, "broadcaster_user_login": broadcaster.login,
        "broadcaster_user_name": broadcaster.display_name,
        "chatter_user_id": chatter.user_id, "chatter_user_login": chatter.login,
        "chatter_user_name": chatter.display_name,
        "message_id": message_id or str(uuid.uuid4()),
        "message": {"text": text, "fragments": frags},
        "color": "#00FF7F",
        "badges": [{"set_id": b, "id": "1", "info": ""} for b in badges],
        "message_type": "text", "cheer": None, "reply": reply,
        "channel_points_custom_reward_id": None, "channel_points_animation_id": None,
        "source_broadcaster_user_id": None, "source_broadcaster_user_login": None,
        "source_broadcaster_user_name": None, "source_message_id": None, "source_badges": None,
    }


def emote_fragment(text: str, emote_id: str) -> dict[str, Any]:
    return {"type": "emote", "text": text, "cheermote": None, "mention": None,
            "emote": {"id": emote_id, "emote_set_id": "0", "owner_id": "0", "format": ["static"]}}


def text_fragment(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "cheermote": None, "emote": None, "mention": None}


class FakeTwitch:
    """``async with FakeTwitch() as fake:`` serves on ``127.0.0.1:<free port>``."""

    CLIENT_ID = "fakeclientid"

    def __init__(self, *, keepalive_s: int = 10) -> None:
        self.keepalive_s = keepalive_s
        self.keepalive_enabled = True
        self.users: dict[str, FakeUser] = {}
        self.live: dict[str, datetime] = {}  # login -> started_at
        self.tokens: dict[str, FakeToken] = {}  # access token -> info
        self.refresh_tokens: dict[str, FakeToken] = {}
        self.device_codes: dict[str, FakeToken | None] = {}  # device code -> approved token info
        self.user_codes: dict[str, str] = {}  # user code -> device code
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.subscribe_posts: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.sent: list[dict[str, Any]] = []
        self.sent_ids: list[str] = []  # the message id Twitch gave each entry of ``sent``
        self.sent_times: list[float] = []  # when each entry of ``sent`` arrived (time.monotonic())
        # As Twitch does, show a sent message to every chat subscription of its channel (off by default).
        self.echo_chat = False
        self.drop_next: list[tuple[str, str]] = []  # (code, message) for the next sends
        self.fail_subscribe: set[str] = set()  # subscription types answered with 400
        # broadcaster id -> (status, message): chat subscriptions for that channel are refused so
        self.refuse_chat: dict[str, tuple[int, str]] = {}
        # Twitch's limits for WebSocket transports: enabled subscriptions per connection, connections per user
        self.max_subs_per_session = 300
        self.max_sessions_per_user = 3
        self.streams: dict[str, dict[str, Any]] = {}  # login -> Get Streams fields (viewers, language, game)
        self.games: dict[str, str] = {}  # category name -> id
        self.requests: Counter[str] = Counter()
        self.sockets: list[FakeSocket] = []
        self.connects = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> FakeTwitch:
        app = web.Application()
        r = app.router
        r.add_get("/ws", self._ws)
        r.add_post("/helix/eventsub/subscriptions", self._subscribe)
        r.add_delete("/helix/eventsub/subscriptions", self._unsubscribe)
        r.add_get("/helix/eventsub/subscriptions", self._list_subscriptions)
        r.add_get("/helix/users", self._users)
        r.add_get("/helix/streams", self._streams)
        r.add_get("/helix/games", self._games)
        r.add_post("/helix/chat/messages", self._chat_message)
        r.add_get("/oauth2/validate", self._validate)
        r.add_post("/oauth2/token", self._token)
        r.add_post("/oauth2/device", self._device)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for s in list(self.sockets):
            await self._close_socket(s, WSCloseCode.GOING_AWAY)
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base}/helix/"

    @property
    def auth_url(self) -> str:
        return f"{self.base}/"

    @property
    def eventsub_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def toml(self, db_url: str, database: str) -> str:
        """The ``[storage]`` (small batches, a test database) and ``[twitch]`` (this fake; the client secret
        from ``FAKE_TWITCH_SECRET``) sections of a bots.toml for a bot under test."""
        return f"""
[storage]
mongodb_url = "{db_url}"
database = "{database}"
batch_size = 50
flush_interval_ms = 20
server_timeout_ms = 1000

[twitch]
client_id = "{self.CLIENT_ID}"
client_secret = "env:FAKE_TWITCH_SECRET"
api_url = "{self.api_url}"
auth_url = "{self.auth_url}"
eventsub_url = "{self.eventsub_url}"
"""

    # --- test controls -------------------------------------------------------------------------
    def add_user(self, login: str, user_id: str | None = None) -> FakeUser:
        u = FakeUser(user_id or str(1000 + len(self.users)), login, login.capitalize())
        self.users[login] = u
        return u

    def issue_token(self, login: str, scopes: list[str] | None = None, *, access: str | None = None,
                    refresh: str | None = None, expires_in: int = 14_000) -> tuple[str, str]:
        u = self.users[login]
        info = FakeToken(login, u.user_id, scopes if scopes is not None else
                         ["user:bot", "user:read:chat", "user:write:chat"], self.CLIENT_ID, expires_in)
        access = access or f"acc{uuid.uuid4().hex}"
        refresh = refresh or f"ref{uuid.uuid4().hex}"
        self.tokens[access] = info
        self.refresh_tokens[refresh] = info
        return access, refresh

    def expire_access_tokens(self) -> None:
        self.tokens.clear()

    def revoke_all(self) -> None:
        self.tokens.clear()
        self.refresh_tokens.clear()

    def approve_device(self, user_code: str, login: str) -> None:
        u = self.users[login]
        self.device_codes[self.user_codes[user_code]] = FakeToken(
            login, u.user_id, ["user:bot", "user:read:chat", "user:write:chat"], self.CLIENT_ID)

    def start_stream(self, login: str, *, viewers: int, language: str = "en", game: str = "Just Chatting",
                     title: str = "a stream") -> FakeUser:
        """A live stream Get Streams lists (most viewers first); no stream.online is sent."""
        u = self.users.get(login) or self.add_user(login)
        game_id = self.games.setdefault(game, str(500_000 + len(self.games)))
        self.live[login] = datetime.now(UTC)
        self.streams[login] = {"viewer_count": viewers, "language": language, "game_id": game_id,
                               "game_name": game, "title": title}
        return u

    async def chat(self, login: str, text: str, *, chatter: str = "viewer", message_id: str | None = None,
                   notification_id: str | None = None) -> str:
        """A chat message in ``login``'s channel, delivered on the socket that holds its chat subscription."""
        b = self.users[login]
        c = self.users.get(chatter) or FakeUser(str(90_000 + len(chatter)), chatter, chatter.capitalize())
        return await self.notify("channel.chat.message", chat_event(b, c, text, message_id=message_id),
                                 condition={"broadcaster_user_id": b.user_id}, message_id=notification_id)

    @staticmethod
    async def wait_for(predicate: Any, within_s: float = 10.0) -> None:
        """Poll a condition on state that other threads change (no event to wait on)."""
        async with asyncio.timeout(within_s):
            while not predicate():  # noqa: ASYNC110 - the state lives in the bot and twitchAPI's thread
                await asyncio.sleep(0.02)

    def subs_of(self, sub_type: str) -> list[dict[str, Any]]:
        return [s for s in self.subscriptions.values() if s["type"] == sub_type]

    async def notify(self, sub_type: str, event: dict[str, Any], *, message_id: str | None = None,
                     condition: dict[str, str] | None = None) -> str:
        """Send a notification for the first matching subscription; returns the metadata message id."""
        for sub in self.subs_of(sub_type):
            if condition is None or all(sub["condition"].get(k) == v for k, v in condition.items()):
                break
        else:
            raise AssertionError(f"no {sub_type} subscription matching {condition}")
        sock = next((s for s in reversed(self.sockets) if s.session_id == sub["transport"]["session_id"]), None)
        assert sock is not None, "the subscription's session has no socket"
        mid = message_id or str(uuid.uuid4())
        await sock.ws.send_str(json.dumps({
            "metadata": {"message_id": mid, "message_type": "notification", "message_timestamp": ts(),
                         "subscription_type": sub_type, "subscription_version": sub["version"]},
            "payload": {"subscription": sub, "event": event},
        }))
        return mid

    async def notify_sub(self, sub: dict[str, Any], event: dict[str, Any]) -> None:
        """A notification for ``sub`` even if it was deleted (a late, in-flight delivery)."""
        sock = next(s for s in reversed(self.sockets) if s.session_id == sub["transport"]["session_id"])
        await sock.ws.send_str(json.dumps({
            "metadata": {"message_id": str(uuid.uuid4()), "message_type": "notification", "message_timestamp": ts(),
                         "subscription_type": sub["type"], "subscription_version": sub["version"]},
            "payload": {"subscription": sub, "event": event},
        }))

    async def go_live(self, login: str, *, notify: bool = True) -> None:
        u = self.users[login]
        self.live[login] = datetime.now(UTC)
        if notify:
            await self.notify("stream.online", {
                "id": str(next(self._ids)), "broadcaster_user_id": u.user_id, "broadcaster_user_login": u.login,
                "broadcaster_user_name": u.display_name, "type": "live", "started_at": ts(self.live[login]),
            }, condition={"broadcaster_user_id": u.user_id})

    async def go_offline(self, login: str, *, notify: bool = True) -> None:
        u = self.users[login]
        self.live.pop(login, None)
        if notify:
            await self.notify("stream.offline", {
                "broadcaster_user_id": u.user_id, "broadcaster_user_login": u.login,
                "broadcaster_user_name": u.display_name,
            }, condition={"broadcaster_user_id": u.user_id})

    async def request_reconnect(self) -> None:
        """``session_reconnect`` on every socket, pointing at this server's /ws?reconnect=..."""
        for s in list(self.sockets):
            await s.ws.send_str(json.dumps({
                "metadata": {"message_id": str(uuid.uuid4()), "message_type": "session_reconnect",
                             "message_timestamp": ts()},
                "payload": {"session": {"id": s.session_id, "status": "reconnecting", "keepalive_timeout_seconds": None,
                                        "reconnect_url": f"{self.eventsub_url}?reconnect={s.session_id}",
                                        "connected_at": ts()}},
            }))

    async def drop_sockets(self, code: int = 4006) -> None:
        for s in list(self.sockets):
            await self._close_socket(s, code)

    # --- EventSub WebSocket --------------------------------------------------------------------
    async def _close_socket(self, s: FakeSocket, code: int) -> None:
        if s.keepalive is not None:
            s.keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await s.keepalive
        with contextlib.suppress(Exception):
            await s.ws.close(code=code)
        if s in self.sockets:
            self.sockets.remove(s)
        if not any(o.session_id == s.session_id for o in self.sockets):
            # As on Twitch, a session's subscriptions end with its last socket (a reconnect keeps them).
            for sid in [k for k, v in self.subscriptions.items() if v["transport"]["session_id"] == s.session_id]:
                del self.subscriptions[sid]

    async def _keepalive(self, s: FakeSocket) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            if self.keepalive_enabled and not s.ws.closed:
                await s.ws.send_str(json.dumps({
                    "metadata": {"message_id": str(uuid.uuid4()), "message_type": "session_keepalive",
                                 "message_timestamp": ts()}, "payload": {}}))

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        old = request.query.get("reconnect")
        # A reconnect keeps the session and its subscriptions; the client closes the old socket once the
        # new one is welcomed (Twitch would close it with 4004 after a 30 s grace; tests end sooner).
        session_id = old or uuid.uuid4().hex
        if old is None:
            self.connects += 1
        sock = FakeSocket(ws, session_id)
        self.sockets.append(sock)  # before the welcome: the client may close the old socket right after it
        await ws.send_str(json.dumps({
            "metadata": {"message_id": str(uuid.uuid4()), "message_type": "session_welcome", "message_timestamp": ts()},
            "payload": {"session": {"id": session_id, "status": "connected", "connected_at": ts(),
                                    "keepalive_timeout_seconds": self.keepalive_s, "reconnect_url": None}},
        }))
        sock.keepalive = asyncio.create_task(self._keepalive(sock), name=f"fake-keepalive-{session_id}")
        try:
            async for _ in ws:  # clients must not send; Twitch would close with 4001
                await self._close_socket(sock, 4001)
        finally:
            if sock in self.sockets:
                await self._close_socket(sock, WSCloseCode.GOING_AWAY)
        return ws

    # --- Helix ---------------------------------------------------------------------------------
    def _auth(self, request: web.Request, prefix: str = "Bearer ") -> FakeToken | None:
        header = request.headers.get("Authorization", "")
        return self.tokens.get(header.removeprefix(prefix)) if header.startswith(prefix) else None

    @staticmethod
    def _unauthorized() -> web.Response:
        return web.json_response({"error": "Unauthorized", "status": 401, "message": "Invalid OAuth token"},
                                 status=401)

    async def _subscribe(self, request: web.Request) -> web.Response:
        self.requests["subscribe"] += 1
        if self._auth(request) is None:
            return self._unauthorized()
        body = await request.json()
        self.subscribe_posts.append(body)
        if body["type"] in self.fail_subscribe:
            return web.json_response({"error": "Bad Request", "status": 400,
                                      "message": "unsupported subscription type"}, status=400)
        session_id = body.get("transport", {}).get("session_id")
        if not any(s.session_id == session_id for s in self.sockets):
            return web.json_response({"error": "Bad Request", "status": 400,
                                      "message": "websocket transport session does not exist"}, status=400)
        for s in self.subscriptions.values():
            if s["type"] == body["type"] and s["condition"] == body["condition"]:
                return web.json_response({"error": "Conflict", "status": 409,
                                          "message": "subscription already exists"}, status=409)
        refused = self._refused(body, session_id, self._auth(request))
        if refused is not None:
            return refused
        sub = {"id": str(uuid.uuid4()), "status": "enabled", "type": body["type"], "version": body["version"],
               "condition": body["condition"], "created_at": ts(), "cost": 0,
               "transport": {"method": "websocket", "session_id": session_id, "connected_at": ts()}}
        self.subscriptions[sub["id"]] = sub
        return web.json_response({"data": [sub], "total": len(self.subscriptions), "total_cost": 0,
                                  "max_total_cost": 10}, status=202)

    def _refused(self, body: dict[str, Any], session_id: str, tok: FakeToken | None) -> web.Response | None:
        """Twitch's documented refusals: a chat subscription for another user, a channel that refuses, and the
        WebSocket limits (429)."""
        def error(status: int, message: str) -> web.Response:
            names = {403: "Forbidden", 429: "Too Many Requests"}
            return web.json_response({"error": names.get(status, "Bad Request"), "status": status,
                                      "message": message}, status=status)

        cond = body.get("condition") or {}
        if body["type"] == "channel.chat.message":
            if tok is not None and cond.get("user_id") != tok.user_id:
                return error(403, "subscription missing proper authorization")
            if cond.get("broadcaster_user_id") in self.refuse_chat:
                return error(*self.refuse_chat[cond["broadcaster_user_id"]])
        in_session = [x for x in self.subscriptions.values() if x["transport"]["session_id"] == session_id]
        if len(in_session) >= self.max_subs_per_session:
            return error(429, "websocket transport session has reached its subscription limit")
        sessions = {x["transport"]["session_id"] for x in self.subscriptions.values()}
        if session_id not in sessions and len(sessions) >= self.max_sessions_per_user:
            return error(429, "maximum number of websocket connections reached")
        return None

    async def _unsubscribe(self, request: web.Request) -> web.Response:
        self.requests["unsubscribe"] += 1
        if self._auth(request) is None:
            return self._unauthorized()
        sid = request.query.get("id", "")
        if self.subscriptions.pop(sid, None) is None:
            return web.json_response({"error": "Not Found", "status": 404, "message": "not found"}, status=404)
        self.deleted.append(sid)
        return web.Response(status=204)

    async def _list_subscriptions(self, request: web.Request) -> web.Response:
        if self._auth(request) is None:
            return self._unauthorized()
        return web.json_response({"data": list(self.subscriptions.values()), "total": len(self.subscriptions),
                                  "total_cost": 0, "max_total_cost": 10, "pagination": {}})

    async def _users(self, request: web.Request) -> web.Response:
        self.requests["users"] += 1
        tok = self._auth(request)
        if tok is None:
            return self._unauthorized()
        logins = request.query.getall("login", [])
        ids = request.query.getall("id", [])
        found = [u for u in self.users.values() if u.login in logins or u.user_id in ids] if logins or ids \
            else [self.users[tok.login]]
        return web.json_response({"data": [{
            "id": u.user_id, "login": u.login, "display_name": u.display_name, "type": "", "broadcaster_type": "",
            "description": "", "profile_image_url": "", "offline_image_url": "", "view_count": 0,
            "created_at": "2020-01-01T00:00:00Z"} for u in found]})

    def _stream_row(self, login: str) -> dict[str, Any]:
        u = self.users[login]
        meta = self.streams.get(login, {})
        return {"id": str(next(self._ids)), "user_id": u.user_id, "user_login": login, "user_name": u.display_name,
                "game_id": meta.get("game_id", "0"), "game_name": meta.get("game_name", ""), "type": "live",
                "title": meta.get("title", "a stream"), "tags": [], "viewer_count": meta.get("viewer_count", 1),
                "started_at": ts(self.live[login]), "language": meta.get("language", "en"), "thumbnail_url": "",
                "tag_ids": [], "is_mature": False}

    async def _streams(self, request: web.Request) -> web.Response:
        """Get Streams: by user id/login, or every live stream (most viewers first), filtered by language and
        game id, ``first`` per page (default 20, at most 100) with an ``after`` cursor."""
        self.requests["streams"] += 1
        if self._auth(request) is None:
            return self._unauthorized()
        q = request.query
        ids, logins = q.getall("user_id", []), q.getall("user_login", [])
        if ids or logins:
            data = [self._stream_row(login) for login in self.live
                    if self.users[login].user_id in ids or login in logins]
            return web.json_response({"data": data, "pagination": {}})
        first = int(q.get("first", "20"))
        if not 1 <= first <= 100:
            return web.json_response({"error": "Bad Request", "status": 400,
                                      "message": "first must be between 1 and 100"}, status=400)
        languages, games = q.getall("language", []), q.getall("game_id", [])
        rows = [self._stream_row(login) for login in self.live]
        rows = [r for r in rows if (not languages or r["language"] in languages) and
                (not games or r["game_id"] in games)]
        rows.sort(key=lambda r: (-r["viewer_count"], r["user_login"]))
        self.requests["streams_pages"] += 1
        start = int(q.get("after", "0") or 0)
        page = rows[start:start + first]
        more = start + first < len(rows)
        return web.json_response({"data": page, "pagination": {"cursor": str(start + first)} if more else {}})

    async def _games(self, request: web.Request) -> web.Response:
        self.requests["games"] += 1
        if self._auth(request) is None:
            return self._unauthorized()
        names = request.query.getall("name", [])
        return web.json_response({"data": [{"id": gid, "name": name, "box_art_url": "", "igdb_id": ""}
                                           for name, gid in self.games.items() if name in names]})

    async def _chat_message(self, request: web.Request) -> web.Response:
        self.requests["chat_messages"] += 1
        tok = self._auth(request)
        if tok is None:
            return self._unauthorized()
        if "user:write:chat" not in tok.scopes:
            return web.json_response({"error": "Unauthorized", "status": 401,
                                      "message": "Missing scope: user:write:chat"}, status=401)
        # twitchAPI sends these as query parameters; Twitch documents a JSON body: accept both.
        body: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            body |= await request.json()
        mid = str(uuid.uuid4())
        if self.drop_next:
            code, message = self.drop_next.pop(0)
            return web.json_response({"data": [{"message_id": "", "is_sent": False,
                                                "drop_reason": {"code": code, "message": message}}]})
        self.sent.append(body)
        self.sent_ids.append(mid)
        self.sent_times.append(time.monotonic())
        if self.echo_chat:
            await self._echo(body, tok, mid)
        return web.json_response({"data": [{"message_id": mid, "is_sent": True, "drop_reason": None}]})

    async def _echo(self, body: dict[str, Any], tok: FakeToken, mid: str) -> None:
        """The sent message as a ``channel.chat.message`` notification to each subscription of that chat."""
        broadcaster = next((u for u in self.users.values() if u.user_id == str(body.get("broadcaster_id"))), None)
        sender = self.users.get(tok.login)
        if broadcaster is None or sender is None:
            return
        event = chat_event(broadcaster, sender, str(body.get("message", "")), message_id=mid,
                           reply_parent_id=body.get("reply_parent_message_id") or None)
        for sub in self.subs_of("channel.chat.message"):
            if sub["condition"].get("broadcaster_user_id") == broadcaster.user_id:
                await self.notify_sub(sub, event)

    # --- OAuth ---------------------------------------------------------------------------------
    async def _validate(self, request: web.Request) -> web.Response:
        self.requests["validate"] += 1
        tok = self._auth(request, "OAuth ") or self._auth(request, "Bearer ")
        if tok is None:
            return web.json_response({"status": 401, "message": "invalid access token"}, status=401)
        return web.json_response({"client_id": tok.client_id, "login": tok.login, "scopes": tok.scopes,
                                  "user_id": tok.user_id, "expires_in": tok.expires_in})

    async def _token(self, request: web.Request) -> web.Response:
        self.requests["token"] += 1
        form = await request.post()
        grant = form.get("grant_type")
        if grant == "refresh_token":
            old = self.refresh_tokens.pop(str(form.get("refresh_token")), None)
            if old is None:
                return web.json_response({"status": 400, "message": "Invalid refresh token"}, status=400)
            access, refresh = self.issue_token(old.login, old.scopes)
            return web.json_response({"access_token": access, "refresh_token": refresh, "expires_in": 14_000,
                                      "scope": old.scopes, "token_type": "bearer"})
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            code = str(form.get("device_code"))
            if code not in self.device_codes:
                return web.json_response({"status": 400, "message": "invalid device code"}, status=400)
            info = self.device_codes[code]
            if info is None:
                return web.json_response({"status": 400, "message": "authorization_pending"}, status=400)
            del self.device_codes[code]
            access, refresh = self.issue_token(info.login, info.scopes)
            return web.json_response({"access_token": access, "refresh_token": refresh, "expires_in": 14_000,
                                      "scope": info.scopes, "token_type": "bearer"})
        return web.json_response({"status": 400, "message": "unsupported grant type"}, status=400)

    async def _device(self, request: web.Request) -> web.Response:
        self.requests["device"] += 1
        form = await request.post()
        if form.get("client_id") != self.CLIENT_ID:
            return web.json_response({"status": 400, "message": "invalid client"}, status=400)
        device_code = uuid.uuid4().hex
        user_code = uuid.uuid4().hex[:8].upper()
        self.device_codes[device_code] = None
        self.user_codes[user_code] = device_code
        return web.json_response({"device_code": device_code, "expires_in": 1800, "interval": 0,
                                  "user_code": user_code, "verification_uri":
                                  f"https://www.twitch.tv/activate?public=true&device-code={user_code}"})
