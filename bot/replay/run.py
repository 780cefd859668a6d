"""``chatmood replay``: a recorded chat log through the same pipeline live chat takes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from bot.config import Config
from bot.domain import ChatLine
from bot.outbox import log_only
from bot.pipeline import open_pipeline
from bot.replay.logfile import open_log
from bot.replay.pacing import format_summary, progress_bar_for, replay
from bot.tasks import supervise


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
    async with open_pipeline(cfg, personas=False) as p, supervise({**p.services(), "outbox": p.outbox.drain(log_only)}):

        def submit(line: ChatLine) -> None:
            channels.add(line.channel)
            p.ingest.submit(line)

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
        for line in p.summary(channels):
            print(line, file=out)
    return 0
