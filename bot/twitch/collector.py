"""Reading the chat of many live channels at once, for ``chatmood collect``: the bot account's EventSub,
without the bot's live gating.

- **Which channels**: :meth:`ChatCollector.top_streams` asks Helix Get Streams (most viewers first, paged by
  twitchAPI, up to 100 per page), optionally for one language and one category (Get Games turns its name
  into an id).
- **Reading chat**: ``channel.chat.message`` with the bot account as ``user_id`` needs only ``user:read:chat`` on
  the bot's own token: no grant from the broadcaster. Twitch allows a user
  :data:`MAX_CONNECTIONS` EventSub WebSocket connections with at most :data:`SUBSCRIPTIONS_PER_CONNECTION`
  subscriptions each, so channels are packed 300 to a connection and the 901st is not joined (and said so).
  Subscriptions are created at most :data:`SUBSCRIBE_RATE` per second (Helix allows 800 requests a minute per
  token, and Get Streams polls share them). Each refusal is kept with Twitch's reason.
- **Going offline**: every ``poll_s`` Get Streams is asked which joined channels still stream (one request per
  100 channels) instead of holding ``stream.offline`` subscriptions, so every subscription slot reads chat.
  A channel that went offline is unsubscribed and keeps what it collected.
- **Connections**: each is an :class:`~bot.twitch.eventsub.EventSubThread` (the module that knows twitchAPI's
  threads). A connection that dies is started again and its channels subscribed again; what was said in
  between is lost, and counted as a reconnect.

Notifications reach :meth:`ChatCollector._notification` on our loop, are de-duplicated by message id (Twitch
delivers at least once), converted (:mod:`bot.twitch.events`) and handed to ``on_chat``. Ownership: the
collector is an async context manager owning one task, ``twitch-<bot>-collect-watch`` (offline polls and
connection health), cancelled and awaited on exit, when every connection is stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from twitchAPI.twitch import Twitch
from twitchAPI.type import TwitchAPIException

from bot import domain
from bot.config import BotConfig, TwitchConfig
from bot.domain import SeenIds
from bot.errors import TwitchError
from bot.tasks import TaskSet
from bot.twitch.account import Account
from bot.twitch.events import chat_line_from_event, parse_ts
from bot.twitch.eventsub import EventSubThread
from bot.twitch.tokens import TokenStore

log = structlog.get_logger(__name__)

MAX_CONNECTIONS = 3
SUBSCRIPTIONS_PER_CONNECTION = 300
SUBSCRIBE_RATE = 10.0  # subscription requests per second (600 a minute, under Helix's 800 points)
_SUBSCRIBE_ERRORS = (TwitchAPIException, TwitchError, TimeoutError, aiohttp.ClientError, OSError, LookupError,
                     TypeError)  # LookupError/TypeError: an answer without Twitch's documented {"data": [...]}


@dataclass(frozen=True, slots=True)
class LiveStream:
    """One entry of Get Streams."""

    user_id: str
    login: str
    name: str
    viewers: int
    game: str
    language: str
    title: str
    started_at: datetime


@dataclass
class Channel:
    """A channel the collector was asked to read, and what became of it."""

    stream: LiveStream
    connection: int | None = None  # index of the connection that reads it
    joined_at: datetime | None = None
    refused: str | None = None  # why it could not be joined
    offline_at: datetime | None = None
    messages: int = 0

    @property
    def reading(self) -> bool:
        return self.joined_at is not None and self.refused is None and self.offline_at is None


@dataclass
class _Connection:
    index: int
    es: EventSubThread | None = None
    channels: list[str] = field(default_factory=list)  # logins subscribed on it


class ChatCollector:
    """``async with ChatCollector(...) as c:`` then ``top_streams``, ``join``, read ``channels``."""

    def __init__(
        self,
        twitch_cfg: TwitchConfig,
        bot_cfg: BotConfig,
        *,
        token_store: TokenStore,
        on_chat: Callable[[domain.ChatLine], object],
        poll_s: float = 60.0,
        timeout_s: float = 20.0,
        max_connections: int = MAX_CONNECTIONS,
        per_connection: int = SUBSCRIPTIONS_PER_CONNECTION,
        subscribe_rate: float = SUBSCRIBE_RATE,
        clock: Callable[[], float] = time.monotonic,
        dedupe_size: int = 100_000,
    ) -> None:
        self._cfg = twitch_cfg
        self._bot = bot_cfg
        self.name = f"{bot_cfg.name}-collect"
        self._account = Account(twitch_cfg, bot_cfg, token_store)
        self._on_chat = on_chat
        self._poll_s = poll_s
        self._timeout = timeout_s
        self._max_connections = max_connections
        self._per_connection = per_connection
        self._interval = 1.0 / subscribe_rate
        self._clock = clock
        self._next_subscribe = 0.0
        self._dedupe = SeenIds(dedupe_size)
        self._connections: list[_Connection] = []
        self._by_id: dict[str, str] = {}  # broadcaster id -> login
        self.channels: dict[str, Channel] = {}  # login -> state, in the order asked
        self.reconnects = 0
        self.duplicates = 0
        self._tasks = TaskSet(f"twitch-{self.name}")

    # --- lifecycle ---
    async def __aenter__(self) -> ChatCollector:
        await self._account.open()  # a collection is shorter than a token's life: validated once, here
        self._tasks.spawn(self._watch(), name=f"twitch-{self.name}-watch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._tasks.aclose()
        for conn in self._connections:
            if conn.es is not None:
                await conn.es.stop()  # Twitch ends a WebSocket's subscriptions with it
                conn.es = None
        log.info("collector_closed", bot=self._bot.name, channels=len(self.channels))

    @property
    def user_id(self) -> str:
        return self._account.user_id

    def watch(self) -> Coroutine[Any, Any, None]:
        """The collector's task, for a program's services: raises as soon as it fails."""
        return self._tasks.watch()

    # --- Helix ---
    async def top_streams(self, n: int, *, language: str | None = None, game: str | None = None) -> list[LiveStream]:
        """The ``n`` most-watched live streams (of ``language``, of the category named ``game``)."""
        twitch = self._helix()
        try:
            game_ids: list[str] | None = None
            if game:
                found = [g async for g in twitch.get_games(names=[game])]
                if not found:
                    raise TwitchError(f"Twitch knows no category named {game!r}")
                game_ids = [found[0].id]
            out: list[LiveStream] = []
            seen: set[str] = set()
            async for s in twitch.get_streams(first=min(100, max(1, n)), game_id=game_ids,
                                              language=[language] if language else None, stream_type="live"):
                if s.user_id in seen:  # pages may repeat a stream as viewers move
                    continue
                seen.add(s.user_id)
                out.append(LiveStream(s.user_id, s.user_login.lower(), s.user_name, int(s.viewer_count),
                                      s.game_name or "", s.language or "", s.title or "",
                                      parse_ts(s.started_at)))
                if len(out) >= n:
                    break
        except (TwitchAPIException, aiohttp.ClientError, OSError) as e:
            raise TwitchError(f"Get Streams at {self._cfg.api_url} failed: {type(e).__name__}: {str(e)[:200]}") \
                from None
        log.info("collector_streams", found=len(out), wanted=n, language=language, game=game)
        return out

    def _helix(self) -> Twitch:
        return self._account.twitch

    async def _still_live(self, ids: Sequence[str]) -> set[str]:
        twitch = self._helix()
        live: set[str] = set()
        for i in range(0, len(ids), 100):
            async for s in twitch.get_streams(user_id=list(ids[i:i + 100]), first=100):
                if s.type == "live":
                    live.add(s.user_id)
        return live

    # --- joining ---
    async def join(self, streams: Iterable[LiveStream],
                   progress: Callable[[int, int], object] | None = None) -> None:
        """Subscribe to each stream's chat (300 to a connection, at most 3 connections); refusals are kept in
        ``channels[login].refused``. ``progress(done, total)`` after each channel."""
        todo = [s for s in streams if s.login not in self.channels]
        for s in todo:
            self.channels[s.login] = Channel(s)
            self._by_id[s.user_id] = s.login
        capacity = self._max_connections * self._per_connection
        for done, s in enumerate(todo, 1):
            ch = self.channels[s.login]
            placed = sum(len(c.channels) for c in self._connections)
            if placed >= capacity:
                ch.refused = (f"over Twitch's limit for one account: {self._max_connections} EventSub connections "
                              f"of {self._per_connection} subscriptions")
            else:
                await self._subscribe_new(ch)
            if progress is not None:
                progress(done, len(todo))

    async def _subscribe_new(self, ch: Channel) -> None:
        conn = next((c for c in self._connections if len(c.channels) < self._per_connection), None)
        if conn is None:
            conn = _Connection(len(self._connections))
            self._connections.append(conn)
        if conn.es is None:
            try:
                await self._connect(conn)
            except (TwitchError, *_SUBSCRIBE_ERRORS) as e:
                ch.refused = f"cannot open an EventSub connection: {str(e)[:200]}"
                log.warning("collector_connect_failed", connection=conn.index, error=str(e)[:200])
                return
        error = await self._subscribe(conn, ch.stream.user_id)
        if error is not None:
            ch.refused = f"Twitch refused the chat subscription: {error}"
            log.warning("collector_join_refused", channel=ch.stream.login, reason=error)
            return
        conn.channels.append(ch.stream.login)
        ch.connection = conn.index
        ch.joined_at = datetime.now(UTC)

    async def _connect(self, conn: _Connection) -> None:
        es = EventSubThread(self._helix(), self._cfg, self._notification, bot=f"{self.name}{conn.index}",
                            timeout_s=self._timeout, loop=asyncio.get_running_loop())
        conn.es = es
        try:
            await es.start()
        except BaseException:
            conn.es = None
            await es.stop()
            raise

    async def _subscribe(self, conn: _Connection, broadcaster_id: str) -> str | None:
        """None when subscribed, else Twitch's reason."""
        now = self._clock()
        if self._next_subscribe > now:
            await asyncio.sleep(self._next_subscribe - now)
        self._next_subscribe = max(now, self._next_subscribe) + self._interval
        assert conn.es is not None
        try:
            await conn.es.subscribe("channel.chat.message",
                                    {"broadcaster_user_id": broadcaster_id, "user_id": self.user_id})
        except _SUBSCRIBE_ERRORS as e:
            return str(e)[:200] or type(e).__name__
        return None

    # --- notifications (delivered on our loop by EventSubThread) ---
    def _notification(self, payload: dict[str, Any]) -> None:
        metadata = payload.get("metadata") or {}
        mid = metadata.get("message_id")
        if mid is not None and not self._dedupe.first_time(str(mid)):
            self.duplicates += 1
            return
        if (payload.get("subscription") or {}).get("type") != "channel.chat.message":
            return
        try:
            line = chat_line_from_event(payload.get("event") or {}, metadata)
        except (KeyError, ValueError, TypeError) as e:
            log.warning("collector_bad_event", error=str(e)[:200], message_id=mid)
            return
        ch = self.channels.get(line.channel) or self.channels.get(self._by_id.get(line.channel_id, ""))
        if ch is None:
            return  # not a channel we joined
        # A delivery after the channel went offline is still its chat (sent before the unsubscribe landed): kept.
        ch.messages += 1
        try:
            self._on_chat(line)
        except Exception:
            log.exception("collector_on_chat_failed", channel=line.channel, message_id=line.message_id)

    # --- the watch task: offline channels and dead connections ---
    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            await self._check_offline()
            await self._check_connections()

    async def _check_offline(self) -> None:
        reading = {ch.stream.user_id: login for login, ch in self.channels.items() if ch.reading}
        if not reading:
            return
        try:
            live = await self._still_live(sorted(reading))
        except (TwitchAPIException, TwitchError, aiohttp.ClientError, OSError, TimeoutError) as e:
            log.warning("collector_poll_failed", error=str(e)[:200])
            return
        for user_id, login in reading.items():
            if user_id not in live:
                await self._went_offline(login)

    async def _went_offline(self, login: str) -> None:
        ch = self.channels[login]
        ch.offline_at = datetime.now(UTC)
        log.info("collector_channel_offline", channel=login, messages=ch.messages)
        conn = self._connections[ch.connection] if ch.connection is not None else None
        if conn is None or conn.es is None:
            return
        for sid in conn.es.subscription_ids("channel.chat.message", ch.stream.user_id):
            try:
                await conn.es.unsubscribe(sid)
            except (TwitchAPIException, TwitchError, TimeoutError) as e:
                log.warning("collector_unsubscribe_failed", channel=login, error=str(e)[:200])

    async def _check_connections(self) -> None:
        for conn in self._connections:
            if (conn.es is not None and conn.es.alive) or (conn.es is None and not conn.channels):
                continue
            channels = [c for c in conn.channels if self.channels[c].reading]
            if conn.es is not None:
                log.warning("collector_connection_lost", connection=conn.index, channels=len(channels))
                await conn.es.stop()
                conn.es = None
                self.reconnects += 1
            try:
                await self._connect(conn)
            except (TwitchError, *_SUBSCRIBE_ERRORS) as e:
                log.warning("collector_reconnect_failed", connection=conn.index, error=str(e)[:200])
                continue  # the next poll tries again
            for login in channels:
                error = await self._subscribe(conn, self.channels[login].stream.user_id)
                if error is not None:
                    self.channels[login].refused = f"Twitch refused the chat subscription after a reconnect: {error}"
