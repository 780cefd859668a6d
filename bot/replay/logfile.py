"""Recorded chat logs read as ChatLines: format detection and one parser per format.

``open_log(path, channel)`` detects the format from the first lines of the file and
returns a :class:`ParsedLog`, a one-pass iterator of :class:`~bot.domain.ChatLine`;
``to_jsonl(line)`` writes chatmood's own format. :mod:`bot.replay.pacing` feeds the lines to
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
them) and lone surrogates in text become U+FFFD (:class:`~bot.domain.ChatLine` decides);
a line whose id, login, channel or reply id cannot be stored is malformed. Malformed lines
are counted and recorded with their line numbers (the first :data:`MAX_PROBLEMS` kept),
never fatal: text lines (and JSONL lines) that aren't UTF-8 are malformed, while bytes that
aren't UTF-8 in a rechat file become U+FFFD and their lines are counted in
``ParsedLog.repaired_lines``. A file that cannot be read or whose format cannot be told
raises :class:`~bot.errors.ReplayError`.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from bot.errors import ReplayError
from bot.replay.jsonl import parse_jsonl
from bot.replay.parsed import LogFormat, LogLines, ParsedLog, normalise_channel, physical_lines
from bot.replay.rechat import open_rechat
from bot.replay.textlog import TEXT_LINE, parse_text, text_channel, text_date

log = structlog.get_logger(__name__)

#: The bundled, self-written sample chat that ``chatmood demo`` replays as ``demo``.
SAMPLE_CHAT = Path(__file__).resolve().parent.parent / "data" / "sample_chat.jsonl"
_SNIFF_LINES = 20


def _sniff(path: Path) -> tuple[LogFormat, list[str]]:
    """Tell the format from the first significant lines; returns it and the lines looked at."""
    seen: list[str] = []
    votes: dict[LogFormat, int] = {"justlog": 0, "chatterino": 0, "jsonl": 0}
    first: str | None = None
    clean = 0  # significant lines that were UTF-8
    # Lines that aren't UTF-8 are looked at with the bad bytes replaced: one bad byte in a one-line rechat
    # file must not hide its format (text formats refuse such lines later, one by one).
    for _, text, utf8 in physical_lines(path):
        stripped = text.strip()
        if not stripped:
            continue
        clean += utf8
        seen.append(stripped)
        if stripped.startswith("#"):
            continue
        match = TEXT_LINE.match(stripped)
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
    if first is not None and not clean:
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
    override = normalise_channel(channel) if channel is not None else None
    if path.is_dir():
        raise ReplayError(f"{path}: is a directory, not a chat log")
    fmt, seen = _sniff(path)
    if fmt == "rechat":
        parsed = open_rechat(path, override)
    elif fmt == "jsonl":
        parsed = ParsedLog(path, fmt, override, _count_lines(path))
        parsed.lines = LogLines(parsed, parse_jsonl(parsed))
    else:
        named = override or text_channel(path, seen)
        parsed = ParsedLog(path, fmt, named, _count_lines(path))
        parsed.lines = LogLines(parsed, parse_text(parsed, text_date(path, seen)))
    log.info("replay_opened", path=str(path), format=fmt, channel=parsed.channel)
    return parsed
