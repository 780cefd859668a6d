"""What a model writes, made fit for chat; and the prompt it reads."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.config import BotConfig, PersonaConfig
from bot.domain import MoodState
from bot.persona.clean import CHAT_CHARS, MAX_CHARS, blocked_by, clean_reply
from bot.persona.prompt import HISTORY_CHARS, build_messages, history_lines, mood_in_words
from tests.fakes.chat import chat_line

OWN = ["my_mood_bot", "moodbot"]


def clean(raw: str, **kw: object) -> tuple[str | None, str | None]:
    return clean_reply(raw, own=OWN, **kw)  # type: ignore[arg-type]


class TestClean:
    def test_first_line_only(self) -> None:
        assert clean("\n\n  hello chat  \nsecond line") == ("hello chat", None)

    def test_role_markers_and_speaker_prefixes_go(self) -> None:
        assert clean("<|im_start|>assistant\nAssistant: hi there") == ("hi there", None)
        assert clean("my_mood_bot: chat is hype") == ("chat is hype", None)
        assert clean("@mymoodbot, chat is hype") == ("chat is hype", None)  # its name, however spelled
        assert clean("alice: lol", names=["alice"]) == ("lol", None)
        assert clean("Note: drink water") == ("Note: drink water", None)  # not a speaker we know
        assert clean("@viewer_vic glad you asked") == ("@viewer_vic glad you asked", None)

    def test_control_and_invisible_characters_go(self) -> None:
        assert clean("hi\x15 there\u200b\x08 chat\r\nmore") == ("hi there chat", None)

    def test_wrapping_quotes_go(self) -> None:
        assert clean('"so hype right now"') == ("so hype right now", None)
        assert clean("“so hype”") == ("so hype", None)
        assert clean('"Hey PogChamp, glad you are here.') == ("Hey PogChamp, glad you are here.", None)
        assert clean('he said "gg" twice') == ('he said "gg" twice', None)

    def test_never_a_chat_command(self) -> None:
        for raw in ("/ban viewer", ".timeout viewer 600", "!mood", " / me waves", "//./ban x"):
            text, _ = clean(raw)
            assert text is not None and not text.startswith(("/", ".", "!")), raw

    def test_echo_of_the_message_or_the_prompt_is_dropped(self) -> None:
        echoes = ["@my_mood_bot how is chat feeling?", "what's the vibe in here?"]
        assert clean("@mymoodbot how is chat feeling?", echoes=echoes) == (None, "echo")
        assert clean("How is chat feeling", echoes=echoes) == (None, "echo")
        assert clean("What's the vibe in here? lol", echoes=echoes) == (None, "echo")
        assert clean("chat is feeling hype right now!", echoes=echoes) == ("chat is feeling hype right now!", None)

    def test_at_most_500_characters(self) -> None:
        text, _ = clean("word " * 300)
        assert text is not None and len(text) <= MAX_CHARS and text.endswith("…")

    def test_a_cut_reply_loses_its_half_sentence(self) -> None:
        raw = "Chat is hype right now, what a play. And the next round is going to be"
        assert clean(raw, cut_short=True) == ("Chat is hype right now, what a play.", None)
        assert clean(raw, cut_short=False) == (raw, None)

    def test_a_long_reply_keeps_the_sentences_that_fit_a_chat_line(self) -> None:
        first = "Chat is quiet right now PogChamp."
        rambling = (" You're a friendly and chatty viewer, but you also love to talk about your day or the other thing"
                    " that's happened so far in this world.")
        assert clean(first + rambling) == (first, None)
        short = "lol, chat is feeling nice. you're all about the streamer right now."
        assert clean(short) == (short, None)  # within a chat line: both stay
        three = "Hype in here! " * 3 + "And then " + "a long tail " * 12 + "past a chat line's length."
        text, _ = clean(three)
        assert text == "Hype in here! Hype in here! Hype in here!" and len(text) <= CHAT_CHARS
        one = "a single sentence that runs on " * 8  # no sentence end: nothing to cut at but the 500 limit
        text, _ = clean(one)
        assert text == one.strip()

    def test_links_are_dropped(self) -> None:
        assert clean("check https://example.com now") == (None, "link")
        assert clean("visit www.example.org") == (None, "link")
        assert clean("go to free-skins.gg") == (None, "link")
        assert clean("this is the way.") == ("this is the way.", None)

    def test_blocklist_whole_words_case_insensitive(self) -> None:
        assert clean("that was Cringe honestly", blocklist=["cringe"]) == (None, "blocked")
        assert clean("I love pineapple pizza", blocklist=["pineapple pizza"]) == (None, "blocked")
        assert clean("cringeworthy? no", blocklist=["cringe"]) == ("cringeworthy? no", None)
        assert blocked_by("so BAD", ["good", "bad"]) == "bad"

    def test_nothing_left(self) -> None:
        assert clean("   \n  ") == (None, "empty")
        assert clean("assistant:") == (None, "empty")
        assert clean("...") == (None, "empty")


def bot(**kw: object) -> BotConfig:
    return BotConfig(name="moodbot", account="my_mood_bot", channels=("chan",),
                     persona=PersonaConfig(**kw))  # type: ignore[arg-type]


class TestPrompt:
    def test_mood_in_words(self) -> None:
        state = MoodState("chan", "hype", 0.613, 0.5, "#ff8c00", {"hype": 0.613}, messages=12)
        assert mood_in_words(state) == "chat is hype right now, 61%"
        assert mood_in_words(MoodState("chan", "neutral", 1.0, 0.0, "#8a8f98")) == "chat is quiet right now"
        assert mood_in_words(None) == "chat is quiet right now"

    def test_the_model_reads_persona_mood_recent_chat_and_the_message(self) -> None:
        history = [chat_line(f"line {i}", user=f"u{i}", channel="chan") for i in range(20)]
        line = chat_line("@my_mood_bot how is chat feeling?", user="vic", channel="chan")
        msgs = build_messages(bot(system_prompt="You are Moody.", context_messages=3), "reply", channel="chan",
                              mood="chat is hype right now, 61%", history=history, line=line)
        system = msgs[0]["content"]
        assert msgs[0]["role"] == "system" and system.startswith("You are Moody.")
        assert "Right now chat is hype right now, 61%." in system
        assert "U17: line 17\nU18: line 18\nU19: line 19" in system and "line 16" not in system
        assert msgs[-1] == {"role": "user", "content": "Vic: how is chat feeling?"}  # addressed to it: no @
        assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]

    def test_no_window_and_the_default_prompt(self) -> None:
        msgs = build_messages(bot(context_messages=0), "join", channel="chan", mood="chat is quiet right now",
                              history=[chat_line("hi", channel="chan")], line=chat_line("gg", channel="chan"))
        assert "Recent chat" not in msgs[0]["content"]
        assert msgs[0]["content"].startswith("You are my_mood_bot, a friendly regular")

    def test_the_window_is_bounded_in_characters(self) -> None:
        long = [chat_line("x" * 400, user=f"u{i}", sent_at=datetime.now(UTC)) for i in range(50)]
        lines = history_lines(long, 50)
        assert sum(len(s) + 1 for s in lines) <= HISTORY_CHARS + 1
        assert lines and lines[-1].startswith("U49:") and all(len(s) < 170 for s in lines)
