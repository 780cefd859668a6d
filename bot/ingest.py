"""Ingest: the one path every chat message takes, live from Twitch or replayed from a log.

``Ingest.submit(line)`` is a plain call that never waits: it drops redeliveries it has
just seen, hands the message to the batched writer (storage) and to the recent-chat
windows (history), offers it to the classifier (which samples under overload) and to the
personas (which may queue a reply), and passes commands to the command queue.
Nothing here awaits the database or a model, so a slow one never stalls chat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import structlog

from bot.domain import ChatLine, SeenIds

log = structlog.get_logger(__name__)


class MessageSink(Protocol):
    """Storage's writer: takes a message without waiting (a command is stored, never classified)."""

    def submit(self, line: ChatLine, *, command: bool = False) -> None: ...


class RecentChat(Protocol):
    """The pipeline's in-memory windows of recent chat: take a message without waiting."""

    def observe(self, line: ChatLine, *, command: bool) -> None: ...


class Classifying(Protocol):
    """The classifier service: takes a message to classify without waiting (it samples under overload)."""

    def offer(self, line: ChatLine) -> None: ...


class Commanding(Protocol):
    """The command queue: tells command lines apart and takes them without waiting."""

    def is_command(self, line: ChatLine) -> bool: ...

    def offer(self, line: ChatLine) -> None: ...


class Conversing(Protocol):
    """The personas: see every chat line that is not a command, without waiting (they queue replies)."""

    def offer(self, line: ChatLine) -> None: ...


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
        classifier: Classifying,
        commands: Commanding,
        recent: RecentChat | None = None,
        personas: Conversing | None = None,
        remember: int = 20_000,
    ) -> None:
        self._writer = writer
        self._classifier = classifier
        self._commands = commands
        self._chat = recent
        self._personas = personas
        self._recent = SeenIds(remember)
        self.stats = IngestStats()

    def submit(self, line: ChatLine) -> bool:
        """Take one message. Returns False when it was a redelivery or unusable (and logged)."""
        if not line.message_id or not line.channel:
            self.stats.rejected += 1
            log.warning("message_rejected", reason="missing id or channel", message_id=line.message_id)
            return False
        if not self._recent.first_time(line.message_id):
            self.stats.redelivered += 1
            return False
        self.stats.received += 1
        command = self._commands.is_command(line)
        # Storage first: whatever happens after, the message is not lost.
        self._writer.submit(line, command=command)
        if self._chat is not None:  # before the command runs, so `!label` sees what came before it
            self._chat.observe(line, command=command)
        # Commands are steering, not mood: they go to the command queue, not the classifier.
        if command:
            self._commands.offer(line)
        else:
            self._classifier.offer(line)
            if self._personas is not None:
                self._personas.offer(line)
        return True
