"""Accuracy of the default classifier on the labelled dev sets in ../shared/data, as one JSON object.

Every number is computed with the project's own code (bot.classify.starter / head / training), never with rows
of the dev sets in the shipped training set:

* ``cold``: the starter head as a new channel meets it (no labels), on every row of each set;
* ``cv``: cross-validation, folds grouped by normalised text (a text never sits in two folds): for each fold an
  adapter head is trained on the other folds' labels on top of the starter head, exactly as ``chatmood train``
  does, and scored on the held-out fold; mean (and spread) over ``--seeds`` fold assignments;
* ``fresh`` (inside ``cold`` and ``cv``): the same, scored only on the rows whose normalised text is not in the
  shipped training set (generic chat such as ``KEKW`` is written in both; the shipped lines are written
  independently, but this is the figure free of that overlap);
* ``curve``: the learning curve, the same CV with only the first N labels of each training fold (N=0 is the cold
  start), over ``--curve-seeds`` fold assignments, with the mean shrinkage the adapters chose;
* ``ablations`` (``--ablations``): the starter head rebuilt without one ingredient at a time, cold and CV.

    .venv/bin/python bench/accuracy.py [--seeds 3] [--curve-seeds 3] [--no-shrink] [--ablations]

mood6-dev has six-category labels (accuracy and macro-F1 over the categories); kobs-dev valence labels (a
prediction's valence is the one with the most probability). The script reads ../shared/data; tests never do.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.classify import starter  # noqa: E402
from bot.classify.features import FeatureSpec  # noqa: E402
from bot.classify.fit import train_head  # noqa: E402
from bot.classify.head import Head  # noqa: E402
from bot.classify.text import normalise  # noqa: E402
from bot.classify.training import (  # noqa: E402
    L2,
    compute_metrics,
    gold_in_space,
    label_space,
    predict_in_space,
    train_from_pairs,
)
from bot.config import DEFAULT_CATEGORIES  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CATS = DEFAULT_CATEGORIES
NAMES = [c.name for c in CATS]
Pairs = list[tuple[str, str]]


def read_set(name: str) -> Pairs:
    with (DATA / name / f"{name}.csv").open(encoding="utf-8", newline="") as fh:
        return [(r["text"], r["label"].strip().lower()) for r in csv.DictReader(fh)]


def score(probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
    space = label_space(labels, CATS)
    gold = gold_in_space(labels, CATS, space)
    pred = predict_in_space([dict(zip(NAMES, p, strict=True)) for p in probs], CATS, space)
    classes = ["positive", "neutral", "negative"] if space == "valence" else NAMES
    return compute_metrics(gold, pred, classes)


def folds_of(pairs: Pairs, k: int, seed: int) -> np.ndarray:
    groups = sorted({normalise(t) for t, _ in pairs})
    random.Random(seed).shuffle(groups)
    fold = {g: i % k for i, g in enumerate(groups)}
    return np.array([fold[normalise(t)] for t, _ in pairs])


@functools.cache
def shipped_texts() -> frozenset[str]:
    return frozenset(normalise(t) for t, _ in starter.starter_examples())


def fresh_rows(pairs: Pairs) -> list[int]:
    """Rows whose normalised text is not in the shipped training set (generic chat such as ``KEKW`` is in both)."""
    shipped = shipped_texts()
    return [i for i, (t, _) in enumerate(pairs) if normalise(t) not in shipped]


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    acc = [r["accuracy"] for r in runs]
    f1 = [r["macro_f1"] for r in runs]
    per_class = {c: round(float(np.mean([r["per_class"][c]["f1"] for r in runs])), 3) for c in runs[0]["per_class"]}
    return {"accuracy": round(float(np.mean(acc)), 4), "macro_f1": round(float(np.mean(f1)), 4),
            "accuracy_sd": round(float(np.std(acc)), 4), "n": runs[0]["n"], "f1": per_class}


def cv(pairs: Pairs, base: Head, fit: Callable[[Pairs, Head], Head], seeds: int, k: int = 5,
       limit: int | None = None) -> dict[str, Any]:
    """Mean accuracy/macro-F1 (and per-class F1) over seeds, on every row and on the rows not in the shipped set;
    the confusion matrix of the first seed."""
    runs, fresh_runs = [], []
    texts = [normalise(t) for t, _ in pairs]
    labels = [lab for _, lab in pairs]
    fresh = fresh_rows(pairs)
    shrink: list[tuple[float, float]] = []
    for seed in range(seeds):
        folds = folds_of(pairs, k, seed)
        probs = np.zeros((len(pairs), len(NAMES)))
        for f in range(k):
            train = [i for i in range(len(pairs)) if folds[i] != f]
            test = [i for i in range(len(pairs)) if folds[i] == f]
            random.Random(1000 * seed + f).shuffle(train)
            train = train[:limit] if limit is not None else train
            if train:
                head = fit([pairs[i] for i in train], base)
                chosen = head.meta.get("shrink")
                if chosen:
                    shrink.append((chosen["valence"], chosen["category"]))
            else:
                head = base
            probs[test] = head.predict_proba([texts[i] for i in test], CATS)
        runs.append(score(probs, labels))
        fresh_runs.append(score(probs[fresh], [labels[i] for i in fresh]))
    out = summary(runs)
    out["fresh"] = summary(fresh_runs)
    out["seeds"] = seeds
    if shrink:
        out["shrink_mean"] = [round(float(np.mean([a for a, _ in shrink])), 2),
                              round(float(np.mean([c for _, c in shrink])), 2)]
    out["confusion"] = runs[0]["confusion"]
    return out


def cold(pairs: Pairs, base: Head) -> dict[str, Any]:
    labels = [lab for _, lab in pairs]
    probs = base.predict_proba([normalise(t) for t, _ in pairs], CATS)
    fresh = fresh_rows(pairs)
    out = summary([score(probs, labels)])
    out["fresh"] = summary([score(probs[fresh], [labels[i] for i in fresh])])
    out["confusion"] = score(probs, labels)["confusion"]
    return out


def adapter(pairs: Pairs, base: Head) -> Head:
    return train_from_pairs(pairs, CATS, base=base)


def unshrunk(pairs: Pairs, base: Head) -> Head:
    """The adapter as fitted, not shrunk towards the starter head (the design before the learning-curve fix)."""
    return train_from_pairs(pairs, CATS, base=base, folds=0)


def pooled(weight: float) -> Callable[[Pairs, Head], Head]:
    """The previous design, for comparison: one head on the labels plus the starter set at ``weight``."""
    def fit(pairs: Pairs, base: Head) -> Head:
        ship = starter.usable_starter(CATS)
        texts = [normalise(t) for t, _ in pairs + ship]
        labels = [lab for _, lab in pairs + ship]
        w = np.array([1.0] * len(pairs) + [weight] * len(ship))
        return train_head(texts, labels, CATS, starter.STARTER_SPEC, sample_weight=w, l2=L2)
    return fit


def build(examples: Pairs, spec: FeatureSpec, shift: bool) -> Head:
    texts = [normalise(t) for t, _ in examples]
    labels = [lab for _, lab in examples]
    head = train_head(texts, labels, CATS, spec, l2=starter.STARTER_L2)
    if shift:
        head.shift = starter.prior_shift(labels, CATS)
    return head


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3, help="fold assignments to average over")
    p.add_argument("--ablations", action="store_true", help="also rebuild the starter head without each ingredient")
    p.add_argument("--curve", default="0,25,50,100,200,all", help="labels per training fold for the learning curve")
    p.add_argument("--curve-seeds", type=int, default=3, help="fold assignments per learning-curve point")
    p.add_argument("--no-shrink", action="store_true",
                   help="CV and curve with the adapter as fitted (the design before the learning-curve fix)")
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    t0 = time.perf_counter()
    sets = {"mood6-dev": read_set("mood6-dev"), "kobs-dev": read_set("kobs-dev")}
    base = starter.shipped_head() or starter.train_starter(CATS)
    out: dict[str, Any] = {"starter_head": base.version, "starter_examples": base.meta.get("n_examples"),
                           "cold": {}, "cv": {}, "curve": {}}
    fit: Callable[[Pairs, Head], Head] = unshrunk if args.no_shrink else adapter
    out["adapter"] = "as fitted" if args.no_shrink else "shrunk towards the starter head"
    for name, pairs in sets.items():
        out["cold"][name] = cold(pairs, base)
        out["cv"][name] = cv(pairs, base, fit, args.seeds)
        curve = {}
        for n in args.curve.split(","):
            r = cv(pairs, base, fit, args.curve_seeds, limit=None if n == "all" else int(n))
            curve[n] = {key: r[key] for key in ("accuracy", "macro_f1", "accuracy_sd", "shrink_mean") if key in r}
        out["curve"][name] = curve
    if args.ablations:
        written, made = starter.written_examples(), starter.generated_examples()
        spec = starter.STARTER_SPEC
        variants: dict[str, tuple[Head, Callable[[Pairs, Head], Head]]] = {
            "default": (base, adapter),
            "adapter not shrunk towards the starter head": (base, unshrunk),
            "labels pooled with the starter set (x0.1), no adapter": (base, pooled(0.1)),
            "no prior shift": (build(written + made, spec, False), adapter),
            "no made variety (written lines only)": (build(written, spec, True), adapter),
            "no glossary": (build(written + made, replace(spec, glossary=False), True), adapter),
            "every n-gram bucket (min_df 1)": (build(written + made, replace(spec, min_df=1), True), adapter),
        }
        try:
            import vaderSentiment  # noqa: F401  (the optional extra `lexicon`)
        except ImportError:
            print("vaderSentiment not installed (pip install -e '.[lexicon]'): no VADER row", file=sys.stderr)
        else:
            variants["with VADER lexicon block"] = (build(written + made, replace(spec, lexicon=True), True), adapter)
        out["ablations"] = {}
        for label, (head, fit) in variants.items():
            row = {}
            for name, pairs in sets.items():
                c, v = cold(pairs, head), cv(pairs, head, fit, 1)
                row[name] = {"cold": [c["accuracy"], c["macro_f1"]], "cv": [v["accuracy"], v["macro_f1"]]}
            out["ablations"][label] = row
            print(label, json.dumps(row), file=sys.stderr, flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
