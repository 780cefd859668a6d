"""How ``!mood`` says the mood in one chat line: the label, its share, an emoji square in the mood's colour,
and how much chat it saw.
"""

from __future__ import annotations

import math
from datetime import datetime

from bot.commands.router import clip
from bot.domain import MoodState, percent
from bot.mood.colour import to_oklab

#: Emoji squares and the colour each is drawn in (Twemoji's palette, which most chat clients resemble).
EMOJI_SQUARES: tuple[tuple[str, str], ...] = (
    ("🟥", "#dd2e44"),
    ("🟧", "#f4900c"),
    ("🟨", "#fdcb58"),
    ("🟩", "#78b159"),
    ("🟦", "#55acee"),
    ("🟪", "#aa8ed6"),
    ("🟫", "#c1694f"),
    ("⬛", "#31373d"),
    ("⬜", "#e6e7e8"),
)


_ACHROMATIC = 0.04  # OKLab chroma below which a colour reads as grey


def _lab_chroma(colour: str) -> tuple[float, float, float, float]:
    lightness, a, b = to_oklab(colour)
    return lightness, a, b, math.hypot(a, b)


def emoji_square(colour: str) -> str:
    """The emoji square nearest ``colour`` (``#rrggbb``) as people see it.

    Plain OKLab distance maps a mid grey onto the purple square (which is pale), so greys go to ⬜/⬛ by lightness
    and coloured colours are matched mostly by hue (OKLab hue direction, lightness at half weight): a muted
    orange, which is what a mostly-hype mood blended with the neutral grey looks like, is still 🟧."""
    lightness, a, b, chroma = _lab_chroma(colour)
    if chroma < _ACHROMATIC:
        return "⬜" if lightness >= 0.6 else "⬛"
    best, best_d = EMOJI_SQUARES[0][0], math.inf
    for square, ref in EMOJI_SQUARES:
        l2, a2, b2, c2 = _lab_chroma(ref)
        if c2 < _ACHROMATIC:
            continue
        d = math.hypot(0.5 * (lightness - l2), 0.15 * (a / chroma - a2 / c2), 0.15 * (b / chroma - b2 / c2))
        if d < best_d:
            best, best_d = square, d
    return best


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{round(minutes)} min"
    hours = minutes / 60
    if hours < 48:
        return f"{round(hours)} h"
    return f"{round(hours / 24)} days"


def format_mood(state: MoodState, now: datetime) -> str:
    """One short chat line, e.g. ``chat mood: hype 61% 🟧 (412 msgs, last 2 min)``; never over 500 characters.

    The square is drawn in the named mood's own colour, so it always agrees with the word. When the overlay's
    colour leans towards a mood that isn't the named one, the line says so: ``neutral 55% ⬜, leaning hype 25%``.
    When chat outpaced the classifier it says how much was seen: ``(412 of 530 msgs, ...)``."""
    if state.messages == 0:
        if state.skipped:
            return clip(f"chat mood: neutral (no messages classified yet, {state.skipped} skipped)")
        return "chat mood: neutral (no messages yet)"
    share = percent(state.share)
    msgs = f"{state.messages} of {state.messages + state.skipped}" if state.skipped else f"{state.messages}"
    unit = "msg" if state.messages + state.skipped == 1 else "msgs"
    since = f", last {_span((now - state.first_at).total_seconds())}" if state.first_at else ""
    square = emoji_square(state.label_colour or state.colour)
    leaning = state.leaning()
    lean = f", {leaning}" if leaning else ""
    text = f"chat mood: {state.label} {share}% {square}{lean} ({msgs} {unit}{since})"
    return clip(text)
