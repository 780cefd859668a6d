"""Text chat logs: ``[YYYY-MM-DD HH:MM:SS UTC] user: message`` (justlog, OverRustle) and Chatterino's
``[HH:MM:SS] user: message`` (see :mod:`bot.replay.logfile` for the rules).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import structlog

from bot.domain import ChatLine, synthetic_message_id
from bot.errors import ReplayError
from bot.replay.parsed import (
    REPLAY_EPOCH,
    ParsedLog,
    is_blank,
    physical_lines,
)

log = structlog.get_logger(__name__)

TEXT_LINE = re.compile(
    r"\[(?:(?P<date>\d{4}-\d{1,2}-\d{1,2})[ T])?"
    r"(?P<time>\d{1,2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)(?: ?UTC)?\]"
    r"\s+(?:#(?P<channel>[A-Za-z0-9_]{1,25})\s+)?"
    r"(?P<user>[^\s:\[\]]{1,64}?)(?: \((?P<login>[A-Za-z0-9_]{1,25})\))?:(?: (?P<text>.*))?\Z"
)
_START_HEADER = re.compile(r"#\s*Start logging at (\d{4}-\d{2}-\d{2})")
_NAME_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")
_NAME_CHANNEL = re.compile(r"^#?([a-z0-9_]{1,25})-\d{4}-\d{2}-\d{2}")


def text_channel(path: Path, seen: list[str]) -> str | None:
    for line in seen:
        match = TEXT_LINE.match(line)
        if match is not None and match["channel"]:
            return None  # every line names its channel
    named = _NAME_CHANNEL.match(path.name.lower())
    if named is None:
        raise ReplayError(f"{path}: the log does not name its channel; pass --channel NAME")
    return named[1]


def text_date(path: Path, seen: list[str]) -> date:
    for line in seen:
        header = _START_HEADER.match(line)
        if header is not None:
            try:
                return date.fromisoformat(header[1])
            except ValueError:
                continue  # reported with its line number by parse_text
    named = _NAME_DATE.search(path.name)
    if named is not None:
        try:
            return date.fromisoformat(named[1])
        except ValueError:
            pass
    return REPLAY_EPOCH.date()


def _clock(value: str) -> timedelta:
    parts = value.split(":")
    seconds = float(parts[2]) if len(parts) > 2 else 0.0
    hours, minutes = int(parts[0]), int(parts[1])
    if hours > 23 or minutes > 59 or seconds >= 60:
        raise ValueError(f"bad time of day {value!r}")
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def parse_text(parsed: ParsedLog, day: date) -> Iterator[ChatLine]:
    previous: timedelta | None = None
    for lineno, raw, utf8 in physical_lines(parsed.path):
        if not utf8:
            parsed.bad(lineno, "not UTF-8")
            continue
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            header = _START_HEADER.match(line)
            if header is not None:
                try:
                    day, previous = date.fromisoformat(header[1]), None
                except ValueError as exc:
                    parsed.bad(lineno, f"'Start logging' header with a bad date: {exc}")
            continue
        match = TEXT_LINE.match(line)
        if match is None:
            parsed.bad(lineno, "not '[time] user: message'")
            continue
        try:
            of_day = _clock(match["time"])
            if match["date"]:
                y, m, d = (int(p) for p in match["date"].split("-"))
                day = date(y, m, d)
            elif previous is not None and of_day < previous - timedelta(hours=1):
                day += timedelta(days=1)  # the clock went past midnight
        except ValueError as exc:
            parsed.bad(lineno, str(exc))
            continue
        previous = of_day
        channel = parsed.channel or match["channel"]
        text = match["text"] or ""
        if not channel:
            parsed.bad(lineno, "no channel")
            continue
        if is_blank(text):
            parsed.bad(lineno, "empty message")
            continue
        sent_at = datetime.combine(day, datetime.min.time(), UTC) + of_day
        user = match["user"]
        login = (match["login"] or user).lower()
        channel = channel.lower()
        try:
            chat = ChatLine(
                message_id=synthetic_message_id(channel, sent_at, login, text, lineno),
                channel=channel,
                user_id="",
                user_login=login,
                user_name=user,
                text=text,
                sent_at=sent_at,
            )
        except ValueError as exc:  # a user name holding a NUL (UnstorableField)
            parsed.bad(lineno, str(exc))
            continue
        yield chat
