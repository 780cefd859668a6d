"""The classifier pipeline on generated tiny GGUFs, and the service between ingest and the classifier."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from bot.classify.classifier import PipelineClassifier, llm_enabled, load_classifier, open_label_scorer
from bot.classify.prompt import render_prompt, split_prompt
from bot.classify.service import ClassifierService, VerdictCache, classify_cached
from bot.classify.text import normalise
from bot.classify.training import save_head, train_from_pairs
from bot.config import ClassifierConfig, Config
from bot.domain import ChatLine, Verdict
from bot.errors import ModelError
from tests.fakes.chat import chat_line
from tests.fakes.gguf import write_tiny_bert, write_tiny_llama

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["KEKW", "LETSGOOOO", "what game is this", "Sadge", "trash streamer", "<3 <3", "", "Pog 🔥 Pog"]


def make_cfg(models_dir: Path, **classifier: object) -> Config:
    base = {"models_dir": models_dir, "prompt_template": ROOT / "prompts" / "classify.txt", **classifier}
    return Config(classifier=ClassifierConfig(**base))


def line(i: int, text: str, channel: str = "chan") -> ChatLine:
    return chat_line(text, "u", message_id=f"m{i}", channel=channel)


class CountingClassifier:
    """Wraps a real classifier and records every batch it is asked to classify."""

    def __init__(self, inner: PipelineClassifier) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    @property
    def version(self) -> str:
        return self.inner.version

    @property
    def categories(self) -> tuple[str, ...]:
        return self.inner.categories

    def classify(self, texts: Sequence[str]) -> list[Verdict]:
        self.calls.append(list(texts))
        return self.inner.classify(texts)


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("gguf")
    write_tiny_bert(d / "tiny-bert.gguf")
    write_tiny_llama(d / "tiny-llama.gguf")
    return d


@pytest.fixture
def text_clf(tmp_path: Path) -> PipelineClassifier:
    return load_classifier(make_cfg(tmp_path))


class TestVerdicts:
    """Every verdict is one of the categories with probabilities over all of them."""

    def _check(self, clf: PipelineClassifier, cfg: Config) -> None:
        verdicts = clf.classify(TEXTS)
        assert len(verdicts) == len(TEXTS)
        for v in verdicts:
            assert v.label in cfg.category_names
            assert set(v.probs) == set(cfg.category_names)
            assert abs(sum(v.probs.values()) - 1.0) < 1e-6
            assert v.confidence == pytest.approx(v.probs[v.label]) and v.confidence == max(v.probs.values())
            assert v.model == clf.version

    def test_text_pipeline(self, tmp_path: Path) -> None:
        cfg = make_cfg(tmp_path)
        clf = load_classifier(cfg)
        self._check(clf, cfg)
        labels = [v.label for v in clf.classify(["KEKW", "Sadge", "!uptime"])]
        assert labels == ["funny", "sad", "neutral"]

    def test_with_tiny_embedding_model(self, tmp_path: Path, gguf_dir: Path) -> None:
        cfg = make_cfg(tmp_path, embedding_model=str(gguf_dir / "tiny-bert.gguf"))
        clf = load_classifier(cfg)
        try:
            assert "emb:tiny-bert.gguf" in clf.version
            self._check(clf, cfg)
        finally:
            clf.close()

    def test_with_tiny_llm_label_scores(self, tmp_path: Path, gguf_dir: Path) -> None:
        cfg = make_cfg(tmp_path, llm_model=str(gguf_dir / "tiny-llama.gguf"), use_llm="always")
        clf = load_classifier(cfg)
        try:
            assert "llm:tiny-llama.gguf" in clf.version
            self._check(clf, cfg)
        finally:
            clf.close()

    def test_batching_equals_one_by_one(self, tmp_path: Path, gguf_dir: Path) -> None:
        cfg = make_cfg(tmp_path, embedding_model=str(gguf_dir / "tiny-bert.gguf"))
        clf = load_classifier(cfg)
        try:
            batched = clf.classify(TEXTS)
            single = [clf.classify([t])[0] for t in TEXTS]
            for a, b in zip(batched, single, strict=True):
                assert a.label == b.label
                assert np.allclose([a.probs[k] for k in a.probs], [b.probs[k] for k in a.probs], atol=1e-5)
        finally:
            clf.close()


class TestPrompt:
    """The prompt template: examples in the message's own layout, and only text + answer cue per message."""

    def test_examples_follow_the_message_line(self) -> None:
        tpl = "Moods:\n{categories}\n\n{examples}Message: {message} Mood:\n"
        rendered = render_prompt(tpl, make_cfg(Path("m")).categories, [("KEKW   KEKW", "funny"), ("rip", "sad")])
        assert "- hype: " in rendered
        assert "Message: KEKW Mood: funny\nMessage: rip Mood: sad\nMessage: {message} Mood:" in rendered

    def test_suffix_is_message_and_cue_only(self) -> None:
        prefix, suffix = split_prompt("Say the mood.\nMessage: {message} Mood:\n\n")
        assert prefix == "Say the mood.\nMessage: " and suffix == "{message} Mood:"
        with pytest.raises(ValueError, match="placeholder"):
            split_prompt("no slot")

    def test_llm_path_evaluates_few_tokens_per_message(self, tmp_path: Path, gguf_dir: Path) -> None:
        cfg = make_cfg(tmp_path, llm_model=str(gguf_dir / "tiny-llama.gguf"), use_llm="always")
        with open_label_scorer(cfg) as scorer:
            cue = scorer.message_tokens("")  # what every message adds besides its own tokens
            assert 1 <= len(cue) <= 3 < scorer.n_prefix_tokens
            toks = scorer.message_tokens("KEKW what a play")
            assert toks[-len(cue):] == cue and len(toks) < len(cue) + 16
            rows = scorer.score(["KEKW", "Sadge", "what game is this"])
            assert rows.shape == (3, len(cfg.category_names))
            assert np.allclose(np.exp(rows).sum(axis=1), 1.0)


class TestModels:
    """Model selection: missing or broken models fail at load with the path; weak LLMs are not used."""

    def test_missing_known_model_names_path_and_fix(self, tmp_path: Path) -> None:
        with pytest.raises(ModelError) as e:
            load_classifier(make_cfg(tmp_path, embedding_model="minilm"))
        assert str(tmp_path) in str(e.value) and "fetch" in str(e.value)

    def test_corrupt_model_file(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(b"GGUF" + b"\x00" * 10)
        with pytest.raises(ModelError) as e:
            load_classifier(make_cfg(tmp_path, embedding_model=str(bad)))
        assert str(bad) in str(e.value)

    def test_llm_use(self, tmp_path: Path) -> None:
        assert not llm_enabled(make_cfg(tmp_path, llm_model="smollm2"))
        assert llm_enabled(make_cfg(tmp_path, llm_model="smollm2", use_llm="always"))
        assert llm_enabled(make_cfg(tmp_path, llm_model="some-8b.gguf"))
        assert not llm_enabled(make_cfg(tmp_path, llm_model="some-8b.gguf", use_llm="never"))
        assert not llm_enabled(make_cfg(tmp_path))


class TestNormaliseAndCache:
    """Identical normalised messages are classified once."""

    def test_normalise(self) -> None:
        assert normalise("  KEKW   KEKW KEKW ") == "KEKW"
        assert normalise("LETSGOOOOOOO") == "LETSGOOO"
        assert normalise("LUL lul LUL") == "LUL lul LUL"

    def test_cache_hits(self, text_clf: PipelineClassifier) -> None:
        counting = CountingClassifier(text_clf)
        cache = VerdictCache(100)
        first = classify_cached(counting, cache, ["KEKW", "KEKW KEKW", "Pog"])
        second = classify_cached(counting, cache, ["Pog", "KEKW  KEKW KEKW", "new one"])
        assert counting.calls == [["KEKW", "Pog"], ["new one"]]
        assert first[0] == first[1] == second[1] and first[2] == second[0]
        assert cache.hits == 2

    def test_cache_is_bounded_lru(self, text_clf: PipelineClassifier) -> None:
        counting = CountingClassifier(text_clf)
        cache = VerdictCache(2)
        for texts in (["a"], ["b"], ["a"], ["c"], ["a"], ["b"]):
            classify_cached(counting, cache, texts)
        assert counting.calls == [["a"], ["b"], ["c"], ["b"]]
        assert len(cache) == 2


@pytest_asyncio.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t


class TestService:
    """offer() never blocks; overload keeps a uniform sample and counts the rest; drain() waits for all."""

    async def test_classifies_everything_in_batches_with_cache(
        self, tmp_path: Path, text_clf: PipelineClassifier, running: list[asyncio.Task[None]]
    ) -> None:
        counting = CountingClassifier(text_clf)
        got: list[tuple[ChatLine, Verdict]] = []

        async def on_verdicts(pairs: list[tuple[ChatLine, Verdict]]) -> None:
            got.extend(pairs)

        cfg = make_cfg(tmp_path, batch_size=4)
        service = ClassifierService(counting, cfg, on_verdicts, random.Random(1))
        texts = ["KEKW", "KEKW KEKW", "Pog", "Sadge", "KEKW", "hello", "Pog", "Pog", "what"]
        for i, t in enumerate(texts):
            service.offer(line(i, t))
        running.append(asyncio.create_task(service.run(), name="classifier"))
        await asyncio.wait_for(service.drain(), 10)
        assert [p[0].text for p in got] == texts
        assert all(len(c) <= 4 for c in counting.calls)
        classified = [t for c in counting.calls for t in c]
        assert sorted(classified) == sorted({"KEKW", "Pog", "Sadge", "hello", "what"})
        assert got[0][1] == got[1][1] == got[4][1]
        assert service.skipped() == 0 and service.classified == len(texts)

    async def test_overload_samples_uniformly_and_counts_skipped(
        self, tmp_path: Path, text_clf: PipelineClassifier, running: list[asyncio.Task[None]]
    ) -> None:
        got: list[tuple[ChatLine, Verdict]] = []
        skipped_cb: dict[str, int] = {}
        cfg = make_cfg(tmp_path, queue_size=200, batch_size=64)
        service = ClassifierService(
            text_clf, cfg, lambda pairs: got.extend(pairs), random.Random(7),
            on_skipped=lambda ch, n: skipped_cb.__setitem__(ch, skipped_cb.get(ch, 0) + n),
        )
        n = 4000
        for i in range(n):
            service.offer(line(i, f"msg {i}", channel="a" if i % 4 else "b"))
        assert service.pending == 200
        assert service.skipped() == n - 200
        assert service.skipped("a") + service.skipped("b") == n - 200
        assert skipped_cb == {"a": service.skipped("a"), "b": service.skipped("b")}
        running.append(asyncio.create_task(service.run(), name="classifier"))
        await asyncio.wait_for(service.drain(), 10)
        kept = sorted(int(p[0].message_id[1:]) for p in got)
        assert len(kept) == 200
        # A uniform sample of 0..3999: each quarter holds about 50 (binomial sd ~6); the first 200 are not favoured.
        quarters = np.histogram(kept, bins=4, range=(0, n))[0]
        assert quarters.min() >= 25, quarters
        assert sum(1 for k in kept if k < 200) < 30
        assert 0.15 < sum(1 for p in got if p[0].channel == "b") / 200 < 0.35

    async def test_drain_covers_messages_offered_before_it(
        self, tmp_path: Path, text_clf: PipelineClassifier, running: list[asyncio.Task[None]]
    ) -> None:
        got: list[str] = []
        service = ClassifierService(text_clf, make_cfg(tmp_path, batch_size=2), lambda ps: got.extend(
            p[0].text for p in ps), random.Random(0))
        running.append(asyncio.create_task(service.run(), name="classifier"))
        for i in range(5):
            service.offer(line(i, f"t{i}"))
        await asyncio.wait_for(service.drain(), 10)
        assert got == [f"t{i}" for i in range(5)]
        await asyncio.wait_for(service.drain(), 1)  # nothing pending: returns at once

    async def test_failing_callback_does_not_stop_the_worker(
        self, tmp_path: Path, text_clf: PipelineClassifier, running: list[asyncio.Task[None]]
    ) -> None:
        calls: list[int] = []

        def on_verdicts(pairs: list[tuple[ChatLine, Verdict]]) -> None:
            calls.append(len(pairs))
            if len(calls) == 1:
                raise RuntimeError("boom")

        service = ClassifierService(text_clf, make_cfg(tmp_path, batch_size=1), on_verdicts, random.Random(0))
        running.append(asyncio.create_task(service.run(), name="classifier"))
        service.offer(line(0, "a"))
        service.offer(line(1, "b"))
        await asyncio.wait_for(service.drain(), 10)
        assert calls == [1, 1]


class PoisonedClassifier(CountingClassifier):
    """A real classifier whose model fails on one text (as a native model call can), however it is batched."""

    def __init__(self, inner: PipelineClassifier, poison: str) -> None:
        super().__init__(inner)
        self.poison = poison

    def classify(self, texts: Sequence[str]) -> list[Verdict]:
        self.calls.append(list(texts))
        if self.poison in texts:
            raise RuntimeError("the model failed on this input")
        return self.inner.classify(texts)


class TestOddText:
    """One odd message never costs its neighbours their verdicts."""

    def test_a_lone_surrogate_does_not_fail_the_batch(self, text_clf: PipelineClassifier) -> None:
        texts = ["LETSGO", "half an emoji \ud83d", "\udc00", "KEKW"]
        verdicts = text_clf.classify(texts)
        assert len(verdicts) == 4 and all(v.label in text_clf.categories for v in verdicts)
        alone = text_clf.classify(["LETSGO"])[0]  # the neighbour's verdict is what it gets on its own
        assert verdicts[0].label == alone.label and verdicts[0].probs == pytest.approx(alone.probs)

    def test_cleaned_chat_line_text_classifies(self, text_clf: PipelineClassifier) -> None:
        bad = chat_line("Pog \ud83d\x00!")
        assert bad.text == "Pog \ufffd!"
        assert len(text_clf.classify([bad.text, "ok"])) == 2

    async def test_service_isolates_the_message_that_fails(
        self, tmp_path: Path, text_clf: PipelineClassifier, running: list[asyncio.Task[None]]
    ) -> None:
        poisoned = PoisonedClassifier(text_clf, "poison")
        got: list[tuple[ChatLine, Verdict]] = []
        service = ClassifierService(poisoned, make_cfg(tmp_path, batch_size=8), got.extend, random.Random(0))
        texts = ["a", "b", "poison", "c", "d"]
        for i, t in enumerate(texts):
            service.offer(line(i, t))
        running.append(asyncio.create_task(service.run(), name="classifier"))
        await asyncio.wait_for(service.drain(), 10)
        assert [p[0].text for p in got] == ["a", "b", "c", "d"]
        assert (service.classified, service.failed) == (4, 1)
        assert poisoned.calls[0] == texts  # one batch first; one at a time only after it failed


class TestHotReload:
    """A newer head in models_dir replaces the current one without a restart; broken ones are passed over."""

    def test_picks_up_newer_head(self, tmp_path: Path) -> None:
        cfg = make_cfg(tmp_path)
        clf = load_classifier(cfg)
        cold = clf.version
        assert cold.startswith("cold-") and not clf.maybe_reload()
        head = train_from_pairs([("zebra", "angry"), ("giraffe", "love")] * 3, cfg.categories)
        path = save_head(head, tmp_path)
        assert clf.maybe_reload()
        assert clf.head_path == path and clf.version != cold and clf.version.startswith(head.version)
        assert clf.classify(["zebra"])[0].label == "angry"
        assert not clf.maybe_reload()
        fresh = load_classifier(cfg)
        assert fresh.version == clf.version  # a restart picks the same newest head

    def test_skips_broken_and_incompatible_heads(self, tmp_path: Path) -> None:
        cfg = make_cfg(tmp_path)
        good = save_head(train_from_pairs([("zebra", "angry")], cfg.categories), tmp_path)
        (tmp_path / "head-99999999T000000000000Z.npz").write_bytes(b"broken")
        clf = load_classifier(cfg)
        assert clf.head_path == good

    async def test_service_reloads_and_clears_cache(
        self, tmp_path: Path, running: list[asyncio.Task[None]]
    ) -> None:
        cfg = make_cfg(tmp_path)
        clf = load_classifier(cfg)
        now = [0.0]
        got: list[Verdict] = []
        service = ClassifierService(clf, cfg, lambda ps: got.extend(p[1] for p in ps), random.Random(0),
                                    reload_every_s=5.0, clock=lambda: now[0])
        running.append(asyncio.create_task(service.run(), name="classifier"))
        service.offer(line(0, "zebra"))
        await service.drain()
        save_head(train_from_pairs([("zebra", "angry"), ("giraffe", "love")] * 3, cfg.categories), tmp_path)
        now[0] = 10.0
        service.offer(line(1, "zebra"))
        await service.drain()
        service.offer(line(2, "zebra"))
        await service.drain()
        assert got[0].model.startswith("cold-")
        assert got[2].model.startswith("head-") and got[2].label == "angry"


class TestIdleReload:
    """With no chat at all the worker still notices a new head."""

    async def test_idle_worker_reloads(self, tmp_path: Path, running: list[asyncio.Task[None]]) -> None:
        cfg = make_cfg(tmp_path)
        clf = load_classifier(cfg)
        service = ClassifierService(clf, cfg, lambda ps: None, random.Random(0), reload_every_s=0.05)
        assert service.version.startswith("cold-")
        running.append(asyncio.create_task(service.run(), name="classifier"))
        save_head(train_from_pairs([("zebra", "angry")] * 2, cfg.categories), tmp_path)
        for _ in range(200):
            if service.version.startswith("head-"):
                break
            await asyncio.sleep(0.02)
        assert service.version.startswith("head-")
