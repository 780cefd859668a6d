"""The programs: ``chatmood run`` (the bot) and ``chatmood demo``; the owner of every resource they open.

Each program opens its resources in one ``AsyncExitStack`` (closed in reverse order) and runs its services
in one TaskGroup (:func:`bot.tasks.supervise`): the pipeline's loops, the reply sender, config reload, and
the ``watch()`` of every owner that holds tasks of its own (storage's writer, the Twitch bots). A crash of
any of them stops the program at once; SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

import structlog
from aiohttp import web

from bot.config import MONGODB_URL_ENV, Config, log_warnings
from bot.errors import ChatmoodError, ConfigError
from bot.logs import configure_logging
from bot.outbox import Loopback
from bot.persona.offline import demo_persona
from bot.pipeline import Pipeline, open_pipeline
from bot.reload import Reloader
from bot.replay.logfile import SAMPLE_CHAT, open_log
from bot.replay.pacing import replay
from bot.tasks import supervise
from bot.twitch.botset import BotSet
from bot.twitch.tokens import read_secret_file, write_secret_file
from bot.vibes.recommend import Vibes, open_vibes
from bot.web.server import create_overlay_app, overlay_runner

log = structlog.get_logger(__name__)

Health = Callable[[], Awaitable[dict[str, Any]]]


def health_check(p: Pipeline, bots: BotSet | None = None) -> Health:
    """The one health report, for ``/healthz`` in both programs: database, model, and each bot."""

    async def health() -> dict[str, Any]:
        return {
            "database": {"ok": await p.storage.ping()},
            "model": {"ok": True, "version": p.classifier.version},
            "twitch": bots.health() if bots is not None else {},
            "personas": p.personas.status() if p.personas is not None else {},
        }

    return health


@contextlib.asynccontextmanager
async def serve_overlay(p: Pipeline, host: str, port: int, access_token: str, health: Health,
                        vibes: Vibes | None = None) -> AsyncIterator[str]:
    """Serve the overlay, dashboard and API (and ``/vibes`` when given) for the pipeline; yields the base URL."""
    app = create_overlay_app(
        cfg=p.cfg.overlay,
        categories=p.cfg.categories,
        hub=p.mood.hub,
        mood_state=p.mood.state,
        storage=p.history,  # recent chat and mood from memory, older from the database
        reset=p.mood.reset,
        health=health,
        access_token=access_token,
        personas=p.personas.status if p.personas is not None else None,
        vibes=vibes.answer if vibes is not None else None,
    )
    runner = overlay_runner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as e:
            raise ChatmoodError(f"overlay cannot listen on {host}:{port}: {e.strerror or e}") from None
        bound = next((int(addr[1]) for addr in runner.addresses), None)
        if bound is None:
            raise ChatmoodError("overlay is not listening")
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()


def _stop_on_signals(stop: asyncio.Event) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def undo() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    return undo


async def cmd_demo(
    cfg: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    speed: float = 1.0,
    once: bool = False,
    out: TextIO | None = None,
) -> int:
    """``chatmood demo``: the bundled sample chat through ingest -> classify -> mood -> overlay.

    Without a config file it starts a throw-away local FerretDB and uses a shorter
    half-life so the sample's mood swings show within seconds.
    """
    from pydantic import SecretStr

    out = out or sys.stdout
    configure_logging(cfg.logging.level, cfg.logging.format)
    log_warnings(cfg)
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chatmood-")))
        updates: dict[str, Any] = {}
        storage = cfg.storage.model_copy(update={"spool_dir": tmp / "spool"})
        if cfg.source is None and not os.environ.get(MONGODB_URL_ENV):
            from bot.storage.devdb import run_devdb

            print("starting a local FerretDB for the demo ...", file=out, flush=True)
            db = await stack.enter_async_context(run_devdb(data_dir=tmp / "db"))
            storage = storage.model_copy(update={"mongodb_url": SecretStr(db.url)})
        if cfg.source is None:
            updates["mood"] = cfg.mood.model_copy(update={"half_life_s": 15.0, "snapshot_interval_s": 5.0})
            updates["vibes"] = cfg.vibes.model_copy(update={"refresh_interval_s": 15.0})
        cfg = demo_persona(cfg.model_copy(update={"storage": storage, **updates}))
        host = host or cfg.overlay.host
        port = cfg.overlay.port if port is None else port

        stop = asyncio.Event()
        stack.callback(_stop_on_signals(stop))
        print("loading the classifier ...", file=out, flush=True)
        p = await stack.enter_async_context(open_pipeline(cfg))
        vibes = await stack.enter_async_context(open_vibes(cfg, p.storage))
        token = cfg.overlay.access_token.get_secret_value() if cfg.overlay.access_token else secrets.token_urlsafe(18)
        base = await stack.enter_async_context(serve_overlay(p, host, port, token, health_check(p), vibes))
        print(f"overlay:   {base}/overlay/demo?style=glow", file=out)
        print(f"           {base}/overlay/demo?style=bar&label=1  |  {base}/overlay/demo?style=orb", file=out)
        print(f"dashboard: {base}/dashboard/demo?token={token}", file=out)
        print(f"vibes:     {base}/vibes?token={token}", file=out)
        chat = Loopback(p.ingest.submit, {b.name: b.account for b in cfg.bots}, out)
        for b in cfg.bots:
            if b.persona is not None and "demo" in b.channels:
                print(f"persona:   @{b.account} answers mentions in the sample chat ({b.persona.model})", file=out)
        print("replaying the sample chat" + ("" if once else " (Ctrl+C to stop)"), file=out, flush=True)
        async with supervise({**p.services(), "outbox": p.outbox.drain(chat),
                              "vibes-profiles": vibes.refresh_every(cfg.vibes.refresh_interval_s)}):
            passes = 0
            while not stop.is_set():
                parsed = open_log(SAMPLE_CHAT, "demo")
                # Later passes are new chat, not redeliveries: give them their own ids.
                lines = (
                    parsed.lines
                    if passes == 0
                    else (dataclasses.replace(ln, message_id=f"{ln.message_id}.{passes}") for ln in parsed.lines)
                )
                replaying = asyncio.create_task(replay(lines, chat.submit, speed=speed), name="demo-replay")
                stopping = asyncio.create_task(stop.wait(), name="demo-stop")
                try:
                    await asyncio.wait({replaying, stopping}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in (replaying, stopping):
                        t.cancel()
                    await asyncio.gather(replaying, stopping, return_exceptions=True)
                passes += 1
                await p.settle(["demo"])
                for line in p.summary({"demo"}):
                    print(line, file=out, flush=True)
                if once:
                    break
    return 0


def _overlay_token_for_run(cfg: Config) -> str:
    """A configured token, or one made now and kept in a 0600 file (never in the log)."""
    if cfg.overlay.access_token:
        return cfg.overlay.access_token.get_secret_value()
    path = cfg.resolve(Path("tokens") / "overlay-token")
    token = (read_secret_file(path) or "").strip()
    if token:
        return token
    token = secrets.token_urlsafe(18)
    write_secret_file(path, token + "\n")  # 0600 even where an empty 0644 file stood
    log.info("overlay_token_created", path=str(path))
    return token


async def cmd_run(
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
    if not cfg.bots:
        raise ConfigError(cfg.source, ["bots: at least one [[bots]] table is needed to run"])
    if not cfg.twitch.client_id:
        raise ConfigError(cfg.source, ["twitch.client_id: required to run (your Twitch application's client id)"])
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(_stop_on_signals(stop))
        p = await stack.enter_async_context(open_pipeline(cfg))
        vibes = await stack.enter_async_context(open_vibes(cfg, p.storage))
        bots = BotSet(cfg, p.ingest.submit, p.storage, p.personas)
        stack.push_async_callback(bots.aclose)

        base = ""
        if cfg.overlay.enabled:
            h = host or cfg.overlay.host
            port = cfg.overlay.port if port is None else port
            base = await stack.enter_async_context(
                serve_overlay(p, h, port, _overlay_token_for_run(cfg), health_check(p, bots), vibes)
            )
            log.info("overlay_listening", url=f"{base}/overlay/<channel>")

        for bot_cfg in cfg.bots:
            await bots.start(bot_cfg)
        if not bots.running:
            raise ChatmoodError("no bot could start: " + "; ".join(bots.stopped.values()))

        async def apply(old: Config, new: Config) -> None:
            configure_logging(new.logging.level, new.logging.format)
            p.apply(new)
            await bots.apply(new)

        services = {**p.services(), "outbox": p.outbox.drain(bots.send), "bots": bots.tasks.watch(),
                    "vibes-profiles": vibes.refresh_every(cfg.vibes.refresh_interval_s)}
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
