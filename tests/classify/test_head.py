"""The trained head: hashed n-gram features, partial-label logistic regression, saving and loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bot.classify.features import FeatureSpec, Vocabulary, glossary_features, hashed_ngrams
from bot.classify.fit import EMB_BLOCK_L2, allowed_mask, label_memory, lbfgs, train_head
from bot.classify.glossary import EMOJI, GLOSSARY, matches
from bot.classify.head import Head
from bot.config import DEFAULT_CATEGORIES, Category
from bot.errors import ModelError

CATS = DEFAULT_CATEGORIES
NAMES = [c.name for c in CATS]
TRAIN = [
    ("KEKW", "funny"), ("LUL that fall", "funny"), ("lmao", "funny"), ("OMEGALUL", "funny"),
    ("Pog", "hype"), ("LETSGO", "hype"), ("what a play Pog", "hype"), ("POGGERS", "hype"),
    ("<3", "love"), ("love you", "love"), ("thanks for the stream", "love"), ("peepoHappy", "love"),
    ("what game is this", "neutral"), ("!uptime", "neutral"), ("how long", "neutral"), ("ok", "neutral"),
    ("Sadge", "sad"), ("rip", "sad"), ("PepeHands", "sad"), ("so close Sadge", "sad"),
    ("trash", "angry"), ("stfu", "angry"), ("WeirdChamp", "angry"), ("worst game", "angry"),
]


class TestHashedNgrams:
    """Character n-grams are hashed the same way whatever batch a text is in."""

    def test_batch_equals_one_by_one(self) -> None:
        spec = FeatureSpec()
        texts = ["KEKW KEKW", "what game is this", "", "Pog 🔥"]
        docs, buckets = hashed_ngrams(texts, spec)
        for i, text in enumerate(texts):
            _, alone = hashed_ngrams([text], spec)
            assert sorted(buckets[docs == i].tolist()) == sorted(alone.tolist())

    def test_counts_word_padded_ngrams(self) -> None:
        """'ab' padded as ' ab ' has 4 unigrams, 3 bigrams, 2 trigrams, 1 four-gram."""
        _, buckets = hashed_ngrams(["ab"], FeatureSpec(ngram_max=5))
        assert len(buckets) == 4 + 3 + 2 + 1

    def test_rows_are_unit_length_and_unseen_ngrams_dropped(self) -> None:
        spec = FeatureSpec()
        vocab = Vocabulary.fit(["hello there", "general kenobi"], spec)
        x = vocab.transform(["hello there", "zzzz"], spec)
        row0 = x.data[x.indptr[0] : x.indptr[1]]
        assert np.isclose(np.sqrt((row0**2).sum()), 1.0)
        assert x.indptr[2] - x.indptr[1] < len(hashed_ngrams(["zzzz"], spec)[1])


class TestSparse:
    """Row selection keeps rows intact."""

    def test_take(self) -> None:
        spec = FeatureSpec()
        texts = ["one", "two words", "", "three of them"]
        vocab = Vocabulary.fit(texts, spec)
        x = vocab.transform(texts, spec)
        sub = x.take(np.array([3, 0, 2]))
        w = np.random.default_rng(0).normal(size=(x.n_cols, 2))
        assert np.allclose(sub.matmul(w), x.matmul(w)[[3, 0, 2]])


class TestLbfgs:
    """The optimiser finds the minimum of a convex quadratic."""

    def test_quadratic(self) -> None:
        a = np.diag([1.0, 10.0, 100.0])
        b = np.array([1.0, -2.0, 3.0])
        x = lbfgs(lambda x: (0.5 * x @ a @ x - b @ x, a @ x - b), np.zeros(3), tol=1e-9)
        assert np.allclose(x, np.linalg.solve(a, b), atol=1e-5)


class TestTraining:
    """The head learns its training set; valence labels spread over their valence's categories."""

    def test_learns_categories(self) -> None:
        head = train_head([t for t, _ in TRAIN], [lab for _, lab in TRAIN], CATS)
        probs = head.predict_proba([t for t, _ in TRAIN], CATS)
        assert np.allclose(probs.sum(axis=1), 1.0)
        predicted = [NAMES[j] for j in probs.argmax(axis=1)]
        assert sum(p == lab for p, (_, lab) in zip(predicted, TRAIN, strict=True)) >= len(TRAIN) - 2

    def test_valence_label_puts_mass_on_that_valence(self) -> None:
        texts = [t for t, _ in TRAIN] + ["zebra zebra", "zebra time", "zebra!"]
        labels = [lab for _, lab in TRAIN] + ["negative"] * 3
        head = train_head(texts, labels, CATS)
        p = head.predict_proba(["zebra zebra"], CATS)[0]
        negative = sum(p[j] for j, c in enumerate(CATS) if c.valence == -1)
        assert negative > 0.5

    def test_two_level_split_comes_from_category_labels(self) -> None:
        """Valence labels train the valence head; the category labels decide which category of it wins."""
        texts = [t for t, _ in TRAIN] + ["zebra KEKW", "zebra LUL", "zebra lmao"]
        labels = [lab for _, lab in TRAIN] + ["positive"] * 3
        head = train_head(texts, labels, CATS)
        assert head.two_level
        p = head.predict_proba(["zebra KEKW"], CATS)[0]
        assert NAMES[int(p.argmax())] == "funny"
        single = train_head(texts, labels, CATS, two_level=False)
        assert not single.two_level
        assert np.allclose(single.predict_proba(texts, CATS).sum(axis=1), 1.0)

    def test_allowed_mask(self) -> None:
        mask = allowed_mask(["hype", "positive", "neutral", "negative"], CATS)
        assert mask[0].tolist() == [n == "hype" for n in NAMES]
        assert mask[1].tolist() == [c.valence == 1 for c in CATS]
        assert mask[2].tolist() == [n == "neutral" for n in NAMES]
        assert mask[3].tolist() == [c.valence == -1 for c in CATS]

    def test_unknown_label_is_named(self) -> None:
        with pytest.raises(ValueError, match="'happyish'"):
            allowed_mask(["happyish"], CATS)

    def test_custom_categories_get_glossary_weight_by_valence(self) -> None:
        """A default category missing from the config gives its glossary weight to those of its valence."""
        cats = (
            Category(name="joy", colour="#ffffff", valence=1, description="good"),
            Category(name="neutral", colour="#888888", valence=0, description="meh"),
            Category(name="gloom", colour="#000000", valence=-1, description="bad"),
        )
        f = glossary_features(["KEKW LUL", "Sadge", "!uptime"], cats)
        assert f[0, 0] > 0 and f[0, 2] == 0
        assert f[1, 2] > 0 and f[1, 0] == 0
        assert f[2, :3].tolist() == [0, 0, 0] and f[2, 3] == 0


class TestBlockL2:
    """A sentence-embedding block is shrunk by its own L2; the scaling travels with the saved head."""

    def _data(self) -> tuple[list[str], list[str], np.ndarray]:
        texts = [t for t, _ in TRAIN]
        labels = [lab for _, lab in TRAIN]
        rng = np.random.default_rng(0)
        valence = np.array([{c.name: c.valence for c in CATS}[lab] for lab in labels], dtype=np.float64)
        emb = rng.normal(size=(len(texts), 6)) + valence[:, None]  # informative, so a weak L2 would use it
        return texts, labels, emb

    def test_embedding_block_is_shrunk_by_default(self) -> None:
        texts, labels, emb = self._data()
        spec = FeatureSpec(extras={"emb:m": 6})
        weak = train_head(texts, labels, CATS, spec, extras={"emb:m": emb}, block_l2={"emb:m": 1e-3})
        strong = train_head(texts, labels, CATS, spec, extras={"emb:m": emb})
        block = slice(len(CATS) + 1 + 11, len(CATS) + 1 + 11 + 6)  # after the glossary and surface columns

        def size(head: Head) -> float:
            w = head.v_dense[block] / head.dense_scale[block, None]  # weights on the raw embedding values
            return float(np.abs(w).sum())

        assert strong.meta["block_l2"] == {"emb:m": EMB_BLOCK_L2} and EMB_BLOCK_L2 > 1e-3
        assert size(strong) < 0.5 * size(weak)
        other = slice(0, block.start)  # the glossary/surface columns keep their scaling
        assert np.allclose(strong.dense_scale[other], weak.dense_scale[other])

    def test_round_trip_keeps_block_scaling(self, tmp_path: Path) -> None:
        texts, labels, emb = self._data()
        head = train_head(texts, labels, CATS, FeatureSpec(extras={"emb:m": 6}), extras={"emb:m": emb})
        head.save(tmp_path / "head-e.npz")
        loaded = Head.load(tmp_path / "head-e.npz")
        a = head.predict_proba(texts[:5], CATS, {"emb:m": emb[:5]})
        b = loaded.predict_proba(texts[:5], CATS, {"emb:m": emb[:5]})
        assert np.allclose(a, b, atol=1e-5)

    def test_unknown_block_is_named(self) -> None:
        with pytest.raises(ValueError, match="emb:nope"):
            train_head(["a", "b"], ["positive", "negative"], CATS, block_l2={"emb:nope": 1.0})


class TestGlossary:
    """Emotes and slang are found whatever their case, punctuation or stretched letters."""

    def test_matches(self) -> None:
        found = dict(matches("LETSGOOOO KEKW!! sadge 😂 <3"))
        assert set(found) == {"LETSGOOOO", "KEKW!!", "sadge", "😂", "<3"}
        assert found["LETSGOOOO"]["hype"] == 1.0
        assert found["sadge"]["sad"] == 1.0

    def test_weights_are_distributions(self) -> None:
        for table in (GLOSSARY, EMOJI):
            for token, weights in table.items():
                assert abs(sum(weights.values()) - 1.0) < 1e-9, token


class TestSaveLoad:
    """A saved head predicts exactly like the one in memory; a broken file is a ModelError naming it."""

    def test_round_trip(self, tmp_path: Path) -> None:
        head = train_head([t for t, _ in TRAIN], [lab for _, lab in TRAIN], CATS)
        path = tmp_path / "head-1.npz"
        head.save(path)
        loaded = Head.load(path)
        texts = ["KEKW", "new words never seen", "Sadge"]
        assert loaded.version == head.version and loaded.categories == head.categories
        assert np.allclose(loaded.predict_proba(texts, CATS), head.predict_proba(texts, CATS), atol=1e-5)

    def test_round_trip_single_level(self, tmp_path: Path) -> None:
        head = train_head(["a b", "c d", "e"], ["positive", "negative", "neutral"], CATS, two_level=False)
        head.save(tmp_path / "h.npz")
        loaded = Head.load(tmp_path / "h.npz")
        assert not loaded.two_level
        assert np.allclose(loaded.predict_proba(["a"], CATS), head.predict_proba(["a"], CATS), atol=1e-5)

    def test_corrupt_file(self, tmp_path: Path) -> None:
        path = tmp_path / "head-2.npz"
        path.write_bytes(b"not a zip")
        with pytest.raises(ModelError) as e:
            Head.load(path)
        assert str(path) in str(e.value)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ModelError, match="not found"):
            Head.load(tmp_path / "nope.npz")


class TestAdapter:
    """A head trained on top of a base head keeps what the base knows and learns what the labels teach."""

    def base(self) -> Head:
        return train_head([t for t, _ in TRAIN], [lab for _, lab in TRAIN], CATS)

    def test_valence_labels_keep_the_base_split(self) -> None:
        base = self.base()
        pairs = [("zebra", "positive"), ("zebra zebra", "positive"), ("giraffe", "negative"), ("okapi", "neutral")]
        adapter = train_head([t for t, _ in pairs], [lab for _, lab in pairs], CATS, base=base)
        texts = ["KEKW", "Pog", "<3"]
        p_base, p_new = base.predict_proba(texts, CATS), adapter.predict_proba(texts, CATS)
        pos = [NAMES.index(n) for n in ("hype", "funny", "love")]
        split_base = p_base[:, pos] / p_base[:, pos].sum(axis=1, keepdims=True)
        split_new = p_new[:, pos] / p_new[:, pos].sum(axis=1, keepdims=True)
        assert np.allclose(split_base, split_new, atol=1e-3)  # no label split the positive valence
        assert [NAMES[i] for i in p_new.argmax(axis=1)] == ["funny", "hype", "love"]

    def test_category_labels_teach_new_words(self) -> None:
        base = self.base()
        pairs = [("zebra", "love"), ("zebra time", "love"), ("giraffe", "angry"), ("giraffe again", "angry"),
                 ("okapi", "sad"), ("okapi rain", "sad"), ("KEKW", "funny"), ("Pog", "hype")] * 3
        adapter = train_head([t for t, _ in pairs], [lab for _, lab in pairs], CATS, base=base)
        texts = ["zebra", "giraffe", "okapi", "Sadge", "WeirdChamp", "<3"]
        labels = [NAMES[i] for i in adapter.predict_proba(texts, CATS).argmax(axis=1)]
        assert labels == ["love", "angry", "sad", "sad", "angry", "love"]

    def test_round_trip_with_base_and_shift(self, tmp_path: Path) -> None:
        base = self.base()
        base.shift = np.log(np.array([1.0, 1.0, 1.0, 4.0, 1.0, 1.0]))
        adapter = train_head(["zebra", "giraffe"], ["love", "angry"], CATS, base=base)
        adapter.save(tmp_path / "a.npz")
        loaded = Head.load(tmp_path / "a.npz")
        assert loaded.base is not None and loaded.base.version == base.version
        assert np.allclose(loaded.base.shift, base.shift)
        texts = ["zebra", "KEKW", "never seen"]
        assert np.allclose(loaded.predict_proba(texts, CATS), adapter.predict_proba(texts, CATS), atol=1e-5)

    def test_shift_moves_mass_towards_a_category(self) -> None:
        head = self.base()
        before = head.predict_proba(["never seen words"], CATS)[0]
        head.shift = np.log(np.array([1.0, 1.0, 1.0, 10.0, 1.0, 1.0]))
        after = head.predict_proba(["never seen words"], CATS)[0]
        assert after.sum() == pytest.approx(1.0)
        n = NAMES.index("neutral")
        assert after[n] > before[n]
        assert after[n] / after[0] == pytest.approx(10 * before[n] / before[0])

    def test_shrunk_scales_the_correction_between_base_and_adapter(self) -> None:
        base = self.base()
        pairs = [("zebra", "love"), ("zebra time", "love"), ("giraffe", "angry"), ("giraffe again", "angry")] * 2
        adapter = train_head([t for t, _ in pairs], [lab for _, lab in pairs], CATS, base=base)
        texts = ["zebra", "giraffe", "KEKW", "never seen"]
        p_base, p_full = base.predict_proba(texts, CATS), adapter.predict_proba(texts, CATS)
        assert np.allclose(adapter.shrunk(0.0, 0.0).predict_proba(texts, CATS), p_base, atol=1e-3)
        assert np.allclose(adapter.shrunk(1.0, 1.0).predict_proba(texts, CATS), p_full)
        love = NAMES.index("love")
        half = adapter.shrunk(0.5, 0.5).predict_proba(texts, CATS)
        assert p_base[0, love] < half[0, love] < p_full[0, love]
        shrunk = adapter.shrunk(0.5, 0.0)
        assert shrunk.version != adapter.version and shrunk.meta["shrink"] == {"valence": 0.5, "category": 0.0}
        with pytest.raises(ValueError, match="adapter"):
            base.shrunk(0.5, 0.5)

    def test_remembered_texts_read_as_labelled(self, tmp_path: Path) -> None:
        base = self.base()
        texts, labels = ["KEKW", "KEKW", "KEKW", "new copypasta"], ["angry", "angry", "funny", "negative"]
        adapter = train_head(texts, labels, CATS, base=base)
        adapter.memory_texts, adapter.memory_masks, adapter.memory_counts = label_memory(
            texts, allowed_mask(labels, CATS))
        assert adapter.memory_counts.tolist() == [2.0, 1.0, 1.0]
        adapter.save(tmp_path / "m.npz")
        loaded = Head.load(tmp_path / "m.npz")
        p = loaded.predict_proba(["KEKW", "new copypasta", "KEKW LUL"], CATS)
        assert p[0, NAMES.index("angry")] == pytest.approx(2 / 3) and p[0, NAMES.index("funny")] == pytest.approx(1 / 3)
        negative = [NAMES.index("sad"), NAMES.index("angry")]
        assert p[1, negative].sum() == pytest.approx(1.0)  # a valence label keeps the head's split inside it
        assert np.allclose(p[2], adapter.proba(*adapter.features(["KEKW LUL"], CATS)))  # only exact texts

    def test_base_for_other_categories_is_refused(self) -> None:
        other = (Category(name="neutral", colour="#000000", valence=0, description="x"),
                 Category(name="good", colour="#000000", valence=1, description="x"))
        with pytest.raises(ValueError, match="base head"):
            train_head(["a"], ["good"], other, base=self.base())


class TestSparseProducts:
    """The segment sums behind the head's sparse products equal dense algebra, empty rows and columns included."""

    def test_against_dense(self) -> None:
        from bot.classify.features import Sparse

        rng = np.random.default_rng(0)
        dense = (rng.random((9, 7)) < 0.3) * rng.random((9, 7))
        dense[[0, 4, 8]] = 0.0  # empty first, middle and last rows
        dense[:, 6] = 0.0  # an empty last column
        rows, cols = np.nonzero(dense)
        indptr = np.concatenate([[0], np.cumsum((dense != 0).sum(axis=1))]).astype(np.int64)
        s = Sparse(indptr=indptr, indices=cols.astype(np.int64), data=dense[rows, cols], n_cols=7)
        w, g = rng.random((7, 3)), rng.random((9, 3))
        assert np.allclose(s.matmul(w), dense @ w)
        assert np.allclose(s.rmatmul(g), dense.T @ g)
        assert np.allclose(s.rmatmul(g), dense.T @ g)  # the cached column order gives the same
        assert np.allclose(s.take(np.array([2, 0, 5])).matmul(w), dense[[2, 0, 5]] @ w)
