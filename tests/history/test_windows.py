"""The in-memory windows of recent chat and mood: bounded, newest wins, commands told apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.history.windows import MessageWindows, RecentMessage, SnapshotPoint, SnapshotWindows
from tests.fakes.chat import chat_line, verdict

T0 = datetime(2026, 5, 1, 18, 0, tzinfo=UTC)


class TestMessageWindows:
    def test_the_channel_window_keeps_the_newest(self) -> None:
        w = MessageWindows(per_channel=3, per_user=5, users_per_channel=10)
        for i in range(5):
            w.add(chat_line(f"m{i}", channel="chan", message_id=f"m-{i}"), command=False)
        assert [m.id for m in w.recent("chan", 10)] == ["m-4", "m-3", "m-2"]
        assert [m.id for m in w.recent("chan", 2)] == ["m-4", "m-3"]
        assert w.find("m-1") is None and w.find("m-3") is not None
        assert w.recent("elsewhere", 5) == []

    def test_a_users_latest_skips_commands(self) -> None:
        w = MessageWindows(per_channel=10, per_user=3, users_per_channel=10)
        w.add(chat_line("LETS GO", "viewer", channel="chan", message_id="a"), command=False)
        w.add(chat_line("!mood", "viewer", channel="chan", message_id="b"), command=True)
        w.add(chat_line("hi", "other", channel="chan", message_id="c"), command=False)
        found = w.latest_of("chan", "viewer")
        assert found is not None and found.id == "a"
        any_kind = w.latest_of("chan", "viewer", commands=True)
        assert any_kind is not None and any_kind.id == "b"
        assert w.latest_of("chan", "nobody") is None and w.latest_of("other-chan", "viewer") is None

    def test_users_are_bounded_least_recent_first(self) -> None:
        """Per-user lists outlive the channel window, but only for the users who spoke most recently."""
        w = MessageWindows(per_channel=2, per_user=2, users_per_channel=2)
        for i, user in enumerate(["alice", "bob", "alice", "carol", "alice", "alice"]):
            w.add(chat_line(f"t{i}", user, channel="chan", message_id=f"m-{i}"), command=False)
        assert w.latest_of("chan", "bob") is None  # evicted: carol and alice spoke later
        carol = w.latest_of("chan", "carol")
        assert carol is not None and carol.id == "m-3"  # out of the channel window, still in hers
        alice = w.latest_of("chan", "alice")
        assert alice is not None and alice.id == "m-5"

    def test_verdicts_reach_the_message(self) -> None:
        w = MessageWindows(per_channel=10, per_user=3, users_per_channel=10)
        msg = chat_line("so funny", "viewer", channel="chan", message_id="x")
        w.add(msg, command=False)
        w.classified(msg, verdict("funny", 0.8))
        [kept] = w.recent("chan", 1)
        assert (kept.label, kept.confidence) == ("funny", 0.8)

    def test_older_messages_go_behind(self) -> None:
        """A backfill from the database fills the window behind what it holds, up to its size."""
        w = MessageWindows(per_channel=4, per_user=3, users_per_channel=10)
        w.add(chat_line("new", "viewer", channel="chan", message_id="new"), command=False)
        older = [RecentMessage(f"old-{i}", "chan", "viewer", "Viewer", f"old {i}", T0) for i in (3, 2, 1, 0)]
        w.add_older("chan", older)
        assert [m.id for m in w.recent("chan", 10)] == ["new", "old-3", "old-2", "old-1"]
        latest = w.latest_of("chan", "viewer")
        assert latest is not None and latest.id == "new"


class TestSnapshotWindows:
    def point(self, minutes: int, label: str = "hype") -> SnapshotPoint:
        return SnapshotPoint(T0 + timedelta(minutes=minutes), label, 0.5, "#ff8c00", {label: 1.0}, minutes)

    def test_complete_from_the_first_point_then_the_oldest_kept(self) -> None:
        w = SnapshotWindows(per_channel=3)
        assert w.complete_from("chan") is None
        for m in range(2):
            w.add("chan", self.point(m))
        assert w.complete_from("chan") == T0
        for m in range(2, 5):
            w.add("chan", self.point(m))
        assert [p.messages for p in w.since("chan", T0)] == [2, 3, 4]
        assert w.complete_from("chan") == T0 + timedelta(minutes=2)

    def test_a_resaved_bucket_replaces_the_point(self) -> None:
        w = SnapshotWindows(per_channel=5)
        w.add("chan", self.point(0))
        w.add("chan", self.point(1, "sad"))
        w.add("chan", self.point(1, "love"))
        assert [p.label for p in w.since("chan", T0)] == ["hype", "love"]

    def test_older_points_make_it_complete_from_the_query(self) -> None:
        w = SnapshotWindows(per_channel=5)
        w.add("chan", self.point(10))
        w.add_older("chan", [self.point(7), self.point(8), self.point(10)], since=T0 + timedelta(minutes=5))
        assert [p.messages for p in w.since("chan", T0)] == [7, 8, 10]
        assert w.complete_from("chan") == T0 + timedelta(minutes=5)
        w.add_older("chan", [self.point(m) for m in range(0, 7)], since=T0)  # room for two more only
        assert [p.messages for p in w.since("chan", T0)] == [5, 6, 7, 8, 10]
        assert w.complete_from("chan") == T0 + timedelta(minutes=5)
