"""Replay a recorded chat log through the same ingest path live chat uses.

::

    with open_log(path, channel) as parsed:           # bot.replay.logfile: format detection and parsers
        stats = await replay(parsed, ingest.submit, speed=2.0, progress=progress_bar_for())
    print(format_summary(stats))

``replay`` hands each line to ``submit`` on a schedule: recorded arrival times scaled
by ``speed``, and/or at most ``max_rate`` messages per second; both schedules are
absolute, so sleeping late never accumulates drift. Time is injected (``clock``,
``sleep``), so tests advance a fake clock instead of sleeping.

Timestamps: replayed lines keep the ``sent_at`` recorded in the log; only the moment
they are handed to ``submit`` follows the replay clock.

The progress bar (count, rate, ETA) is drawn on stderr only when it is a terminal;
elsewhere the caller prints ``format_summary`` once at the end.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

import structlog

from bot.domain import ChatLine
from bot.replay.jsonl import to_jsonl
from bot.replay.logfile import SAMPLE_CHAT, open_log
from bot.replay.parsed import MAX_PROBLEMS, REPLAY_EPOCH, LogFormat, LogLines, ParsedLog, Problem

__all__ = [
    "MAX_PROBLEMS",
    "REPLAY_EPOCH",
    "SAMPLE_CHAT",
    "LogFormat",
    "LogLines",
    "ParsedLog",
    "Problem",
    "ProgressBar",
    "ReplayProgress",
    "ReplayStats",
    "format_summary",
    "open_log",
    "progress_bar_for",
    "replay",
    "to_jsonl",
]

log = structlog.get_logger(__name__)

# --- replaying --------------------------------------------------------------------------------------

_MIN_SLEEP_S = 0.001  # ahead of schedule by less than this: submit now rather than sleep
_YIELD_EVERY = 64  # let the loop run (the writer's batching) at least this often
_MAX_LAG_S = 0.5  # a rate-capped replay that fell further behind than this does not burst to catch up
_PROGRESS_EVERY_S = 0.1


@dataclass(frozen=True, slots=True)
class ReplayProgress:
    done: int
    total: int | None
    elapsed_s: float
    final: bool = False

    @property
    def rate(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ReplayStats:
    submitted: int
    malformed: int
    problems: tuple[Problem, ...]
    duration_s: float  # on the replay clock, from the start to the last submit
    log_span_s: float  # recorded time between the first and the last line
    format: str | None = None
    source: str | None = None
    channel: str | None = None
    unit: str = "line"
    repaired_lines: tuple[int, ...] = ()  # lines kept with bytes that weren't UTF-8 replaced by U+FFFD

    @property
    def rate(self) -> float:
        return self.submitted / self.duration_s if self.duration_s > 0 else 0.0


def _check_positive(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, not {value!r}")


async def replay(
    lines: Iterable[ChatLine],
    submit: Callable[[ChatLine], object],
    *,
    speed: float | None = 1.0,
    max_rate: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    progress: Callable[[ReplayProgress], object] | None = None,
    total: int | None = None,
) -> ReplayStats:
    """Hand every line to ``submit`` (a plain call, e.g. ``Ingest.submit``) on schedule.

    ``speed``: recorded arrival times are honoured, scaled (2.0 = twice as fast);
    ``None`` ignores them. ``max_rate``: at most this many messages per second; with
    ``speed=None`` that is "as fast as allowed". Both may be combined; neither means as
    fast as possible. Both schedules are absolute (start + offset), so oversleeping
    never accumulates drift. ``progress`` is called about every 0.1 s and once at the
    end (``final=True``). Given a :class:`ParsedLog` (or its ``lines``), its malformed
    lines end up in the stats. Lines keep their recorded ``sent_at``.
    """
    _check_positive("speed", speed)
    _check_positive("max_rate", max_rate)
    parsed = lines if isinstance(lines, ParsedLog) else lines.parsed if isinstance(lines, LogLines) else None
    if total is None and parsed is not None:
        total = parsed.total_hint
    interval = 1.0 / max_rate if max_rate else 0.0
    start = clock()
    rate_next = start
    last_report = start
    first_at: datetime | None = None
    last_at: datetime | None = None
    submitted = since_yield = 0
    try:
        for line in lines:
            if first_at is None:
                first_at = line.sent_at
            last_at = line.sent_at
            now = clock()
            due = start
            if speed is not None:
                due = max(due, start + (line.sent_at - first_at).total_seconds() / speed)
            if interval:
                rate_next = max(rate_next, now - _MAX_LAG_S)
                due = max(due, rate_next)
            if due - now > _MIN_SLEEP_S:
                await sleep(due - now)
                since_yield = 0
                now = clock()
            elif since_yield >= _YIELD_EVERY:
                await sleep(0)
                since_yield = 0
            submit(line)
            submitted += 1
            since_yield += 1
            if interval:
                rate_next = due + interval
            if progress is not None and now - last_report >= _PROGRESS_EVERY_S:
                last_report = now
                progress(ReplayProgress(submitted, total, now - start))
    except BaseException:  # cancelled or submit failed: end the progress line before the error surfaces
        if progress is not None:
            progress(ReplayProgress(submitted, total, clock() - start, final=True))
        raise
    duration = clock() - start
    if progress is not None:
        progress(ReplayProgress(submitted, submitted, duration, final=True))
    stats = ReplayStats(
        submitted=submitted,
        malformed=parsed.malformed if parsed else 0,
        problems=tuple(parsed.problems) if parsed else (),
        duration_s=duration,
        log_span_s=(last_at - first_at).total_seconds() if first_at and last_at else 0.0,
        format=parsed.format if parsed else None,
        source=str(parsed.path) if parsed else None,
        channel=parsed.channel if parsed else None,
        unit=parsed.unit if parsed else "line",
        repaired_lines=tuple(parsed.repaired_lines) if parsed else (),
    )
    log.info(
        "replay_finished",
        submitted=stats.submitted,
        malformed=stats.malformed,
        duration_s=round(stats.duration_s, 3),
        format=stats.format,
    )
    return stats


def _hms(seconds: float) -> str:
    s = max(0, int(seconds + 0.5))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class ProgressBar:
    """A one-line text progress bar (count, rate, ETA) redrawn in place on a terminal."""

    def __init__(self, stream: TextIO, width: int = 28) -> None:
        self.stream = stream
        self.width = width
        self._drawn = 0

    def render(self, p: ReplayProgress) -> str:
        rate = f"{p.rate:,.0f} msg/s"
        if p.total:
            frac = min(1.0, p.done / p.total)
            filled = int(frac * self.width)
            eta = _hms((p.total - p.done) / p.rate) if p.rate > 0 and not p.final else "-"
            bar = "#" * filled + "-" * (self.width - filled)
            return f"[{bar}] {p.done:,}/{p.total:,} {frac:4.0%}  {rate}  ETA {eta}"
        return f"{p.done:,} messages  {rate}  elapsed {_hms(p.elapsed_s)}"

    def __call__(self, p: ReplayProgress) -> None:
        text = self.render(p)
        pad = " " * max(0, self._drawn - len(text))
        self._drawn = len(text)
        self.stream.write("\r" + text + pad + ("\n" if p.final else ""))
        self.stream.flush()


def progress_bar_for(stream: TextIO | None = None) -> ProgressBar | None:
    """A :class:`ProgressBar` on ``stream`` (stderr) when it is a terminal, else None (no output)."""
    stream = sys.stderr if stream is None else stream
    try:
        return ProgressBar(stream) if stream.isatty() else None
    except ValueError:  # a closed stream
        return None


def format_summary(stats: ReplayStats, *, max_problems: int = 10) -> str:
    """A few lines for people: what was replayed, how fast, and which lines were malformed."""
    what = f" from {Path(stats.source).name}" if stats.source else ""
    how = ", ".join(x for x in (stats.format, f"channel {stats.channel}" if stats.channel else None) if x)
    head = (
        f"replayed {stats.submitted:,} messages{what}{f' ({how})' if how else ''} in {stats.duration_s:.2f} s"
        f" ({stats.rate:,.0f} msg/s; the log spans {stats.log_span_s:.1f} s); {stats.malformed:,} malformed"
    )
    out = [head]
    for p in stats.problems[:max_problems]:
        out.append(f"  {stats.unit} {p.where}: {p.reason}")
    if stats.malformed > min(len(stats.problems), max_problems):
        out.append(f"  ... and {stats.malformed - min(len(stats.problems), max_problems):,} more")
    repaired = stats.repaired_lines
    if repaired:
        shown = ", ".join(str(n) for n in repaired[:max_problems])
        more = f" and {len(repaired) - max_problems:,} more" if len(repaired) > max_problems else ""
        out.append(
            f"  {len(repaired):,} line(s) held bytes that aren't UTF-8, replayed with U+FFFD in their"
            f" place: line {shown}{more}"
        )
    return "\n".join(out)
