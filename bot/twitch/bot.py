"""The Twitch connection of one bot account: EventSub for live state and chat, Helix for sending.

The EventSub client itself lives on its own thread (:mod:`bot.twitch.eventsub`, the only module that knows
twitchAPI's threads), which hands each notification to :meth:`TwitchBot._notification` on our loop; that
de-duplicates by message id (Twitch delivers at least once) and converts the payload (:mod:`bot.twitch.events`).

- The account's token is kept valid by :class:`~bot.twitch.account.Account` (validated at startup and
  hourly, refreshed on a 401 or near expiry, under one lock); a revoked token stops this bot.
- If the old socket closes before twitchAPI has swapped to the ``session_reconnect`` URL, or its own
  reconnect gives up, the client sits with a closed socket: the supervisor notices (``dead_after_s``),
  stops it and starts a fresh one with backoff, then re-subscribes and asks Get Streams again (events
  fire only on transitions). Any session change is followed by that Get Streams reconciliation.

Ownership: :class:`TwitchBot` is an async context manager owning two tasks, ``twitch-<bot>-supervise``
(live transitions, channel changes, connection health and reconnects with capped jittered backoff) and
``twitch-<bot>-validate`` (token validation every hour, as Twitch requires). Both are cancelled and
awaited on exit, and the EventSub client is always stopped. ``wait()`` raises :class:`AuthError` when the
token is revoked; the app decides what a stopped bot means for the process.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import structlog
from twitchAPI.twitch import Twitch
from twitchAPI.type import EventSubSubscriptionError, TwitchAPIException

from bot import domain
from bot.config import BotConfig, TwitchConfig
from bot.domain import SeenIds, UnstorableField
from bot.errors import AuthError, TwitchError
from bot.tasks import TaskSet
from bot.twitch.account import Account
from bot.twitch.events import chat_line_from_event, parse_ts
from bot.twitch.eventsub import EventSubThread
from bot.twitch.sending import SendLimiter
from bot.twitch.tokens import TokenStore

log = structlog.get_logger(__name__)
T = TypeVar("T")

OnChat = Callable[[domain.ChatLine], object]
# How long a closed socket may sit before the supervisor starts a fresh client. twitchAPI notices a close frame
# only when its keepalive deadline passes (twice the keepalive, 20 s and more, measured against the Twitch CLI),
# so waiting for it loses that much chat; its own quick reconnect attempts (0, 1, 2 s) are over by then.
DEAD_AFTER_S = 5.0
OnLive = Callable[[str, bool, datetime], Awaitable[None] | None]



class Backoff:
    """Capped exponential backoff with full jitter, from a private ``random.Random``."""

    def __init__(self, base_s: float = 1.0, cap_s: float = 60.0, rng: random.Random | None = None) -> None:
        self.base_s, self.cap_s = base_s, cap_s
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.failures, 30))
        self.failures += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0


# --- the bot ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SendResult:
    sent: bool
    text: str | None  # what was (or would have been) sent, after truncation
    message_id: str | None = None
    drop_reason: str | None = None


@dataclass(frozen=True, slots=True)
class TwitchStatus:
    bot: str
    connected: bool
    session_id: str | None
    channels: tuple[str, ...]
    live_channels: tuple[str, ...]
    last_event_at: datetime | None
    reconnects: int

    def as_json(self) -> dict[str, Any]:
        """For ``/healthz``."""
        return {"bot": self.bot, "connected": self.connected, "session_id": self.session_id,
                "channels": list(self.channels), "live_channels": list(self.live_channels),
                "last_event_at": self.last_event_at.isoformat() if self.last_event_at else None,
                "reconnects": self.reconnects}


@dataclass
class _Op:
    kind: str  # "live" | "channels"
    args: tuple[Any, ...] = ()
    done: asyncio.Future[None] | None = None


class TwitchBot:
    """One bot account: ``async with TwitchBot(...) as bot:`` connects; ``send``, ``set_channels``, ``status``."""

    def __init__(
        self,
        twitch_cfg: TwitchConfig,
        bot_cfg: BotConfig,
        *,
        token_store: TokenStore,
        on_chat: OnChat,
        on_live: OnLive,
        limiter: SendLimiter | None = None,
        rng: random.Random | None = None,
        validate_interval_s: float = 3600.0,
        health_interval_s: float = 1.0,
        dead_after_s: float = DEAD_AFTER_S,
        timeout_s: float = 20.0,
        backoff: Backoff | None = None,
        dedupe_size: int = 4096,
    ) -> None:
        self._cfg = twitch_cfg
        self._bot = bot_cfg
        self.name = bot_cfg.name
        self._account = Account(twitch_cfg, bot_cfg, token_store, validate_interval_s=validate_interval_s)
        self._on_chat = on_chat
        self._on_live = on_live
        self.limiter = limiter or SendLimiter()
        self._health_interval = health_interval_s
        self._dead_after = dead_after_s
        self._timeout = timeout_s
        self._backoff = backoff or Backoff(rng=rng or random.Random())
        self._dedupe = SeenIds(dedupe_size)
        self._wanted: tuple[str, ...] = bot_cfg.channels
        self._ids: dict[str, str] = {}  # channel login -> broadcaster user id
        self._live: dict[str, datetime] = {}
        self._ops: asyncio.Queue[_Op] = asyncio.Queue()
        self._tasks = TaskSet(f"twitch-{self.name}")
        self._es: EventSubThread | None = None
        self._started: list[EventSubThread] = []  # every client whose thread may still run, for the final sweep
        self._session_seen: str | None = None
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._reconnects = 0
        self._last_event_at: datetime | None = None
        self._fatal: asyncio.Future[None] | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._twitch: Twitch | None = None

    def __repr__(self) -> str:
        return f"TwitchBot({self.name!r}, account={self._bot.account!r})"

    # --- lifecycle ---
    async def __aenter__(self) -> TwitchBot:
        self._loop = asyncio.get_running_loop()
        self._fatal = self._loop.create_future()
        self._twitch = await self._account.open()
        if self._bot.account in self._wanted:  # the broadcaster of its own channel
            self.limiter.set_privileged(self._bot.account, True)
        try:
            try:
                await self._resolve(self._wanted)
            except (TwitchAPIException, aiohttp.ClientError, OSError) as e:
                raise TwitchError(f"bot {self.name!r}: the Twitch API at {self._cfg.api_url} failed: "
                                  f"{type(e).__name__}: {str(e)[:200]}") from None
            try:
                await self._connect()
            except (TwitchError, TwitchAPIException, aiohttp.ClientError, OSError) as e:
                log.warning("twitch_connect_failed", bot=self.name, error=f"{type(e).__name__}: {str(e)[:200]}")
                await self._drop_connection()
                self._retry_at = time.monotonic() + self._backoff.next_delay()
            self._tasks.spawn(self._failing_stops(self._supervise()), name=f"twitch-{self.name}-supervise")
            self._tasks.spawn(self._failing_stops(self._account.validate_forever(self._fail)),
                              name=f"twitch-{self.name}-validate")
        except BaseException:
            await self._stop_all()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        await self._tasks.aclose()
        await self._stop_all()
        if self._fatal is not None and not self._fatal.done():
            self._fatal.set_result(None)  # wait() returns: a clean stop
        log.info("twitch_closed", bot=self.name)

    async def wait(self) -> None:
        """Blocks while the bot runs; raises ``AuthError`` once its token is revoked, or the error that ended one
        of its tasks; returns after a clean exit."""
        assert self._fatal is not None, "use `async with TwitchBot(...)` first"
        await asyncio.shield(self._fatal)

    async def _failing_stops(self, loop: Coroutine[Any, Any, None]) -> None:
        """Run one of the bot's loops; an error that ends it (a bug: they handle Twitch's own) ends ``wait()``."""
        try:
            await loop
        except Exception as e:
            if self._fatal is not None and not self._fatal.done():
                self._fatal.set_exception(e)
            raise

    def status(self) -> TwitchStatus:
        return TwitchStatus(
            bot=self.name,
            connected=self._es is not None and self._es.connected,
            session_id=self._es.session_id if self._es else None,
            channels=tuple(self._wanted),
            live_channels=tuple(sorted(self._live)),
            last_event_at=self._last_event_at,
            reconnects=self._reconnects,
        )

    def subscription_ids(self, sub_type: str, channel: str) -> list[str]:
        """The EventSub subscription ids this bot holds for ``channel`` (diagnostics and tests)."""
        if self._es is None or channel not in self._ids:
            return []
        return self._es.subscription_ids(sub_type, self._ids[channel])

    @property
    def user_id(self) -> str:
        return self._account.user_id

    # --- tokens: kept by the Account; a refused one stops this bot ---
    def _fail(self, error: AuthError) -> None:
        log.error("twitch_bot_stopped", bot=self.name, reason=error.problem)
        if self._fatal is not None and not self._fatal.done():
            self._fatal.set_exception(error)

    def _fatal_error(self) -> BaseException:
        assert self._fatal is not None and self._fatal.done()
        return self._fatal.exception() or TwitchError("stopped")

    async def _revalidate(self, *, force_refresh: bool = False) -> None:
        try:
            await self._account.revalidate(force_refresh=force_refresh)
        except AuthError as e:
            self._fail(e)
            raise

    async def _helix(self, call: Callable[[], Awaitable[T]]) -> T:
        """A Helix call; on 401 the account refreshes once and retries; a refused refresh stops this bot."""
        try:
            return await self._account.helix(call)
        except AuthError as e:
            self._fail(e)
            raise

    # --- channels ---
    async def _resolve(self, channels: Iterable[str]) -> None:
        assert self._twitch is not None
        missing = [c for c in channels if c not in self._ids]
        for i in range(0, len(missing), 100):
            chunk = missing[i:i + 100]
            twitch = self._twitch

            async def users(chunk: list[str] = chunk, twitch: Twitch = twitch) -> list[Any]:
                return [u async for u in twitch.get_users(logins=chunk)]

            for u in await self._helix(users):
                self._ids[u.login] = u.id
        unknown = [c for c in channels if c not in self._ids]
        if unknown:
            log.error("twitch_channels_unknown", bot=self.name, channels=unknown)

    async def _live_now(self, channels: Iterable[str]) -> dict[str, datetime]:
        assert self._twitch is not None
        ids = [self._ids[c] for c in channels if c in self._ids]
        out: dict[str, datetime] = {}
        for i in range(0, len(ids), 100):
            chunk = ids[i:i + 100]
            twitch = self._twitch

            async def streams(chunk: list[str] = chunk, twitch: Twitch = twitch) -> list[Any]:
                return [s async for s in twitch.get_streams(user_id=chunk, first=100)]

            for s in await self._helix(streams):
                if s.type == "live":
                    out[s.user_login.lower()] = parse_ts(s.started_at)
        return out

    async def set_channels(self, channels: Iterable[str]) -> None:
        """Reload: follow exactly ``channels`` (logins), keeping what stays subscribed as it is."""
        assert self._loop is not None
        done = self._loop.create_future()
        self._ops.put_nowait(_Op("channels", (tuple(dict.fromkeys(c.lower() for c in channels)),), done))
        await done

    # --- connection ---
    async def _connect(self) -> None:
        assert self._twitch is not None
        self._es = EventSubThread(self._twitch, self._cfg, self._notification, bot=self.name,
                                  timeout_s=self._timeout, loop=asyncio.get_running_loop())
        self._started = [es for es in self._started if es.alive] + [self._es]
        await self._es.start()
        self._session_seen = self._es.session_id
        for ch in self._wanted:
            await self._watch_stream(ch)
        for ch in list(self._live):
            await self._subscribe_chat(ch)
        await self._reconcile(self._wanted)
        self._down_since = None
        self._backoff.reset()

    async def _stop_all(self) -> None:
        await self._drop_connection()
        for es in self._started:  # also any whose stop was interrupted by a cancellation
            if es.alive:
                await es.stop()
        self._started = []

    async def _drop_connection(self) -> None:
        es, self._es = self._es, None
        if es is not None:
            await es.stop()

    async def _es_subscribe(self, sub_type: str, condition: dict[str, str]) -> str:
        """Subscribe; on a refused token validate (refreshing it) and try once more."""
        assert self._es is not None
        try:
            return await self._es.subscribe(sub_type, condition)
        except EventSubSubscriptionError as e:
            if "oauth" not in str(e).lower() and "unauthorized" not in str(e).lower():
                raise
            await self._revalidate()  # a revoked token ends here with AuthError (fatal)
            if self._es is None:
                raise TwitchError("EventSub is not running") from None
            return await self._es.subscribe(sub_type, condition)

    async def _watch_stream(self, channel: str) -> None:
        if channel not in self._ids or self._es is None:
            return
        for sub_type in ("stream.online", "stream.offline"):
            if not self._es.subscription_ids(sub_type, self._ids[channel]):
                try:
                    await self._es_subscribe(sub_type, {"broadcaster_user_id": self._ids[channel]})
                except (TwitchAPIException, TwitchError, TimeoutError, LookupError, TypeError) as e:
                    # LookupError/TypeError: an answer without Twitch's documented {"data": [...]} shape
                    log.warning("subscribe_failed", bot=self.name, channel=channel, type=sub_type, error=str(e))

    async def _subscribe_chat(self, channel: str) -> None:
        if channel not in self._ids or self._es is None:
            return
        if self._es.subscription_ids("channel.chat.message", self._ids[channel]):
            return
        try:
            await self._es_subscribe("channel.chat.message",
                                     {"broadcaster_user_id": self._ids[channel], "user_id": self.user_id})
            log.info("chat_subscribed", bot=self.name, channel=channel)
        except (TwitchAPIException, TwitchError, TimeoutError, LookupError, TypeError) as e:
            # e.g. the Twitch CLI answers 400 for channel.chat.message; a missing channel:bot grant does too
            log.warning("chat_subscribe_failed", bot=self.name, channel=channel, error=str(e)[:200])

    async def _unsubscribe(self, sub_type: str, channel: str) -> None:
        if self._es is None or channel not in self._ids:
            return
        for sid in self._es.subscription_ids(sub_type, self._ids[channel]):
            try:
                await self._es.unsubscribe(sid)
            except (TwitchAPIException, TwitchError, TimeoutError) as e:
                log.warning("unsubscribe_failed", bot=self.name, channel=channel, type=sub_type, error=str(e)[:200])

    async def _reconcile(self, channels: Iterable[str]) -> None:
        """Events fire only on transitions: ask Get Streams who is live and queue the differences."""
        channels = tuple(channels)
        live = await self._live_now(channels)
        now = datetime.now(UTC)
        for ch in channels:
            if ch in live and ch not in self._live:
                self._ops.put_nowait(_Op("live", (ch, True, live[ch])))
            elif ch not in live and ch in self._live:
                self._ops.put_nowait(_Op("live", (ch, False, now)))

    # --- notifications (delivered on our loop by EventSubThread) ---
    def _notification(self, payload: dict[str, Any]) -> None:
        metadata = payload.get("metadata") or {}
        mid = metadata.get("message_id")
        if mid is not None and not self._dedupe.first_time(str(mid)):
            log.debug("notification_duplicate", bot=self.name, message_id=mid)
            return
        self._last_event_at = datetime.now(UTC)
        sub_type = (payload.get("subscription") or {}).get("type")
        event = payload.get("event") or {}
        try:
            if sub_type == "channel.chat.message":
                try:
                    line = chat_line_from_event(event, metadata)
                except UnstorableField as e:  # an id no database can store: this message alone is dropped
                    log.warning("chat_message_refused", bot=self.name, message_id=mid, field=e.field, reason=str(e))
                    return
                if line.channel not in self._live:
                    return  # after offline, chat is no longer read
                if line.user_id == self.user_id:
                    self.limiter.set_privileged(line.channel, line.is_privileged)
                self._on_chat(line)
            elif sub_type in ("stream.online", "stream.offline"):
                # By id: logins can change, and the Twitch CLI's mock events carry made-up logins.
                bid = str(event.get("broadcaster_user_id", ""))
                channel = next((c for c, i in self._ids.items() if i == bid),
                               str(event.get("broadcaster_user_login", "")).lower())
                online = sub_type == "stream.online"
                at = parse_ts(event["started_at"]) if online and event.get("started_at") else parse_ts(
                    metadata.get("message_timestamp") or datetime.now(UTC))
                log.info("stream_" + ("online" if online else "offline"), bot=self.name, channel=channel)
                self._ops.put_nowait(_Op("live", (channel, online, at)))
            else:
                log.debug("notification_ignored", bot=self.name, type=sub_type)
        except Exception:
            log.exception("notification_failed", bot=self.name, type=sub_type, message_id=mid)

    # --- the supervisor task ---
    async def _supervise(self) -> None:
        while not self._closing:
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation that coincides
            # with the queue handing out an item, and this loop would then never end.
            try:
                async with asyncio.timeout(self._health_interval):
                    op = await self._ops.get()
            except TimeoutError:
                op = None
            if self._fatal is not None and self._fatal.done():
                await self._drop_connection()
                if op and op.done and not op.done.done():
                    op.done.set_exception(self._fatal_error())
                continue
            try:
                if op is None:
                    await self._check_health()
                elif op.kind == "live":
                    await self._apply_live(*op.args)
                elif op.kind == "channels":
                    await self._apply_channels(*op.args)
                if op and op.done and not op.done.done():
                    op.done.set_result(None)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.exception("twitch_op_failed", bot=self.name, op=op.kind if op else "health")
                if op and op.done and not op.done.done():
                    op.done.set_exception(e)

    async def _apply_live(self, channel: str, live: bool, at: datetime) -> None:
        if channel not in self._wanted:
            return
        if live and channel not in self._live:
            self._live[channel] = at
            await self._call_on_live(channel, True, at)
            await self._subscribe_chat(channel)
        elif not live and channel in self._live:
            await self._unsubscribe("channel.chat.message", channel)
            del self._live[channel]
            await self._call_on_live(channel, False, at)

    async def _call_on_live(self, channel: str, live: bool, at: datetime) -> None:
        try:
            result = self._on_live(channel, live, at)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("on_live_failed", bot=self.name, channel=channel, live=live)

    async def _apply_channels(self, channels: tuple[str, ...]) -> None:
        removed = [c for c in self._wanted if c not in channels]
        added = [c for c in channels if c not in self._wanted]
        self._wanted = channels
        now = datetime.now(UTC)
        for ch in removed:
            await self._unsubscribe("stream.online", ch)
            await self._unsubscribe("stream.offline", ch)
            if ch in self._live:
                await self._unsubscribe("channel.chat.message", ch)
                del self._live[ch]
                await self._call_on_live(ch, False, now)
        if added:
            await self._resolve(added)
            for ch in added:
                await self._watch_stream(ch)
            await self._reconcile(added)
        log.info("twitch_channels_set", bot=self.name, added=added, removed=removed)

    async def _check_health(self) -> None:
        now = time.monotonic()
        es = self._es
        if es is not None and es.connected:
            self._down_since = None
            if es.session_id != self._session_seen:  # the library reconnected by itself: events may be lost
                log.info("eventsub_session_changed", bot=self.name, session_id=es.session_id)
                self._session_seen = es.session_id
                self._reconnects += 1
                await self._reconcile(self._wanted)
            return
        if es is not None and es.alive:
            if self._down_since is None:
                self._down_since = now
            if now - self._down_since < self._dead_after:
                return  # the library is reconnecting by itself
        if es is not None:
            log.warning("eventsub_lost", bot=self.name, thread_alive=es.alive)
            await self._drop_connection()
            self._retry_at = now + self._backoff.next_delay()
            return
        if now < self._retry_at:
            return
        self._reconnects += 1
        try:
            await self._connect()
            log.info("eventsub_reconnected", bot=self.name, attempt=self._backoff.failures)
        except Exception as e:  # noqa: BLE001 - anything from Twitch or the network: back off and try again
            delay = self._backoff.next_delay()
            log.warning("eventsub_reconnect_failed", bot=self.name, error=str(e)[:200], retry_in_s=round(delay, 2))
            await self._drop_connection()
            self._retry_at = time.monotonic() + delay

    # --- sending ---
    async def send(self, channel: str, text: str, reply_to: str | None = None) -> SendResult:
        """Send through Helix Send Chat Message, gated by this account's :class:`SendLimiter`."""
        channel = channel.lower()
        broadcaster = self._ids.get(channel)
        if broadcaster is None or self._twitch is None:
            log.warning("send_unknown_channel", bot=self.name, channel=channel)
            return SendResult(False, None, drop_reason="unknown_channel")
        final = await self.limiter.acquire(channel, text)
        if final is None:
            return SendResult(False, None, drop_reason="rate_limited")
        twitch = self._twitch
        try:
            resp = await self._helix(lambda: twitch.send_chat_message(broadcaster, self.user_id, final, reply_to))
        except (TwitchAPIException, TwitchError, OSError, TimeoutError) as e:
            log.warning("send_failed", bot=self.name, channel=channel, error=type(e).__name__, detail=str(e)[:200])
            return SendResult(False, final, drop_reason=type(e).__name__)
        if not resp.is_sent:
            code = resp.drop_reason.code if resp.drop_reason else "unknown"
            log.warning("send_dropped_by_twitch", bot=self.name, channel=channel, code=code,
                        reason=resp.drop_reason.message if resp.drop_reason else "")
            return SendResult(False, final, drop_reason=code)
        log.info("message_sent", bot=self.name, channel=channel, message_id=resp.message_id)
        return SendResult(True, final, message_id=resp.message_id)
