"""Colour maths for the mood: sRGB hex <-> OKLab (a perceptual space), blends and distances, and
:func:`mood_colour`, the rule that turns a channel's shares into the one colour a viewer sees.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def hex_to_rgb(colour: str) -> tuple[float, float, float]:
    """``'#rrggbb'`` -> sRGB components in 0..1."""
    c = colour.removeprefix("#")
    if len(c) != 6:
        raise ValueError(f"not a #rrggbb colour: {colour!r}")
    return int(c[0:2], 16) / 255, int(c[2:4], 16) / 255, int(c[4:6], 16) / 255


def _to_linear(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _to_srgb(c: float) -> float:
    c = min(1.0, max(0.0, c))
    return 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055


def to_oklab(colour: str) -> tuple[float, float, float]:
    """A ``#rrggbb`` colour in OKLab (L in 0..1)."""
    r, g, b = (_to_linear(x) for x in hex_to_rgb(colour))
    lc = math.cbrt(0.4122214708 * r + 0.5363325363 * g + 0.0514459929 * b)
    mc = math.cbrt(0.2119034982 * r + 0.6806995451 * g + 0.1073969566 * b)
    sc = math.cbrt(0.0883024619 * r + 0.2817188376 * g + 0.6299787005 * b)
    return (
        0.2104542553 * lc + 0.7936177850 * mc - 0.0040720468 * sc,
        1.9779984951 * lc - 2.4285922050 * mc + 0.4505937099 * sc,
        0.0259040371 * lc + 0.7827717662 * mc - 0.8086757660 * sc,
    )


def from_oklab(lab: tuple[float, float, float]) -> str:
    """OKLab -> ``#rrggbb`` (out-of-gamut components are clipped)."""
    ll, a, b = lab
    lc = (ll + 0.3963377774 * a + 0.2158037573 * b) ** 3
    mc = (ll - 0.1055613458 * a - 0.0638541728 * b) ** 3
    sc = (ll - 0.0894841775 * a - 1.2914855480 * b) ** 3
    rgb = (
        4.0767416621 * lc - 3.3077115913 * mc + 0.2309699292 * sc,
        -1.2684380046 * lc + 2.6097574011 * mc - 0.3413193965 * sc,
        -0.0041960863 * lc - 0.7034186147 * mc + 1.7076147010 * sc,
    )
    return "#" + "".join(f"{round(_to_srgb(x) * 255):02x}" for x in rgb)


def blend(weighted: Iterable[tuple[str, float]]) -> str:
    """Colours blended by (non-negative) weight in OKLab; ``#000000`` when all weights are zero."""
    acc = [0.0, 0.0, 0.0]
    total = 0.0
    for colour, w in weighted:
        if w <= 0:
            continue
        lab = to_oklab(colour)
        for i in range(3):
            acc[i] += w * lab[i]
        total += w
    if total <= 0:
        return "#000000"
    return from_oklab((acc[0] / total, acc[1] / total, acc[2] / total))


def colour_distance(a: str, b: str) -> float:
    """Perceptual distance between two ``#rrggbb`` colours (Euclidean in OKLab)."""
    return math.dist(to_oklab(a), to_oklab(b))


# The strength of a mood is its share relative to neutral's, r = s / (s + neutral), eased between these two:
# below LEAN_FLOOR the chat reads as idle (one stray message against the prior is r of about 0.17 and shows as
# a faint tint at most), from LEAN_FULL on the mood's own colour shows at full strength.
LEAN_FLOOR = 0.1
LEAN_FULL = 0.45


@dataclass(frozen=True, slots=True)
class MoodColour:
    colour: str  # "#rrggbb": what the overlay shows
    lean: str | None  # the strongest non-neutral category (None when there is none)
    strength: float  # 0 (the neutral colour) .. 1 (the lean's own colour, or the mix of two strong moods)


def _clamp01(x: float) -> float:
    return min(1.0, max(0.0, x))


def _lch(lab: tuple[float, float, float]) -> tuple[float, float, float]:
    lightness, a, b = lab
    return lightness, math.hypot(a, b), math.atan2(b, a)


def _mix_lch(x: tuple[float, float, float], y: tuple[float, float, float], w: float) -> tuple[float, float, float]:
    """``w`` of the way from OKLab ``x`` to ``y``, through hue (OKLCh, the shorter way round) so a mix of two
    strong moods keeps its colourfulness instead of fading to grey."""
    (l1, c1, h1), (l2, c2, h2) = _lch(x), _lch(y)
    dh = (h2 - h1 + math.pi) % (2 * math.pi) - math.pi
    lightness, chroma, hue = l1 + (l2 - l1) * w, c1 + (c2 - c1) * w, h1 + dh * w
    return lightness, chroma * math.cos(hue), chroma * math.sin(hue)


def mood_colour(shares: Mapping[str, float], colours: Mapping[str, str], neutral: str = "neutral") -> MoodColour:
    """The colour of a mood, so a viewer can read it at a glance.

    The hue comes from the strongest non-neutral mood; a second mood that reaches at least half of the first's
    share is mixed in (through hue, growing to an even mix when both are equal). The strength, how far that
    mood stands above neutral, decides how far the colour moves from the neutral colour (in OKLab): idle chat
    shows the neutral colour, a hype streak a clear orange that deepens with its share."""
    order = {name: i for i, name in enumerate(shares)}  # ties go to the category listed first
    ranked = sorted(((s, name) for name, s in shares.items() if name != neutral and s > 0),
                    key=lambda sn: (-sn[0], order[sn[1]]))
    base = to_oklab(colours[neutral])
    if not ranked:
        return MoodColour(colours[neutral], None, 0.0)
    s1, first = ranked[0]
    hue = to_oklab(colours[first])
    if len(ranked) > 1:
        s2, second = ranked[1]
        w2 = s2 / (s1 + s2) * _clamp01(2 * s2 / s1 - 1)
        if w2 > 0:
            hue = _mix_lch(hue, to_oklab(colours[second]), w2)
    n = max(0.0, shares.get(neutral, 0.0))
    r = s1 / (s1 + n)
    strength = _clamp01((r - LEAN_FLOOR) / (LEAN_FULL - LEAN_FLOOR))
    eased = strength * strength * (3 - 2 * strength)  # smoothstep: no visible step at either end
    lab = (base[0] + (hue[0] - base[0]) * eased, base[1] + (hue[1] - base[1]) * eased,
           base[2] + (hue[2] - base[2]) * eased)
    return MoodColour(from_oklab(lab), first, strength)

