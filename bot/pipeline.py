"""The message path, built in the order data flows through it.

::

    ChatLine ──> Ingest.submit ──┬──> MessageWriter (storage)            the message is never lost
                                 ├──> History (recent chat in memory: what !label and the dashboard read)
                                 ├──> ClassifierService.offer ──> Verdicts.take ──┬──> MessageWriter (verdicts)
                                 │                                                ├──> History (labels)
                                 │                                                └──> MoodPublisher ──> MoodHub
                                 ├──> PersonaService.offer ──> (a model, off the loop) ──> Outbox
                                 │        (reads the mood from MoodPublisher)
                                 └──> CommandQueue.offer ──> CommandExecutor ──> Outbox ──> (whoever sends)

:func:`open_pipeline` opens storage and the classifier (resources, closed in reverse) and wires the rest
from the end of the path backwards, so every part exists before the part that feeds it: no holders, no
callbacks bound later. :meth:`Pipeline.services` names the loops the parts need; the program that opened
the pipeline runs them with :func:`bot.tasks.supervise`, together with ``storage.tasks.watch()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from bot.classify.classifier import load_classifier
from bot.classify.service import ClassifierService
from bot.commands.executor import CommandExecutor
from bot.commands.queue import CommandQueue
from bot.commands.router import CommandRouter
from bot.config import Config
from bot.domain import ChatLine, Verdict, percent
from bot.history.reads import History
from bot.ingest import Ingest
from bot.mood.hub import MoodHub
from bot.mood.publisher import MoodPublisher
from bot.mood.tracker import MoodTracker
from bot.outbox import Outbox
from bot.persona.service import PersonaService
from bot.storage.batch import WriterStats
from bot.storage.store import Storage, open_storage
from bot.storage.writer import MessageWriter

log = structlog.get_logger(__name__)


class Verdicts:
    """Where the classifier's verdicts go: onto their messages (stored, and in memory), and into the mood."""

    def __init__(self, writer: MessageWriter, history: History, mood: MoodPublisher) -> None:
        self._writer = writer
        self._history = history
        self._mood = mood

    def take(self, pairs: list[tuple[ChatLine, Verdict]]) -> None:
        for line, verdict in pairs:
            self._writer.submit_verdict(line.message_id, verdict)
        self._history.classified(pairs)
        self._mood.observe(pairs)


@dataclass
class Pipeline:
    cfg: Config
    storage: Storage
    mood: MoodPublisher
    classifier: ClassifierService
    outbox: Outbox
    commands: CommandQueue
    ingest: Ingest
    history: History
    clock: Callable[[], float] = time.time
    personas: PersonaService | None = None  # None in a replay: recorded chat is not answered

    def services(self) -> dict[str, Coroutine[Any, Any, None]]:
        services = {
            "storage": self.storage.tasks.watch(),
            "classifier": self.classifier.run(),
            "commands": self.commands.run(),
            "mood-ticker": self.mood.tick(),
            "mood-snapshots": self._snapshots(),
        }
        if self.personas is not None:
            services |= {"personas": self.personas.run(), "persona-moderators": self.personas.watch_mood()}
        return services

    def apply(self, new: Config) -> None:
        """A reloaded config, in place: smoothing, commands, categories and personas (storage, classifier and
        overlay settings need a restart, see :mod:`bot.reload`)."""
        self.mood.tracker.update_config(new.categories, new.mood.half_life_s, new.mood.neutral_prior)
        self.commands.router.update_config(new.commands, new.category_names, new.bot_accounts)
        if self.personas is not None:
            self.personas.update(new)
        self.cfg = new

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.mood.snapshot_interval_s)
            for channel in list(self.mood.tracker.channels()):
                await self.save_snapshot(channel)

    async def settle(self, channels: Iterable[str]) -> None:
        """After a replay: everything offered is classified, commands are handled, everything is stored, and
        the timeline has a point."""
        await self.classifier.drain()
        await self.commands.join()
        if self.personas is not None:
            await self.personas.join()
        await self.storage.writer.flush()
        for channel in channels:
            await self.save_snapshot(channel)

    async def save_snapshot(self, channel: str) -> None:
        tracker = self.mood.tracker
        state = tracker.state(channel)
        counts = tracker.take_counts(channel)
        bucket = datetime.fromtimestamp(self.clock(), UTC)
        self.history.snapshot(state, bucket)  # the timeline keeps it even if the database can't
        try:
            await self.storage.save_snapshot(state, bucket=bucket, counts=counts)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the timeline misses a point; chat itself is never lost
            log.warning("snapshot_failed", channel=channel, error=str(e))

    def summary(self, channels: Iterable[str]) -> list[str]:
        """What a replay or the demo prints at the end: what was stored, and each channel's mood."""
        w = self.storage.writer.stats
        lines = [f"stored: {w.inserted} new, {w.duplicates} already stored" + spool_note(w, self.cfg)]
        for channel in sorted(channels):
            s = self.mood.state(channel)
            seen = f"{s.messages} classified" + (f", {s.skipped} skipped" if s.skipped else "")
            leaning = s.leaning()
            lean = f", {leaning}," if leaning else ""
            named = f"{s.label} {percent(s.share)}%"
            lines.append(f"mood #{channel}: {named}{lean} valence {s.valence:+.2f} {s.colour} ({seen})")
        return lines


def spool_note(w: WriterStats, cfg: Config) -> str:
    """Why messages still wait in the spool: an unreachable database, or one too slow to answer in time."""
    if not w.spool_pending:
        return ""
    if w.last_failure == "timeout":
        why = f"the database did not answer within {cfg.storage.server_timeout_ms} ms"
    else:
        why = "the database is unreachable"
    return f", {w.spool_pending} waiting in the spool ({why}; the next start writes them back)"


@contextlib.asynccontextmanager
async def open_pipeline(
    cfg: Config, *, clock: Callable[[], float] = time.time, personas: bool = True
) -> AsyncIterator[Pipeline]:
    """The message path for ``cfg``; ``personas=False`` leaves the personas out (a replay answers no one)."""
    async with contextlib.AsyncExitStack() as stack:
        storage = await stack.enter_async_context(
            open_storage(cfg.storage, spool_dir=cfg.resolve(cfg.storage.spool_dir))
        )
        classifier = await asyncio.to_thread(load_classifier, cfg)
        # Closed off the loop: it waits for a model call still running on a worker thread.
        stack.push_async_callback(asyncio.to_thread, classifier.close)
        tracker = MoodTracker(cfg.categories, cfg.mood.half_life_s, cfg.mood.neutral_prior, clock=clock)
        hub = MoodHub()
        stack.callback(hub.close)
        mood = MoodPublisher(tracker, hub)
        history = History(cfg.history, storage)
        verdicts = Verdicts(storage.writer, history, mood)
        service = ClassifierService(classifier, cfg, verdicts.take, rng=random.Random(), on_skipped=tracker.add_skipped)
        outbox = Outbox()
        talk = PersonaService(cfg, mood, outbox) if personas else None
        if talk is not None:
            stack.push_async_callback(talk.aclose)  # frees the models (after the services have stopped)
        executor = CommandExecutor(storage, history, mood, outbox.post)
        commands = CommandQueue(CommandRouter(cfg.commands, cfg.category_names, cfg.bot_accounts), executor)
        ingest = Ingest(
            writer=storage.writer, classifier=service, commands=commands, recent=history, personas=talk
        )
        yield Pipeline(cfg, storage, mood, service, outbox, commands, ingest, history, clock, talk)
