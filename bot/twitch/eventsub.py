"""twitchAPI's EventSub WebSocket client, kept on its own thread: the only module that knows its private
threads and event loops.

- ``EventSubWebsocket`` runs on its own (non-daemon) thread with a private loop; ``start()`` busy-waits for
  the welcome and never returns if the first connect fails; ``stop()`` blocks on a future of that loop;
  the loop is never closed; a notification's de-dup history is never filled. So :class:`EventSubThread`
  starts and stops it from a *daemon* helper thread with a timeout (a daemon thread, unlike
  ``asyncio.to_thread``'s executor, cannot pin interpreter exit, and the library's socket thread
  inherits the daemon flag), wraps its thread body so that the private loop is always drained and
  closed, and hands every notification to ``deliver`` on the caller's loop (this module hops with
  ``call_soon_threadsafe``). Calls into the library's own state (subscribe/unsubscribe) run on its loop
  via ``run_coroutine_threadsafe``.
- Its notification handler is replaced: the documented payload reaches the caller unchanged (no typed
  objects, ~20x cheaper, see bench/twitch_chat.py), and a notification that beats twitchAPI's callback
  registration is not dropped.
- Its EventSub request header builder is replaced too: it validated (and could refresh) the token before
  every subscribe, through a ClientSession that leaks when cancelled. :class:`~bot.twitch.bot.TwitchBot`
  validates at startup and hourly.
- ``reconnect_delay_steps`` is cut short on purpose: when the library's own reconnect gives up, the bot's
  supervisor starts a fresh client with backoff.
- Unsubscribing goes to ``api_url`` (twitchAPI ignores ``subscription_url`` for DELETE).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog
from twitchAPI.eventsub.websocket import EventSubWebsocket
from twitchAPI.twitch import Twitch

from bot.config import TwitchConfig
from bot.errors import TwitchError

log = structlog.get_logger(__name__)
T = TypeVar("T")


# --- the library, off our loop -----------------------------------------------------------------
async def off_loop(fn: Callable[[], T], limit_s: float, name: str) -> T:
    """Run blocking ``fn`` on a daemon thread; its result or exception, or ``TimeoutError``."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():
            fut.set_result(value) if ok else fut.set_exception(value)

    def body() -> None:
        try:
            result: Any = fn()
            ok = True
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task, which re-raises it
            result, ok = e, False
        with contextlib.suppress(RuntimeError):  # our loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, ok, result)

    threading.Thread(target=body, name=name, daemon=True).start()
    async with asyncio.timeout(limit_s):
        return await fut


class _Raw:
    """Event type given to twitchAPI's ``_subscribe``: keeps the documented payload as plain dicts."""

    def __init__(self, **payload: Any) -> None:
        self.payload = payload


class EventSubThread:
    """One ``EventSubWebsocket`` and its thread, from start to a closed private loop."""

    def __init__(self, twitch: Twitch, cfg: TwitchConfig, deliver: Callable[[dict[str, Any]], None], *,
                 bot: str, timeout_s: float, loop: asyncio.AbstractEventLoop) -> None:
        """``deliver(payload)`` is called on ``loop`` (ours), never on the library's thread."""
        self._bot = bot
        self._timeout = timeout_s

        def hop(payload: dict[str, Any]) -> None:  # runs on the library's thread
            if loop.is_closed():
                return
            with contextlib.suppress(RuntimeError):  # our loop is closing: nothing left to deliver to
                loop.call_soon_threadsafe(deliver, payload)

        self._deliver = hop
        self.finished = threading.Event()
        es = EventSubWebsocket(twitch, connection_url=cfg.eventsub_url,
                               subscription_url=cfg.eventsub_subscription_url or cfg.api_url)
        es.reconnect_delay_steps = [0, 1, 2]  # give up fast; the supervisor backs off and starts anew
        run_socket: Callable[[], None] = es._run_socket

        def guarded_run_socket() -> None:
            try:
                run_socket()
            except BaseException as e:  # noqa: BLE001 - the thread would otherwise die with an unhandled exception
                log.warning("eventsub_thread_failed", bot=bot, error=type(e).__name__, detail=str(e)[:200])
            finally:
                self._close_private_loop()
                es._startup_complete = True  # releases a start() still busy-waiting for a welcome
                self.finished.set()

        async def handle_notification(data: dict[str, Any]) -> None:
            # Replaces twitchAPI's: it drops a notification that arrives before its callback is registered
            # (the POST's answer and the first event race on a busy channel) and parses typed objects we
            # don't use. Routing is by subscription type in TwitchBot._notification.
            es._reset_timeout()  # type: ignore[no-untyped-call]
            payload = dict(data.get("payload") or {})
            payload["metadata"] = data.get("metadata") or {}
            hop(payload)

        async def build_request_header() -> dict[str, str]:
            # Replaces twitchAPI's, which validates the token before every subscribe with a ClientSession
            # that leaks when the call is cancelled, and may start its own refresh (see the module docstring).
            return {"Client-ID": twitch.app_id, "Content-Type": "application/json",
                    "Authorization": f"Bearer {twitch.get_user_auth_token()}"}

        es._run_socket = guarded_run_socket  # type: ignore[method-assign]
        es._build_request_header = build_request_header  # type: ignore[method-assign]
        es._handle_notification = handle_notification  # type: ignore[method-assign]
        self.es = es

    def _close_private_loop(self) -> None:
        es = self.es
        loop: asyncio.AbstractEventLoop | None = es._socket_loop
        if loop is None or loop.is_closed():
            return

        async def release() -> None:
            for conn in (es._connection, es._reconnect.connection if es._reconnect else None):
                if conn is not None and not conn.closed:
                    await conn.close()
            if es._session is not None and not es._session.closed:
                await es._session.close()

        try:
            es._closing = True
            # Tasks first: a reconnect still running could otherwise open a new session after release().
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(release())
            loop.run_until_complete(loop.shutdown_asyncgens())
        except Exception as e:  # noqa: BLE001 - best-effort cleanup of the library's loop; it is closed below anyway
            log.warning("eventsub_loop_cleanup_failed", bot=self._bot, error=type(e).__name__)
        finally:
            loop.close()

    @property
    def alive(self) -> bool:
        return not self.finished.is_set()

    @property
    def connected(self) -> bool:
        conn = self.es._connection
        return self.alive and conn is not None and not conn.closed

    @property
    def session_id(self) -> str | None:
        s = self.es.active_session
        return s.id if s is not None else None

    async def start(self) -> None:
        try:
            await off_loop(self.es.start, self._timeout, f"eventsub-start-{self._bot}")
        except TimeoutError:
            self.es._startup_complete = True
            url = self.es.connection_url
            raise TwitchError(f"EventSub at {url} sent no welcome within {self._timeout:g}s") from None
        if not self.alive or self.es.active_session is None:
            raise TwitchError(f"cannot connect to EventSub at {self.es.connection_url}")
        log.info("eventsub_connected", bot=self._bot, session_id=self.session_id)

    async def stop(self) -> None:
        """Always leaves the thread finished (or, at worst, a daemon thread told to close)."""
        es = self.es
        if self.alive and es._running:
            try:
                await off_loop(lambda: asyncio.run(es.stop()),  # type: ignore[no-untyped-call]
                                self._timeout, f"eventsub-stop-{self._bot}")
            except Exception as e:  # noqa: BLE001 - stopping is best effort; the thread is told to close below
                log.warning("eventsub_stop_failed", bot=self._bot, error=type(e).__name__)
        es._running = False
        es._closing = True  # ends its keep-alive loop whatever state stop() left behind
        with contextlib.suppress(TimeoutError):
            await off_loop(lambda: self.finished.wait(self._timeout), self._timeout + 1, f"eventsub-join-{self._bot}")
        if self.alive:
            log.warning("eventsub_thread_lingers", bot=self._bot)

    async def _on_its_loop(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        loop = self.es._socket_loop
        if loop is None or loop.is_closed() or not self.alive:
            raise TwitchError("EventSub is not running")
        coro = make()
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:
            coro.close()
            raise TwitchError("EventSub is not running") from None
        async with asyncio.timeout(self._timeout):
            return await asyncio.wrap_future(fut)

    async def subscribe(self, sub_type: str, condition: dict[str, str]) -> str:
        async def unused(raw: _Raw) -> None:  # twitchAPI wants a callback; handle_notification delivers instead
            self._deliver(raw.payload)

        return await self._on_its_loop(lambda: self.es._subscribe(sub_type, "1", condition, unused, _Raw))

    def subscription_ids(self, sub_type: str, broadcaster_id: str) -> list[str]:
        subs = dict(self.es._active_subscriptions)  # the library swaps ids when it resubscribes
        return [sid for sid, s in subs.items()
                if s["sub_type"] == sub_type and s["condition"].get("broadcaster_user_id") == broadcaster_id]

    async def unsubscribe(self, sub_id: str) -> bool:
        return bool(await self._on_its_loop(lambda: self.es.unsubscribe_topic(sub_id)))
