"""bot.ingest: every message goes to storage first; commands to the command queue, the rest to the classifier;
redeliveries and unusable lines go nowhere. Nothing here waits."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.domain import ChatLine
from bot.ingest import Ingest
from tests.fakes.chat import chat_line


@dataclass
class Path:
    """Records which part of the message path saw which message, in order."""

    seen: list[tuple[str, str]] = field(default_factory=list)

    def submit(self, line: ChatLine, *, command: bool = False) -> None:  # the writer
        self.seen.append(("stored", line.message_id))
        self.commands.append(command)

    commands: list[bool] = field(default_factory=list)  # what the writer was told: a command or not


@dataclass
class Recent:
    """The in-memory windows of recent chat (history)."""

    path: Path

    def observe(self, line: ChatLine, *, command: bool) -> None:
        self.path.seen.append(("recent" + (" command" if command else ""), line.message_id))


@dataclass
class Classifier:
    path: Path

    def offer(self, line: ChatLine) -> None:
        self.path.seen.append(("classify", line.message_id))


@dataclass
class Commands:
    path: Path

    def is_command(self, line: ChatLine) -> bool:
        return line.text.startswith("!mood")

    def offer(self, line: ChatLine) -> None:
        self.path.seen.append(("command", line.message_id))


def ingest(path: Path, remember: int = 100) -> Ingest:
    return Ingest(writer=path, classifier=Classifier(path), commands=Commands(path), remember=remember)


class TestIngest:
    def test_storage_first_then_classifier_or_commands(self) -> None:
        path = Path()
        i = ingest(path)
        assert i.submit(chat_line("LETS GO", message_id="a"))
        assert i.submit(chat_line("!mood", message_id="b"))
        assert path.seen == [("stored", "a"), ("classify", "a"), ("stored", "b"), ("command", "b")]
        assert i.stats.received == 2

    def test_a_redelivery_goes_nowhere(self) -> None:
        path = Path()
        i = ingest(path)
        line = chat_line("hello", message_id="same")
        assert i.submit(line) and not i.submit(line)
        assert path.seen == [("stored", "same"), ("classify", "same")]
        assert (i.stats.received, i.stats.redelivered) == (1, 1)

    def test_the_memory_of_ids_is_bounded(self) -> None:
        path = Path()
        i = ingest(path, remember=2)
        for mid in ("a", "b", "c"):
            i.submit(chat_line("x", message_id=mid))
        assert i.submit(chat_line("x", message_id="a"))  # forgotten: taken again (the writer de-dups by _id)
        assert not i.submit(chat_line("x", message_id="c"))

    def test_a_line_without_id_or_channel_is_rejected(self) -> None:
        path = Path()
        i = ingest(path)
        assert not i.submit(ChatLine("", "chan", "1", "u", "u", "hi", chat_line("x").sent_at))
        assert not i.submit(ChatLine("id", "", "1", "u", "u", "hi", chat_line("x").sent_at))
        assert path.seen == [] and i.stats.rejected == 2

    def test_recent_chat_sees_every_message_before_the_command_runs(self) -> None:
        """The windows !label reads get each message (commands marked) before the command queue does, and
        the writer is told which lines are commands (stored, never classified)."""
        path = Path()
        i = Ingest(writer=path, classifier=Classifier(path), commands=Commands(path), recent=Recent(path))
        i.submit(chat_line("LETS GO", message_id="a"))
        i.submit(chat_line("!mood", message_id="b"))
        assert path.seen == [
            ("stored", "a"),
            ("recent", "a"),
            ("classify", "a"),
            ("stored", "b"),
            ("recent command", "b"),
            ("command", "b"),
        ]
        assert path.commands == [False, True]

@dataclass
class Personas:
    path: Path

    def offer(self, line: ChatLine) -> None:
        self.path.seen.append(("personas", line.message_id))


class TestPersonas:
    def test_personas_see_every_line_but_commands_after_the_classifier(self) -> None:
        path = Path()
        i = Ingest(writer=path, classifier=Classifier(path), commands=Commands(path), personas=Personas(path))
        i.submit(chat_line("@moody hi", message_id="a"))
        i.submit(chat_line("!mood", message_id="b"))
        i.submit(chat_line("@moody hi", message_id="a"))  # a redelivery is not offered twice
        assert path.seen == [("stored", "a"), ("classify", "a"), ("personas", "a"), ("stored", "b"), ("command", "b")]
