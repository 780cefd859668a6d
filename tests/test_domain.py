"""bot.domain: chat lines keep only storable text, and the bounded set of seen ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.domain import ChatLine, EmoteSpan, SeenIds, clean_text

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
