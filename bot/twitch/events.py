"""EventSub payloads as chatmood values (pure: no I/O, no twitchAPI).

The documented ``channel.chat.message`` event and its envelope metadata become a
:class:`~bot.domain.ChatLine`; Twitch's RFC3339 timestamps become aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from bot import domain

log = structlog.get_logger(__name__)


# --- payload conversion (pure) ------------------------------------------------------------------
def parse_ts(value: Any) -> datetime:
    """Twitch's RFC3339 timestamps (nanoseconds allowed) as aware UTC datetimes."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00")
    if "." in text:  # Python takes at most 6 fractional digits
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    return datetime.fromisoformat(text).astimezone(UTC)


def chat_line_from_event(event: Mapping[str, Any], metadata: Mapping[str, Any]) -> domain.ChatLine:
    """A documented ``channel.chat.message`` event (+ its envelope metadata) as a :class:`domain.ChatLine`."""
    message = event.get("message") or {}
    text = str(message.get("text") or "")
    emotes: list[domain.EmoteSpan] = []
    pos = 0
    joined = []
    for frag in message.get("fragments") or ():
        ftext = str(frag.get("text") or "")
        if frag.get("type") == "emote" and frag.get("emote"):
            emotes.append(domain.EmoteSpan(str(frag["emote"].get("id", "")), pos, pos + len(ftext)))
        pos += len(ftext)
        joined.append(ftext)
    if emotes and "".join(joined) != text:  # fragments that don't tile the text give no trustworthy offsets
        log.debug("emote_offsets_dropped", message_id=event.get("message_id"))
        emotes = []
    reply = event.get("reply") or {}
    sent = metadata.get("message_timestamp")
    return domain.ChatLine(
        message_id=str(event["message_id"]),
        channel=str(event["broadcaster_user_login"]).lower(),
        channel_id=str(event.get("broadcaster_user_id") or ""),
        user_id=str(event.get("chatter_user_id") or ""),
        user_login=str(event.get("chatter_user_login") or "").lower(),
        user_name=str(event.get("chatter_user_name") or ""),
        text=text,
        sent_at=parse_ts(sent) if sent else datetime.now(UTC),
        badges=frozenset(str(b.get("set_id")) for b in event.get("badges") or () if b.get("set_id")),
        emotes=tuple(emotes),
        reply_to=str(reply["parent_message_id"]) if reply.get("parent_message_id") else None,
    )
