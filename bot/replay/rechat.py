"""Twitch's old v5 "rechat" comments JSON (see :mod:`bot.replay.logfile` for the format).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import structlog

from bot.domain import ChatLine, synthetic_message_id
from bot.errors import ReplayError
from bot.replay.parsed import (
    LogLines,
    ParsedLog,
    as_int,
    badges_from,
    decode_replacing,
    emote_spans,
    is_blank,
    normalise_channel,
    parse_time,
)

log = structlog.get_logger(__name__)



def open_rechat(path: Path, override: str | None) -> ParsedLog:
    try:
        raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    # One bad byte must not cost the whole file: it becomes U+FFFD and its line is counted (``repaired_lines``).
    text, repaired = decode_replacing(raw)
    try:
        data: object = json.loads(text)
    except ValueError as exc:  # JSONDecodeError
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
        channel = normalise_channel(name)
    recorded: datetime | None
    try:
        recorded = parse_time(meta.get("recorded_at"))
    except ValueError:
        recorded = None
    parsed = ParsedLog(path, "rechat", channel, len(elements) - first)
    parsed.repaired_lines = repaired
    if repaired:
        log.warning("replay_bytes_replaced", path=str(path), lines=len(repaired), first_lines=repaired[:10])
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
        sent_at = parse_time(c["created_at"])
    else:
        offset = c.get("content_offset_seconds")
        if recorded is None or isinstance(offset, bool) or not isinstance(offset, int | float):
            raise ValueError("no created_at, and no recorded_at + content_offset_seconds")
        sent_at = recorded + timedelta(seconds=offset)
    raw_spans = [
        (str(e.get("_id", "")), as_int(e.get("begin")), as_int(e.get("end")) + 1)  # rechat ends are inclusive
        for e in message.get("emoticons") or []
        if isinstance(e, dict)
    ]
    spans = emote_spans(body, raw_spans)
    if is_blank(body):
        raise ValueError("empty message")
    badges = badges_from(str(b.get("_id")) for b in message.get("user_badges") or [] if isinstance(b, dict))
    mid = c.get("_id")
    return ChatLine(
        message_id=mid if isinstance(mid, str) and mid else synthetic_message_id(channel, sent_at, login, body, index),
        channel=channel,
        user_id=str(commenter.get("_id") or ""),
        user_login=login,
        user_name=name,
        text=body,
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
