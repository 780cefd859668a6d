"""Chat commands: parsing, aliases, permissions, cooldowns, the !mood reply, and the executor against real storage."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from bot.commands.executor import CommandExecutor
from bot.commands.format import emoji_square, format_mood
from bot.commands.router import (
    MAX_REPLY,
    CommandRouter,
    LabelCommand,
    MoodCommand,
    Reply,
    ResetCommand,
    role_of,
)
from bot.config import DEFAULT_CATEGORIES, CommandConfig, CommandsConfig, HistoryConfig
from bot.domain import ChatLine, MoodState, Verdict
from bot.history.reads import History
from bot.mood.hub import MoodHub
from bot.mood.publisher import MoodPublisher
from bot.mood.tracker import MoodTracker
from bot.storage.store import Storage
from tests.fakes.chat import chat_line
from tests.fakes.clock import FakeClock

BOT = "moodbot"
CHANNEL = "streamer"
CATEGORIES = tuple(c.name for c in DEFAULT_CATEGORIES)
NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def chat(text: str, user: str = "viewer", badges: tuple[str, ...] = (), **kw: Any) -> ChatLine:
    """A line in this module's channel, sent at NOW unless told."""
    kw.setdefault("channel", CHANNEL)
    kw.setdefault("sent_at", NOW)
    return chat_line(text, user, badges, **kw)


def router(cfg: CommandsConfig | None = None, clock: FakeClock | None = None) -> CommandRouter:
    clock = clock or FakeClock(1000.0)
    return CommandRouter(cfg or CommandsConfig(), CATEGORIES, bot_accounts={BOT.upper()}, clock=clock)


MOD = ("moderator",)


class TestParsing:
    def test_plain_commands(self) -> None:
        """The command word is case-insensitive, surrounding space is ignored; only the first word counts."""
        r = router(CommandsConfig(mood=CommandConfig()))
        assert isinstance(r.route(chat("!mood")), MoodCommand)
        assert isinstance(r.route(chat("  !MoOd  please ")), MoodCommand)
        assert isinstance(r.route(chat("!reset", badges=MOD)), ResetCommand)
        for text in ("mood", "!moodx", "!", "hello !mood", "", "   ", "!! mood", "?mood"):
            assert r.route(chat(text, user="x" + str(len(text)))) is None, text

    def test_command_shape_prefilter(self) -> None:
        """is_command() (ingest's pre-filter) accepts exactly the lines the router reads, replies included."""
        r = router(CommandsConfig(mood=CommandConfig(aliases=("vibe",)), reset=CommandConfig(enabled=False)))
        assert r.is_command(chat("!mood"))
        assert r.is_command(chat("  !label hype"))
        assert r.is_command(chat("@alice !label hype", reply_to="p-1"))
        assert r.is_command(chat("!VIBE")) and r.is_command(chat("!reset"))  # an alias; a disabled command
        assert not r.is_command(chat("@alice !label hype"))
        assert not r.is_command(chat("hi !mood"))
        assert not r.is_command(chat("!"))
        assert not r.is_command(chat("@alice", reply_to="p-1"))
        cm = router(CommandsConfig(prefix="cm!"))
        assert cm.is_command(chat("CM!mood")) and not cm.is_command(chat("!mood"))

    @pytest.mark.parametrize("text", ["!!!! POGGERS", "!rеset", "!mооd now", "!moodx", "!pog LETSGO", "!! mood"])
    def test_lines_that_only_look_like_commands_are_chat(self, text: str) -> None:
        """Only a known command word makes a command: the rest is chat and gets classified."""
        r = router(CommandsConfig())
        assert not r.is_command(chat(text)) and r.route(chat(text, badges=MOD)) is None

    def test_command_word_case_is_ignored(self) -> None:
        r = router(CommandsConfig(mood=CommandConfig()))  # no cooldowns
        for text in ("!MOOD", "!Mood", "  !mood  extra words"):
            cmd = r.route(chat(text))
            assert isinstance(cmd, MoodCommand)
            assert cmd.line.text == text

    def test_aliases(self) -> None:
        """Configured aliases (any case, with or without the prefix) run the same command."""
        cfg = CommandsConfig(
            mood=CommandConfig(aliases=("vibe", "Vibes", "!chatmood")),
            reset=CommandConfig(allowed="moderator", aliases=("clear",)),
        )
        r = router(cfg)
        for text in ("!vibe", "!VIBES", "!chatmood", "!mood"):
            assert isinstance(r.route(chat(text)), MoodCommand), text
        assert isinstance(r.route(chat("!clear", badges=MOD)), ResetCommand)

    def test_prefix_change(self) -> None:
        r = router(CommandsConfig(prefix="cm!", mood=CommandConfig()))
        assert isinstance(r.route(chat("cm!mood")), MoodCommand)
        assert isinstance(r.route(chat("CM!mood")), MoodCommand)
        assert r.route(chat("!mood")) is None
        r.update_config(CommandsConfig(prefix="?", mood=CommandConfig()), CATEGORIES)
        assert r.prefix == "?"
        assert isinstance(r.route(chat("?mood")), MoodCommand)
        assert r.route(chat("cm!mood")) is None

    def test_disabled_command_is_silent(self) -> None:
        r = router(CommandsConfig(mood=CommandConfig(enabled=False)))
        assert r.route(chat("!mood", badges=("broadcaster",))) is None

    def test_own_messages_are_ignored(self) -> None:
        """The bot never answers itself, whatever its badges and however its login is cased."""
        r = router(CommandsConfig(mood=CommandConfig()))
        assert r.route(chat("!mood", user=BOT, badges=("moderator",))) is None
        assert r.route(chat("!reset", user=BOT, badges=("moderator",))) is None
        assert isinstance(r.route(chat("!mood", user="someone")), MoodCommand)


class TestLabelParsing:
    def test_label_by_user(self) -> None:
        cmd = router().route(chat("!label HYPE @Alice", badges=MOD))
        assert isinstance(cmd, LabelCommand)
        assert (cmd.category, cmd.target_user, cmd.target_message_id) == ("hype", "alice", None)

    def test_label_by_message_id(self) -> None:
        cmd = router().route(chat("!label sad 8f1c2d3e-0000-4a6b-9c1d-abcdef012345", badges=MOD))
        assert isinstance(cmd, LabelCommand)
        assert (cmd.category, cmd.target_user, cmd.target_message_id) == (
            "sad",
            None,
            "8f1c2d3e-0000-4a6b-9c1d-abcdef012345",
        )

    def test_label_the_message_replied_to(self) -> None:
        """A Twitch reply's text begins with "@parent"; the command after it labels the parent message."""
        r = router()
        cmd = r.route(chat("@Alice !label funny", badges=MOD, reply_to="parent-1"))
        assert isinstance(cmd, LabelCommand)
        assert (cmd.category, cmd.target_message_id, cmd.target_user) == ("funny", "parent-1", None)
        cmd = r.route(chat("!label funny", badges=MOD, reply_to="parent-2"))
        assert isinstance(cmd, LabelCommand) and cmd.target_message_id == "parent-2"
        explicit = r.route(chat("@Alice !label love @bob", badges=MOD, reply_to="parent-3"))
        assert isinstance(explicit, LabelCommand) and explicit.target_user == "bob"
        assert r.route(chat("@Alice !label funny", badges=MOD)) is None  # not a reply: "@Alice" is the head

    def test_unknown_category_lists_the_valid_ones(self) -> None:
        line = chat("!label bored @alice", badges=MOD)
        reply = router().route(line)
        assert isinstance(reply, Reply)
        assert reply.channel == CHANNEL and reply.reply_to == line.message_id
        assert "'bored'" in reply.text
        assert all(c in reply.text for c in CATEGORIES)

    def test_usage_replies(self) -> None:
        """No category, no target (and not a reply), or a malformed target gets the usage line."""
        r = router()
        for text in ("!label", "!label hype", "!label hype @", "!label hype @not/a/login", "!label hype <script>"):
            reply = r.route(chat(text, badges=MOD))
            assert isinstance(reply, Reply), text
            assert reply.text.startswith("usage: !label <category>"), text
        r.update_config(CommandsConfig(prefix="?"), CATEGORIES)
        reply = r.route(chat("?label", badges=MOD))
        assert isinstance(reply, Reply) and reply.text.startswith("usage: ?label")

    def test_overlong_unknown_category_reply_is_capped(self) -> None:
        reply = router().route(chat("!label " + "x" * 2000, badges=MOD))
        assert isinstance(reply, Reply)
        assert len(reply.text) <= MAX_REPLY
        assert "x" * 40 not in reply.text


class TestPermissions:
    @pytest.mark.parametrize(
        ("badges", "role"),
        [
            ((), "everyone"),
            (("subscriber",), "subscriber"),
            (("vip", "subscriber"), "vip"),
            (("moderator", "subscriber"), "moderator"),
            (("broadcaster",), "broadcaster"),
            (("moderator", "broadcaster"), "broadcaster"),
            (("turbo", "premium"), "everyone"),
        ],
    )
    def test_role_from_badges(self, badges: tuple[str, ...], role: str) -> None:
        assert role_of(chat("x", badges=badges)) == role

    def test_channel_owner_is_broadcaster_without_badge(self) -> None:
        assert role_of(chat("x", user=CHANNEL)) == "broadcaster"

    @pytest.mark.parametrize(
        ("badges", "allowed"),
        [
            ((), False),
            (("subscriber",), False),
            (("vip",), False),
            (("moderator",), True),
            (("broadcaster",), True),
        ],
    )
    def test_moderator_commands(self, badges: tuple[str, ...], allowed: bool) -> None:
        """!label and !reset need moderator or broadcaster; others get no reply by default."""
        r = router()
        label = r.route(chat("!label hype @alice", badges=badges))
        reset = r.route(chat("!reset", badges=badges))
        assert isinstance(label, LabelCommand) is allowed
        assert isinstance(reset, ResetCommand) is allowed
        if not allowed:
            assert label is None and reset is None

    def test_unauthorized_usage_errors_stay_silent(self) -> None:
        """A viewer typing a broken !label gets no usage reply either: permission is checked first."""
        assert router().route(chat("!label")) is None

    def test_role_hierarchy_from_config(self) -> None:
        cfg = CommandsConfig(mood=CommandConfig(allowed="vip"))
        r = router(cfg)
        assert r.route(chat("!mood", badges=("subscriber",))) is None
        for badges in (("vip",), ("moderator",), ("broadcaster",)):
            assert isinstance(r.route(chat("!mood", user="u" + badges[0], badges=badges)), MoodCommand)
        only_owner = router(CommandsConfig(reset=CommandConfig(allowed="broadcaster")))
        assert only_owner.route(chat("!reset", badges=MOD)) is None
        assert isinstance(only_owner.route(chat("!reset", badges=("broadcaster",))), ResetCommand)

    def test_reply_to_unauthorized_when_configured(self) -> None:
        r = router(CommandsConfig(reply_to_unauthorized=True))
        line = chat("!reset", user="pleb")
        reply = r.route(line)
        assert isinstance(reply, Reply)
        assert reply.text == "@Pleb only moderators can use !reset"
        assert reply.reply_to == line.message_id
        assert isinstance(r.route(chat("!reset", badges=MOD)), ResetCommand)


class TestCooldowns:
    def test_per_channel_and_per_user(self) -> None:
        """!mood: 15 s per channel, 60 s per user (the defaults); a cooldown hit gets no reply."""
        clock = FakeClock()
        r = router(clock=clock)
        assert isinstance(r.route(chat("!mood", user="a")), MoodCommand)
        assert r.route(chat("!mood", user="b")) is None  # channel cooldown
        clock.advance(14.9)
        assert r.route(chat("!mood", user="b")) is None
        clock.advance(0.1)
        assert isinstance(r.route(chat("!mood", user="b")), MoodCommand)
        clock.advance(16)
        assert r.route(chat("!mood", user="a")) is None  # a's own 60 s
        assert isinstance(r.route(chat("!mood", user="c")), MoodCommand)
        clock.advance(30)  # a: 61 s since its use
        assert isinstance(r.route(chat("!mood", user="a")), MoodCommand)

    def test_channels_cool_down_separately(self) -> None:
        r = router(clock=FakeClock())
        assert isinstance(r.route(chat("!mood", user="a", channel="one")), MoodCommand)
        assert isinstance(r.route(chat("!mood", user="a", channel="two")), MoodCommand)
        assert r.route(chat("!mood", user="b", channel="one")) is None

    def test_broadcaster_is_exempt(self) -> None:
        """The broadcaster is never held back, but their use does start the channel cooldown for viewers."""
        clock = FakeClock()
        r = router(clock=clock)
        assert isinstance(r.route(chat("!mood", user="a")), MoodCommand)
        for _ in range(3):
            assert isinstance(r.route(chat("!mood", user=CHANNEL, badges=("broadcaster",))), MoodCommand)
        clock.advance(15)
        assert isinstance(r.route(chat("!mood", user=CHANNEL)), MoodCommand)
        assert r.route(chat("!mood", user="b")) is None

    def test_moderators_are_not_exempt(self) -> None:
        r = router(clock=FakeClock())
        assert isinstance(r.route(chat("!mood", user="m", badges=MOD)), MoodCommand)
        assert r.route(chat("!mood", user="m", badges=MOD)) is None

    def test_usage_errors_cost_no_cooldown(self) -> None:
        cfg = CommandsConfig(label=CommandConfig(allowed="moderator", cooldown_user_s=30))
        clock = FakeClock()
        r = router(cfg, clock)
        assert isinstance(r.route(chat("!label", badges=MOD)), Reply)
        assert isinstance(r.route(chat("!label hype @x", badges=MOD)), LabelCommand)
        assert r.route(chat("!label hype @x", badges=MOD)) is None
        clock.advance(30)
        assert isinstance(r.route(chat("!label hype @x", badges=MOD)), LabelCommand)

    def test_reload_keeps_running_cooldowns(self) -> None:
        clock = FakeClock()
        r = router(clock=clock)
        assert isinstance(r.route(chat("!mood", user="a")), MoodCommand)
        r.update_config(CommandsConfig(mood=CommandConfig(cooldown_channel_s=100)), CATEGORIES)
        clock.advance(50)
        assert r.route(chat("!mood", user="b")) is None
        clock.advance(50)
        assert isinstance(r.route(chat("!mood", user="b")), MoodCommand)

    def test_cooldown_memory_is_bounded(self) -> None:
        """Thousands of users leave only the entries still cooling down."""
        clock = FakeClock()
        r = router(CommandsConfig(mood=CommandConfig(cooldown_user_s=5)), clock)
        for i in range(25_000):
            assert isinstance(r.route(chat("!mood", user=f"u{i}")), MoodCommand)
            clock.advance(0.01)
        assert r.cooldown_entries <= 10_001


def state(**kw: Any) -> MoodState:
    base: dict[str, Any] = {
        "channel": CHANNEL,
        "label": "hype",
        "share": 0.61,
        "valence": 0.5,
        "colour": "#ff8c00",
        "messages": 412,
        "first_at": NOW - timedelta(minutes=2),
        "at": NOW,
    }
    base.update(kw)
    return MoodState(**base)


class TestFormatMood:
    def test_the_example_reply(self) -> None:
        assert format_mood(state(), NOW) == "chat mood: hype 61% 🟧 (412 msgs, last 2 min)"

    def test_says_how_much_it_saw(self) -> None:
        assert format_mood(state(skipped=118), NOW) == "chat mood: hype 61% 🟧 (412 of 530 msgs, last 2 min)"

    def test_empty_mood(self) -> None:
        empty = state(label="neutral", share=1.0, messages=0, first_at=None, colour="#8a8f98")
        assert format_mood(empty, NOW) == "chat mood: neutral (no messages yet)"
        skipped_only = format_mood(replace(empty, skipped=7), NOW)
        assert skipped_only == "chat mood: neutral (no messages classified yet, 7 skipped)"

    @pytest.mark.parametrize(
        ("ago", "shown"),
        [
            (timedelta(seconds=0), "last 1 s"),
            (timedelta(seconds=42), "last 42 s"),
            (timedelta(minutes=75), "last 75 min"),
            (timedelta(hours=3), "last 3 h"),
            (timedelta(days=3), "last 3 days"),
        ],
    )
    def test_time_span(self, ago: timedelta, shown: str) -> None:
        assert format_mood(state(first_at=NOW - ago), NOW).endswith(f"{shown})")

    def test_single_message(self) -> None:
        assert "(1 msg," in format_mood(state(messages=1), NOW)

    def test_never_over_500_characters(self) -> None:
        huge = state(label="x" * 5000, messages=10**60, skipped=10**60)
        text = format_mood(huge, NOW)
        assert len(text) <= MAX_REPLY
        assert text.startswith("chat mood: xxx")

    def test_the_square_agrees_with_the_named_mood(self) -> None:
        """A neutral chat tinted by a few angry verdicts used to get a red square next to the word neutral."""
        tinted = state(label="neutral", share=0.63, colour="#a86a6a", label_colour="#8a8f98", lean="angry",
                       strength=0.3, shares={"neutral": 0.63, "angry": 0.12})
        assert "neutral 63% ⬜ (" in format_mood(tinted, NOW)

    def test_a_strong_lean_is_named(self) -> None:
        leaning = state(label="neutral", share=0.55, colour="#d99059", label_colour="#8a8f98", lean="hype",
                        strength=0.61, shares={"neutral": 0.55, "hype": 0.25})
        assert format_mood(leaning, NOW) == "chat mood: neutral 55% ⬜, leaning hype 25% (412 msgs, last 2 min)"

    @pytest.mark.parametrize(
        ("category", "square"),
        [("hype", "🟧"), ("funny", "🟨"), ("love", "🟥"), ("neutral", "⬜"), ("sad", "🟦"), ("angry", "🟥")],
    )
    def test_default_colours_get_the_natural_square(self, category: str, square: str) -> None:
        colour = next(c.colour for c in DEFAULT_CATEGORIES if c.name == category)
        assert emoji_square(colour) == square

    def test_emoji_squares_by_colour(self) -> None:
        """Every square's own colour maps to itself; muted blends keep their hue; greys go black or white."""
        cases = {
            "#dd2e44": "🟥",
            "#f4900c": "🟧",
            "#fdcb58": "🟨",
            "#78b159": "🟩",
            "#55acee": "🟦",
            "#aa8ed6": "🟪",
            "#c1694f": "🟫",
            "#31373d": "⬛",
            "#e6e7e8": "⬜",
            "#000000": "⬛",
            "#ffffff": "⬜",
            "#c6916b": "🟧",  # hype half blended with neutral grey
            "#00ff00": "🟩",
            "#6a0dad": "🟪",
        }
        for colour, square in cases.items():
            assert emoji_square(colour) == square, colour

    def test_from_a_real_tracker(self) -> None:
        """A hype-dominated tracker reads as hype with an orange square and its message count."""
        clock = FakeClock(NOW.timestamp() - 90)
        mood = MoodTracker(DEFAULT_CATEGORIES, half_life_s=60, neutral_prior=3, clock=clock)
        for _ in range(20):
            mood.observe(CHANNEL, Verdict("hype", 0.9, {"hype": 0.9, "funny": 0.1}, "t"))
        clock.advance(90)
        text = format_mood(mood.state(CHANNEL), NOW)
        assert text.startswith("chat mood: hype ")
        assert text.endswith("🟧 (20 msgs, last 2 min)")



# ---------------------------------------------------------------------------------------------- the executor
# These run against the real storage (FerretDB over TCP, the `storage` fixture in tests/conftest.py) and the
# real in-memory history, fed the way ingest feeds them.


class Sent:
    """Records what the executor sends, as the Twitch sender would receive it."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, str | None]] = []

    async def __call__(self, channel: str, text: str, reply_to: str | None) -> None:
        self.messages.append((channel, text, reply_to))

    @property
    def texts(self) -> list[str]:
        return [t for _, t, _ in self.messages]


def make_executor(
    storage: Storage, hub: MoodHub | None = None, history: History | None = None
) -> tuple[CommandExecutor, Sent, MoodTracker]:
    """An executor over real storage, real history and a real mood publisher; replies are recorded, not sent."""
    sent = Sent()
    tracker = MoodTracker(DEFAULT_CATEGORIES, half_life_s=60, neutral_prior=3, clock=lambda: NOW.timestamp())
    mood = MoodPublisher(tracker, hub or MoodHub())
    history = history if history is not None else History(HistoryConfig(), storage)
    return CommandExecutor(storage, history, mood, sent, clock=lambda: NOW.timestamp()), sent, tracker


def stored(storage: Storage, *lines: ChatLine, history: History | None = None) -> History:
    """Lines as ingest takes them: to the writer, and into the history's windows (which it returns)."""
    history = history or History(HistoryConfig(), storage)
    words = router()  # the default command words, as ingest tells commands apart
    for line in lines:
        command = words.is_command(line)
        storage.writer.submit(line, command=command)
        history.observe(line, command=command)
    return history


class TestExecutor:
    async def test_mood_replies_in_thread(self, storage: Storage) -> None:
        executor, sent, mood = make_executor(storage)
        for _ in range(10):
            mood.observe(CHANNEL, Verdict("hype", 0.9, {"hype": 0.9, "funny": 0.1}, "t"))
        line = chat("!mood")
        await executor.execute(MoodCommand(line))
        assert len(sent.messages) == 1
        channel, text, reply_to = sent.messages[0]
        assert (channel, reply_to) == (CHANNEL, line.message_id)
        assert text.startswith("chat mood: hype ") and "(10 msgs, last 1 s)" in text

    async def test_immediate_reply_is_sent_as_is(self, storage: Storage) -> None:
        executor, sent, _ = make_executor(storage)
        await executor.execute(Reply(CHANNEL, "usage: x", "m-1"))
        assert sent.messages == [(CHANNEL, "usage: x", "m-1")]

    async def test_reset_clears_the_mood_and_tells_the_overlay(self, storage: Storage) -> None:
        hub = MoodHub()
        executor, sent, mood = make_executor(storage, hub)
        for _ in range(10):
            mood.observe(CHANNEL, Verdict("angry", 1.0, {"angry": 1.0}, "t"))
        async with hub.subscribe(CHANNEL) as overlay:
            await executor.execute(ResetCommand(chat("!reset", "mod", MOD)))
            published = await overlay.get()
        st = mood.state(CHANNEL)
        assert (st.label, st.messages) == ("neutral", 0)
        assert published is not None and (published.label, published.messages) == ("neutral", 0)
        assert sent.texts == ["chat mood reset: back to neutral"]

    async def test_label_users_latest_message(self, storage: Storage) -> None:
        """`!label hype @viewer` stores the viewer's newest message as an example: who, when, which message."""
        older = chat("hello chat", "viewer", sent_at=NOW - timedelta(seconds=30))
        newest = chat("LETS GOOO", "viewer", sent_at=NOW - timedelta(seconds=5))
        other = chat("meh", "someone", sent_at=NOW - timedelta(seconds=1))
        command = chat("!label hype @Viewer", "mod", MOD, sent_at=NOW)
        history = stored(storage, older, newest, other, command)  # not flushed: the executor must see them anyway
        cmd = router().route(command)
        assert isinstance(cmd, LabelCommand)
        executor, sent, _ = make_executor(storage, history=history)
        await executor.execute(cmd)
        assert sent.messages == [(CHANNEL, "labelled @viewer's message as hype", command.message_id)]
        examples = await storage.labeled_examples(channel=CHANNEL)
        assert len(examples) == 1
        ex = examples[0]
        assert (ex.prompt, ex.completion, ex.message_id) == ("LETS GOOO", "hype", newest.message_id)
        assert (ex.labelled_by, ex.channel, ex.source) == ("mod", CHANNEL, "chat")
        assert ex.labelled_at == NOW

    async def test_label_the_message_replied_to_and_relabel(self, storage: Storage) -> None:
        """A reply labels its parent; labelling the same message again replaces the label."""
        parent = chat("this is so sad", "viewer", sent_at=NOW - timedelta(seconds=10))
        history = stored(storage, parent)
        r = router()
        executor, sent, _ = make_executor(storage, history=history)
        for category in ("funny", "sad"):
            cmd = r.route(chat(f"@viewer !label {category}", "mod", MOD, reply_to=parent.message_id))
            assert isinstance(cmd, LabelCommand)
            await executor.execute(cmd)
        assert sent.texts == ["labelled @viewer's message as funny", "labelled @viewer's message as sad"]
        examples = await storage.labeled_examples(channel=CHANNEL)
        assert [(e.message_id, e.completion) for e in examples] == [(parent.message_id, "sad")]

    async def test_label_by_id(self, storage: Storage) -> None:
        target = chat("KEKW", "viewer", message_id="abc-123", sent_at=NOW - timedelta(seconds=3))
        history = stored(storage, target)
        executor, sent, _ = make_executor(storage, history=history)
        await executor.execute(LabelCommand(chat("!label funny abc-123", "mod", MOD), "funny", None, "abc-123"))
        assert sent.texts == ["labelled @viewer's message as funny"]
        assert await storage.label_counts(CHANNEL) == {"funny": 1}

    async def test_messages_that_are_not_stored(self, storage: Storage) -> None:
        """Labelling a message that isn't stored says so and stores nothing; so does another channel's message."""
        elsewhere = chat("hi", "viewer", channel="otherchannel", message_id="far-1")
        history = stored(storage, elsewhere)
        executor, sent, _ = make_executor(storage, history=history)
        mod_line = chat("!label hype", "mod", MOD, reply_to="gone-1")
        await executor.execute(LabelCommand(mod_line, "hype", None, "gone-1"))
        await executor.execute(LabelCommand(chat("!label hype nope", "mod", MOD), "hype", None, "nope"))
        await executor.execute(LabelCommand(chat("!label hype far-1", "mod", MOD), "hype", None, "far-1"))
        await executor.execute(LabelCommand(chat("!label hype @ghost", "mod", MOD), "hype", "ghost", None))
        assert sent.texts == [
            "that message isn't stored, so it can't be labelled",
            "message nope isn't stored, so it can't be labelled",
            "message far-1 isn't stored, so it can't be labelled",
            "no stored message from @ghost in this channel",
        ]
        assert await storage.labeled_examples() == []

    async def test_labelling_yourself_skips_the_command(self, storage: Storage) -> None:
        """`!label love @me` labels my previous message, not the command I just typed."""
        mine = chat("love this community <3", "mod", MOD, sent_at=NOW - timedelta(seconds=20))
        command = chat("!label love @mod", "mod", MOD, sent_at=NOW)
        history = stored(storage, mine, command)
        cmd = router().route(command)
        assert isinstance(cmd, LabelCommand)
        executor, sent, _ = make_executor(storage, history=history)
        await executor.execute(cmd)
        assert sent.texts == ["labelled @mod's message as love"]
        examples = await storage.labeled_examples(channel=CHANNEL)
        assert [e.message_id for e in examples] == [mine.message_id]

    async def test_viewer_label_does_nothing(self, storage: Storage) -> None:
        """A viewer's !label routes to nothing: no reply, no example."""
        stored(storage, chat("pog", "viewer", sent_at=NOW - timedelta(seconds=2)))
        assert router().route(chat("!label hype @viewer", "viewer2")) is None
        await storage.writer.flush()
        assert await storage.labeled_examples() == []

    async def test_failing_handler_is_logged_and_contained(self, storage: Storage) -> None:
        """A handler that raises is logged with the command and the bot carries on with the next command."""
        calls: list[str] = []

        async def flaky_send(channel: str, text: str, reply_to: str | None) -> None:
            calls.append(text)
            if len(calls) == 1:
                raise RuntimeError("helix said no")

        mood = MoodPublisher(MoodTracker(DEFAULT_CATEGORIES, half_life_s=60, neutral_prior=3), MoodHub())
        executor = CommandExecutor(storage, History(HistoryConfig(), storage), mood, flaky_send)
        with capture_logs() as logs:
            await executor.execute(MoodCommand(chat("!mood")))
            await executor.execute(ResetCommand(chat("!reset", "mod", MOD)))
        failed = [e for e in logs if e["event"] == "command_failed"]
        assert len(failed) == 1
        assert failed[0]["command"] == "MoodCommand" and failed[0]["channel"] == CHANNEL
        assert failed[0]["log_level"] == "error"
        assert calls == ["chat mood: neutral (no messages yet)", "chat mood reset: back to neutral"]


class TestLabelLookups:
    """Which message `!label` finds: recent chat from memory, older from the database, never a command."""

    async def test_label_user_skips_their_commands(self, storage: Storage) -> None:
        """`!label hype @viewer` after the viewer typed `!mood` labels their chat line, never the command
        (it used to store "!mood" as training data)."""
        said = chat("LETS GOOO", "viewer", sent_at=NOW - timedelta(seconds=10))
        asked = chat("!mood", "viewer", sent_at=NOW - timedelta(seconds=5))
        command = chat("!label hype @viewer", "mod", MOD, sent_at=NOW)
        history = stored(storage, said, asked, command)
        cmd = router().route(command)
        assert isinstance(cmd, LabelCommand)
        executor, sent, _ = make_executor(storage, history=history)
        await executor.execute(cmd)
        assert sent.texts == ["labelled @viewer's message as hype"]
        examples = await storage.labeled_examples(channel=CHANNEL)
        assert [(e.prompt, e.message_id) for e in examples] == [("LETS GOOO", said.message_id)]

    async def test_older_messages_come_from_the_database(self, storage: Storage) -> None:
        """After a restart memory is empty: the user's latest non-command message and a message by id are
        looked up in the database (commands are marked there too)."""
        said = chat("so good", "viewer", sent_at=NOW - timedelta(minutes=10))
        asked = chat("!mood", "viewer", sent_at=NOW - timedelta(minutes=9))
        other = chat("hmm", "someone", message_id="old-7", sent_at=NOW - timedelta(minutes=8))
        stored(storage, said, asked, other)
        await storage.writer.flush()
        executor, sent, _ = make_executor(storage)  # a fresh history, as after a restart
        by_user = router().route(chat("!label love @viewer", "mod", MOD))
        assert isinstance(by_user, LabelCommand)
        await executor.execute(by_user)
        await executor.execute(LabelCommand(chat("!label funny old-7", "mod", MOD), "funny", None, "old-7"))
        assert sent.texts == ["labelled @viewer's message as love", "labelled @someone's message as funny"]
        examples = await storage.labeled_examples(channel=CHANNEL)
        assert sorted((e.prompt, e.completion) for e in examples) == [("hmm", "funny"), ("so good", "love")]

    async def test_a_lookup_too_slow_for_the_database_says_so(self, storage: Storage) -> None:
        """When the user isn't in memory and the database can't find their message within the lookup time
        (the development database scans for it), the reply says so and how to label it instead."""
        filler = [
            {"_id": f"f-{i}", "channel": CHANNEL, "user_id": "x", "user_login": f"u{i % 500}", "user_name": "U",
             "text": "filler", "sent_at": NOW - timedelta(hours=2), "received_at": NOW, "seq": i}
            for i in range(20_000)
        ]  # fmt: skip
        await storage.db["messages"].insert_many(filler)
        slow = History(HistoryConfig(lookup_timeout_ms=50), storage)
        executor, sent, _ = make_executor(storage, history=slow)
        cmd = router().route(chat("!label hype @quietone", "mod", MOD))
        assert isinstance(cmd, LabelCommand)
        await executor.execute(cmd)
        assert sent.texts == [
            "@quietone hasn't chatted recently, and older messages take too long to look up:"
            " reply to the message with !label hype"
        ]
        assert await storage.labeled_examples() == []
