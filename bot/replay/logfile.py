"""Recorded chat logs read as ChatLines: format detection and one parser per format.

``open_log(path, channel)`` detects the format from the first lines of the file and
returns a :class:`ParsedLog`, a one-pass iterator of :class:`~bot.domain.ChatLine`;
``to_jsonl(line)`` writes chatmood's own format. :mod:`bot.replay` feeds the lines to
ingest on a schedule.

Formats
-------
``rechat``
    Twitch's old v5 "rechat" comments JSON: an array whose element 0 is the video's
    metadata (``channel.name``, ``recorded_at``) and whose later elements are comments
    (``_id``, ``created_at``, ``content_offset_seconds``, ``commenter{name,
    display_name,_id}``, ``message{body, emoticons[{_id,begin,end}], user_badges[{_id,
    version}]}``). The object form ``{"comments": [...]}`` (optionally with
    ``streamer.name`` or ``video``/``channel`` metadata) is accepted too. The file is
    loaded whole. Rechat emote ``end`` offsets are inclusive; they become exclusive
    :class:`~bot.domain.EmoteSpan` ends. ``founder`` badges count as ``subscriber``.
    Problems are reported by array index ("element N").
``justlog``
    Text lines ``[YYYY-MM-DD HH:MM:SS UTC] user: message`` (OverRustle), also without
    ``UTC`` and with a ``#channel`` before the user (justlog).
``chatterino``
    Text lines ``[HH:MM:SS] user: message``. The date comes from a ``# Start logging at
    YYYY-MM-DD ...`` header, else from a ``YYYY-MM-DD`` in the file name, else it is
    :data:`REPLAY_EPOCH`'s date; a clock that jumps back by more than an hour is a
    midnight, so the date moves on. Chatterino writes local time; it is taken as UTC.
    Both text styles may be mixed in one file. ``Name (login)`` users are understood.
``jsonl``
    chatmood's own format, one JSON object per line (written by :func:`to_jsonl`)::

        {"message_id": "...", "channel": "demo", "user_login": "pixel_otter",
         "user_name": "Pixel_Otter", "user_id": "1001", "text": "PogChamp what a play",
         "sent_at": "2025-06-14T19:00:01.500Z", "badges": ["subscriber"],
         "emotes": [{"emote_id": "305954156", "begin": 0, "end": 8}], "reply_to": null}

    Required: ``user_login``, ``text``, and a time: ``sent_at`` (ISO-8601; without a
    zone it is UTC) or ``offset`` (seconds after :data:`REPLAY_EPOCH`). ``channel`` is
    required unless ``--channel`` is given. Optional: ``message_id``, ``user_name``
    (defaults to the login), ``user_id``, ``badges`` (unknown ones are ignored),
    ``emotes`` (``end`` exclusive, code points), ``reply_to``, ``channel_id``.
    Other keys are ignored, so the format can grow.

Common rules: a ``channel`` argument overrides what the log says. Lines without a
Twitch message id get :func:`~bot.domain.synthetic_message_id` from channel, time,
user, text and position (the line number, or the array index for rechat), so replaying
a file twice stores nothing new. NUL characters are removed (emote spans shift with
them). Malformed lines are counted and recorded with their line numbers (the first
:data:`MAX_PROBLEMS` kept), never fatal; a file that cannot be read or whose format
cannot be told raises :class:`~bot.errors.ReplayError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import structlog

from bot.domain import KNOWN_BADGES, ChatLine, EmoteSpan, clean_text, synthetic_message_id
from bot.errors import ReplayError

log = structlog.get_logger(__name__)

LogFormat = Literal["rechat", "justlog", "chatterino", "jsonl"]

#: The bundled, self-written sample chat that ``chatmood demo`` replays as ``demo``.
SAMPLE_CHAT = Path(__file__).parent / "data" / "sample_chat.jsonl"
#: Anchor for times that carry no date (Chatterino logs, JSONL ``offset``).
REPLAY_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
#: How many malformed lines are remembered (all are counted).
MAX_PROBLEMS = 1000

_SNIFF_LINES = 20
_LOGGED_PROBLEMS = 10
_LOGIN = re.compile(r"[a-z0-9_]{1,25}")
_BADGE_ALIASES = {"founder": "subscriber"}
_TEXT_LINE = re.compile(
    r"\[(?:(?P<date>\d{4}-\d{1,2}-\d{1,2})[ T])?"
    r"(?P<time>\d{1,2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)(?: ?UTC)?\]"
    r"\s+(?:#(?P<channel>[A-Za-z0-9_]{1,25})\s+)?"
    r"(?P<user>[^\s:\[\]]{1,64}?)(?: \((?P<login>[A-Za-z0-9_]{1,25})\))?:(?: (?P<text>.*))?\Z"
)
_START_HEADER = re.compile(r"#\s*Start logging at (\d{4}-\d{2}-\d{2})")
_NAME_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")
_NAME_CHANNEL = re.compile(r"^#?([a-z0-9_]{1,25})-\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class Problem:
    """One malformed line (or rechat array element) and why it was skipped."""

    where: int  # 1-based line number; for rechat the array index
    reason: str


def _normalise_channel(name: str) -> str:
    channel = name.strip().lstrip("#").lower()
    if not _LOGIN.fullmatch(channel):
        raise ReplayError(f"channel {name!r} is not a Twitch login (1-25 of a-z, 0-9, _)")
    return channel


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"time {value!r} is not a string")
    at = datetime.fromisoformat(value.strip())
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    return value


def _spans(text: str, raw: Iterable[tuple[str, int, int]]) -> tuple[str, tuple[EmoteSpan, ...]]:
    """Clean NUL out of ``text`` and shift the (exclusive) spans with it; drop spans that don't fit."""
    cleaned = clean_text(text)
    nuls = [i for i, ch in enumerate(text) if ch == "\x00"] if len(cleaned) != len(text) else []
    out: list[EmoteSpan] = []
    for emote_id, begin, end in raw:
        begin -= sum(1 for i in nuls if i < begin)
        end -= sum(1 for i in nuls if i < end)
        if 0 <= begin < end <= len(cleaned) and emote_id:
            out.append(EmoteSpan(emote_id, begin, end))
    return cleaned, tuple(sorted(out, key=lambda s: s.begin))


def _badges(names: Iterable[str]) -> frozenset[str]:
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


# --- reading --------------------------------------------------------------------------------------


def _physical_lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(line number, text without line ending), text None where the bytes aren't UTF-8."""
    try:
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    yield lineno, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError:
                    yield lineno, None
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _sniff(path: Path) -> tuple[LogFormat, list[str]]:
    """Tell the format from the first significant lines; returns it and the lines looked at."""
    seen: list[str] = []
    votes: dict[LogFormat, int] = {"justlog": 0, "chatterino": 0, "jsonl": 0}
    first: str | None = None
    undecodable = 0
    for _, text in _physical_lines(path):
        if text is None:
            undecodable += 1
            continue
        stripped = text.strip()
        if not stripped:
            continue
        seen.append(stripped)
        if stripped.startswith("#"):
            continue
        match = _TEXT_LINE.match(stripped)
        if first is None:
            first = stripped
            if stripped.startswith("[") and match is None:
                return "rechat", seen
            if stripped.startswith("{"):
                try:
                    obj = json.loads(stripped)
                except ValueError:
                    if stripped == "{":
                        return "rechat", seen
                    obj = None
                if isinstance(obj, dict) and isinstance(obj.get("comments"), list):
                    return "rechat", seen
        if match is not None:
            votes["justlog" if match["date"] else "chatterino"] += 1
        elif stripped.startswith("{"):
            try:
                votes["jsonl"] += isinstance(json.loads(stripped), dict)
            except ValueError:
                pass
        if len(seen) >= _SNIFF_LINES:
            break
    if first is None and undecodable:
        raise ReplayError(f"{path}: not a text file (not UTF-8); expected a chat log")
    if first is None:
        raise ReplayError(f"{path}: the file is empty (no chat lines): nothing to replay")
    if votes["jsonl"] == 0 and votes["justlog"] + votes["chatterino"] == 0:
        raise ReplayError(
            f"{path}: unknown chat log format; expected rechat JSON, '[YYYY-MM-DD HH:MM:SS UTC] user: message',"
            " '[HH:MM:SS] user: message' or chatmood JSONL"
        )
    if votes["jsonl"] > votes["justlog"] + votes["chatterino"]:
        return "jsonl", seen
    return ("justlog" if votes["justlog"] else "chatterino"), seen


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def open_log(path: Path, channel: str | None = None) -> ParsedLog:
    """Detect ``path``'s format and return its lines; ``channel`` overrides the log's channel.

    Raises :class:`ReplayError` when the file cannot be read, is empty, its format
    cannot be told, or no channel is known for a format whose lines don't name one.
    """
    path = Path(path)
    override = _normalise_channel(channel) if channel is not None else None
    if path.is_dir():
        raise ReplayError(f"{path}: is a directory, not a chat log")
    fmt, seen = _sniff(path)
    if fmt == "rechat":
        parsed = _open_rechat(path, override)
    elif fmt == "jsonl":
        parsed = ParsedLog(path, fmt, override, _count_lines(path))
        parsed.lines = LogLines(parsed, _parse_jsonl(parsed))
    else:
        text_channel = override or _text_channel(path, seen)
        parsed = ParsedLog(path, fmt, text_channel, _count_lines(path))
        parsed.lines = LogLines(parsed, _parse_text(parsed, _text_date(path, seen)))
    log.info("replay_opened", path=str(path), format=fmt, channel=parsed.channel)
    return parsed


# --- rechat -----------------------------------------------------------------------------------------


def _open_rechat(path: Path, override: str | None) -> ParsedLog:
    try:
        data: object = json.loads(path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ReplayError(f"{path}: looks like rechat JSON but is not valid JSON: {exc}") from exc
    meta: dict[str, object] = {}
    names: list[object] = []
    if isinstance(data, list):
        elements: list[object] = data
        first = 0
        if elements and isinstance(elements[0], dict) and "commenter" not in elements[0]:
            meta, first = elements[0], 1
    elif isinstance(data, dict) and isinstance(data.get("comments"), list):
        elements, first = data["comments"], 0
        meta = data["video"] if isinstance(data.get("video"), dict) else data
        streamer = data.get("streamer")
        names.append(streamer.get("name") if isinstance(streamer, dict) else None)
    else:
        raise ReplayError(f"{path}: JSON but not a rechat comments array or object")
    named = meta.get("channel")
    names.append(named.get("name") if isinstance(named, dict) else named)
    channel = override
    if channel is None:
        name = next((n for n in names if isinstance(n, str) and n.strip()), None)
        if name is None:
            raise ReplayError(f"{path}: the log does not name its channel; pass --channel NAME")
        channel = _normalise_channel(name)
    recorded: datetime | None
    try:
        recorded = _parse_time(meta.get("recorded_at"))
    except ValueError:
        recorded = None
    parsed = ParsedLog(path, "rechat", channel, len(elements) - first)
    parsed.lines = LogLines(parsed, _parse_rechat(parsed, elements, first, channel, recorded))
    return parsed


def _rechat_line(c: object, index: int, channel: str, recorded: datetime | None) -> ChatLine:
    if not isinstance(c, dict):
        raise ValueError("not a JSON object")
    commenter, message = c.get("commenter"), c.get("message")
    if not isinstance(commenter, dict) or not isinstance(message, dict):
        raise ValueError("no commenter or message object")
    body, login = message.get("body"), commenter.get("name")
    if not isinstance(body, str):
        raise ValueError("message.body is not a string")
    if not isinstance(login, str) or not login.strip():
        raise ValueError("commenter.name is missing")
    login = login.strip().lower()
    display = commenter.get("display_name")
    name = display.strip() if isinstance(display, str) and display.strip() else login
    if "created_at" in c:
        sent_at = _parse_time(c["created_at"])
    else:
        offset = c.get("content_offset_seconds")
        if recorded is None or isinstance(offset, bool) or not isinstance(offset, int | float):
            raise ValueError("no created_at, and no recorded_at + content_offset_seconds")
        sent_at = recorded + timedelta(seconds=offset)
    raw_spans = [
        (str(e.get("_id", "")), _int(e.get("begin")), _int(e.get("end")) + 1)  # rechat ends are inclusive
        for e in message.get("emoticons") or []
        if isinstance(e, dict)
    ]
    text, spans = _spans(body, raw_spans)
    if not text.strip():
        raise ValueError("empty message")
    badges = _badges(str(b.get("_id")) for b in message.get("user_badges") or [] if isinstance(b, dict))
    mid = c.get("_id")
    return ChatLine(
        message_id=mid if isinstance(mid, str) and mid else synthetic_message_id(channel, sent_at, login, text, index),
        channel=channel,
        user_id=str(commenter.get("_id") or ""),
        user_login=login,
        user_name=name,
        text=text,
        sent_at=sent_at,
        badges=badges,
        emotes=spans,
        channel_id=str(c.get("channel_id") or ""),
    )


def _parse_rechat(
    parsed: ParsedLog, elements: list[object], first: int, channel: str, recorded: datetime | None
) -> Iterator[ChatLine]:
    for index in range(first, len(elements)):
        try:
            yield _rechat_line(elements[index], index, channel, recorded)
        except (ValueError, TypeError, OverflowError) as exc:
            parsed.bad(index, str(exc))


# --- text logs --------------------------------------------------------------------------------------


def _text_channel(path: Path, seen: list[str]) -> str | None:
    for line in seen:
        match = _TEXT_LINE.match(line)
        if match is not None and match["channel"]:
            return None  # every line names its channel
    named = _NAME_CHANNEL.match(path.name.lower())
    if named is None:
        raise ReplayError(f"{path}: the log does not name its channel; pass --channel NAME")
    return named[1]


def _text_date(path: Path, seen: list[str]) -> date:
    for line in seen:
        header = _START_HEADER.match(line)
        if header is not None:
            return date.fromisoformat(header[1])
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


def _parse_text(parsed: ParsedLog, day: date) -> Iterator[ChatLine]:
    previous: timedelta | None = None
    for lineno, raw in _physical_lines(parsed.path):
        if raw is None:
            parsed.bad(lineno, "not UTF-8")
            continue
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            header = _START_HEADER.match(line)
            if header is not None:
                day, previous = date.fromisoformat(header[1]), None
            continue
        match = _TEXT_LINE.match(line)
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
        text = clean_text(match["text"] or "")
        if not channel:
            parsed.bad(lineno, "no channel")
            continue
        if not text.strip():
            parsed.bad(lineno, "empty message")
            continue
        sent_at = datetime.combine(day, datetime.min.time(), UTC) + of_day
        user = match["user"]
        login = (match["login"] or user).lower()
        channel = channel.lower()
        yield ChatLine(
            message_id=synthetic_message_id(channel, sent_at, login, text, lineno),
            channel=channel,
            user_id="",
            user_login=login,
            user_name=user,
            text=text,
            sent_at=sent_at,
        )


# --- chatmood JSONL ---------------------------------------------------------------------------------


def _jsonl_line(obj: object, lineno: int, override: str | None) -> ChatLine:
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    text, login = obj.get("text"), obj.get("user_login")
    if not isinstance(text, str):
        raise ValueError("'text' is missing or not a string")
    if not isinstance(login, str) or not login.strip():
        raise ValueError("'user_login' is missing or empty")
    login = login.strip().lower()
    channel_raw = override or obj.get("channel")
    if not isinstance(channel_raw, str) or not channel_raw.strip():
        raise ValueError("'channel' is missing (or pass --channel)")
    channel = channel_raw.strip().lstrip("#").lower()
    if "sent_at" in obj:
        sent_at = _parse_time(obj["sent_at"])
    elif isinstance(obj.get("offset"), int | float) and not isinstance(obj.get("offset"), bool):
        offset = float(obj["offset"])
        if not math.isfinite(offset):
            raise ValueError("'offset' is not finite")
        sent_at = REPLAY_EPOCH + timedelta(seconds=offset)
    else:
        raise ValueError("no 'sent_at' (ISO-8601) or 'offset' (seconds)")
    badges_raw = obj.get("badges") or []
    if not isinstance(badges_raw, list) or not all(isinstance(b, str) for b in badges_raw):
        raise ValueError("'badges' is not a list of strings")
    emotes_raw = obj.get("emotes") or []
    if not isinstance(emotes_raw, list) or not all(isinstance(e, dict) for e in emotes_raw):
        raise ValueError("'emotes' is not a list of objects")
    raw_spans = [(str(e.get("emote_id", "")), _int(e.get("begin")), _int(e.get("end"))) for e in emotes_raw]
    text, spans = _spans(text, raw_spans)
    if not text.strip():
        raise ValueError("empty message")
    name, user_id, mid = obj.get("user_name"), obj.get("user_id"), obj.get("message_id")
    reply_to, channel_id = obj.get("reply_to"), obj.get("channel_id")
    return ChatLine(
        message_id=mid if isinstance(mid, str) and mid else synthetic_message_id(channel, sent_at, login, text, lineno),
        channel=channel,
        user_id=str(user_id) if isinstance(user_id, str | int) and not isinstance(user_id, bool) else "",
        user_login=login,
        user_name=name.strip() if isinstance(name, str) and name.strip() else login,
        text=text,
        sent_at=sent_at,
        badges=_badges(badges_raw),
        emotes=spans,
        reply_to=reply_to if isinstance(reply_to, str) and reply_to else None,
        channel_id=channel_id if isinstance(channel_id, str) else "",
    )


def _parse_jsonl(parsed: ParsedLog) -> Iterator[ChatLine]:
    for lineno, raw in _physical_lines(parsed.path):
        if raw is None:
            parsed.bad(lineno, "not UTF-8")
            continue
        if not raw.strip():
            continue
        try:
            yield _jsonl_line(json.loads(raw), lineno, parsed.channel)
        except (ValueError, TypeError, OverflowError) as exc:  # JSONDecodeError is a ValueError
            parsed.bad(lineno, str(exc))


def to_jsonl(line: ChatLine) -> str:
    """One ChatLine as a line of chatmood JSONL (no newline); :func:`open_log` reads it back equal."""
    obj: dict[str, object] = {
        "message_id": line.message_id,
        "channel": line.channel,
        "user_login": line.user_login,
        "user_name": line.user_name,
        "user_id": line.user_id,
        "text": line.text,
        "sent_at": line.sent_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
    if line.badges:
        obj["badges"] = sorted(line.badges)
    if line.emotes:
        obj["emotes"] = [{"emote_id": e.emote_id, "begin": e.begin, "end": e.end} for e in line.emotes]
    if line.reply_to:
        obj["reply_to"] = line.reply_to
    if line.channel_id:
        obj["channel_id"] = line.channel_id
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
