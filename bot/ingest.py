"""Ingest: the one path every chat message takes, live from Twitch or replayed from a log.

``Ingest.submit(line)`` is a plain call that never waits: it drops redeliveries it has
just seen, hands the message to the batched writer (storage), offers it to the
classifier (which samples under overload) and passes commands to the command queue.
Nothing here awaits the database or a model, so a slow one never stalls chat.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from bot.domain import ChatLine, clean_text

log = structlog.get_logger(__name__)


class MessageSink(Protocol):
    def submit(self, line: ChatLine) -> None: ...


@dataclass
class IngestStats:
    received: int = 0
    redelivered: int = 0
    rejected: int = 0


class Ingest:
    def __init__(
        self,
        *,
        writer: MessageSink,
        classify: Callable[[ChatLine], None] | None = None,
        command: Callable[[ChatLine], None] | None = None,
        is_command: Callable[[ChatLine], bool] = lambda line: line.text.startswith("!"),
        remember: int = 20_000,
    ) -> None:
        self._writer = writer
        self._classify = classify
        self._command = command
        self.is_command = is_command
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self.stats = IngestStats()

    def submit(self, line: ChatLine) -> bool:
        """Take one message. Returns False when it was a redelivery or unusable (and logged)."""
        if not line.message_id or not line.channel:
            self.stats.rejected += 1
            log.warning("message_rejected", reason="missing id or channel", message_id=line.message_id)
            return False
        if line.message_id in self._recent:
            self._recent.move_to_end(line.message_id)
            self.stats.redelivered += 1
            return False
        self._recent[line.message_id] = None
        if len(self._recent) > self._remember:
            self._recent.popitem(last=False)
        if "\x00" in line.text:
            line = replace(line, text=clean_text(line.text))
        self.stats.received += 1
        # Storage first: whatever happens after, the message is not lost.
        self._writer.submit(line)
        # Commands are steering, not mood: they go to the command queue, not the classifier.
        command = self.is_command(line)
        if self._command is not None and command:
            self._command(line)
        if self._classify is not None and not command:
            self._classify(line)
        return True
