"""The single owner of every resource and task.

``open_pipeline(cfg)`` opens storage, loads the classifier and builds ingest, the mood
tracker and the hub the overlay listens to; ``Pipeline.services()`` names the
long-running tasks they need, which ``supervise`` runs in one TaskGroup (one crash
cancels all; stop cancels and awaits all). ``run``, ``replay_file`` and ``demo`` are
the three programs built from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from bot.classifier import ClassifierService, load_classifier
from bot.commands import CommandExecutor, CommandRouter, is_command
from bot.config import Config
from bot.domain import ChatLine, MoodState, Verdict
from bot.errors import ChatmoodError, ConfigError
from bot.hub import MoodHub
from bot.ingest import Ingest
from bot.logs import configure_logging
from bot.mood import MoodTracker
from bot.overlay import create_overlay_app
from bot.storage import Storage, open_storage

log = structlog.get_logger(__name__)

SendFn = Callable[[str, str, str | None], Awaitable[None]]
SAMPLE_CHAT = Path(__file__).parent / "data" / "sample_chat.jsonl"


@contextlib.asynccontextmanager
async def supervise(services: Mapping[str, Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    """Run named service tasks for the duration of the block; on exit cancel and await them.

    A crashing service cancels the block and the others; a chatmood error inside is
    re-raised on its own so the CLI can print it.
    """
    try:
        async with asyncio.TaskGroup() as tg:
            held = [tg.create_task(coro, name=name) for name, coro in services.items()]
            try:
                yield
            finally:
                for task in held:
                    task.cancel()
    except BaseExceptionGroup as group:
        ours = [e for e in group.exceptions if isinstance(e, ChatmoodError)]
        if ours:
            raise ours[0] from None
        raise


class CommandQueue:
    """Commands from chat, handled one at a time by a task we own, never on the ingest path."""

    def __init__(self, router: CommandRouter, executor: CommandExecutor, bot_login: Callable[[str], str]) -> None:
        self.router = router
        self.executor = executor
        self._bot_login = bot_login
        self._queue: asyncio.Queue[ChatLine] = asyncio.Queue(maxsize=1_000)
        self.dropped = 0

    def offer(self, line: ChatLine) -> None:
        try:
            self._queue.put_nowait(line)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("command_dropped", channel=line.channel, reason="command queue full")

    async def run(self) -> None:
        while True:
            line = await self._queue.get()
            try:
                cmd = self.router.route(line, self._bot_login(line.channel))
                if cmd is not None:
                    await self.executor.execute(cmd)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("command_failed", channel=line.channel, text=line.text[:100])


@dataclass
class Pipeline:
    cfg: Config
    storage: Storage
    classifier: ClassifierService
    tracker: MoodTracker
    hub: MoodHub
    ingest: Ingest
    commands: CommandQueue
    clock: Callable[[], float] = time.time

    def services(self) -> dict[str, Coroutine[Any, Any, None]]:
        return {
            "classifier": self.classifier.run(),
            "commands": self.commands.run(),
            "mood-ticker": self._tick(),
            "mood-snapshots": self._snapshots(),
        }

    def publish(self, channel: str) -> MoodState:
        state = self.tracker.state(channel)
        self.hub.publish(state)
        return state

    async def reset(self, channel: str) -> None:
        self.tracker.reset(channel)
        self.publish(channel)
        log.info("mood_reset", channel=channel)

    async def on_verdicts(self, pairs: list[tuple[ChatLine, Verdict]]) -> None:
        channels = set()
        for line, verdict in pairs:
            self.storage.writer.submit_verdict(line.message_id, verdict)
            self.tracker.observe(line.channel, verdict)
            channels.add(line.channel)
        for channel in channels:
            self.publish(channel)

    async def _tick(self) -> None:
        """Idle chat drifts to neutral: republish every second so the overlay follows the decay."""
        while True:
            await asyncio.sleep(1.0)
            for channel in self.tracker.channels():
                self.publish(channel)

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.mood.snapshot_interval_s)
            for channel in list(self.tracker.channels()):
                await self.save_snapshot(channel)

    async def settle(self, channels: Iterable[str]) -> None:
        """After a replay: everything offered is classified and stored, and the timeline has a point."""
        await self.classifier.drain()
        await self.storage.writer.flush()
        for channel in channels:
            await self.save_snapshot(channel)

    async def save_snapshot(self, channel: str) -> None:
        state = self.tracker.state(channel)
        counts = self.tracker.take_counts(channel)
        try:
            await self.storage.save_snapshot(state, bucket=datetime.fromtimestamp(self.clock(), UTC), counts=counts)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the timeline misses a point; chat itself is never lost
            log.warning("snapshot_failed", channel=channel, error=str(e))


@contextlib.asynccontextmanager
async def open_pipeline(
    cfg: Config,
    *,
    send: SendFn | None = None,
    bot_login: Callable[[str], str] = lambda channel: "",
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[Pipeline]:
    async with contextlib.AsyncExitStack() as stack:
        storage = await stack.enter_async_context(
            open_storage(cfg.storage, spool_dir=cfg.resolve(cfg.storage.spool_dir))
        )
        classifier = await asyncio.to_thread(load_classifier, cfg)
        # Closed off the loop: it waits for a model call still running on a worker thread.
        stack.push_async_callback(asyncio.to_thread, classifier.close)
        tracker = MoodTracker(cfg.categories, cfg.mood.half_life_s, cfg.mood.neutral_prior, clock=clock)
        hub = MoodHub()
        holder: list[Pipeline] = []

        async def on_verdicts(pairs: list[tuple[ChatLine, Verdict]]) -> None:
            await holder[0].on_verdicts(pairs)

        service = ClassifierService(classifier, cfg, on_verdicts, rng=random.Random(), on_skipped=tracker.add_skipped)

        async def log_reply(channel: str, text: str, reply_to: str | None) -> None:
            log.info("reply_not_sent", channel=channel, text=text, reason="no Twitch connection")

        executor = CommandExecutor(storage, tracker, send or log_reply, on_reset=lambda ch: holder[0].publish(ch))
        router = CommandRouter(cfg.commands, cfg.category_names)
        commands = CommandQueue(router, executor, bot_login)
        ingest = Ingest(
            writer=storage.writer,
            classify=service.offer,
            command=commands.offer,
            is_command=lambda line: is_command(line, router.prefix),
        )
        pipeline = Pipeline(cfg, storage, service, tracker, hub, ingest, commands, clock)
        holder.append(pipeline)
        try:
            yield pipeline
        finally:
            hub.close()


@contextlib.asynccontextmanager
async def serve_overlay(
    p: Pipeline, host: str, port: int, access_token: str, health: Callable[[], Awaitable[dict[str, Any]]]
) -> AsyncIterator[web.AppRunner]:
    app = create_overlay_app(
        cfg=p.cfg.overlay,
        categories=p.cfg.categories,
        hub=p.hub,
        mood_state=p.tracker.state,
        storage=p.storage,
        reset=p.reset,
        health=health,
        access_token=access_token,
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as e:
            raise ChatmoodError(f"overlay cannot listen on {host}:{port}: {e.strerror or e}") from None
        yield runner
    finally:
        await runner.cleanup()


def overlay_token(cfg: Config) -> str:
    token = cfg.overlay.access_token
    return token.get_secret_value() if token else secrets.token_urlsafe(18)


def bound_port(runner: web.AppRunner) -> int:
    for addr in runner.addresses:
        return int(addr[1])
    raise ChatmoodError("overlay is not listening")


def _summary(p: Pipeline, channels: set[str]) -> list[str]:
    w = p.storage.writer.stats
    lines = [
        f"stored: {w.inserted} new, {w.duplicates} already stored"
        + (f", {w.spool_pending} waiting in the spool (database unreachable)" if w.spool_pending else ""),
    ]
    for channel in sorted(channels):
        s = p.tracker.state(channel)
        seen = f"{s.messages} classified" + (f", {s.skipped} skipped" if s.skipped else "")
        lines.append(f"mood #{channel}: {s.label} {s.share:.0%} valence {s.valence:+.2f} {s.colour} ({seen})")
    return lines


async def replay_file(
    cfg: Config,
    path: Path,
    *,
    channel: str | None = None,
    speed: float | None = None,
    max_rate: float | None = None,
    out: Any = None,
) -> int:
    """``chatmood replay``: a recorded log through the same ingest path live chat takes."""
    from bot.replay import format_summary, open_log, progress_bar_for, replay

    out = out or sys.stdout
    parsed = open_log(path, channel)
    channels: set[str] = set()

    def submit(line: ChatLine) -> None:
        channels.add(line.channel)
        p.ingest.submit(line)

    async with open_pipeline(cfg) as p, supervise(p.services()):
        stats = await replay(
            parsed.lines,
            submit,
            speed=None if max_rate else (speed or 1.0),
            max_rate=max_rate,
            progress=progress_bar_for(),
            total=parsed.total_hint,
        )
        await p.settle(channels)
        print(format_summary(stats), file=out)
        for line in _summary(p, channels):
            print(line, file=out)
    return 0


def _stop_on_signals(stop: asyncio.Event) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def undo() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    return undo


async def demo(
    cfg: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    speed: float = 1.0,
    once: bool = False,
    out: Any = None,
) -> int:
    """``chatmood demo``: the bundled sample chat through ingest -> classify -> mood -> overlay.

    Without a config file it starts a throw-away local FerretDB and uses a shorter
    half-life so the sample's mood swings show within seconds.
    """
    from pydantic import SecretStr

    from bot.config import MONGODB_URL_ENV
    from bot.replay import open_log, replay

    out = out or sys.stdout
    configure_logging(cfg.logging.level, cfg.logging.format)
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(_tempdir()))
        updates: dict[str, Any] = {}
        storage = cfg.storage.model_copy(update={"spool_dir": tmp / "spool"})
        if cfg.source is None and not os.environ.get(MONGODB_URL_ENV):
            from bot.devdb import run_devdb

            print("starting a local FerretDB for the demo ...", file=out, flush=True)
            db = await stack.enter_async_context(run_devdb(data_dir=tmp / "db"))
            storage = storage.model_copy(update={"mongodb_url": SecretStr(db.url)})
        if cfg.source is None:
            updates["mood"] = cfg.mood.model_copy(update={"half_life_s": 15.0, "snapshot_interval_s": 5.0})
        cfg = cfg.model_copy(update={"storage": storage, **updates})
        host = host or cfg.overlay.host
        port = cfg.overlay.port if port is None else port

        stop = asyncio.Event()
        stack.callback(_stop_on_signals(stop))
        print("loading the classifier ...", file=out, flush=True)
        p = await stack.enter_async_context(open_pipeline(cfg))
        token = overlay_token(cfg)

        async def health() -> dict[str, Any]:
            return {"database": await p.storage.ping(), "model": p.classifier.version, "twitch": {}}

        runner = await stack.enter_async_context(serve_overlay(p, host, port, token, health))
        base = f"http://{host}:{bound_port(runner)}"
        print(f"overlay:   {base}/overlay/demo?style=glow", file=out)
        print(f"           {base}/overlay/demo?style=bar&label=1  |  {base}/overlay/demo?style=orb", file=out)
        print(f"dashboard: {base}/dashboard/demo?token={token}", file=out)
        print("replaying the sample chat" + ("" if once else " (Ctrl+C to stop)"), file=out, flush=True)
        async with supervise(p.services()):
            passes = 0
            while not stop.is_set():
                parsed = open_log(SAMPLE_CHAT, "demo")
                # Later passes are new chat, not redeliveries: give them their own ids.
                lines = (
                    parsed.lines
                    if passes == 0
                    else (dataclasses.replace(ln, message_id=f"{ln.message_id}.{passes}") for ln in parsed.lines)
                )
                replaying = asyncio.create_task(replay(lines, p.ingest.submit, speed=speed), name="demo-replay")
                stopping = asyncio.create_task(stop.wait(), name="demo-stop")
                try:
                    await asyncio.wait({replaying, stopping}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in (replaying, stopping):
                        t.cancel()
                    await asyncio.gather(replaying, stopping, return_exceptions=True)
                passes += 1
                await p.settle(["demo"])
                for line in _summary(p, {"demo"}):
                    print(line, file=out, flush=True)
                if once:
                    break
    return 0


@contextlib.contextmanager
def _tempdir() -> Any:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="chatmood-") as d:
        yield d


class BotSet:
    """The running Twitch bots, one exit stack each, so a reload can add or drop one alone."""

    def __init__(self, cfg: Config, ingest: Callable[[ChatLine], None], storage: Storage) -> None:
        self._cfg = cfg
        self._ingest = ingest
        self._storage = storage
        self._bots: dict[str, Any] = {}
        self._stacks: dict[str, contextlib.AsyncExitStack] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self.stopped: dict[str, str] = {}  # bot name -> why it stopped

    def login_for(self, channel: str) -> str:
        for bot_cfg in self._cfg.bots:
            if channel in bot_cfg.channels:
                return bot_cfg.account
        return ""

    async def send(self, channel: str, text: str, reply_to: str | None) -> None:
        for name, bot in self._bots.items():
            if channel in self._channels_of(name):
                await bot.send(channel, text, reply_to)
                return
        log.warning("reply_not_sent", channel=channel, reason="no running bot reads this channel")

    def _channels_of(self, name: str) -> tuple[str, ...]:
        return next((b.channels for b in self._cfg.bots if b.name == name), ())

    async def _on_live(self, channel: str, live: bool, at: datetime) -> None:
        if live:
            await self._storage.open_session(channel, at)
        else:
            await self._storage.close_session(channel, at)
        log.info("stream_live" if live else "stream_offline", channel=channel)

    async def start(self, bot_cfg: Any) -> None:
        from bot.auth import TokenStore
        from bot.twitch import TwitchBot

        stack = contextlib.AsyncExitStack()
        try:
            bot = await stack.enter_async_context(
                TwitchBot(
                    self._cfg.twitch,
                    bot_cfg,
                    token_store=TokenStore(self._cfg.resolve(bot_cfg.token_path)),
                    on_chat=self._ingest,
                    on_live=self._on_live,
                )
            )
        except ChatmoodError as e:
            await stack.aclose()
            self.stopped[bot_cfg.name] = str(e)
            log.error("bot_stopped", bot=bot_cfg.name, error=str(e))
            return
        except BaseException:
            await stack.aclose()
            raise
        self._bots[bot_cfg.name] = bot
        self._stacks[bot_cfg.name] = stack
        self.stopped.pop(bot_cfg.name, None)
        self._watchers[bot_cfg.name] = asyncio.create_task(self._watch(bot_cfg.name), name=f"bot-{bot_cfg.name}")

    async def _watch(self, name: str) -> None:
        """A revoked or expired token stops that bot (with the fix in the log); the others carry on."""
        try:
            await self._bots[name].wait()
        except ChatmoodError as e:
            self.stopped[name] = str(e)
            log.error("bot_stopped", bot=name, error=str(e))
            self._watchers.pop(name, None)
            await self._close(name)

    async def _close(self, name: str) -> None:
        self._bots.pop(name, None)
        stack = self._stacks.pop(name, None)
        if stack is not None:
            await stack.aclose()

    async def stop(self, name: str) -> None:
        watcher = self._watchers.pop(name, None)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await self._close(name)

    async def apply(self, new: Config) -> None:
        old = {b.name: b for b in self._cfg.bots}
        self._cfg = new
        for name in old.keys() - {b.name for b in new.bots}:
            await self.stop(name)
        for bot_cfg in new.bots:
            if bot_cfg.name not in old or (bot_cfg.name not in self._bots and bot_cfg.name in self.stopped):
                await self.start(bot_cfg)
            elif old[bot_cfg.name] != bot_cfg and bot_cfg.name in self._bots:
                if old[bot_cfg.name].account != bot_cfg.account or old[bot_cfg.name].token_file != bot_cfg.token_file:
                    await self.stop(bot_cfg.name)
                    await self.start(bot_cfg)
                else:
                    await self._bots[bot_cfg.name].set_channels(bot_cfg.channels)

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for bot_cfg in self._cfg.bots:
            bot = self._bots.get(bot_cfg.name)
            if bot is None:
                out[bot_cfg.name] = {"ok": False, "error": self.stopped.get(bot_cfg.name, "not running")}
            else:
                status = bot.status().as_json()
                out[bot_cfg.name] = {"ok": status["connected"], **status}
        return out

    @property
    def running(self) -> int:
        return len(self._bots)

    async def aclose(self) -> None:
        for name in list(self._stacks):
            await self.stop(name)


def _overlay_token_for_run(cfg: Config) -> str:
    """A configured token, or one made now and kept in a 0600 file (never in the log)."""
    if cfg.overlay.access_token:
        return cfg.overlay.access_token.get_secret_value()
    path = cfg.resolve(Path("tokens") / "overlay-token")
    try:
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    log.info("overlay_token_created", path=str(path))
    return token


async def run(
    cfg: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    stop: asyncio.Event | None = None,
    ready: Callable[[str], None] | None = None,
) -> int:
    """``chatmood run``: the bot. Stops cleanly on SIGINT/SIGTERM (or ``stop``); reloads bots.toml on SIGHUP.

    ``ready`` is called with the overlay's base URL once everything has started.
    """
    from bot.reload import Reloader

    if not cfg.bots:
        raise ConfigError(cfg.source, ["bots: at least one [[bots]] table is needed to run"])
    if not cfg.twitch.client_id:
        raise ConfigError(cfg.source, ["twitch.client_id: required to run (your Twitch application's client id)"])
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(_stop_on_signals(stop))
        holder: list[BotSet] = []

        async def send(channel: str, text: str, reply_to: str | None) -> None:
            await holder[0].send(channel, text, reply_to)

        p = await stack.enter_async_context(
            open_pipeline(cfg, send=send, bot_login=lambda ch: holder[0].login_for(ch) if holder else "")
        )

        def on_chat(line: ChatLine) -> None:
            p.ingest.submit(line)

        bots = BotSet(cfg, on_chat, p.storage)
        holder.append(bots)
        stack.push_async_callback(bots.aclose)

        async def health() -> dict[str, Any]:
            return {
                "database": {"ok": await p.storage.ping()},
                "model": {"ok": True, "version": p.classifier.version},
                "twitch": bots.health(),
            }

        base = ""
        if cfg.overlay.enabled:
            h = host or cfg.overlay.host
            runner = await stack.enter_async_context(
                serve_overlay(p, h, cfg.overlay.port if port is None else port, _overlay_token_for_run(cfg), health)
            )
            base = f"http://{h}:{bound_port(runner)}"
            log.info("overlay_listening", url=f"{base}/overlay/<channel>")

        for bot_cfg in cfg.bots:
            await bots.start(bot_cfg)
        if not bots.running:
            raise ChatmoodError("no bot could start: " + "; ".join(bots.stopped.values()))

        async def apply(old: Config, new: Config) -> None:
            configure_logging(new.logging.level, new.logging.format)
            p.tracker.update_config(new.categories, new.mood.half_life_s, new.mood.neutral_prior)
            p.commands.router.update_config(new.commands, new.category_names)
            p.cfg = new
            await bots.apply(new)

        services = p.services()
        if cfg.source is not None:
            reloader = Reloader(cfg.source, cfg, apply)
            loop.add_signal_handler(signal.SIGHUP, reloader.request)
            stack.callback(loop.remove_signal_handler, signal.SIGHUP)
            services["config-reload"] = reloader.run()
        log.info("chatmood_running", bots=bots.running, channels=list(cfg.channels))
        async with supervise(services):
            if ready:
                ready(base)
            await stop.wait()
        log.info("chatmood_stopping")
    return 0
