"""bot.domain: chat lines keep only storable text, and the bounded set of seen ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.domain import (
    ChatLine,
    EmoteSpan,
    MoodState,
    SeenIds,
    UnstorableField,
    clean_text,
    printable,
    synthetic_message_id,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)


def line(text: str, *, user_name: str = "Viewer", emotes: tuple[EmoteSpan, ...] = ()) -> ChatLine:
    return ChatLine("m1", "chan", "1", "viewer", user_name, text, AT, emotes=emotes)


class TestCleanText:
    """One rule for every chat line, wherever it was built: no NUL, no lone surrogate."""

    def test_nul_is_removed_and_emote_spans_move_with_it(self) -> None:
        got = line("a\x00b Kappa", emotes=(EmoteSpan("25", 4, 9),))
        assert got.text == "ab Kappa"
        assert got.emotes == (EmoteSpan("25", 3, 8),)
        assert got.text[got.emotes[0].begin:got.emotes[0].end] == "Kappa"

    def test_a_span_that_no_longer_fits_is_dropped(self) -> None:
        got = line("\x00\x00ab", emotes=(EmoteSpan("1", 2, 4), EmoteSpan("2", 0, 1)))
        assert got.text == "ab" and got.emotes == (EmoteSpan("1", 0, 2),)

    def test_lone_surrogates_become_replacement_characters(self) -> None:
        got = line("hi \ud83d there", user_name="Bad\udc00Name")
        assert got.text == "hi \ufffd there" and got.user_name == "Bad\ufffdName"
        got.text.encode("utf-8")  # storable as BSON

    def test_clean_text_keeps_good_text_as_is(self) -> None:
        for text in ("", "plain", "KEKW 😂 ü", "tab\tand\nnewline"):
            assert clean_text(text) == text

    def test_naive_time_is_refused(self) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            ChatLine("m", "c", "1", "u", "u", "x", datetime(2026, 1, 1))


class TestUnstorableIds:
    """An id, login or channel that no database can store (lone surrogate, NUL) is refused, naming the field;
    text is repaired instead, and badges and emote ids that can't be stored are dropped."""

    @pytest.mark.parametrize("field", ["message_id", "channel", "channel_id", "user_id", "user_login", "reply_to"])
    @pytest.mark.parametrize("bad", ["x\ud83d", "\udc00", "a\x00b"])
    def test_each_id_field_is_refused_by_name(self, field: str, bad: str) -> None:
        values: dict[str, object] = {
            "message_id": "m1", "channel": "chan", "user_id": "1", "user_login": "viewer",
            "user_name": "Viewer", "text": "hi", "sent_at": AT, "reply_to": "p1", "channel_id": "9",
        }
        values[field] = bad
        with pytest.raises(UnstorableField, match=field) as err:
            ChatLine(**values)  # type: ignore[arg-type]
        assert err.value.field == field and isinstance(err.value, ValueError)
        str(err.value).encode("utf-8")  # the reason itself is printable

    def test_odd_badges_and_emote_ids_are_dropped_not_fatal(self) -> None:
        got = ChatLine("m1", "chan", "1", "viewer", "Viewer", "Kappa hi", AT,
                       badges=frozenset({"vip", "b\ud800"}), emotes=(EmoteSpan("e\udfff", 0, 5), EmoteSpan("25", 0, 5)))
        assert got.badges == frozenset({"vip"}) and got.emotes == (EmoteSpan("25", 0, 5),)

    def test_synthetic_ids_take_text_with_a_lone_surrogate(self) -> None:
        a = synthetic_message_id("chan", AT, "u", "hi \ud83d", 1)
        assert a == synthetic_message_id("chan", AT, "u", "hi \ud83d", 1)
        assert a != synthetic_message_id("chan", AT, "u", "hi", 1)

    def test_printable_escapes_what_a_utf8_stream_cannot_take(self) -> None:
        assert printable("ok é") == "ok é"
        assert printable("log-\udcff.json") == "log-\\udcff.json"


class TestSeenIds:
    """A bounded LRU of ids: the oldest is forgotten first, and looking an id up refreshes it."""

    def test_forgets_the_oldest(self) -> None:
        d = SeenIds(size=2)
        assert d.first_time("a") and d.first_time("b") and not d.first_time("a")
        assert d.first_time("c")  # evicts b (a was touched)
        assert d.first_time("b") and not d.first_time("c")
        assert len(d) == 2

    def test_add_and_contains(self) -> None:
        d = SeenIds(size=3)
        for key in "abcd":
            d.add(key)
        assert "a" not in d and all(k in d for k in "bcd")


class TestLeaning:
    """What a neutral label in a coloured orb needs said: the mood the colour leans to, when it leans clearly."""

    def mood(self, **kw: object) -> MoodState:
        base: dict[str, object] = {"channel": "c", "label": "neutral", "share": 0.55, "valence": 0.2,
                                   "colour": "#d99059", "shares": {"neutral": 0.55, "hype": 0.254}}
        return MoodState(**{**base, **kw})  # type: ignore[arg-type]

    def test_a_clear_lean_is_named_with_its_share(self) -> None:
        assert self.mood(lean="hype", strength=0.61).leaning() == "leaning hype 25%"

    def test_a_faint_lean_or_the_named_mood_itself_is_not(self) -> None:
        assert self.mood(lean="hype", strength=0.3).leaning() == ""
        assert self.mood(label="hype", lean="hype", strength=0.9).leaning() == ""
        assert self.mood(lean=None, strength=0.0).leaning() == ""
