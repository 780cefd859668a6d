"""Twitch's send limits, decided with a fake clock."""

from __future__ import annotations

import pytest
import structlog

from bot.twitch.sending import MAX_CHARS, SendLimiter, truncate


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


class TestTruncate:
    """Messages are cut to 500 code points on a word boundary, with an ellipsis."""

    def test_short_text_is_unchanged(self) -> None:
        assert truncate("chat mood: hype 61%") == "chat mood: hype 61%"

    def test_long_text_is_cut_at_a_word_with_ellipsis(self) -> None:
        text = " ".join(["word"] * 200)  # 999 chars
        out = truncate(text)
        assert len(out) <= MAX_CHARS
        assert out.endswith("word…")

    def test_one_long_word_is_cut_mid_word(self) -> None:
        out = truncate("x" * 600)
        assert out == "x" * (MAX_CHARS - 1) + "…"

    def test_counts_code_points_not_bytes(self) -> None:
        assert truncate("🟧" * 500) == "🟧" * 500


class TestNextAllowed:
    """The pure decision: when may this text go to this channel."""

    def test_first_message_goes_now(self) -> None:
        lim = SendLimiter()
        assert lim.next_allowed("chan", "hi", 5.0) == 5.0

    def test_one_second_slow_mode_when_not_a_moderator(self) -> None:
        lim = SendLimiter()
        lim.record("chan", "a", 10.0)
        assert lim.next_allowed("chan", "b", 10.2) == 11.0
        assert lim.next_allowed("other", "b", 10.2) == 10.2  # per channel

    def test_moderators_have_no_slow_mode(self) -> None:
        lim = SendLimiter()
        lim.set_privileged("chan", True)
        lim.record("chan", "a", 10.0)
        assert lim.next_allowed("chan", "b", 10.2) == 10.2

    def test_twenty_per_thirty_seconds_across_the_account(self) -> None:
        lim = SendLimiter()
        for i in range(20):
            lim.record(f"c{i}", f"m{i}", 100.0 + i)
        # The 21st waits until the oldest (t=100) leaves the 30 s window.
        assert lim.next_allowed("new", "x", 119.5) == 130.0
        assert lim.next_allowed("new", "x", 130.0) == 130.0

    def test_hundred_per_thirty_seconds_where_privileged(self) -> None:
        lim = SendLimiter()
        lim.set_privileged("modchan", True)
        for i in range(99):
            lim.record("modchan", f"m{i}", 100.0 + i * 0.1)
        assert lim.next_allowed("modchan", "x", 110.0) == 110.0
        # An unprivileged channel waits until fewer than 20 remain: the 80th oldest (t=107.9) must leave.
        assert lim.next_allowed("plain", "x", 110.0) == pytest.approx(137.9)
        lim.record("modchan", "m99", 110.0)
        assert lim.next_allowed("modchan", "x", 110.1) == 130.0

    def test_identical_text_within_thirty_seconds_is_never_allowed(self) -> None:
        lim = SendLimiter()
        lim.record("chan", "same", 10.0)
        assert lim.next_allowed("chan", "same", 20.0) is None
        assert lim.next_allowed("other", "same", 20.0) == 20.0
        assert lim.next_allowed("chan", "same", 40.0) == 40.0


class TestAcquire:
    """The async gate waits with the injected sleep, truncates, and drops what must not be sent."""

    async def test_waits_out_slow_mode(self) -> None:
        clock = FakeClock()
        lim = SendLimiter(clock, clock.sleep)
        assert await lim.acquire("chan", "one") == "one"
        clock.now += 0.25
        assert await lim.acquire("chan", "two") == "two"
        assert clock.slept == [0.75]

    async def test_duplicate_is_dropped_and_logged(self) -> None:
        clock = FakeClock()
        lim = SendLimiter(clock, clock.sleep)
        assert await lim.acquire("chan", "same") == "same"
        clock.now += 5
        with structlog.testing.capture_logs() as logs:
            assert await lim.acquire("chan", "same") is None
        assert any(e["event"] == "send_dropped_duplicate" for e in logs)

    async def test_long_text_is_truncated_before_the_duplicate_check(self) -> None:
        clock = FakeClock()
        lim = SendLimiter(clock, clock.sleep)
        out = await lim.acquire("chan", "a " * 400)
        assert out is not None and len(out) <= MAX_CHARS
        clock.now += 5
        assert await lim.acquire("chan", "a " * 401) is None  # same text once cut

    async def test_a_burst_is_spread_over_the_window(self) -> None:
        clock = FakeClock()
        lim = SendLimiter(clock, clock.sleep)
        start = clock.now
        for i in range(25):
            assert await lim.acquire(f"c{i % 5}", f"m{i}") == f"m{i}"
        assert clock.now - start >= 30.0  # the 21st had to wait for the window

    async def test_empty_text_is_dropped(self) -> None:
        lim = SendLimiter()
        assert await lim.acquire("chan", "   ") is None
