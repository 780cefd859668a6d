"""``chatmood replay``: a recorded chat log through the same pipeline live chat takes.

SIGINT or SIGTERM stops the replay cleanly: no new lines are taken, what was taken is classified (for a
few seconds at most) and written, to the database or to the disk spool, before the process exits with 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import TextIO

import structlog

from bot.config import Config
from bot.domain import ChatLine, printable
from bot.outbox import log_only
from bot.pipeline import open_pipeline
from bot.replay.logfile import open_log
from bot.replay.pacing import format_summary, progress_bar_for, replay
from bot.tasks import supervise

log = structlog.get_logger(__name__)

INTERRUPTED = 130
SETTLE_ON_SIGNAL_S = 5.0  # how long an interrupted replay still classifies what it took, before it closes


async def cmd_replay(
    cfg: Config,
    path: Path,
    *,
    channel: str | None = None,
    speed: float | None = None,
    max_rate: float | None = None,
    out: TextIO | None = None,
) -> int:
    """Replay ``path`` (paced by ``speed``, or as fast as ``max_rate`` allows); print what was stored and the mood."""
    out = out or sys.stdout
    parsed = open_log(path, channel)
    channels: set[str] = set()
    submitted = 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with open_pipeline(cfg, personas=False) as p:
            async with supervise({**p.services(), "outbox": p.outbox.drain(log_only)}):

                def submit(line: ChatLine) -> None:
                    nonlocal submitted
                    channels.add(line.channel)
                    p.ingest.submit(line)
                    submitted += 1

                replaying = asyncio.create_task(
                    replay(
                        parsed.lines,
                        submit,
                        speed=None if max_rate else (speed or 1.0),
                        max_rate=max_rate,
                        progress=progress_bar_for(),
                        total=parsed.total_hint,
                    ),
                    name="replay",
                )
                stopping = asyncio.create_task(stop.wait(), name="replay-stop")
                log.info("replay_started", source=str(path), max_rate=max_rate, speed=speed)
                try:
                    await asyncio.wait({replaying, stopping}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (replaying, stopping):
                        task.cancel()
                    await asyncio.gather(replaying, stopping, return_exceptions=True)
                if not stop.is_set():
                    stats = replaying.result()
                    await p.settle(channels)
                    # Whatever a log held (a file name that isn't UTF-8), the report never dies printing it.
                    print(printable(format_summary(stats)), file=out)
                    for line in p.summary(channels):
                        print(printable(line), file=out)
                    return 0
                log.warning("replay_interrupted", submitted=submitted)
                # What was taken is classified if that is quick; storage's close then writes everything
                # queued to the database, or durably to the spool.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SETTLE_ON_SIGNAL_S):
                        await p.classifier.drain()
                        await p.commands.join()
        # The pipeline is closed: the writer's figures are final.
        print(printable(f"replay interrupted: {submitted:,} messages taken from {path.name}"), file=out)
        for line in p.summary(channels):
            print(printable(line), file=out)
        return INTERRUPTED
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
