"""The shipped starter set and the starter head built from it."""

from __future__ import annotations

from collections import Counter

import pytest

from bot.classify.classifier import load_classifier
from bot.classify.starter import (
    CHAT_PRIOR,
    data_hash,
    generated_examples,
    shipped_head,
    starter_examples,
    usable_starter,
    written_examples,
)
from bot.config import DEFAULT_CATEGORIES, Category, ClassifierConfig, Config

NAMES = [c.name for c in DEFAULT_CATEGORIES]


class TestStarterSet:
    """Thousands of written lines for every default category, plus deterministic made variety."""

    def test_every_category_has_hundreds_of_written_lines(self) -> None:
        counts = Counter(label for _, label in written_examples())
        assert set(counts) == set(NAMES)
        assert min(counts.values()) >= 500 and counts["neutral"] == max(counts.values())

    def test_made_variety_is_deterministic_and_distinct(self) -> None:
        a, b = generated_examples(), generated_examples()
        assert a == b and len(set(a)) == len(a)
        assert {label for _, label in a} == set(NAMES)
        assert generated_examples(seed=8) != a

    def test_sub_emote_lines_are_mostly_plain_talk(self) -> None:
        made = generated_examples(per_category=0, notices=0)
        counts = Counter(label for _, label in made)
        assert counts["neutral"] > sum(counts.values()) / 2

    def test_other_categories_get_valences(self) -> None:
        cats = (Category(name="neutral", colour="#000000", valence=0, description="x"),
                Category(name="hype", colour="#000000", valence=1, description="x"),
                Category(name="cozy", colour="#000000", valence=1, description="x"))
        labels = {label for _, label in usable_starter(cats)}
        assert labels == {"neutral", "hype", "positive"}  # funny/love stand in as their valence; no negative one


class TestShippedHead:
    """The pre-trained head in the package is the one the current data makes (rebuild:
    python -m bot.classify.starter), shifted towards chat's balance, and it is what a new channel gets."""

    def test_shipped_head_matches_the_data(self) -> None:
        head = shipped_head()
        assert head is not None, "bot/data/starter_head.npz is stale: run python -m bot.classify.starter"
        assert head.meta["data_hash"] == data_hash(DEFAULT_CATEGORIES, head.spec, {})
        assert head.meta["n_examples"] == len(starter_examples())
        assert head.shift.shape == (len(NAMES),) and head.shift[NAMES.index("neutral")] > 0
        assert sum(CHAT_PRIOR.values()) == pytest.approx(1.0)

    def test_cold_start_reads_chat(self, tmp_path: object) -> None:
        cfg = Config(classifier=ClassifierConfig(models_dir=tmp_path))  # type: ignore[arg-type]
        clf = load_classifier(cfg)
        texts = ["KEKW", "LETS GOOO", "love you streamer <3", "what game is this", "Sadge", "this is so boring",
                 "abbyHi", "he fell off the map again LMAO", "o7", "thanks for the stream"]
        labels = [v.label for v in clf.classify(texts)]
        assert labels == ["funny", "hype", "love", "neutral", "sad", "angry", "neutral", "funny", "sad", "love"]
        assert clf.version.startswith(shipped_head().version)  # type: ignore[union-attr]
