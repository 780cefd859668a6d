"""Builders for the plain values every test needs: chat lines and verdicts."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from bot.domain import ChatLine, Verdict

_ids = itertools.count(1)


def chat_line(
    text: str,
    user: str = "viewer",
    badges: Iterable[str] = (),
    *,
    channel: str = "chan",
    message_id: str | None = None,
    reply_to: str | None = None,
    sent_at: datetime | None = None,
    user_id: str | None = None,
) -> ChatLine:
    """A chat line from ``user`` (login; the display name is capitalised); ids are unique unless given."""
    return ChatLine(
        message_id=message_id or f"msg-{next(_ids)}",
        channel=channel,
        user_id=user_id if user_id is not None else f"id-{user}",
        user_login=user.lower(),
        user_name=user.capitalize(),
        text=text,
        sent_at=sent_at or datetime.now(UTC),
        badges=frozenset(badges),
        reply_to=reply_to,
    )


def verdict(label: str, confidence: float = 1.0, probs: Mapping[str, float] | None = None) -> Verdict:
    """A verdict for ``label`` (all probability on it unless ``probs`` is given)."""
    return Verdict(label=label, confidence=confidence, probs=probs if probs is not None else {label: 1.0}, model="test")
