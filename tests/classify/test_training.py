"""Metrics, label files, valence mapping and the eval/classify/export commands."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from bot.classify.classifier import load_classifier
from bot.classify.starter import shipped_head
from bot.classify.training import (
    cmd_classify,
    cmd_eval,
    cmd_export,
    cmd_train,
    compute_metrics,
    evaluate,
    export_lines,
    gold_in_space,
    label_space,
    predict_in_space,
    read_examples,
    save_head,
    train_from_pairs,
)
from bot.config import DEFAULT_CATEGORIES, ClassifierConfig, Config, StorageConfig
from bot.domain import Verdict
from bot.errors import DataError
from bot.storage.store import Storage

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "data" / "tiny_eval.csv"
NAMES = [c.name for c in DEFAULT_CATEGORIES]


class KeywordClassifier:
    """A transparent stand-in whose answers can be worked out by hand: the first keyword found, else neutral."""

    version = "keywords-1"
    categories = tuple(NAMES)
    RULES = (("lol", "funny"), ("pog", "hype"), ("ty", "love"), ("sad", "sad"), ("mad", "angry"))

    def classify(self, texts: Sequence[str]) -> list[Verdict]:
        out = []
        for text in texts:
            label = next((cat for word, cat in self.RULES if word in text.split()), "neutral")
            probs = {n: (0.75 if n == label else 0.05) for n in NAMES}
            out.append(Verdict(label=label, confidence=0.75, probs=probs, model=self.version))
        return out


def make_cfg(models_dir: Path) -> Config:
    return Config(classifier=ClassifierConfig(models_dir=models_dir,
                                              prompt_template=ROOT / "prompts" / "classify.txt"))


class TestMetrics:
    """Figures on the hand-made file, worked out by hand (see the comments)."""

    def test_tiny_file_by_hand(self) -> None:
        pairs = read_examples(TINY)
        result = evaluate(KeywordClassifier(), pairs, DEFAULT_CATEGORIES, batch_size=3)
        # Rows 5 ("lol no": neutral -> funny = positive) and 8 ("whatever dude": negative -> neutral) are wrong.
        assert result["space"] == "valence" and result["n"] == 10
        assert result["accuracy"] == pytest.approx(0.8)
        assert result["confusion"] == {
            "labels": ["positive", "neutral", "negative"],
            "matrix": [[4, 0, 0], [1, 2, 0], [0, 1, 2]],
        }
        pc = result["per_class"]
        assert pc["positive"]["precision"] == pytest.approx(0.8) and pc["positive"]["recall"] == 1.0
        assert pc["positive"]["f1"] == pytest.approx(8 / 9)
        assert pc["neutral"]["precision"] == pytest.approx(2 / 3) and pc["neutral"]["f1"] == pytest.approx(2 / 3)
        assert pc["negative"]["precision"] == 1.0 and pc["negative"]["recall"] == pytest.approx(2 / 3)
        assert pc["negative"]["f1"] == pytest.approx(0.8)
        assert result["macro_f1"] == pytest.approx((8 / 9 + 2 / 3 + 0.8) / 3)
        assert result["msgs_per_s"] > 0

    def test_category_space(self) -> None:
        m = compute_metrics(["hype", "sad", "sad"], ["hype", "hype", "sad"], ["hype", "sad"])
        assert m["accuracy"] == pytest.approx(2 / 3)
        assert m["per_class"]["hype"]["precision"] == 0.5 and m["per_class"]["sad"]["recall"] == 0.5
        assert m["macro_f1"] == pytest.approx(2 / 3)

    def test_class_absent_from_gold_is_not_averaged(self) -> None:
        m = compute_metrics(["a", "a"], ["a", "b"], ["a", "b"])
        assert m["macro_f1"] == pytest.approx(2 / 3)  # only "a": P 1, R 0.5


class TestValenceMapping:
    """Valence labels compare with the valence carrying most of the predicted probability."""

    def test_space(self) -> None:
        assert label_space(["hype", "neutral"], DEFAULT_CATEGORIES) == "category"
        assert label_space(["hype", "positive"], DEFAULT_CATEGORIES) == "valence"
        assert gold_in_space(["hype", "sad", "neutral", "positive"], DEFAULT_CATEGORIES, "valence") == [
            "positive", "negative", "neutral", "positive"]

    def test_prediction_sums_categories(self) -> None:
        # angry is the single most likely category, but the three positive ones together outweigh it.
        p = {"hype": 0.2, "funny": 0.2, "love": 0.15, "neutral": 0.05, "sad": 0.05, "angry": 0.35}
        assert predict_in_space([p], DEFAULT_CATEGORIES, "category") == ["angry"]
        assert predict_in_space([p], DEFAULT_CATEGORIES, "valence") == ["positive"]

    def test_unknown_gold_label(self) -> None:
        with pytest.raises(DataError, match="'meh'"):
            evaluate(KeywordClassifier(), [("x", "meh")], DEFAULT_CATEGORIES)


class TestFiles:
    """CSV and JSONL are read with named columns; bad rows are errors naming the line."""

    def test_jsonl_and_columns(self, tmp_path: Path) -> None:
        f = tmp_path / "x.jsonl"
        f.write_text('{"msg": "Pog", "y": "HYPE"}\n\n{"msg": "", "y": "sad"}\n{"msg": "KEKW", "y": "funny"}\n')
        assert read_examples(f, "msg", "y") == [("Pog", "hype"), ("KEKW", "funny")]

    def test_missing_column(self, tmp_path: Path) -> None:
        f = tmp_path / "x.csv"
        f.write_text("message,label\nhi,neutral\n")
        with pytest.raises(DataError, match="no column"):
            read_examples(f)

    def test_missing_label_names_line(self, tmp_path: Path) -> None:
        f = tmp_path / "x.csv"
        f.write_text("text,label\nhi,neutral\nyo,\n")
        with pytest.raises(DataError, match=r"x\.csv:3"):
            read_examples(f)

    def test_bad_json_names_line(self, tmp_path: Path) -> None:
        f = tmp_path / "x.jsonl"
        f.write_text('{"text": "a", "label": "sad"}\n{oops\n')
        with pytest.raises(DataError, match=r"x\.jsonl:2"):
            read_examples(f)


class TestShrinkage:
    """Labels move the starter head only as far as a cross-validation on them says they generalise; the labelled
    messages themselves are always read as labelled."""

    def test_labels_that_generalise_are_kept(self) -> None:
        words = ["zebra", "giraffe", "okapi"]
        fillers = ["now", "again", "chat", "today", "here", "lol", "ok", "wow", "yes", "so"]
        pairs = [(f"{w} {a} {b}", lab) for w, lab in zip(words, ("love", "angry", "sad"), strict=True)
                 for a in fillers[:6] for b in fillers[6:]]
        head = train_from_pairs(pairs, DEFAULT_CATEGORIES)
        assert head.meta["shrink"]["valence"] > 0 and head.meta["shrink"]["category"] > 0
        unseen = ["zebra yes wow", "giraffe yes wow", "okapi yes wow"]  # word orders no label had
        labels = head.predict_proba(unseen, DEFAULT_CATEGORIES).argmax(axis=1)
        assert [NAMES[i] for i in labels] == ["love", "angry", "sad"]

    def test_labels_that_teach_nothing_leave_the_starter_head(self) -> None:
        base = shipped_head()
        assert base is not None
        rng = np.random.default_rng(5)
        words = ["stream", "game", "chat", "boss", "map", "song", "run", "team", "round", "level"]
        texts = [f"the {a} and the {b}" for a in words for b in words if a != b][:60]
        probs = base.predict_proba(texts, DEFAULT_CATEGORIES)
        # labels drawn from the starter head's own beliefs: by construction there is nothing to learn
        pairs = [(t, NAMES[rng.choice(len(NAMES), p=p / p.sum())]) for t, p in zip(texts, probs, strict=True)]
        head = train_from_pairs(pairs, DEFAULT_CATEGORIES, base=base)
        assert head.meta["shrink"] == {"valence": 0.0, "category": 0.0}
        probe = ["KEKW", "what game is this", "this is so boring", "the boss and the crowd"]
        assert np.allclose(head.predict_proba(probe, DEFAULT_CATEGORIES),
                           base.predict_proba(probe, DEFAULT_CATEGORIES), atol=1e-3)
        first = head.predict_proba([pairs[0][0]], DEFAULT_CATEGORIES)[0]
        assert NAMES[int(first.argmax())] == pairs[0][1]  # a labelled message is still read as labelled

    def test_no_folds_keeps_the_adapter_as_fitted(self) -> None:
        head = train_from_pairs([("zebra", "angry"), ("giraffe", "love")], DEFAULT_CATEGORIES, folds=0)
        assert "shrink" not in head.meta


class TestCommands:
    """eval --json prints one object; classify --json prints label and probs; export writes fine-tuning JSONL."""

    async def test_eval_json(self, tmp_path: Path) -> None:
        out = io.StringIO()
        assert await cmd_eval(make_cfg(tmp_path), TINY, as_json=True, out=out, err=io.StringIO()) == 0
        result = json.loads(out.getvalue())
        assert {"accuracy", "macro_f1", "per_class", "confusion", "msgs_per_s"} <= set(result)
        assert set(result["per_class"]) == {"positive", "neutral", "negative"}
        assert sum(map(sum, result["confusion"]["matrix"])) == 10

    async def test_eval_text(self, tmp_path: Path) -> None:
        out = io.StringIO()
        await cmd_eval(make_cfg(tmp_path), TINY, out=out, err=io.StringIO())
        assert "accuracy" in out.getvalue() and "confusion" in out.getvalue()

    async def test_classify_json_uses_newest_head(self, tmp_path: Path) -> None:
        cfg = make_cfg(tmp_path)
        save_head(train_from_pairs([("zebra", "love"), ("giraffe", "sad")] * 3, cfg.categories), tmp_path)
        out = io.StringIO()
        assert await cmd_classify(cfg, ["zebra", "KEKW"], as_json=True, out=out) == 0
        rows = [json.loads(x) for x in out.getvalue().splitlines()]
        assert rows[0]["label"] == "love" and set(rows[0]["probs"]) == set(NAMES)
        assert rows[0]["model"].startswith("head-")

    def test_export_formats(self) -> None:
        pairs = [("Pog", "hype")]
        chat = json.loads(export_lines(pairs, DEFAULT_CATEGORIES, "chat", "SYSTEM", "T {categories} {message}")[0])
        assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant"]
        assert chat["messages"][1]["content"] == "Pog" and chat["messages"][2]["content"] == "hype"
        tpl = "{categories}|{message}\n"  # the file's final newline is not part of the prompt
        pc = json.loads(export_lines(pairs, DEFAULT_CATEGORIES, "prompt-completion", "S", tpl)[0])
        assert pc["prompt"].endswith("|Pog") and "- hype:" in pc["prompt"] and pc["completion"] == " hype"
        with pytest.raises(ValueError, match="unknown export format"):
            export_lines(pairs, DEFAULT_CATEGORIES, "xml", "", "")


class TestWithStorage:
    """train reads the stored labelled examples (plus a file) and saves a head the classifier then uses;
    export writes them as fine-tuning data. Against the real FerretDB test server."""

    async def test_train_and_export(self, storage: Storage, storage_config: StorageConfig, tmp_path: Path) -> None:
        for text, label in [("zebra", "angry"), ("zebra zebra", "angry"), ("giraffe", "love")]:
            await storage.add_labeled_example(prompt=text, completion=label, labelled_by="mod", source="import")
        await storage.add_labeled_example(prompt="old", completion="retired", labelled_by="mod", source="import")
        extra = tmp_path / "more.csv"
        extra.write_text("text,label\nokapi,positive\nokapi okapi,positive\n")
        cfg = make_cfg(tmp_path / "models").model_copy(update={"storage": storage_config})
        out = io.StringIO()
        assert await cmd_train(cfg, extra, out=out) == 0
        assert "3 stored + 2 file examples" in out.getvalue() and "left out 1" in out.getvalue()
        heads = list((tmp_path / "models").glob("head-*.npz"))
        assert len(heads) == 1
        clf = load_classifier(cfg)
        assert clf.head_path == heads[0]
        assert clf.classify(["zebra"])[0].label == "angry"
        assert clf.classify(["okapi"])[0].label in ("hype", "funny", "love")

        dest = tmp_path / "ft.jsonl"
        assert await cmd_export(cfg, "chat", dest, out=io.StringIO()) == 0
        rows = [json.loads(x) for x in dest.read_text().splitlines()]
        assert len(rows) == 4
        assert {r["messages"][1]["content"] for r in rows} == {"zebra", "zebra zebra", "giraffe", "old"}
        assert "- hype:" in rows[0]["messages"][0]["content"]
