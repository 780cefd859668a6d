"""What every log parser shares: :class:`ParsedLog` (a one-pass iterator of ChatLines that counts and
records malformed lines), and the small conversions the formats have in common.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import structlog

from bot.domain import KNOWN_BADGES, ChatLine, EmoteSpan, clean_text
from bot.errors import ReplayError

log = structlog.get_logger(__name__)

LogFormat = Literal["rechat", "justlog", "chatterino", "jsonl"]

#: Anchor for times that carry no date (Chatterino logs, JSONL ``offset``).
REPLAY_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
#: How many malformed lines are remembered (all are counted).
MAX_PROBLEMS = 1000

_LOGGED_PROBLEMS = 10
LOGIN = re.compile(r"[a-z0-9_]{1,25}")
_BADGE_ALIASES = {"founder": "subscriber"}


@dataclass(frozen=True, slots=True)
class Problem:
    """One malformed line (or rechat array element) and why it was skipped."""

    where: int  # 1-based line number; for rechat the array index
    reason: str


def normalise_channel(name: str) -> str:
    channel = name.strip().lstrip("#").lower()
    if not LOGIN.fullmatch(channel):
        raise ReplayError(f"channel {name!r} is not a Twitch login (1-25 of a-z, 0-9, _)")
    return channel


def parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"time {value!r} is not a string")
    at = datetime.fromisoformat(value.strip())
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    return value


def emote_spans(text: str, raw: Iterable[tuple[str, int, int]]) -> tuple[EmoteSpan, ...]:
    """The (exclusive) spans that fit ``text``, in order; :class:`ChatLine` moves them if it cleans the text."""
    out = [EmoteSpan(emote_id, begin, end) for emote_id, begin, end in raw
           if 0 <= begin < end <= len(text) and emote_id]
    return tuple(sorted(out, key=lambda s: s.begin))


def is_blank(text: str) -> bool:
    """Nothing left to store once the text is cleaned."""
    return not clean_text(text).strip()


def badges_from(names: Iterable[str]) -> frozenset[str]:
    return frozenset(b for b in (_BADGE_ALIASES.get(n, n) for n in names) if b in KNOWN_BADGES)


class ParsedLog:
    """A detected chat log: ``format``, and ``lines``, a one-pass iterator of ChatLines.

    ``malformed`` (the count) and ``problems`` (the first :data:`MAX_PROBLEMS`) grow while
    ``lines`` is consumed. Iterating the object iterates ``lines``; ``close()`` (or
    ``with``) releases the file early.
    """

    def __init__(self, path: Path, fmt: LogFormat, channel: str | None, total_hint: int | None) -> None:
        self.path = path
        self.format: LogFormat = fmt
        self.channel = channel  # the override, or the channel the log names (None: per line)
        self.unit: Literal["line", "element"] = "element" if fmt == "rechat" else "line"
        self.total_hint = total_hint  # messages (rechat) or physical lines (the rest): for an ETA
        self.malformed = 0
        self.problems: list[Problem] = []
        # Physical lines whose bytes weren't UTF-8 but were kept, the bad bytes replaced by U+FFFD (rechat).
        self.repaired_lines: list[int] = []
        self.lines = LogLines(self, iter(()))

    def bad(self, where: int, reason: str) -> None:
        self.malformed += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(where, reason))
        if self.malformed <= _LOGGED_PROBLEMS:
            log.warning("replay_malformed", path=str(self.path), unit=self.unit, where=where, reason=reason)

    def __iter__(self) -> Iterator[ChatLine]:
        return self.lines

    def close(self) -> None:
        self.lines.close()

    def __enter__(self) -> ParsedLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogLines(Iterator[ChatLine]):
    """``ParsedLog.lines``: a one-pass iterator that knows its log, so a replay can report its problems."""

    def __init__(self, parsed: ParsedLog, lines: Iterator[ChatLine]) -> None:
        self.parsed = parsed
        self._lines = lines

    def __next__(self) -> ChatLine:
        return next(self._lines)

    def close(self) -> None:
        close = getattr(self._lines, "close", None)
        if close is not None:
            close()


def physical_lines(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line number, text without line ending, whether the bytes were UTF-8). Bytes that aren't UTF-8 are
    replaced by U+FFFD in the text; each format decides whether such a line is still usable."""
    try:
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    yield lineno, raw.decode("utf-8").rstrip("\r\n"), True
                except UnicodeDecodeError:
                    yield lineno, raw.decode("utf-8", "replace").rstrip("\r\n"), False
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def decode_replacing(raw: bytes) -> tuple[str, list[int]]:
    """``raw`` as text, bytes that aren't UTF-8 replaced by U+FFFD, and the (1-based) lines that held such bytes."""
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    bad: list[int] = []
    for lineno, line in enumerate(raw.split(b"\n"), 1):  # 0x0A is never part of a multi-byte UTF-8 sequence
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(lineno)
    return raw.decode("utf-8", "replace"), bad
