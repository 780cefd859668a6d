"""``chatmood collect --top N --minutes M [--language en] [--game NAME]``: the chat of Twitch's most-watched
live channels for a while, stored through the same pipeline live chat takes (stored, classified, mood tracked),
then profiled for ``chatmood vibes``.

The Twitch side (Get Streams, EventSub limits, channels going offline) is :mod:`bot.twitch.collector`. While it
runs, a progress line on stderr (a terminal only; elsewhere one line a minute) shows the time left and the
messages per channel; at the end it prints every channel with its count, which ones went offline, and which
could not be joined and why.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from bot.config import BotConfig, Config
from bot.errors import ConfigError
from bot.outbox import log_only
from bot.pipeline import open_pipeline
from bot.tasks import supervise
from bot.twitch.collector import Channel, ChatCollector
from bot.twitch.tokens import TokenStore
from bot.vibes.recommend import open_vibes

PROGRESS_EVERY_S = 0.5
PLAIN_PROGRESS_EVERY_S = 60.0


def _clock_text(seconds: float) -> str:
    s = max(0, int(seconds + 0.5))
    return f"{s // 60}:{s % 60:02d}" if s < 3600 else f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def progress_line(channels: Sequence[Channel], left_s: float, total_s: float, elapsed_s: float) -> str:
    """One line: a bar of the time gone, time left, channels read, messages (and per second), the busiest."""
    width = 20
    done = min(1.0, elapsed_s / total_s) if total_s > 0 else 1.0
    reading = sum(1 for c in channels if c.reading)
    total = sum(c.messages for c in channels)
    rate = total / elapsed_s if elapsed_s > 0 else 0.0
    busiest = sorted((c for c in channels if c.messages), key=lambda c: (-c.messages, c.stream.login))[:3]
    top = ", ".join(f"{c.stream.login} {c.messages:,}" for c in busiest)
    bar = "#" * int(done * width) + "-" * (width - int(done * width))
    return (f"[{bar}] {_clock_text(left_s)} left  {reading} channels  {total:,} msgs ({rate:,.1f}/s)"
            + (f"  top: {top}" if top else ""))


def summary_lines(channels: Sequence[Channel], minutes: float) -> list[str]:
    joined = [c for c in channels if c.joined_at is not None and c.refused is None]
    refused = [c for c in channels if c.refused is not None]
    total = sum(c.messages for c in joined)
    out = [f"collected {total:,} messages from {len(joined)} of {len(channels)} channels in {minutes:g} min"]
    if joined:
        width = max(len("channel"), *(len(c.stream.login) for c in joined))
        game_w = min(28, max(len("category"), *(len(c.stream.game) for c in joined)))
        out.append(f"  {'channel':<{width}}  {'viewers':>8}  {'category':<{game_w}}  {'messages':>8}  note")
        for c in sorted(joined, key=lambda c: (-c.messages, c.stream.login)):
            note = ""
            if c.offline_at is not None and c.joined_at is not None:
                note = f"went offline after {_clock_text((c.offline_at - c.joined_at).total_seconds())}"
            out.append(f"  {c.stream.login:<{width}}  {c.stream.viewers:>8,}  {c.stream.game[:game_w]:<{game_w}}  "
                       f"{c.messages:>8,}  {note}".rstrip())
    if refused:
        out.append(f"not joined ({len(refused)}):")
        out.extend(f"  {c.stream.login}: {c.refused}" for c in refused)
    return out


def pick_bot(cfg: Config, name: str | None) -> BotConfig:
    if not cfg.bots:
        raise ConfigError(cfg.source, ["bots: collect reads chat with a bot account's token: add a [[bots]] table"])
    if not cfg.twitch.client_id:
        raise ConfigError(cfg.source, ["twitch.client_id: required to collect (your Twitch application's id)"])
    if name is None:
        if len(cfg.bots) > 1:
            raise ConfigError(cfg.source, [f"--bot: choose one of {', '.join(b.name for b in cfg.bots)}"])
        return cfg.bots[0]
    for b in cfg.bots:
        if b.name == name:
            return b
    raise ConfigError(cfg.source, [f"--bot: no bot named {name!r} (bots: {', '.join(b.name for b in cfg.bots)})"])


async def cmd_collect(
    cfg: Config,
    *,
    top: int,
    minutes: float,
    language: str | None = None,
    game: str | None = None,
    bot: str | None = None,
    out: TextIO | None = None,
    progress: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    collector_options: dict[str, Any] | None = None,
) -> int:
    """Collect, store, profile; print what was collected. ``collector_options`` are passed to the
    :class:`~bot.twitch.collector.ChatCollector` (tests shorten its polls)."""
    out = out or sys.stdout
    progress = progress or sys.stderr
    bot_cfg = pick_bot(cfg, bot)
    tty = progress.isatty()
    total_s = minutes * 60.0
    async with open_pipeline(cfg) as p, supervise({**p.services(), "outbox": p.outbox.drain(log_only)}):
        store = TokenStore(cfg.resolve(bot_cfg.token_path))
        async with ChatCollector(cfg.twitch, bot_cfg, token_store=store, on_chat=p.ingest.submit,
                                 **(collector_options or {})) as c, supervise({"collector": c.watch()}):
            streams = await c.top_streams(top, language=language, game=game)
            if not streams:
                print("no live streams match" + (f" (language {language})" if language else "")
                      + (f" (category {game!r})" if game else ""), file=out)
                return 1

            def joining(done: int, total: int) -> None:
                if tty:
                    progress.write(f"\rjoining chat {done}/{total}")
                    progress.flush()

            await c.join(streams, progress=joining)
            if tty:
                progress.write("\n")
            started = clock()
            last_plain = started
            while (left := total_s - (clock() - started)) > 0:
                await asyncio.sleep(min(PROGRESS_EVERY_S, left))
                now = clock()
                line = progress_line(list(c.channels.values()), total_s - (now - started), total_s, now - started)
                if tty:
                    progress.write("\r" + line[:200].ljust(120))
                    progress.flush()
                elif now - last_plain >= PLAIN_PROGRESS_EVERY_S:
                    last_plain = now
                    print(line, file=progress, flush=True)
            if tty:
                progress.write("\n")
            channels = list(c.channels.values())
        read = [ch.stream.login for ch in channels if ch.joined_at is not None]
        await p.settle(read)
        for line in summary_lines(channels, minutes):
            print(line, file=out)
        for line in p.summary(read):
            print(line, file=out)
        if read:
            async with open_vibes(cfg, p.storage) as vibes:
                report = await vibes.store.refresh(read)
            print(f"profiles: {report.channels} channels profiled ({report.embedded} lines embedded); "
                  f'rank them with chatmood vibes "a calm and cozy community"', file=out)
    return 0
