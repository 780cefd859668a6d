"""Colour maths for the mood: sRGB hex <-> OKLab (a perceptual space), blends and distances.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


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


# ------------------------------------------------------------------------------------------------------- the tracker
