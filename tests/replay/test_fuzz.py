"""Property tests over the four log parsers and ChatLine construction (hypothesis).

Each example is a generated chat log mixing valid lines (each carrying a unique ``zq<N>zq`` marker in its text)
with lines that must be refused (broken JSON, unstorable ids with lone surrogates or NUL, impossible times,
empty messages, bytes that aren't UTF-8, ...). For every log: no exception escapes, every valid line comes out
exactly once (with a storable, unique, deterministic id, so storage keeps it exactly once), and every refused
line is counted once and reported with its line number (rechat: its array index).

``make test`` runs a few dozen examples per format; ``pytest -m fuzz`` runs 25,000 per format and 20,000
ChatLines (``CHATMOOD_FUZZ_EXAMPLES`` sets the per-format number; see the README).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bot.domain import ID_FIELDS, ChatLine, EmoteSpan, UnstorableField, clean_text, storable
from bot.replay.logfile import open_log

FAST = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: Examples per format in the long run (4 formats: 10^5 logs); CHATMOOD_FUZZ_EXAMPLES changes it.
LONG_EXAMPLES = int(os.environ.get("CHATMOOD_FUZZ_EXAMPLES", "25000"))
LONG = settings(max_examples=LONG_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CHATLINE_LONG = settings(LONG, max_examples=LONG_EXAMPLES * 4 // 5)

MARKER = re.compile(r"zq(\d+)zq")
LONE = ["\ud83d", "\udc00", "\udfff"]
ODD = ["\x00", "\u200b", "\u202e", "\ufeff", "е", "😂", "\x85", "\u2028", "\t", "\\", '"', "#", "[", "{", ":"]

# Text a hostile chat can hold (no line breaks: one line is one message); JSON formats also carry lone surrogates.
line_text = st.text(st.one_of(st.characters(codec="utf-8", blacklist_characters="\n\r"), st.sampled_from(ODD)),
                    max_size=30)
json_text = st.text(st.one_of(st.characters(blacklist_characters="\n\r"), st.sampled_from(ODD + LONE)),
                    max_size=30).filter(lambda s: "zq" not in s)
login = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=15)
storable_id = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                      max_size=20)
unstorable = st.builds(lambda a, bad, b: a + bad + b, storable_id, st.sampled_from([*LONE, "\x00"]), storable_id)
# A display name as text logs write it before "(login)": no space, ':', '[', ']' or parentheses.
display = st.text(st.characters(blacklist_categories=("Z", "C"), blacklist_characters=":[]()"), min_size=1,
                  max_size=20).filter(lambda s: "zq" not in s)
times = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2099, 12, 31))


@dataclass
class Log:
    """A generated log: its bytes, and what parsing it must give."""

    fmt: str
    channel: str | None = None  # passed to open_log
    lines: list[bytes] = field(default_factory=list)
    valid: dict[int, int] = field(default_factory=dict)  # marker -> line number (rechat: array index)
    refused: set[int] = field(default_factory=set)  # line numbers (rechat: indexes) that must be reported
    repaired: list[int] = field(default_factory=list)  # rechat: physical lines with a bad byte, kept

    def add(self, raw: bytes, *, marker: int | None = None) -> None:
        self.lines.append(raw)
        where = len(self.lines)
        if marker is not None:
            self.valid[marker] = where
        else:
            self.refused.add(where)


# ----------------------------------------------------------------------------------------------------- text logs


TEXT_KINDS = st.lists(st.sampled_from(["ok", "ok", "ok", "junk", "hour", "empty", "nul-user", "bytes", "blank",
                                      "comment", "day", "header", "bad-header"]), min_size=1, max_size=15)
# Per line: seconds since the previous one, the user as written ("login" or "Display (login)"), some text.
TEXT_LINE = st.tuples(st.integers(0, 90), st.one_of(login, st.builds(lambda n, lg: f"{n} ({lg})", display, login)),
                      line_text)


@st.composite
def text_logs(draw: st.DrawFn, dated: bool) -> Log:
    log = Log("justlog" if dated else "chatterino", channel="fuzzchan")

    def stamp(at: datetime, hour: str | None = None, day: str | None = None) -> str:
        clock = f"{hour or f'{at.hour:02d}'}:{at.minute:02d}:{at.second:02d}"
        return f"[{day or at.date().isoformat()} {clock} UTC]" if dated else f"[{clock}]"

    at = draw(times)
    for i, kind in enumerate(["ok", *draw(TEXT_KINDS)]):  # the first line is valid, so the format can be told
        gap, user, text = draw(TEXT_LINE)
        at += timedelta(seconds=gap)
        if kind == "ok":
            log.add(f"{stamp(at)} {user}: zq{i}zq {text}".encode(), marker=i)
        elif kind == "junk":
            log.add(f"not a chat line {text}".encode())
        elif kind == "hour":
            log.add(f"{stamp(at, hour='25')} {user}: no such hour".encode())
        elif kind == "day" and dated:
            log.add(f"{stamp(at, day='2023-02-30')} {user}: no such day".encode())
        elif kind == "empty":
            log.add(f"{stamp(at)} {user}:{['', ' ', '   ', ' ' + chr(0)][gap % 4]}".encode())
        elif kind == "nul-user":
            log.add(f"{stamp(at)} a\x00b: hi".encode())
        elif kind == "bytes":
            log.add(f"{stamp(at)} {user}: caf".encode() + b"\xe9 \xff")
        elif kind == "blank":
            log.lines.append([b"", b"   ", b"\t"][gap % 3])
        elif kind == "header":  # Chatterino's: a new date for the lines below
            log.lines.append(f"# Start logging at {at.date().isoformat()} {at.time().isoformat()}".encode())
        elif kind == "bad-header":
            log.add(b"# Start logging at " + [b"2024-13-45", b"2023-02-29", b"0000-01-01"][gap % 3])
        else:  # a comment line, or an undated "day" line in a Chatterino log
            log.lines.append(f"# {text}".encode())
    return log


# ---------------------------------------------------------------------------------------------------------- jsonl

RECORD = st.fixed_dictionaries(
    {
        "message_id": storable_id,
        "channel": st.sampled_from(["fuzzchan", "#FuzzChan", " fuzzchan "]),
        "user_login": login,
        "text": json_text,
        "when": st.one_of(
            st.builds(lambda at, zone: ("sent_at", at.isoformat() + zone), times,
                      st.sampled_from(["", "Z", "+02:00", "-14:00"])),
            st.builds(lambda x: ("offset", x), st.floats(0, 1e7, allow_nan=False)),
        ),
    },
    optional={
        "user_name": json_text,
        "user_id": st.one_of(storable_id, st.integers(0, 10**12)),
        "badges": st.lists(st.one_of(st.sampled_from(["vip", "moderator", "founder"]), json_text), max_size=3),
        "emotes": st.lists(st.fixed_dictionaries({"emote_id": json_text, "begin": st.integers(-5, 60),
                                                  "end": st.integers(-5, 60)}), max_size=3),
        "reply_to": storable_id,
        "channel_id": storable_id,
    },
)
JSONL_KINDS = st.lists(st.sampled_from(["ok", "ok", "ok", "junk", "array", "no-text", "bad-id", "bad-login",
                                        "bad-channel", "bad-reply", "blank-text", "bad-time", "huge-offset",
                                        "bad-emote", "bytes", "blank"]), min_size=1, max_size=15)


@st.composite
def jsonl_logs(draw: st.DrawFn) -> Log:
    log = Log("jsonl")
    for i, kind in enumerate(["ok", *draw(JSONL_KINDS)]):
        obj: dict[str, object] = draw(RECORD)
        key, when = obj.pop("when")  # type: ignore[misc]
        obj[key] = when
        obj["message_id"] = f"id-{i}-{obj['message_id']}"
        obj["text"] = f"zq{i}zq {obj['text']}"
        if kind == "ok":
            log.add(json.dumps(obj).encode(), marker=i)
            continue
        if kind == "blank":
            log.lines.append(b"")
            continue
        if kind == "junk":
            raw = "not json {" + json.dumps(obj["text"])
        elif kind == "array":
            raw = json.dumps([obj])
        else:
            if kind == "no-text":
                del obj["text"]
            elif kind in ("bad-id", "bad-login", "bad-reply"):
                obj[{"bad-id": "message_id", "bad-login": "user_login", "bad-reply": "reply_to"}[kind]] = draw(
                    unstorable)
            elif kind == "bad-channel":
                obj["channel"] = draw(st.sampled_from(["not a channel!", "fuzz\ud83d", "", "x" * 26]))
            elif kind == "blank-text":
                obj["text"] = draw(st.sampled_from(["", "   ", "\x00", "\x00 \x00"]))
            elif kind == "bad-time":
                obj.pop("offset", None)
                obj["sent_at"] = draw(st.sampled_from(["yesterday", "2024-13-01T00:00:00", "", "9999-99-99"]))
            elif kind == "huge-offset":
                obj.pop("sent_at", None)
                obj["offset"] = draw(st.sampled_from([1e300, 1e20, -1e300]))
            elif kind == "bad-emote":
                obj["emotes"] = [{"emote_id": "1", "begin": "0", "end": 2}]
            raw = json.dumps(obj)
        log.add(raw.encode() + (b" \xff" if kind == "bytes" else b""))
    return log


# --------------------------------------------------------------------------------------------------------- rechat


COMMENT = st.fixed_dictionaries({
    "_id": storable_id,
    "created_at": st.builds(lambda at: at.isoformat() + "Z", times),
    "commenter": st.fixed_dictionaries({"name": login, "display_name": json_text, "_id": storable_id}),
    "message": st.fixed_dictionaries({
        "body": json_text,
        "emoticons": st.lists(st.fixed_dictionaries({"_id": json_text, "begin": st.integers(-2, 50),
                                                     "end": st.integers(-2, 50)}), max_size=2),
        "user_badges": st.lists(st.builds(lambda b: {"_id": b}, json_text), max_size=2),
    }),
})
RECHAT_KINDS = st.lists(st.sampled_from(["ok", "ok", "ok", "ok-bad-byte", "scalar", "no-commenter", "body-int",
                                         "blank-body", "bad-id", "bad-name", "bad-time"]), min_size=1, max_size=15)


@st.composite
def rechat_logs(draw: st.DrawFn) -> Log:
    log = Log("rechat")
    elements: list[bytes] = []
    for i, kind in enumerate(["ok", *draw(RECHAT_KINDS)]):
        comment: dict[str, object] = draw(COMMENT)
        message = comment["message"]
        assert isinstance(message, dict)
        comment["_id"] = f"c{i}-{comment['_id']}"
        message["body"] = f"zq{i}zq {message['body']}"
        element: object = comment
        if kind == "scalar":
            element = draw(st.sampled_from([5, "text", None, [], True]))
        elif kind == "no-commenter":
            del comment["commenter"]
        elif kind == "body-int":
            message["body"] = 7
        elif kind == "blank-body":
            message["body"] = draw(st.sampled_from(["", "  ", "\x00"]))
        elif kind == "bad-id":
            comment["_id"] = draw(unstorable)
        elif kind == "bad-name":
            comment["commenter"] = {"name": "ab\ud83dcd"}
        elif kind == "bad-time":
            comment["created_at"] = "not a time"
        raw = json.dumps(element).encode()
        if kind == "ok-bad-byte":  # one byte that isn't UTF-8 inside the body: kept, with U+FFFD
            raw = raw.replace(f'"zq{i}zq '.encode(), f'"zq{i}zq \xff'.encode("latin-1"), 1)
            log.repaired.append(i + 4)  # after '{', the streamer and '"comments": ['
        elements.append(raw)
        if kind in ("ok", "ok-bad-byte"):
            log.valid[i] = i
        else:
            log.refused.add(i)
    log.lines = [b"{", b'"streamer": {"name": "FuzzChan"},', b'"comments": [', b",\n".join(elements), b"]}"]
    return log


# ---------------------------------------------------------------------------------------------------- the check


def check(log: Log) -> None:
    """Parse ``log`` twice; everything the module docstring promises holds."""
    with tempfile.TemporaryDirectory() as tmp, capture_logs():  # malformed lines are logged: keep them in memory
        path = Path(tmp) / {"rechat": "log.json", "jsonl": "log.jsonl"}.get(log.fmt, "log.txt")
        path.write_bytes(b"\n".join(log.lines) + b"\n")
        runs = []
        for _ in range(2):
            with open_log(path, log.channel) as parsed:
                lines = list(parsed)
                runs.append([x.message_id for x in lines])
        assert parsed.format == log.fmt
        markers = []
        for line in lines:
            m = MARKER.match(line.text)
            assert m is not None, line.text
            markers.append(int(m[1]))
            assert all(storable(getattr(line, f)) for f in ID_FIELDS if getattr(line, f) is not None)
            assert storable(line.text) and storable(line.user_name) and line.channel == "fuzzchan"
            assert all(0 <= e.begin < e.end <= len(line.text) and storable(e.emote_id) for e in line.emotes)
        assert sorted(markers) == sorted(log.valid), "every valid line exactly once"
        assert len(set(runs[0])) == len(runs[0]) and runs[0] == runs[1], "unique, deterministic ids"
        wheres = [p.where for p in parsed.problems]
        assert sorted(wheres) == sorted(log.refused) and parsed.malformed == len(log.refused), parsed.problems
        assert all(p.reason and storable(p.reason) for p in parsed.problems)
        assert parsed.repaired_lines == log.repaired


FORMATS: dict[str, Callable[[], st.SearchStrategy[Log]]] = {
    "justlog": lambda: text_logs(dated=True),
    "chatterino": lambda: text_logs(dated=False),
    "jsonl": jsonl_logs,
    "rechat": rechat_logs,
}


def run_logs(fmt: str, how: settings) -> None:
    @how
    @given(FORMATS[fmt]())
    def property_holds(log: Log) -> None:
        check(log)

    property_holds()


class TestParsers:
    """A few dozen generated logs per format, on every `make test`."""

    @pytest.mark.parametrize("fmt", list(FORMATS))
    def test_parsers(self, fmt: str) -> None:
        run_logs(fmt, FAST)


@pytest.mark.fuzz
@pytest.mark.timeout(0)  # minutes, not the suite's per-test limit
class TestParsersLong:
    """``pytest -m fuzz``: 25,000 generated logs per format (10^5 in all)."""

    @pytest.mark.parametrize("fmt", list(FORMATS))
    def test_parsers(self, fmt: str) -> None:
        run_logs(fmt, LONG)


# ------------------------------------------------------------------------------------------------------ ChatLine

any_text = st.text(st.one_of(st.characters(), st.sampled_from([*LONE, "\x00"])), max_size=30)


def check_chat_line(values: dict[str, str], emotes: list[tuple[str, int, int]], badges: list[str]) -> None:
    spans = tuple(EmoteSpan(e, b, end) for e, b, end in emotes)
    try:
        line = ChatLine(sent_at=datetime(2024, 1, 1, tzinfo=UTC), emotes=spans, badges=frozenset(badges),
                        **values)  # type: ignore[arg-type]
    except UnstorableField as e:
        assert e.field in ID_FIELDS and not storable(values[e.field])
        assert all(storable(values[f]) for f in ID_FIELDS[: ID_FIELDS.index(e.field)])
        return
    assert all(storable(values[f]) for f in ID_FIELDS)
    assert line.text == clean_text(values["text"]) and storable(line.text) and storable(line.user_name)
    assert all(storable(b) for b in line.badges) and all(storable(e.emote_id) for e in line.emotes)
    assert {b for b in badges if storable(b)} == line.badges


chat_lines = (
    st.fixed_dictionaries({f: any_text for f in (*ID_FIELDS, "user_name", "text")}),
    st.lists(st.tuples(any_text, st.integers(0, 40), st.integers(0, 40)), max_size=3),
    st.lists(any_text, max_size=3),
)


def run_chat_lines(how: settings) -> None:
    @how
    @given(*chat_lines)
    def property_holds(values: dict[str, str], emotes: list[tuple[str, int, int]], badges: list[str]) -> None:
        check_chat_line(values, emotes, badges)

    property_holds()


class TestChatLine:
    def test_construction(self) -> None:
        run_chat_lines(FAST)


@pytest.mark.fuzz
@pytest.mark.timeout(0)
class TestChatLineLong:
    def test_construction(self) -> None:
        run_chat_lines(CHATLINE_LONG)
