"""Who answers a chat line: mentions, replies to a persona, cooldowns, unprompted joins, and never a bot."""

from __future__ import annotations

import random
from typing import Any

from bot.config import BotConfig, PersonaConfig
from bot.persona.decide import Coordinator, Pick, mentioned_accounts
from tests.fakes.chat import chat_line
from tests.fakes.clock import FakeClock


def persona(name: str, account: str, channels: tuple[str, ...] = ("chan",), **kw: Any) -> BotConfig:
    return BotConfig(name=name, account=account, channels=channels, persona=PersonaConfig(**kw))


def coordinator(*bots: BotConfig, clock: FakeClock | None = None, seed: int = 1,
                others: frozenset[str] = frozenset()) -> Coordinator:
    accounts = frozenset(b.account for b in bots) | others
    return Coordinator(bots, accounts, clock=clock or FakeClock(0.0), rng=random.Random(seed))


class TestMentions:
    def test_mentioned_accounts(self) -> None:
        assert mentioned_accounts("hey @Moody_Bot and @other, @x!") == ["moody_bot", "other", "x"]
        assert mentioned_accounts("mail me at a@b") == ["b"]
        assert mentioned_accounts("no mention") == []

    def test_a_mention_is_answered_by_that_persona_only(self) -> None:
        a, b = persona("a", "bot_a"), persona("b", "bot_b", join_chance=1.0, min_gap_s=0)
        c = coordinator(a, b)
        assert c.pick(chat_line("@BOT_A how are you")) == Pick("a", "reply")

    def test_the_first_persona_named_answers(self) -> None:
        c = coordinator(persona("a", "bot_a"), persona("b", "bot_b"))
        assert c.pick(chat_line("@bot_b and @bot_a: hi")) == Pick("b", "reply")

    def test_a_persona_answers_only_in_its_channels(self) -> None:
        c = coordinator(persona("a", "bot_a", channels=("elsewhere",)))
        assert c.pick(chat_line("@bot_a hi", channel="chan")) is None

    def test_a_reply_to_a_personas_line_is_a_mention(self) -> None:
        c = coordinator(persona("a", "bot_a"))
        assert c.pick(chat_line("i said something", user="bot_a", message_id="said-1")) is None
        assert c.pick(chat_line("haha true", user="viewer", reply_to="said-1")) == Pick("a", "reply")
        assert c.pick(chat_line("haha true", user="viewer2", reply_to="someone-else")) is None

    def test_reply_to_mentions_off(self) -> None:
        c = coordinator(persona("a", "bot_a", reply_to_mentions=False, join_chance=1.0, min_gap_s=0))
        assert c.pick(chat_line("@bot_a hi")) is None  # nor does it join in on a line addressed to it


class TestBots:
    def test_no_bot_account_is_ever_answered(self) -> None:
        """Its own lines, another persona's, a plain mood bot's: never, whatever they say."""
        a = persona("a", "bot_a", join_chance=1.0, min_gap_s=0)
        b = persona("b", "bot_b", join_chance=1.0, min_gap_s=0)
        c = coordinator(a, b, others=frozenset({"moodbot"}))
        for user in ("bot_a", "bot_b", "moodbot"):
            assert c.pick(chat_line("@bot_a @bot_b hello there", user=user)) is None


class TestCooldown:
    def test_a_viewer_waits_between_answered_mentions(self) -> None:
        clock = FakeClock(0.0)
        c = coordinator(persona("a", "bot_a", user_cooldown_s=30), clock=clock)
        assert c.pick(chat_line("@bot_a one", user="vic")) == Pick("a", "reply")
        clock.advance(29)
        assert c.pick(chat_line("@bot_a two", user="vic")) is None
        assert c.pick(chat_line("@bot_a hi", user="val")) == Pick("a", "reply")  # per viewer
        clock.advance(1)
        assert c.pick(chat_line("@bot_a three", user="vic")) == Pick("a", "reply")


class TestJoining:
    def test_join_chance_zero_never_joins(self) -> None:
        c = coordinator(persona("a", "bot_a", join_chance=0.0, min_gap_s=0))
        assert all(c.pick(chat_line(f"line {i}")) is None for i in range(500))

    def test_min_gap_holds_under_a_burst(self) -> None:
        clock = FakeClock(0.0)
        c = coordinator(persona("a", "bot_a", join_chance=1.0, min_gap_s=60), clock=clock)
        picks = []
        for i in range(200):  # 200 lines over 100 s
            picks.append((clock.t, c.pick(chat_line(f"line {i}"))))
            clock.advance(0.5)
        joined = [t for t, p in picks if p is not None]
        assert joined == [0.0, 60.0]
        assert all(p == Pick("a", "join") for _, p in picks if p is not None)

    def test_the_gap_is_per_channel(self) -> None:
        c = coordinator(persona("a", "bot_a", channels=("one", "two"), join_chance=1.0, min_gap_s=60))
        assert c.pick(chat_line("hi", channel="one")) == Pick("a", "join")
        assert c.pick(chat_line("hi", channel="two")) == Pick("a", "join")
        assert c.pick(chat_line("hi again", channel="one")) is None

    def test_one_persona_joins_chosen_at_random_among_those_that_fire(self) -> None:
        bots = [persona(n, f"bot_{n}", join_chance=1.0, min_gap_s=0) for n in ("a", "b", "c")]
        c = coordinator(*bots, seed=3)
        chosen = [c.pick(chat_line(f"line {i}")) for i in range(300)]
        assert all(p is not None and p.kind == "join" for p in chosen)
        counts = {n: sum(1 for p in chosen if p is not None and p.bot == n) for n in "abc"}
        assert all(60 <= n <= 140 for n in counts.values()), counts

    def test_a_chance_fires_that_often(self) -> None:
        c = coordinator(persona("a", "bot_a", join_chance=0.1, min_gap_s=0), seed=5)
        joined = sum(1 for i in range(2000) if c.pick(chat_line(f"line {i}")) is not None)
        assert 140 <= joined <= 260

    def test_a_reload_keeps_the_gap(self) -> None:
        a = persona("a", "bot_a", join_chance=1.0, min_gap_s=60)
        c = coordinator(a)
        assert c.pick(chat_line("hi")) is not None
        c.update([persona("a", "bot_a", join_chance=1.0, min_gap_s=60, system_prompt="new")], frozenset({"bot_a"}))
        assert c.pick(chat_line("hi again")) is None
