"""chatmood's own JSONL chat log: one JSON object per line (see :mod:`bot.replay.logfile` for the fields).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, timedelta

import structlog

from bot.domain import ChatLine, synthetic_message_id
from bot.replay.parsed import (
    LOGIN,
    REPLAY_EPOCH,
    ParsedLog,
    as_int,
    badges_from,
    emote_spans,
    is_blank,
    parse_time,
    physical_lines,
)

log = structlog.get_logger(__name__)



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
    if not LOGIN.fullmatch(channel):
        raise ValueError(f"'channel' {channel_raw!r} is not a Twitch login (1-25 of a-z, 0-9, _)")
    if "sent_at" in obj:
        sent_at = parse_time(obj["sent_at"])
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
    raw_spans = [(str(e.get("emote_id", "")), as_int(e.get("begin")), as_int(e.get("end"))) for e in emotes_raw]
    spans = emote_spans(text, raw_spans)
    if is_blank(text):
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
        badges=badges_from(badges_raw),
        emotes=spans,
        reply_to=reply_to if isinstance(reply_to, str) and reply_to else None,
        channel_id=channel_id if isinstance(channel_id, str) else "",
    )


def parse_jsonl(parsed: ParsedLog) -> Iterator[ChatLine]:
    for lineno, raw, utf8 in physical_lines(parsed.path):
        if not utf8:
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
