"""Chat logs read as ChatLines: format detection, each parser, malformed input and synthetic ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.domain import ChatLine, EmoteSpan, synthetic_message_id
from bot.errors import ReplayError
from bot.replay.jsonl import to_jsonl
from bot.replay.logfile import SAMPLE_CHAT, open_log
from bot.replay.parsed import MAX_PROBLEMS, REPLAY_EPOCH, Problem

DATA = Path(__file__).resolve().parents[1] / "data"
SHARED_RECHAT = Path(__file__).resolve().parents[3] / "shared" / "data" / "chatlogs" / "rechat-98355852.json"


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


def parse(path: Path, channel: str | None = None) -> tuple[list[ChatLine], list[Problem], str]:
    with open_log(path, channel) as log:
        lines = list(log)
        return lines, list(log.problems), log.format


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


class TestDetection:
    """The format is told from the first lines; files that can't be replayed raise ReplayError."""

    @pytest.mark.parametrize(
        ("name", "fmt"),
        [
            ("rechat_small.json", "rechat"),
            ("overrustle-style.txt", "justlog"),
            ("justlog-style.txt", "justlog"),
            ("otter_den-2024-03-01.log", "chatterino"),
            ("small.jsonl", "jsonl"),
        ],
    )
    def test_each_fixture_is_detected(self, name: str, fmt: str) -> None:
        with open_log(DATA / name, "otter_den") as log:
            assert log.format == fmt

    def test_rechat_object_form_and_compact_array(self, tmp_path: Path) -> None:
        comment = {
            "_id": "c-1",
            "created_at": "2024-01-01T00:00:00Z",
            "commenter": {"name": "lone_wolf", "_id": "1"},
            "message": {"body": "hi"},
        }
        obj = write(tmp_path, "obj.json", json.dumps({"streamer": {"name": "Den"}, "comments": [comment]}))
        pretty = write(
            tmp_path, "pretty.json", json.dumps({"streamer": {"name": "den"}, "comments": [comment]}, indent=2)
        )
        compact = write(tmp_path, "compact.json", json.dumps([comment]))
        for path in (obj, pretty):
            lines, problems, fmt = parse(path)
            assert (fmt, [line.channel for line in lines], problems) == ("rechat", ["den"], [])
        lines, _, fmt = parse(compact, "den")
        assert fmt == "rechat" and lines[0].message_id == "c-1"

    def test_mostly_jsonl_with_a_broken_first_line_is_still_jsonl(self, tmp_path: Path) -> None:
        good = '{"channel": "den", "user_login": "a", "text": "x", "offset": 1}\n'
        lines, problems, fmt = parse(write(tmp_path, "x.jsonl", "{not json\n" + good * 3))
        assert fmt == "jsonl" and len(lines) == 3 and [p.where for p in problems] == [1]

    def test_empty_and_blank_files_are_refused(self, tmp_path: Path) -> None:
        for content in ("", "\n\n   \n"):
            with pytest.raises(ReplayError, match="empty"):
                open_log(write(tmp_path, "empty.txt", content), "den")

    def test_binary_and_header_only_files_are_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ReplayError, match="not UTF-8"):
            open_log(write(tmp_path, "x.bin", b"\x89PNG\xff\xfe\x00\x81\n\xc3\x28"), "den")
        with pytest.raises(ReplayError, match="unknown chat log format"):
            open_log(write(tmp_path, "x.png", b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x81"), "den")
        with pytest.raises(ReplayError, match="no chat lines"):
            open_log(write(tmp_path, "den-2024-01-01.log", "# Start logging at 2024-01-01 10:00:00 UTC\n"))

    def test_unknown_format_is_refused_with_the_formats_we_know(self, tmp_path: Path) -> None:
        with pytest.raises(ReplayError, match=r"unknown chat log format.*rechat"):
            open_log(write(tmp_path, "notes.txt", "just some notes\nnothing chat-like\n"), "den")

    def test_missing_file_and_directory_are_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ReplayError, match="cannot read"):
            open_log(tmp_path / "nope.jsonl", "den")
        with pytest.raises(ReplayError, match="directory"):
            open_log(tmp_path, "den")

    def test_truncated_rechat_json_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ReplayError, match="not valid JSON"):
            open_log(write(tmp_path, "cut.json", (DATA / "rechat_small.json").read_text()[:500]))

    def test_a_log_that_names_no_channel_needs_one(self, tmp_path: Path) -> None:
        with pytest.raises(ReplayError, match="--channel"):
            open_log(DATA / "overrustle-style.txt")
        with pytest.raises(ReplayError, match="--channel"):
            open_log(write(tmp_path, "c.json", '[{"title": "no channel"}]'))

    def test_a_bad_channel_name_is_refused(self) -> None:
        with pytest.raises(ReplayError, match="not a Twitch login"):
            open_log(DATA / "small.jsonl", "not a channel!")


class TestRechat:
    """Rechat comments become ChatLines with their ids, users, badges, exclusive emote spans and times."""

    def test_fields_of_a_comment(self) -> None:
        lines, _, _ = parse(DATA / "rechat_small.json")
        first = lines[0]
        assert first == ChatLine(
            message_id="aaaaaaaa-0000-4000-8000-000000000001",
            channel="fixture_channel",
            user_id="9001",
            user_login="paper_lynx",
            user_name="Paper_Lynx",
            text="hello Kappa world Kappa",
            sent_at=datetime(2024, 5, 1, 18, 0, 5, 250000, tzinfo=UTC),
            badges=frozenset({"subscriber"}),
            emotes=(EmoteSpan("25", 6, 11), EmoteSpan("25", 18, 23)),
            channel_id="5550001",
        )
        assert [first.text[e.begin : e.end] for e in first.emotes] == ["Kappa", "Kappa"]

    def test_badges_are_mapped_and_display_names_trimmed(self) -> None:
        by_user = {line.user_login: line for line in parse(DATA / "rechat_small.json")[0]}
        assert by_user["owl_keeper"].badges == {"moderator", "vip"}
        assert by_user["owl_keeper"].user_name == "Owl Keeper"
        assert by_user["fixture_channel"].badges == {"broadcaster"}
        assert by_user["moss_fox"].badges == {"subscriber"}  # founder

    def test_time_falls_back_to_recorded_at_plus_offset(self) -> None:
        line = next(x for x in parse(DATA / "rechat_small.json")[0] if x.user_login == "fixture_channel")
        assert line.sent_at == datetime(2024, 5, 1, 18, 0, 30, 500000, tzinfo=UTC)
        assert line.text[line.emotes[0].begin : line.emotes[0].end] == "<3"

    def test_nul_is_removed_and_spans_shift_with_it(self) -> None:
        line = next(x for x in parse(DATA / "rechat_small.json")[0] if x.message_id.endswith("7"))
        assert line.text == "nul then LUL"
        assert line.text[line.emotes[0].begin : line.emotes[0].end] == "LUL"

    def test_missing_id_gets_a_synthetic_one(self) -> None:
        line = next(x for x in parse(DATA / "rechat_small.json")[0] if x.user_login == "moss_fox")
        assert line.message_id == synthetic_message_id("fixture_channel", line.sent_at, "moss_fox", line.text, 6)

    def test_malformed_elements_are_counted_by_index(self) -> None:
        lines, problems, _ = parse(DATA / "rechat_small.json")
        assert len(lines) == 5
        assert [p.where for p in problems] == [3, 4, 8]
        assert "commenter" in problems[0].reason and "object" in problems[1].reason

    def test_channel_override_wins(self) -> None:
        lines, _, _ = parse(DATA / "rechat_small.json", "#Other_Place")
        assert {line.channel for line in lines} == {"other_place"}


class TestTextLogs:
    """OverRustle/justlog and Chatterino lines, their dates, channels and malformed lines."""

    def test_overrustle_lines(self) -> None:
        lines, problems, _ = parse(DATA / "overrustle-style.txt", "otter_den")
        assert [(x.user_login, x.user_name, x.text) for x in lines[:3]] == [
            ("quiet_pumpkin", "quiet_pumpkin", "hello chat"),
            ("velvet_comet", "Velvet_Comet", "PogChamp did you see that"),
            ("quiet_pumpkin", "quiet_pumpkin", "time: 8pm, place: here"),
        ]
        assert lines[0].sent_at == utc(2024, 5, 1, 20, 0, 1)
        assert lines[-1].sent_at == utc(2024, 5, 2, 0, 0, 2)
        assert {x.channel for x in lines} == {"otter_den"} and {x.user_id for x in lines} == {""}
        assert [(p.where, p.reason) for p in problems] == [(4, "not '[time] user: message'"), (5, "empty message")]

    def test_justlog_lines_name_their_channel(self) -> None:
        lines, problems, fmt = parse(DATA / "justlog-style.txt")
        assert fmt == "justlog" and problems == []
        assert [(x.channel, x.user_login, x.text) for x in lines] == [
            ("otter_den", "quiet_pumpkin", "hi from justlog"),
            ("otter_den", "sleepy_kiln", "second line"),
            ("otter_den", "quiet_pumpkin", "third line"),
        ]

    def test_chatterino_dates_from_header_and_midnight_wrap(self) -> None:
        lines, problems, _ = parse(DATA / "otter_den-2024-03-01.log")
        assert problems == []
        assert [x.sent_at for x in lines] == [
            utc(2024, 3, 1, 23, 58, 10),
            utc(2024, 3, 1, 23, 59, 50),
            utc(2024, 3, 2, 0, 0, 5),
            utc(2024, 3, 2, 0, 0, 5),
            utc(2024, 3, 2, 0, 1, 0),
            utc(2024, 3, 5, 10, 0, 1),
        ]
        assert {x.channel for x in lines} == {"otter_den"}  # from the file name
        assert (lines[1].user_login, lines[1].user_name, lines[1].text) == ("snow_golem", "雪だるま", "こんばんは")

    def test_chatterino_date_from_file_name_else_the_epoch(self, tmp_path: Path) -> None:
        body = "[10:00:00] a_user: morning\n[09:59:00] a_user: clock skew is not midnight\n"
        dated = parse(write(tmp_path, "den-2023-07-09.log", body))[0]
        undated = parse(write(tmp_path, "log.txt", body), "den")[0]
        assert [x.sent_at for x in dated] == [utc(2023, 7, 9, 10), utc(2023, 7, 9, 9, 59)]
        assert undated[0].sent_at == REPLAY_EPOCH + timedelta(hours=10)

    def test_nul_non_utf8_and_bad_times_are_handled(self, tmp_path: Path) -> None:
        content = (
            b"[2024-01-01 10:00:00 UTC] a_user: before\x00after\n"
            b"[2024-01-01 10:00:01 UTC] a_user: caf\xe9\n"
            b"[2024-01-01 25:00:01 UTC] a_user: no such hour\n"
            b"[2024-02-30 10:00:01 UTC] a_user: no such day\n"
            b"[2024-01-01 10:00:02 UTC] a_user: \x00\n"
            b"[2024-01-01 10:00:03 UTC] a_user: fine\r\n"
        )
        lines, problems, _ = parse(write(tmp_path, "x.txt", content), "den")
        assert [x.text for x in lines] == ["beforeafter", "fine"]
        assert [p.where for p in problems] == [2, 3, 4, 5]
        assert problems[0].reason == "not UTF-8" and problems[3].reason == "empty message"


class TestJsonl:
    """chatmood's own JSONL: every field, the offset form, round trips and malformed lines."""

    def test_fields(self) -> None:
        lines, problems, _ = parse(DATA / "small.jsonl")
        assert problems == []
        assert lines[0] == ChatLine(
            message_id="m-1",
            channel="otter_den",
            user_id="501",
            user_login="quiet_pumpkin",
            user_name="Quiet_Pumpkin",
            text="PogChamp what a play",
            sent_at=datetime(2024, 5, 1, 20, 0, 1, 500000, tzinfo=UTC),
            badges=frozenset({"subscriber", "moderator"}),
            emotes=(EmoteSpan("305954156", 0, 8),),
            channel_id="777",
        )
        second = lines[1]
        assert (second.user_name, second.user_id, second.reply_to) == ("sleepy_kiln", "", "m-1")
        assert second.sent_at == utc(2024, 5, 1, 18, 0, 2)
        assert second.message_id == synthetic_message_id("otter_den", second.sent_at, "sleepy_kiln", second.text, 2)
        assert lines[2].sent_at == REPLAY_EPOCH + timedelta(seconds=90.25)
        assert lines[3].sent_at == utc(2024, 5, 1, 20, 0, 5)

    def test_round_trip(self, tmp_path: Path) -> None:
        original = [
            *parse(DATA / "small.jsonl")[0],
            *parse(DATA / "rechat_small.json")[0],
            *parse(DATA / "otter_den-2024-03-01.log")[0],
        ]
        path = write(tmp_path, "out.jsonl", "".join(to_jsonl(x) + "\n" for x in original))
        again, problems, fmt = parse(path)
        assert (fmt, problems, again) == ("jsonl", [], original)

    def test_malformed_lines_are_counted_with_line_numbers(self, tmp_path: Path) -> None:
        ok = '{"channel": "den", "user_login": "a", "text": "ok", "sent_at": "2024-01-01T00:00:00Z"}'
        bad = [
            "{broken json",
            '["an", "array"]',
            '{"channel": "den", "user_login": "a", "sent_at": "2024-01-01T00:00:00Z"}',
            '{"channel": "den", "text": "no user", "sent_at": "2024-01-01T00:00:00Z"}',
            '{"user_login": "a", "text": "no channel", "sent_at": "2024-01-01T00:00:00Z"}',
            '{"channel": "den", "user_login": "a", "text": "no time"}',
            '{"channel": "den", "user_login": "a", "text": "x", "sent_at": "yesterday"}',
            '{"channel": "den", "user_login": "a", "text": "x", "offset": 1e300}',
            '{"channel": "den", "user_login": "a", "text": "x", "offset": 1, "badges": "vip"}',
            '{"channel": "den", "user_login": "a", "text": "x", "offset": 1, "emotes": [{"begin": "0", "end": 1}]}',
            '{"channel": "den", "user_login": "a", "text": "   ", "offset": 1}',
        ]
        lines, problems, _ = parse(write(tmp_path, "m.jsonl", "\n".join([ok, ok, *bad, ok]) + "\n"))
        assert len(lines) == 3
        assert [p.where for p in problems] == list(range(3, 3 + len(bad)))
        assert "'text'" in problems[2].reason and "'user_login'" in problems[3].reason
        assert "'channel'" in problems[4].reason and "'sent_at'" in problems[5].reason

    def test_out_of_range_emote_spans_are_dropped_not_fatal(self, tmp_path: Path) -> None:
        obj = {"channel": "den", "user_login": "a", "text": "Kappa", "offset": 0}
        obj["emotes"] = [{"emote_id": "25", "begin": 0, "end": 5}, {"emote_id": "25", "begin": 3, "end": 99}]
        lines, problems, _ = parse(write(tmp_path, "e.jsonl", json.dumps(obj)))
        assert problems == [] and lines[0].emotes == (EmoteSpan("25", 0, 5),)

    def test_problems_are_capped_but_all_counted(self, tmp_path: Path) -> None:
        with open_log(write(tmp_path, "bad.jsonl", '{"x": 1}\n' * (MAX_PROBLEMS + 5)), "den") as log:
            assert list(log) == []
            assert log.malformed == MAX_PROBLEMS + 5 and len(log.problems) == MAX_PROBLEMS


class TestSyntheticIds:
    """Lines without a Twitch id get ids that are stable across runs and differ by position."""

    def test_parsing_twice_gives_the_same_ids(self) -> None:
        for name in ("overrustle-style.txt", "otter_den-2024-03-01.log", "small.jsonl"):
            first = [x.message_id for x in parse(DATA / name, "otter_den")[0]]
            assert first == [x.message_id for x in parse(DATA / name, "otter_den")[0]]
            assert len(set(first)) == len(first)

    def test_identical_lines_at_different_positions_differ(self) -> None:
        lines = parse(DATA / "otter_den-2024-03-01.log")[0]
        twins = [x for x in lines if x.text == "happy new day"]
        assert len(twins) == 2 and twins[0].sent_at == twins[1].sent_at
        assert twins[0].message_id != twins[1].message_id

    def test_the_channel_is_part_of_the_id(self) -> None:
        a = parse(DATA / "overrustle-style.txt", "one_channel")[0]
        b = parse(DATA / "overrustle-style.txt", "another_channel")[0]
        assert {x.message_id for x in a}.isdisjoint(x.message_id for x in b)


class TestSampleChat:
    """The bundled demo chat is valid, about four and a half minutes long, with every mood phase."""

    def test_parses_cleanly(self) -> None:
        lines, problems, fmt = parse(SAMPLE_CHAT)
        assert (fmt, problems) == ("jsonl", [])
        assert 300 <= len(lines) <= 400
        assert {x.channel for x in lines} == {"demo"}
        assert len({x.message_id for x in lines}) == len(lines)
        assert 240 <= (lines[-1].sent_at - lines[0].sent_at).total_seconds() <= 300
        assert [x.sent_at for x in lines] == sorted(x.sent_at for x in lines)
        assert any("broadcaster" in x.badges for x in lines) and any("moderator" in x.badges for x in lines)
        assert any(x.reply_to for x in lines) and any(x.text.startswith("!mood") for x in lines)
        assert any("<script>" in x.text for x in lines) and any("onerror=" in x.text for x in lines)
        for x in lines:
            for e in x.emotes:
                assert " " not in x.text[e.begin : e.end] and e.end > e.begin

    def test_moods_come_in_phases(self) -> None:
        lines = parse(SAMPLE_CHAT)[0]
        start = lines[0].sent_at

        def first(word: str) -> float:
            return min((x.sent_at - start).total_seconds() for x in lines if word in x.text.split())

        assert first("POGGERS") < first("KEKW") < first("Sadge") < first("ResidentSleeper") < first("TwitchUnity")


@pytest.mark.skipif(not SHARED_RECHAT.exists(), reason="the shared chat logs are not here")
class TestSharedRechat:
    """The real rechat log from ../shared: every comment parses, ids are Twitch's own."""

    def test_all_messages_parse(self) -> None:
        lines, problems, fmt = parse(SHARED_RECHAT)
        assert (fmt, len(lines), problems) == ("rechat", 1632, [])
        assert len({x.message_id for x in lines}) == 1632
        assert not any(x.message_id.startswith("syn-") for x in lines)
        assert {x.channel for x in lines} == {"northernlion"}

    def test_emote_spans_cover_the_emote_fragments(self) -> None:
        raw = json.loads(SHARED_RECHAT.read_text(encoding="utf-8"))
        fragments = {c["_id"]: [f["text"] for f in c["message"]["fragments"] if f.get("emoticon")] for c in raw[1:]}
        lines = parse(SHARED_RECHAT)[0]
        assert sum(len(x.emotes) for x in lines) > 400
        for x in lines:
            assert [x.text[e.begin : e.end] for e in x.emotes] == fragments[x.message_id]


class TestHostileInput:
    """Lone surrogates (a ``\\ud83d`` JSON escape without its pair), NUL and bad bytes are decided once, at the
    edge: text keeps a U+FFFD, an id that can't be stored refuses its line (with the line number and the field),
    and nothing raises."""

    def _jsonl(self, **over: object) -> str:
        obj: dict[str, object] = {"channel": "den", "user_login": "a", "text": "ok", "offset": 1, **over}
        return json.dumps(obj)  # ensure_ascii: lone surrogates are written as \ud83d escapes, as in the wild

    def test_jsonl_ids_that_cannot_be_stored_refuse_their_line_only(self, tmp_path: Path) -> None:
        rows = [
            self._jsonl(message_id="good-1"),
            self._jsonl(message_id="bad\ud83d"),
            self._jsonl(user_login="lo\udc00gin"),
            self._jsonl(reply_to="\ud83d"),
            self._jsonl(channel_id="9\udfff"),
            self._jsonl(channel="den\ud83d"),
            self._jsonl(message_id="good-2", text="half an emoji \ud83d", user_name="Na\udc00me"),
            self._jsonl(message_id="nul\u0000id"),
        ]
        lines, problems, _ = parse(write(tmp_path, "s.jsonl", "\n".join(rows) + "\n"))
        assert [x.message_id for x in lines] == ["good-1", "good-2"]
        assert lines[1].text == "half an emoji \ufffd" and lines[1].user_name == "Na\ufffdme"
        assert [p.where for p in problems] == [2, 3, 4, 5, 6, 8]
        for p, name in zip(problems, ["message_id", "user_login", "reply_to", "channel_id", "'channel'", "message_id"],
                           strict=True):
            assert name in p.reason
            p.reason.encode("utf-8")  # printable: the summary never raises UnicodeEncodeError

    def test_rechat_comment_with_an_unstorable_id_is_refused_by_index(self, tmp_path: Path) -> None:
        def comment(cid: str, name: str = "lynx", body: str = "hi") -> dict[str, object]:
            return {"_id": cid, "created_at": "2024-01-01T00:00:00Z",
                    "commenter": {"name": name, "_id": "1"}, "message": {"body": body}}

        comments = [comment("c1"), comment("c\ud83d"), comment("c3", name="ly\udc00nx"), comment("c4", body="\ud83d!")]
        data = {"streamer": {"name": "den"}, "comments": comments}
        lines, problems, _ = parse(write(tmp_path, "r.json", json.dumps(data)))
        assert [x.message_id for x in lines] == ["c1", "c4"] and lines[1].text == "\ufffd!"
        assert [(p.where, p.reason.split()[0]) for p in problems] == [(1, "message_id"), (2, "user_login")]

    def test_text_log_user_with_nul_is_refused_not_raised(self, tmp_path: Path) -> None:
        content = b"[2024-01-01 10:00:00 UTC] a\x00b: hi\n[2024-01-01 10:00:01 UTC] fine: ok\n"
        lines, problems, _ = parse(write(tmp_path, "n.txt", content), "den")
        assert [x.user_login for x in lines] == ["fine"]
        assert [(p.where, p.reason.split()[0]) for p in problems] == [(1, "user_login")]

    def test_rechat_with_one_bad_byte_is_replayed_and_the_line_counted(self, tmp_path: Path) -> None:
        raw = (DATA / "rechat_small.json").read_bytes().replace(b"hello Kappa world", b"hello Kappa w\xffrld", 1)
        with open_log(write(tmp_path, "bad-byte.json", raw)) as log:
            lines = list(log)
            assert log.format == "rechat" and len(lines) == 5
            assert lines[0].text == "hello Kappa w\ufffdrld Kappa"
            bad_line = raw[: raw.index(b"\xff")].count(b"\n") + 1
            assert log.repaired_lines == [bad_line]

    def test_one_line_rechat_with_a_bad_byte_is_not_called_binary(self, tmp_path: Path) -> None:
        comment = b'{"_id": "c1", "created_at": "2024-01-01T00:00:00Z", "commenter": {"name": "x"}, '
        raw = b"[" + comment + b'"message": {"body": "caf\xe9"}}]'
        with open_log(write(tmp_path, "compact.json", raw), "den") as log:
            assert [x.text for x in log] == ["caf\ufffd"] and log.repaired_lines == [1]

    def test_a_start_logging_header_with_an_impossible_date_is_reported_not_raised(self, tmp_path: Path) -> None:
        body = "# Start logging at 2024-13-45 10:00:00\n[10:00:00] a: hi\n# Start logging at 2023-02-29 09:00:00\n"
        lines, problems, fmt = parse(write(tmp_path, "den-2024-01-01.log", body + "[10:00:01] b: yo\n"))
        assert fmt == "chatterino" and [x.sent_at for x in lines] == [utc(2024, 1, 1, 10), utc(2024, 1, 1, 10, 0, 1)]
        assert [p.where for p in problems] == [1, 3] and "bad date" in problems[0].reason
