"""Replaying chat: the arrival-time and rate schedules on a fake clock, stats, progress and the summary."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.domain import ChatLine
from bot.replay.logfile import open_log
from bot.replay.pacing import ProgressBar, ReplayProgress, ReplayStats, format_summary, progress_bar_for, replay
from bot.replay.parsed import Problem

DATA = Path(__file__).resolve().parents[1] / "data"


class FakeTime:
    """A clock that only moves when the replay sleeps (plus an optional oversleep per real sleep)."""

    def __init__(self, oversleep: float = 0.0) -> None:
        self.now = 1000.0
        self.oversleep = oversleep
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds > 0:
            self.now += seconds + self.oversleep
        await asyncio.sleep(0)


def chat(offsets: list[float]) -> list[ChatLine]:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        ChatLine(f"id-{i}", "den", "1", "a", "a", f"msg {i}", t0 + timedelta(seconds=s)) for i, s in enumerate(offsets)
    ]


class Recorder:
    def __init__(self, fake: FakeTime) -> None:
        self.fake = fake
        self.got: list[tuple[float, ChatLine]] = []

    def __call__(self, line: ChatLine) -> None:
        self.got.append((self.fake.now - 1000.0, line))

    @property
    def times(self) -> list[float]:
        return [round(t, 6) for t, _ in self.got]


class TestReplayClock:
    """replay() honours arrival times scaled by speed, caps the rate without drift, and keeps sent_at."""

    async def test_real_time_and_scaled(self) -> None:
        offsets = [0, 0.5, 2.0, 2.0, 10.0]
        for speed, expected in ((1.0, [0, 0.5, 2.0, 2.0, 10.0]), (2.0, [0, 0.25, 1.0, 1.0, 5.0])):
            fake = FakeTime()
            rec = Recorder(fake)
            lines = chat(offsets)
            stats = await replay(lines, rec, speed=speed, clock=fake.clock, sleep=fake.sleep)
            assert rec.times == expected
            assert [line for _, line in rec.got] == lines  # sent_at and ids untouched
            assert (stats.submitted, stats.duration_s, stats.log_span_s) == (5, expected[-1], 10.0)

    async def test_as_fast_as_allowed_up_to_max_rate(self) -> None:
        fake = FakeTime()
        rec = Recorder(fake)
        await replay(chat([0.0] * 3 + [3600.0] * 2), rec, speed=None, max_rate=10, clock=fake.clock, sleep=fake.sleep)
        assert rec.times == [0, 0.1, 0.2, 0.3, 0.4]

    async def test_no_drift_when_sleeps_overshoot(self) -> None:
        fake = FakeTime(oversleep=0.004)
        rec = Recorder(fake)
        await replay(chat([0.0] * 1000), rec, speed=None, max_rate=100, clock=fake.clock, sleep=fake.sleep)
        assert rec.times[-1] == pytest.approx(9.99, abs=0.01)  # a naive 'sleep 1/rate' would end near 14

        fake = FakeTime(oversleep=0.004)
        rec = Recorder(fake)
        await replay(chat([i * 0.05 for i in range(400)]), rec, speed=1.0, clock=fake.clock, sleep=fake.sleep)
        assert rec.times[-1] == pytest.approx(19.95, abs=0.01)

    async def test_speed_and_max_rate_combine(self) -> None:
        fake = FakeTime()
        rec = Recorder(fake)
        await replay(chat([0, 0, 0, 5]), rec, speed=1.0, max_rate=2, clock=fake.clock, sleep=fake.sleep)
        assert rec.times == [0, 0.5, 1.0, 5.0]

    async def test_a_stalled_consumer_does_not_cause_a_burst(self) -> None:
        fake = FakeTime()
        rec = Recorder(fake)

        def slow_once(line: ChatLine) -> None:
            rec(line)
            if line.message_id == "id-2":
                fake.now += 3.0  # the consumer stalls for 3 s

        await replay(chat([0.0] * 12), slow_once, speed=None, max_rate=10, clock=fake.clock, sleep=fake.sleep)
        # Catching up is limited to the 0.5 s lag allowance (6 at once), then the pace is 10/s again.
        assert rec.times == [0, 0.1, 0.2, *[3.2] * 6, 3.3, 3.4, 3.5]

    async def test_unlimited_never_sleeps_but_yields(self) -> None:
        fake = FakeTime()
        rec = Recorder(fake)
        stats = await replay(chat([0, 100, 200] * 100), rec, speed=None, clock=fake.clock, sleep=fake.sleep)
        assert stats.submitted == 300 and fake.now == 1000.0
        assert fake.sleeps and set(fake.sleeps) == {0}

    async def test_bad_speed_or_rate_is_refused(self) -> None:
        for bad in (0.0, -1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="speed must be a positive"):
                await replay([], print, speed=bad)
            with pytest.raises(ValueError, match="max_rate must be a positive"):
                await replay([], print, max_rate=bad)

    async def test_stats_carry_the_logs_malformed_lines(self) -> None:
        fake = FakeTime()
        got: list[ChatLine] = []
        with open_log(DATA / "rechat_small.json") as log:
            stats = await replay(log, got.append, speed=None, clock=fake.clock, sleep=fake.sleep)
        assert (stats.submitted, stats.malformed, stats.format, stats.channel) == (5, 3, "rechat", "fixture_channel")
        assert [p.where for p in stats.problems] == [3, 4, 8] and stats.unit == "element"

    async def test_the_lines_of_a_parsed_log_report_its_problems_too(self) -> None:
        fake = FakeTime()
        with open_log(DATA / "overrustle-style.txt", "den") as log:
            stats = await replay(log.lines, lambda line: None, speed=None, clock=fake.clock, sleep=fake.sleep)
        assert (stats.submitted, stats.malformed, [p.where for p in stats.problems]) == (5, 2, [4, 5])

    async def test_progress_is_reported_and_finished(self) -> None:
        fake = FakeTime()
        seen: list[ReplayProgress] = []
        await replay(
            chat([i * 0.05 for i in range(41)]),
            lambda line: None,
            clock=fake.clock,
            sleep=fake.sleep,
            progress=seen.append,
            total=41,
        )
        assert 15 <= len(seen) <= 25
        assert seen[-1].final and seen[-1].done == 41 and not any(p.final for p in seen[:-1])
        assert [p.done for p in seen] == sorted(p.done for p in seen)

    async def test_a_failing_submit_ends_the_progress_line_and_surfaces(self) -> None:
        fake = FakeTime()
        seen: list[ReplayProgress] = []

        def submit(line: ChatLine) -> None:
            if line.message_id == "id-3":
                raise RuntimeError("ingest is closed")

        with pytest.raises(RuntimeError, match="ingest is closed"):
            await replay(chat([0, 1, 2, 3, 4]), submit, clock=fake.clock, sleep=fake.sleep, progress=seen.append)
        assert seen[-1].final and seen[-1].done == 3


class TestOutput:
    """The progress bar draws only on a terminal; the summary names counts and malformed lines."""

    def test_bar_renders_count_rate_and_eta(self) -> None:
        bar = ProgressBar(io.StringIO(), width=10)
        text = bar.render(ReplayProgress(done=50, total=200, elapsed_s=5.0))
        assert "[##--------]" in text and "50/200" in text and "10 msg/s" in text and "ETA 0:00:15" in text
        assert "elapsed 0:01:40" in bar.render(ReplayProgress(done=7, total=None, elapsed_s=100))

    def test_bar_redraws_in_place_and_ends_the_line(self) -> None:
        out = io.StringIO()
        bar = ProgressBar(out)
        bar(ReplayProgress(1, 10, 1.0))
        bar(ReplayProgress(10, 10, 2.0, final=True))
        assert out.getvalue().startswith("\r[") and out.getvalue().count("\r") == 2 and out.getvalue().endswith("\n")

    def test_no_bar_off_a_terminal(self) -> None:
        class Tty(io.StringIO):
            def isatty(self) -> bool:
                return True

        assert progress_bar_for(io.StringIO()) is None
        assert isinstance(progress_bar_for(Tty()), ProgressBar)

    def test_summary(self) -> None:
        problems = tuple(Problem(i, "not valid JSON") for i in range(1, 13))
        stats = ReplayStats(40, 15, problems, 2.0, 60.0, "jsonl", "/x/chat.jsonl", "den")
        text = format_summary(stats)
        assert text.startswith("replayed 40 messages from chat.jsonl (jsonl, channel den) in 2.00 s (20 msg/s")
        assert "15 malformed" in text and "  line 1: not valid JSON" in text and "line 11" not in text
        assert text.endswith("... and 5 more")
