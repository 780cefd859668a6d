"""Mood maths with a fake clock: decay, the neutral prior, nudges, colours, counts and reloads."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from bot.commands.format import emoji_square
from bot.config import DEFAULT_CATEGORIES, Category
from bot.mood.colour import blend, colour_distance, from_oklab, hex_to_rgb, mood_colour, to_oklab
from bot.mood.tracker import MoodTracker
from tests.fakes.chat import verdict
from tests.fakes.clock import FakeClock

T0 = 1_700_000_000.0
HL = 60.0
COLOURS = {c.name: c.colour for c in DEFAULT_CATEGORIES}


def tracker(clock: FakeClock, prior: float = 3.0, half_life: float = HL) -> MoodTracker:
    return MoodTracker(DEFAULT_CATEGORIES, half_life_s=half_life, neutral_prior=prior, clock=clock)


class TestDecay:
    def test_weight_halves_every_half_life(self) -> None:
        """A message's weight is exactly halved after each half-life: with no prior, a hype message followed one
        half-life later by a sad one gives hype 0.5 / (0.5 + 1) = 1/3, and two more half-lives keep the ratio."""
        clock = FakeClock(T0)
        mood = tracker(clock, prior=0.0)
        mood.observe("c", verdict("hype"))
        clock.advance(HL)
        mood.observe("c", verdict("sad"))
        st = mood.state("c")
        assert st.shares["hype"] == pytest.approx(1 / 3, rel=1e-12)
        assert st.shares["sad"] == pytest.approx(2 / 3, rel=1e-12)
        assert st.label == "sad"
        clock.advance(2 * HL)
        assert mood.state("c").shares["hype"] == pytest.approx(1 / 3, rel=1e-12)

    def test_decay_against_the_constant_prior_is_exact(self) -> None:
        """Against the prior the message weight follows 0.5 ** (t / half_life) exactly."""
        clock = FakeClock(T0)
        mood = tracker(clock, prior=1.0)
        mood.observe("c", verdict("hype"))
        for halvings in (0, 0.5, 1, 3, 7.25):
            clock.t = T0 + halvings * HL
            w = 0.5**halvings
            assert mood.state("c").shares["hype"] == pytest.approx(w / (w + 1.0), rel=1e-12)

    def test_lazy_decay_does_not_depend_on_how_often_state_is_read(self) -> None:
        """Reading the state many times in between gives the same answer as reading it once."""
        a_clock, b_clock = FakeClock(T0), FakeClock(T0)
        a, b = tracker(a_clock), tracker(b_clock)
        for m in (a, b):
            m.observe("c", verdict("hype"))
            m.observe("c", verdict("funny", 0.7))
        for _ in range(100):
            a_clock.advance(1.25)
            a.state("c")
        b_clock.advance(125)
        assert a.state("c").shares == pytest.approx(dict(b.state("c").shares), rel=1e-9)

    def test_late_verdict_is_added_already_decayed(self) -> None:
        """A verdict stamped one half-life in the past counts half."""
        clock = FakeClock(T0)
        mood = tracker(clock, prior=0.0)
        mood.observe("c", verdict("hype"))
        mood.observe("c", verdict("sad"), at=T0 - HL)
        st = mood.state("c")
        assert st.shares["sad"] == pytest.approx(1 / 3, rel=1e-12)
        assert st.first_at == datetime.fromtimestamp(T0 - HL, UTC)

    def test_clock_going_backwards_never_grows_weights(self) -> None:
        clock = FakeClock(T0)
        mood = tracker(clock, prior=1.0)
        mood.observe("c", verdict("hype"))
        clock.advance(HL)
        before = mood.state("c").shares["hype"]
        clock.advance(-30)
        assert mood.state("c").shares["hype"] == pytest.approx(before)


class TestNeutralPrior:
    def test_unseen_channel_is_neutral(self) -> None:
        mood = tracker(FakeClock(T0))
        st = mood.state("nobody")
        assert (st.label, st.share, st.messages, st.skipped) == ("neutral", 1.0, 0, 0)
        assert st.colour == COLOURS["neutral"]
        assert st.valence == 0
        assert st.first_at is None
        assert mood.channels() == ()

    def test_idle_chat_drifts_back_to_neutral(self) -> None:
        """After a strong hype phase, twelve idle half-lives leave almost only the neutral prior."""
        clock = FakeClock(T0)
        mood = tracker(clock)
        for _ in range(40):
            mood.observe("c", verdict("hype", 0.95))
            clock.advance(0.5)
        assert mood.state("c").label == "hype"
        clock.advance(12 * HL)
        st = mood.state("c")
        assert st.label == "neutral"
        assert st.shares["neutral"] > 0.99
        assert colour_distance(st.colour, COLOURS["neutral"]) < 0.01

    def test_zero_prior_and_no_weight_is_neutral(self) -> None:
        clock = FakeClock(T0)
        mood = tracker(clock, prior=0.0)
        mood.add_skipped("c", 3)
        assert mood.state("c").label == "neutral"


class TestSingleMessage:
    def test_one_message_never_turns_idle_chat_into_a_mood(self) -> None:
        """From idle, one fully confident message of any category leaves the mood neutral (the prior is 3)."""
        for cat in DEFAULT_CATEGORIES:
            mood = tracker(FakeClock(T0))
            mood.observe("c", verdict(cat.name, 1.0))
            st = mood.state("c")
            assert st.label == "neutral", cat.name
            if cat.name != "neutral":
                assert st.shares[cat.name] == pytest.approx(0.25)

    def test_one_angry_message_after_hype_only_nudges(self) -> None:
        """After a hype phase, one confident angry message leaves the colour hype's (it moves the shares and the
        valence a little) and hype stays dominant; more anger shows as a mix before it flips the mood."""
        clock = FakeClock(T0)
        mood = tracker(clock)
        for _ in range(30):
            mood.observe("c", verdict("hype", 0.9))
            clock.advance(1)
        before = mood.state("c")
        mood.observe("c", verdict("angry", 1.0))
        after = mood.state("c")
        assert before.label == after.label == "hype"
        moved = colour_distance(before.colour, after.colour)
        full = colour_distance(COLOURS["hype"], COLOURS["angry"])
        assert moved < 0.1 * full
        assert 0 < after.shares["angry"] < 0.05
        assert after.valence < before.valence
        flips, mixed = 1, False
        while mood.state("c").label == "hype":
            mood.observe("c", verdict("angry", 1.0))
            flips += 1
            mixed = mixed or colour_distance(mood.state("c").colour, COLOURS["hype"]) > 0.25 * full
        assert flips > 10 and mixed  # on the way, the overlay showed a visible mix of hype and anger
        assert mood.state("c").label == "angry"

    def test_a_message_adds_at_most_one_unit_of_weight(self) -> None:
        """Whatever the verdict says (probabilities that do not sum to one, a confidence over 1), one message
        adds at most 1.0 of weight: from idle with a prior of 3, neutral keeps at least 3/4."""
        for probs, conf in (({"angry": 5.0, "sad": 5.0}, 3.0), ({"angry": 1.0}, 1.0), ({"hype": 0.2}, 7.0)):
            mood = tracker(FakeClock(T0), prior=3.0)
            mood.observe("c", verdict("angry", conf, probs))
            st = mood.state("c")
            assert st.shares["neutral"] == pytest.approx(0.75, rel=1e-12)
            assert st.messages == 1

    def test_full_probability_vector_is_used(self) -> None:
        """An ambiguous verdict counts for every category it gives probability to, scaled by confidence."""
        mood = tracker(FakeClock(T0), prior=0.0)
        mood.observe("c", verdict("hype", 0.6, {"hype": 0.6, "funny": 0.4}))
        st = mood.state("c")
        assert st.shares["hype"] == pytest.approx(0.6)
        assert st.shares["funny"] == pytest.approx(0.4)
        mood2 = tracker(FakeClock(T0), prior=1.0)
        mood2.observe("c", verdict("hype", 0.6, {"hype": 0.6, "funny": 0.4}))
        assert mood2.state("c").shares["neutral"] == pytest.approx(1 / 1.6)

    def test_unsure_messages_move_the_mood_less(self) -> None:
        sure, unsure = tracker(FakeClock(T0)), tracker(FakeClock(T0))
        sure.observe("c", verdict("sad", 0.95))
        unsure.observe("c", verdict("sad", 0.2))
        assert sure.state("c").shares["sad"] > 3 * unsure.state("c").shares["sad"]

    def test_verdict_with_unknown_label_is_ignored(self) -> None:
        """A verdict naming no configured category (an old model) changes nothing and is not counted."""
        mood = tracker(FakeClock(T0))
        mood.observe("c", verdict("bored", 1.0))
        mood.observe("c", verdict("hype", float("nan")))
        st = mood.state("c")
        assert st.messages == 0
        assert st.label == "neutral"


class TestOutputs:
    def test_valence_stays_in_range(self) -> None:
        """Random verdicts at random times never push the valence out of [-1, 1]; one-sided chat approaches ±1."""
        rng = random.Random(7)
        clock = FakeClock(T0)
        mood = tracker(clock, prior=0.5)
        names = [c.name for c in DEFAULT_CATEGORIES]
        for _ in range(500):
            probs = {n: rng.random() for n in names}
            mood.observe("c", verdict(rng.choice(names), rng.random(), probs))
            clock.advance(rng.expovariate(1.0))
            assert -1.0 <= mood.state("c").valence <= 1.0
        pos, neg = tracker(clock, prior=0.0), tracker(clock, prior=0.0)
        for _ in range(20):
            pos.observe("c", verdict("love"))
            neg.observe("c", verdict("angry"))
        assert pos.state("c").valence == pytest.approx(1.0)
        assert neg.state("c").valence == pytest.approx(-1.0)

    def test_valence_is_share_weighted(self) -> None:
        mood = tracker(FakeClock(T0), prior=2.0)
        mood.observe("c", verdict("hype"))
        mood.observe("c", verdict("sad"))
        mood.observe("c", verdict("sad"))
        assert mood.state("c").valence == pytest.approx((1 - 2) / 5)

    def test_colour_endpoints_are_the_category_colours(self) -> None:
        """Only hype weight (no prior) gives exactly hype's colour; every category colour survives the round trip."""
        for c in DEFAULT_CATEGORIES:
            assert from_oklab(to_oklab(c.colour)) == c.colour
            assert blend([(c.colour, 2.0), ("#000000", 0.0)]) == c.colour
        mood = tracker(FakeClock(T0), prior=0.0)
        mood.observe("c", verdict("hype"))
        assert mood.state("c").colour == COLOURS["hype"]

    def test_blend_lies_between_its_colours(self) -> None:
        """An even blend is perceptually halfway, and brighter than a naive sRGB average of complementary colours."""
        a, b = "#ff8c00", "#3b6fd8"
        mid = blend([(a, 1.0), (b, 1.0)])
        assert colour_distance(mid, a) == pytest.approx(colour_distance(mid, b), rel=0.05)
        assert colour_distance(mid, a) < colour_distance(a, b)
        assert blend([(a, 1.0), (b, 3.0)]) != mid
        assert blend([]) == "#000000"
        naive = tuple((x + y) / 2 for x, y in zip(hex_to_rgb(a), hex_to_rgb(b), strict=True))
        assert to_oklab(mid)[0] > to_oklab("#" + "".join(f"{round(x * 255):02x}" for x in naive))[0]

    def test_state_reports_counts_and_times(self) -> None:
        clock = FakeClock(T0)
        mood = tracker(clock)
        mood.observe("c", verdict("hype"))
        clock.advance(5)
        mood.observe("c", verdict("funny"))
        st = mood.state("c")
        assert st.messages == 2
        assert st.first_at == datetime.fromtimestamp(T0, UTC)
        assert st.at == datetime.fromtimestamp(T0 + 5, UTC)
        assert sum(st.shares.values()) == pytest.approx(1.0)
        assert st.share == max(st.shares.values())
        assert mood.channels() == ("c",)


class TestSkippedAndReset:
    def test_skipped_messages_are_counted(self) -> None:
        mood = tracker(FakeClock(T0))
        mood.observe("c", verdict("hype"))
        mood.add_skipped("c", 5)
        mood.add_skipped("c", 0)
        mood.add_skipped("c", 7)
        st = mood.state("c")
        assert (st.messages, st.skipped) == (1, 12)
        with pytest.raises(ValueError, match=">= 0"):
            mood.add_skipped("c", -1)

    def test_reset_forgets_the_mood_but_not_the_interval(self) -> None:
        """reset() makes the channel neutral with no messages; the timeline's interval counts survive."""
        clock = FakeClock(T0)
        mood = tracker(clock)
        for _ in range(10):
            mood.observe("c", verdict("angry"))
        mood.add_skipped("c", 4)
        mood.observe("other", verdict("hype"))
        mood.reset("c")
        st = mood.state("c")
        assert (st.label, st.share, st.messages, st.skipped, st.first_at) == ("neutral", 1.0, 0, 0, None)
        assert mood.state("other").messages == 1
        assert mood.take_counts("c") == {"angry": 10}
        mood.observe("c", verdict("hype"))
        assert mood.state("c").first_at == datetime.fromtimestamp(T0, UTC)

    def test_take_counts_starts_a_new_interval(self) -> None:
        clock = FakeClock(T0)
        mood = tracker(clock)
        mood.observe("c", verdict("hype"))
        mood.observe("c", verdict("hype"))
        mood.observe("c", verdict("sad", 0.5, {"sad": 0.5, "angry": 0.5}))
        assert mood.take_counts("c") == {"hype": 2, "sad": 1}
        assert mood.take_counts("c") == {}
        mood.observe("c", verdict("love"))
        assert mood.take_counts("c") == {"love": 1}
        assert mood.take_counts("unknown") == {}

    def test_snapshot_has_what_the_timeline_stores(self) -> None:
        """A snapshot carries the interval's per-category counts and the smoothed state; the next starts afresh."""
        clock = FakeClock(T0)
        mood = tracker(clock)
        for _ in range(5):
            mood.observe("c", verdict("funny"))
        mood.add_skipped("c", 2)
        clock.advance(10)
        snap = mood.snapshot("c")
        st = mood.state("c")
        assert snap["channel"] == "c"
        assert snap["bucket"] == datetime.fromtimestamp(T0 + 10, UTC)
        assert snap["counts"] == {"funny": 5}
        assert (snap["messages"], snap["skipped"]) == (5, 2)
        assert (snap["label"], snap["share"], snap["colour"], snap["valence"]) == (
            st.label,
            st.share,
            st.colour,
            st.valence,
        )
        assert snap["shares"] == dict(st.shares)
        mood.observe("c", verdict("sad"))
        again = mood.snapshot("c")
        assert again["counts"] == {"sad": 1}
        assert again["messages"] == 6

    def test_snapshot_fields_are_the_stored_documents_fields(self) -> None:
        """The snapshot has exactly the fields storage's MoodSnapshotDoc stores (its id aside)."""
        from bot.storage.documents import MoodSnapshotDoc

        stored = set(MoodSnapshotDoc.model_fields) - {"id", "revision_id"}
        assert set(tracker(FakeClock(T0)).snapshot("c")) == stored

    def test_drop_forgets_a_channel(self) -> None:
        mood = tracker(FakeClock(T0))
        mood.observe("c", verdict("hype"))
        mood.drop("c")
        assert mood.channels() == ()
        assert mood.state("c").messages == 0


class TestConfigUpdate:
    def test_kept_categories_keep_their_weight(self) -> None:
        """A reload keeps the weight of categories that still exist, drops removed ones, and uses the new
        half-life and prior from then on."""
        clock = FakeClock(T0)
        mood = tracker(clock, prior=0.0)
        mood.observe("c", verdict("hype"))
        mood.observe("c", verdict("sad"))
        clock.advance(HL)  # both at 0.5 now
        cats = [c for c in DEFAULT_CATEGORIES if c.name != "sad"] + [
            Category(name="cozy", colour="#7fd1ae", valence=1, description="calm and comfy")
        ]
        mood.update_config(cats, half_life_s=2 * HL, neutral_prior=0.5)
        st = mood.state("c")
        assert "sad" not in st.shares
        assert st.shares["cozy"] == 0.0
        assert st.shares["hype"] == pytest.approx(0.5 / 1.0)
        clock.advance(2 * HL)  # one new half-life: hype 0.25 against a prior of 0.5
        assert mood.state("c").shares["hype"] == pytest.approx(0.25 / 0.75)
        mood.observe("c", verdict("cozy"))
        assert mood.take_counts("c") == {"hype": 1, "cozy": 1}

    def test_invalid_config_is_refused(self) -> None:
        no_neutral = [c for c in DEFAULT_CATEGORIES if c.name != "neutral"]
        with pytest.raises(ValueError, match="neutral"):
            MoodTracker(no_neutral, half_life_s=HL, neutral_prior=1.0)
        with pytest.raises(ValueError, match="half_life_s"):
            MoodTracker(DEFAULT_CATEGORIES, half_life_s=0, neutral_prior=1.0)
        mood = tracker(FakeClock(T0))
        with pytest.raises(ValueError, match="neutral_prior"):
            mood.update_config(DEFAULT_CATEGORIES, half_life_s=HL, neutral_prior=-1)
        assert mood.neutral_prior == 3.0


class TestMoodColour:
    """The colour viewers see: the hue of the strongest non-neutral mood, as strong as it stands above neutral."""

    @staticmethod
    def shares(**kw: float) -> dict[str, float]:
        out = dict.fromkeys(COLOURS, 0.0)
        out.update(kw)
        return out

    def test_idle_chat_is_the_neutral_colour(self) -> None:
        look = mood_colour(self.shares(neutral=1.0), COLOURS)
        assert (look.colour, look.lean, look.strength) == (COLOURS["neutral"], None, 0.0)

    def test_a_stray_message_is_at_most_a_faint_tint(self) -> None:
        look = mood_colour(self.shares(neutral=0.85, angry=0.15), COLOURS)
        assert look.lean == "angry" and look.strength < 0.25
        assert colour_distance(look.colour, COLOURS["neutral"]) < 0.1 * colour_distance(COLOURS["neutral"],
                                                                                        COLOURS["angry"])

    def test_a_streak_grows_towards_its_own_colour(self) -> None:
        strengths, distances = [], []
        for hype in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7):
            look = mood_colour(self.shares(neutral=1 - hype, hype=hype), COLOURS)
            strengths.append(look.strength)
            distances.append(colour_distance(look.colour, COLOURS["hype"]))
        assert strengths == sorted(strengths) and distances == sorted(distances, reverse=True)
        assert distances[-1] == 0.0  # well above neutral: hype's own orange

    def test_the_muddy_case_from_the_demo_now_reads_as_hype(self) -> None:
        """55% neutral, 25% hype, 10% love, 10% funny blended every share into a mauve grey."""
        s = self.shares(neutral=0.55, hype=0.25, love=0.1, funny=0.1)
        old = blend((c, s[name]) for name, c in COLOURS.items())
        new = mood_colour(s, COLOURS).colour
        assert emoji_square(new) == "🟧" and emoji_square(old) != "🟧"
        assert colour_distance(new, COLOURS["hype"]) < colour_distance(old, COLOURS["hype"])

    def test_two_strong_moods_mix_and_a_weak_second_does_not(self) -> None:
        even = mood_colour(self.shares(neutral=0.2, hype=0.4, sad=0.4), COLOURS).colour
        weak = mood_colour(self.shares(neutral=0.2, hype=0.6, sad=0.2), COLOURS).colour
        assert weak == COLOURS["hype"]
        gap = colour_distance(COLOURS["hype"], COLOURS["sad"])
        assert colour_distance(even, COLOURS["hype"]) > 0.3 * gap and colour_distance(even, COLOURS["sad"]) > 0.3 * gap
        # mixed through hue, so the mix keeps its colour instead of fading to grey like an OKLab average does
        vivid = min(colour_distance(COLOURS[m], COLOURS["neutral"]) for m in ("hype", "sad"))
        assert colour_distance(even, COLOURS["neutral"]) > 0.8 * vivid
        assert colour_distance(blend([(COLOURS["hype"], 1), (COLOURS["sad"], 1)]), COLOURS["neutral"]) < 0.8 * vivid

    def test_ties_go_to_the_category_listed_first(self) -> None:
        assert mood_colour(self.shares(neutral=0.2, hype=0.4, love=0.4), COLOURS).lean == "hype"

    def test_the_tracker_reports_lean_strength_and_the_named_colour(self) -> None:
        clock = FakeClock(T0)
        mood = tracker(clock)
        st = mood.state("c")
        assert (st.lean, st.strength, st.label_colour) == (None, 0.0, COLOURS["neutral"])
        for _ in range(20):
            mood.observe("c", verdict("funny"))
        st = mood.state("c")
        assert (st.label, st.lean, st.label_colour, st.colour) == ("funny", "funny", COLOURS["funny"], COLOURS["funny"])
