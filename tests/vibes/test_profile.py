"""bot.vibes.profile: the statistics of a channel, folded in over passes, come out as if read in one go."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta

import numpy as np

from bot.config import DEFAULT_CATEGORIES
from bot.vibes.profile import KEPT_TERMS, Profile, sample_hash, terms, text_key

NAMES = tuple(c.name for c in DEFAULT_CATEGORIES)
VALENCE = {c.name: c.valence for c in DEFAULT_CATEGORIES}
T0 = datetime(2025, 3, 1, 20, 0, tzinfo=UTC)


def vec(text: str, dim: int = 8) -> np.ndarray:
    """A deterministic stand-in vector per text (the store test uses a real embedding model)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    v = np.random.default_rng(seed).standard_normal(dim)
    return v / np.linalg.norm(v)


def embed_changes(p: Profile) -> None:
    entered, left = p.sample_changes()
    p.apply_embeddings([h for h, _ in entered], np.array([vec(t) for _, t in entered]).reshape(-1, 8),
                       [h for h, _ in left], np.array([vec(t) for _, t in left]).reshape(-1, 8))


class TestTerms:
    def test_words_emotes_mentions_and_links(self) -> None:
        """Twitch emote fragments, camel-case and capitalised glossary emotes are emotes; stop words, mentions
        and links are dropped; words are lower-cased."""
        text = "Kappa the Lag is TRASH KEKW catJAM @someone https://x.tv/a PogChamp really"
        words, emotes = terms(text, [(0, 5)])
        assert emotes == ["Kappa", "KEKW", "catJAM", "PogChamp"]
        assert words == ["lag", "trash"]

    def test_punctuation_and_apostrophes(self) -> None:
        words, emotes = terms('"cheaters!!" can\'t (lag) 1234 ok')
        assert words == ["cheaters", "lag"] and emotes == []

    def test_spans_outside_the_text_are_ignored(self) -> None:
        assert terms("short", [(3, 40)]) == (["short"], [])


class TestProfile:
    def test_counts_shares_valence_and_rate(self) -> None:
        p = Profile("chan", NAMES)
        for i, (text, label) in enumerate([("pog", "hype"), ("lol", "funny"), ("hmm", "neutral"), ("rip", "sad")]):
            p.add_message(text, T0 + timedelta(seconds=40 * i), seq=i + 1, label=label)
            p.add_verdict(label, None, VALENCE, T0)
        p.add_verdict("not-a-category", None, VALENCE, T0)
        p.end_pass()
        assert (p.messages, p.classified) == (4, 4)
        assert p.shares["hype"] == 0.25 and p.shares["angry"] == 0.0
        assert p.mean_valence == (1 + 1 + 0 - 1) / 4
        assert p.span_s == 120 and p.rate_per_min == 2.0
        assert p.seq_through == 4 and p.first_at == T0
        assert p.dominant(2) == [("hype", 0.25), ("funny", 0.25)]  # ties in category order

    def test_valence_from_probabilities(self) -> None:
        p = Profile("chan", NAMES)
        p.add_verdict("hype", {"hype": 0.5, "sad": 0.25, "neutral": 0.25}, VALENCE)
        assert p.mean_valence == 0.25

    def test_sample_is_the_bottom_k_of_distinct_texts_whatever_the_order(self) -> None:
        """The sample keeps the texts with the smallest hashes: one pass or three, any order, spam counts once."""
        texts = [f"line number {i}" for i in range(40)] + ["SPAM spam"] * 30 + ["spam   SPAM"]
        one = Profile("c", NAMES, sample_size=8)
        for t in texts:
            one.add_message(t, T0)
        shuffled = texts[:]
        random.Random(3).shuffle(shuffled)
        passes = Profile("c", NAMES, sample_size=8)
        for chunk in (shuffled[:10], shuffled[10:50], shuffled[50:]):
            for t in chunk:
                passes.add_message(t, T0)
            passes.end_pass()
        expected = sorted({sample_hash(text_key(t)) for t in texts})[:8]
        assert sorted(one.sample) == sorted(passes.sample) == expected

    def test_embedding_sum_follows_the_sample_across_passes(self) -> None:
        """Lines that enter are added, lines that leave are taken out: the sum is the final sample's sum."""
        p = Profile("c", NAMES, sample_size=5)
        rng = random.Random(7)
        for n in range(4):
            for _ in range(12):
                p.add_message(f"msg {rng.randrange(1000)}", T0)
            p.end_pass()
            embed_changes(p)
            want = np.sum([vec(line.text) for line in p.sample_lines()], axis=0)
            assert p.embedding_sum is not None
            np.testing.assert_allclose(p.embedding_sum, want, atol=1e-9, err_msg=f"after pass {n}")
            assert p.embedded == frozenset(p.sample)
        e = p.embedding
        assert e is not None and abs(float(np.linalg.norm(e)) - 1) < 1e-6

    def test_sample_line_takes_a_later_verdict(self) -> None:
        p = Profile("c", NAMES)
        p.add_message("gg", T0)
        p.add_message("GG", T0, label="hype")
        assert [(s.text, s.label) for s in p.sample_lines()] == [("GG", "hype")]

    def test_terms_merge_and_keep_the_most_frequent(self) -> None:
        p = Profile("c", NAMES)
        for i in range(KEPT_TERMS + 50):  # more distinct words than are kept, each once
            p.add_message("q" + "".join(chr(97 + i // 26**k % 26) for k in range(3)), T0)
        p.add_message("cheater cheater cheater", T0)
        p.end_pass()
        p.add_message("cheater lag", T0)
        p.end_pass()
        assert p.top_words(2) == [("cheater", 4), ("lag", 1)]
        assert len(p.words) <= KEPT_TERMS

    def test_ids_near_the_cursor_are_folded_in_once(self) -> None:
        p = Profile("c", NAMES)
        assert p.add_message("hi", T0, message_id="a", seq=10)
        assert not p.add_message("hi", T0, message_id="a", seq=10)
        assert p.add_verdict("love", None, VALENCE, T0, message_id="a")
        assert not p.add_verdict("love", None, VALENCE, T0, message_id="a")
        assert (p.messages, p.classified) == (1, 1)
        p.add_message("later", T0, message_id="b", seq=50)
        p.add_verdict("love", None, VALENCE, T0 + timedelta(seconds=9), message_id="b")
        p.remember_recent(30, timedelta(seconds=5))
        assert (p.reread_seq, p.reread_at) == (20, T0 + timedelta(seconds=4))
        assert list(p.recent.values()) == [50] and list(p.recent_verdicts.values()) == [T0 + timedelta(seconds=9)]

    def test_remembered_ids_are_bounded(self) -> None:
        """A burst (a fast replay) keeps the newest ids only, and the next refresh reads again from there."""
        p = Profile("c", NAMES)
        for i in range(50):
            p.add_message(f"m{i}", T0, message_id=f"id{i}", seq=100 + i // 2)  # two messages per seq
        p.remember_recent(10**9, timedelta(seconds=60), keep=9)
        assert p.reread_seq == 120 and len(p.recent) == 10  # seq 120..124, two each: ties kept
        assert not p.add_message("again", T0, message_id="id49", seq=124)
