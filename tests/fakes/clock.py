"""A clock the test moves by hand, for code that takes ``clock=`` (seconds; monotonic or epoch alike)."""

from __future__ import annotations

import time


class FakeClock:
    """``clock()`` returns ``t``; ``advance(s)`` moves it. Starts at ``t`` (default: now, as epoch seconds)."""

    def __init__(self, t: float | None = None) -> None:
        self.t = time.time() if t is None else t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
