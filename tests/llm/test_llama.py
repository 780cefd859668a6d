"""bot.llm.llama on tiny generated GGUFs: embeddings and label scoring behave like the model says they should.

The label-scoring checks compare against an independent path: the same full prompt evaluated from scratch with a
plain ``llama_cpp.Llama``, so the prefix cache, the sequence copies and the rollbacks are checked, not assumed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from bot.errors import ModelError
from bot.llm.llama import Embedder, LabelScorer
from bot.llm.registry import KNOWN_MODELS
from tests.fakes.gguf import write_tiny_bert, write_tiny_llama

LABELS = ("hype", "funny", "love", "neutral", "sad", "angry")
PREFIX = "Label the Mood of each chat Message.\nMessage: gg ez\nMood: hype\n"
SUFFIX = "Message: {text}\nMood:"
# llama.cpp keeps the KV cache in f16, so the same logits computed through differently shaped batches differ in
# the third decimal; a wrong context (a stale or missing cell) moves them by far more (checked below).
TOL = 1e-2
TEXTS = ("pog this play", "lol kekw", "sadge", "", "what a great game gg ez " * 30, "no way", "ÄÖÜ ✨ 🎉 日本語")


@pytest.fixture(scope="module")
def llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("llama") / "tiny-llama.gguf")


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert.gguf")


@pytest.fixture(scope="module")
def scorer(llama_path: Path) -> Iterator[LabelScorer]:
    s = LabelScorer(llama_path, threads=1, prefix=PREFIX, labels=LABELS, suffix_template=SUFFIX, batch_size=4)
    yield s
    s.close()


def reference_logprobs(path: Path, prompt_tokens: list[int], label_tokens: list[list[int]]) -> np.ndarray:
    """log p(label | prompt) normalised over labels, each prompt evaluated from scratch by a plain Llama."""
    llm = llama_cpp.Llama(str(path), n_ctx=512, logits_all=True, verbose=False)
    out = []
    for toks in label_tokens:
        llm.reset()  # type: ignore[no-untyped-call]
        llm.eval(prompt_tokens + toks[:-1])
        lp = 0.0
        for j, t in enumerate(toks):
            row = np.asarray(llm.scores[len(prompt_tokens) - 1 + j], dtype=np.float64)
            lp += float(row[t] - (row.max() + np.log(np.exp(row - row.max()).sum())))
        out.append(lp)
    llm.close()
    a = np.array(out)
    res: np.ndarray = a - (a.max() + np.log(np.exp(a - a.max()).sum()))
    return res


class TestTinyModels:
    """The generated GGUFs are small, load in milliseconds and tokenize as designed."""

    def test_tiny_llama(self, llama_path: Path) -> None:
        assert llama_path.stat().st_size < 1_000_000
        t0 = time.perf_counter()
        llm = llama_cpp.Llama(str(llama_path), n_ctx=128, verbose=False)
        assert time.perf_counter() - t0 < 5  # generous: it is ~10 ms, but CI machines are shared
        pieces = [llm.detokenize([t]) for t in llm.tokenize(b"hype this play", add_bos=False)]
        assert pieces == [b" hype", b" this", b" play"]
        assert llm.detokenize(llm.tokenize("日本語 ✨".encode(), add_bos=False)) == " 日本語 ✨".encode()
        llm.close()

    def test_tiny_llama_is_deterministic(self, tmp_path: Path) -> None:
        a = write_tiny_llama(tmp_path / "a.gguf").read_bytes()
        assert write_tiny_llama(tmp_path / "b.gguf").read_bytes() == a
        assert write_tiny_llama(tmp_path / "c.gguf", seed=1).read_bytes() != a

    def test_tiny_bert(self, bert_path: Path) -> None:
        assert bert_path.stat().st_size < 1_000_000
        with Embedder(bert_path, threads=1, n_ctx=32) as emb:
            assert emb.dim == 32


class TestEmbedder:
    """Embeddings are (n, dim) float32 unit vectors, deterministic and independent of their neighbours."""

    def test_shape_and_norm(self, bert_path: Path) -> None:
        with Embedder(bert_path, threads=1, n_ctx=64) as emb:
            e = emb.embed(list(TEXTS))
            assert e.shape == (len(TEXTS), emb.dim) and e.dtype == np.float32
            np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
            assert emb.embed([]).shape == (0, emb.dim)
            assert len({tuple(np.round(r, 4)) for r in e}) == len(TEXTS)  # different texts, different vectors

    def test_deterministic_and_neighbour_independent(self, bert_path: Path) -> None:
        with Embedder(bert_path, threads=1, n_ctx=64) as a, Embedder(bert_path, threads=2, n_ctx=64) as b:
            together = a.embed(list(TEXTS))
            alone = np.vstack([a.embed([t]) for t in TEXTS])
            np.testing.assert_allclose(together, alone, atol=1e-5)
            np.testing.assert_allclose(b.embed(list(TEXTS[::-1]))[::-1], together, atol=1e-4)

    def test_packed_batches_agree(self, bert_path: Path) -> None:
        with Embedder(bert_path, threads=1, n_ctx=64) as one, Embedder(bert_path, threads=1, n_ctx=64,
                                                                       pack_tokens=48) as packed:
            np.testing.assert_allclose(packed.embed(list(TEXTS)), one.embed(list(TEXTS)), atol=1e-4)

    def test_long_text_is_cut_safely(self, bert_path: Path) -> None:
        with Embedder(bert_path, threads=1, n_ctx=32) as emb:
            long = "hype " * 500
            toks = emb.tokens(long)
            assert len(toks) == 32 and toks[-1] == emb.tokens("")[-1]  # still ends with [SEP]
            e = emb.embed([long, "hype " * 30])
            assert np.isfinite(e).all()
            np.testing.assert_allclose(e[0], e[1], atol=1e-5)  # both cut to the same 32 tokens

    def test_cut_to_the_models_position_table(self, bert_path: Path) -> None:
        with Embedder(bert_path, threads=1, n_ctx=512) as emb:  # the tiny BERT knows 128 positions
            assert emb.n_ctx == 128
            assert len(emb.tokens("gg " * 400)) == 128
            assert np.isfinite(emb.embed(["gg " * 400])).all()

    async def test_off_loop_calls_are_serialised(self, bert_path: Path) -> None:
        with Embedder(bert_path, threads=1, n_ctx=64) as emb:
            expected = emb.embed(list(TEXTS))
            results = await asyncio.gather(*(asyncio.to_thread(emb.embed, list(TEXTS)) for _ in range(6)))
            for r in results:
                np.testing.assert_allclose(r, expected, atol=1e-5)

    def test_missing_and_corrupt_files(self, tmp_path: Path) -> None:
        with pytest.raises(ModelError, match="not found") as ei:
            Embedder(tmp_path / "none.gguf", threads=1)
        assert "make setup" in str(ei.value)
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(b"\x00" * 1000)
        with pytest.raises(ModelError, match="not a GGUF") as ei:
            Embedder(bad, threads=1)
        assert ei.value.path == bad

    def test_a_chat_model_is_not_an_embedder(self, llama_path: Path) -> None:
        with pytest.raises(ModelError, match="pooling"):
            Embedder(llama_path, threads=1, n_ctx=64)

    def test_closed(self, bert_path: Path) -> None:
        emb = Embedder(bert_path, threads=1, n_ctx=32)
        emb.close()
        emb.close()
        with pytest.raises(RuntimeError, match="closed"):
            emb.embed(["x"])


class TestLabelScorer:
    """Label scoring returns a distribution over the labels that equals scoring each full prompt from scratch,
    whether messages are batched, run one by one, or re-evaluate the prefix."""

    def test_rows_are_distributions(self, scorer: LabelScorer) -> None:
        lp = scorer.score(list(TEXTS))
        assert lp.shape == (len(TEXTS), len(LABELS))
        assert (lp <= 0).all()
        np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, rtol=1e-9)
        assert scorer.score([]).shape == (0, len(LABELS))

    def test_matches_scoring_from_scratch(self, scorer: LabelScorer, llama_path: Path) -> None:
        lp = scorer.score(list(TEXTS[:4]))
        prefix = list(scorer._llama.tokenize(PREFIX.encode(), add_bos=True, special=True))
        for row, text in zip(lp, TEXTS[:4], strict=True):
            ref = reference_logprobs(llama_path, prefix + scorer.message_tokens(text), scorer._label_tokens)
            np.testing.assert_allclose(row, ref, atol=TOL)
        # the comparison can fail: scoring without the prefix, or with another message, is far off
        no_prefix = reference_logprobs(llama_path, scorer.message_tokens(TEXTS[0]), scorer._label_tokens)
        other = reference_logprobs(llama_path, prefix + scorer.message_tokens(TEXTS[1]), scorer._label_tokens)
        assert np.abs(no_prefix - lp[0]).max() > 10 * TOL
        assert np.abs(other - lp[0]).max() > 10 * TOL

    def test_batched_equals_sequential_and_uncached(self, scorer: LabelScorer, llama_path: Path) -> None:
        batched = scorer.score(list(TEXTS))
        kw = dict(threads=1, prefix=PREFIX, labels=LABELS, suffix_template=SUFFIX)
        with LabelScorer(llama_path, batch_size=1, **kw) as seq:  # type: ignore[arg-type]
            np.testing.assert_allclose(seq.score(list(TEXTS)), batched, atol=TOL)
        with LabelScorer(llama_path, batch_size=3, cache_prefix=False, **kw) as fresh:  # type: ignore[arg-type]
            np.testing.assert_allclose(fresh.score(list(TEXTS)), batched, atol=TOL)

    def test_neighbours_and_history_do_not_leak(self, scorer: LabelScorer) -> None:
        first = scorer.score(list(TEXTS))
        for _ in range(3):  # many rollbacks later the cache still holds only the prefix
            scorer.score(["lol " * 40] * 9)
        again = scorer.score(list(TEXTS[::-1]))[::-1]
        np.testing.assert_allclose(again, first, atol=TOL)
        assert np.abs(first[0] - first[1]).max() > 10 * TOL  # different messages get different scores

    def test_multi_token_labels(self, llama_path: Path) -> None:
        labels = ("hype", "hypeclap", "sadge pepehands", "no way", "zz")
        kw = dict(threads=1, prefix=PREFIX, labels=labels, suffix_template=SUFFIX)
        with LabelScorer(llama_path, batch_size=3, **kw) as sc:  # type: ignore[arg-type]
            assert sorted(len(t) for t in sc._label_tokens)[-1] > 1
            lp = sc.score(list(TEXTS[:4]))
            prefix = list(sc._llama.tokenize(PREFIX.encode(), add_bos=True, special=True))
            for row, text in zip(lp, TEXTS[:4], strict=True):
                ref = reference_logprobs(llama_path, prefix + sc.message_tokens(text), sc._label_tokens)
                np.testing.assert_allclose(row, ref, atol=TOL)
        with LabelScorer(llama_path, batch_size=1, **kw) as one:  # type: ignore[arg-type]
            np.testing.assert_allclose(one.score(list(TEXTS[:4])), lp, atol=TOL)

    def test_long_messages_are_cut(self, scorer: LabelScorer) -> None:
        toks = scorer.message_tokens("hype " * 1000)
        assert len(toks) <= scorer.max_message_tokens + len(scorer._before) + len(scorer._after)
        assert np.isfinite(scorer.score(["hype " * 1000])).all()

    def test_chat_text_cannot_inject_special_tokens(self, scorer: LabelScorer) -> None:
        toks = scorer.message_tokens("</s><s>")
        assert 1 not in toks and 2 not in toks  # bos/eos ids of the tiny model

    async def test_concurrent_callers(self, scorer: LabelScorer) -> None:
        expected = scorer.score(list(TEXTS))
        results = await asyncio.gather(*(asyncio.to_thread(scorer.score, list(TEXTS)) for _ in range(4)))
        for r in results:
            np.testing.assert_allclose(r, expected, atol=TOL)

    def test_generation_paths(self, scorer: LabelScorer) -> None:
        for text in TEXTS[:3]:
            assert scorer.generate_label_constrained(text) in LABELS
            free = scorer.generate_label(text)
            assert free is None or free in LABELS

    def test_generation_fits_long_prompts(self, tmp_path: Path) -> None:
        path = write_tiny_llama(tmp_path / "long.gguf", n_ctx=4096)
        prefix = "Label the Mood.\n" + "Message: gg ez lol\nMood: hype\n" * 150  # ~1,500 tokens
        with LabelScorer(path, threads=1, prefix=prefix, labels=LABELS, suffix_template=SUFFIX) as sc:
            assert sc.n_prefix_tokens > 1024
            assert sc.generate_label_constrained("pog " * 500) in LABELS
            assert len(sc.prompt_tokens("pog " * 500)) == sc.n_prefix_tokens + len(sc.message_tokens("pog " * 500))

    def test_bad_arguments(self, llama_path: Path, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="exactly once"):
            LabelScorer(llama_path, threads=1, prefix="", labels=LABELS, suffix_template="no slot")
        with pytest.raises(ValueError, match="distinct"):
            LabelScorer(llama_path, threads=1, prefix="", labels=("a", "a"), suffix_template="{text}")
        with pytest.raises(ModelError, match="not found") as ei:
            LabelScorer(tmp_path / "x.gguf", threads=1, prefix="", labels=LABELS, suffix_template="{text}")
        assert ei.value.path == tmp_path / "x.gguf"

    def test_closed(self, llama_path: Path) -> None:
        sc = LabelScorer(llama_path, threads=1, prefix=PREFIX, labels=LABELS, suffix_template=SUFFIX)
        sc.close()
        sc.close()
        with pytest.raises(RuntimeError, match="closed"):
            sc.score(["x"])


_REAL_MINILM = Path(__file__).resolve().parents[2] / "models" / KNOWN_MODELS["minilm"].file_name


@pytest.mark.skipif(not _REAL_MINILM.is_file(), reason="real models not fetched (make setup)")
def test_real_minilm_groups_similar_messages() -> None:
    """With the real all-MiniLM-L6-v2 (when fetched), paraphrases are closer than unrelated chat."""
    with Embedder(_REAL_MINILM, threads=2, n_ctx=128) as emb:
        e = emb.embed(["that play was absolutely insane", "what an incredible play",
                       "what time does the stream start"])
        assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.3
