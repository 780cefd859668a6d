"""``chatmood train / eval / classify / export``: learning from labels and measuring the classifier.

The core functions take plain ``(text, label)`` lists and need no database; the ``cmd_*`` functions add the I/O
(files, storage, printing) for the CLI. Labels are category names (``hype``) or valences (``positive``,
``neutral``, ``negative``). Evaluation against valence labels maps each prediction to a valence by summing the
probabilities of every category of that valence; training with them uses the partial-label loss in bot/classify/fit.py.

A trained head is saved as ``models_dir/head-<UTC timestamp>.npz``; the running bot picks the newest one up
without a restart (:meth:`bot.classify.classifier.PipelineClassifier.maybe_reload`).
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import structlog

from bot.classify.classifier import Classifier, FeatureSource, load_classifier, open_sources, starter_head
from bot.classify.features import FeatureSpec
from bot.classify.fit import allowed_mask, label_memory, train_head
from bot.classify.head import Head
from bot.classify.service import VerdictCache, classify_cached
from bot.classify.starter import STARTER_SPEC, shipped_head, train_starter
from bot.classify.text import normalise
from bot.config import DEFAULT_CATEGORIES, Category, Config
from bot.errors import DataError

log = structlog.get_logger(__name__)

VALENCES: dict[str, int] = {"positive": 1, "neutral": 0, "negative": -1}
VALENCE_NAMES: dict[int, str] = {v: k for k, v in VALENCES.items()}
#: L2 of an adapter head (labels on top of the starter head; bench/accuracy.py): ``L2_LABELS / n`` for n labels
#: (the loss is a mean, so this is a fixed penalty against the summed loss: few labels nudge the starter head, many
#: may move it), never below ``L2``.
L2_LABELS = 0.3
L2 = 1e-3
#: L-BFGS iterations of an adapter: a few hundred labels converge to within noise well before this (and a
#: full 300 took ~20 s on a busy 2-core machine).
ADAPTER_ITERATIONS = 100
#: How much of what the labels teach is kept, per head (valence, category): ``log p = starter + a * (adapter -
#: starter)``, ``a`` from this grid, chosen by a grouped cross-validation on the labels themselves
#: (:func:`choose_shrinkage`). Without it a few dozen labels made the mood worse than none (bench/accuracy.py,
#: learning curve: six categories 61.1% cold -> 47-49% at 25 labels; Kobs 60.2% -> 52%).
SHRINK_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0)
SHRINK_FOLDS = 5
#: Only a weight whose held-out loss beats the starter head alone by this many standard errors (of the per-message
#: difference) is a candidate; the best candidate by mean loss wins. Picking the plain best of a noisy grid
#: over-rates the labels when they are few (Kobs, 25 labels, 3 fold assignments: 58.7% against 60.2% cold; with
#: 1 standard error 59.0%, with 2 59.9%, at no cost with all labels).
SHRINK_CAUTION = 2.0


# ------------------------------------------------------------------------------------------------ reading files


def read_examples(path: Path, text_col: str = "text", label_col: str = "label") -> list[tuple[str, str]]:
    """(text, label) rows of a CSV or JSONL file (JSONL when the name ends in .jsonl/.json). Rows without text
    are left out; a row without a label is an error naming its line."""
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{n}: not JSON ({e.msg})") from None
                    if not isinstance(obj, dict):
                        raise DataError(f"{path}:{n}: expected a JSON object")
                    rows.append((n, obj))
            else:
                reader = csv.DictReader(fh)
                if reader.fieldnames is None:
                    raise DataError(f"{path}: empty file")
                missing = [c for c in (text_col, label_col) if c not in reader.fieldnames]
                if missing:
                    raise DataError(f"{path}: no column {missing} (columns: {reader.fieldnames})")
                rows = [(i + 2, dict(r)) for i, r in enumerate(reader)]
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e})") from None
    out: list[tuple[str, str]] = []
    for n, row in rows:
        text, label = row.get(text_col), row.get(label_col)
        if text is None or not str(text).strip():
            continue
        if label is None or not str(label).strip():
            raise DataError(f"{path}:{n}: no {label_col!r} value")
        out.append((str(text), str(label).strip().lower()))
    if not out:
        raise DataError(f"{path}: no labelled rows")
    return out


# ------------------------------------------------------------------------------------------------ metrics


def label_space(labels: Sequence[str], categories: Sequence[Category]) -> str:
    """"valence" when any label is positive/negative (or not a category but a valence), else "category"."""
    names = {c.name for c in categories}
    for label in labels:
        if label in ("positive", "negative") or (label not in names and label in VALENCES):
            return "valence"
    return "category"


def gold_in_space(labels: Sequence[str], categories: Sequence[Category], space: str) -> list[str]:
    """Gold labels in the evaluation space; raises DataError naming unknown labels."""
    allowed_mask(labels, categories)  # validates, naming unknown labels
    if space == "category":
        return list(labels)
    by_name = {c.name: c.valence for c in categories}
    return [VALENCE_NAMES[by_name[label]] if label in by_name else label for label in labels]


def predict_in_space(probs: Sequence[dict[str, float]], categories: Sequence[Category], space: str) -> list[str]:
    """Predictions in the evaluation space: the argmax category, or the valence with the most probability."""
    if space == "category":
        return [max(p, key=lambda k: p[k]) for p in probs]
    out = []
    for p in probs:
        mass = {v: 0.0 for v in VALENCES}
        for c in categories:
            mass[VALENCE_NAMES[c.valence]] += p.get(c.name, 0.0)
        out.append(max(mass, key=lambda k: mass[k]))
    return out


def compute_metrics(gold: Sequence[str], pred: Sequence[str], classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy, macro-F1 over the classes present in gold, per-class P/R/F1/support and the confusion matrix."""
    if len(gold) != len(pred):
        raise ValueError("gold and predictions differ in length")
    labels = list(classes) if classes else sorted(set(gold) | set(pred))
    index = {c: i for i, c in enumerate(labels)}
    conf = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for g, p in zip(gold, pred, strict=True):
        conf[index[g], index[p]] += 1
    per_class: dict[str, dict[str, float]] = {}
    f1s = []
    for c, i in index.items():
        tp = int(conf[i, i])
        predicted, support = int(conf[:, i].sum()), int(conf[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support:
            f1s.append(f1)
    n = len(gold)
    return {
        "n": n,
        "accuracy": float(np.trace(conf)) / n if n else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "per_class": per_class,
        "confusion": {"labels": labels, "matrix": conf.tolist()},
    }


def evaluate(
    classifier: Classifier,
    pairs: Sequence[tuple[str, str]],
    categories: Sequence[Category],
    *,
    batch_size: int = 64,
    cache_size: int = 50_000,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Classify every text (batched, cached like the bot does) and score it against the labels."""
    labels = [label for _, label in pairs]
    space = label_space(labels, categories)
    try:
        gold = gold_in_space(labels, categories, space)
    except ValueError as e:
        raise DataError(str(e)) from None
    cache = VerdictCache(cache_size)
    probs: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for start in range(0, len(pairs), batch_size):
        chunk = [t for t, _ in pairs[start : start + batch_size]]
        probs += [dict(v.probs) for v in classify_cached(classifier, cache, chunk)]
        if progress is not None:
            progress(min(start + batch_size, len(pairs)), len(pairs))
    elapsed = time.perf_counter() - t0
    pred = predict_in_space(probs, categories, space)
    classes = list(VALENCES) if space == "valence" else [c.name for c in categories]
    result = compute_metrics(gold, pred, classes)
    result.update(space=space, msgs_per_s=len(pairs) / elapsed if elapsed > 0 else 0.0, model=classifier.version)
    return result


# ------------------------------------------------------------------------------------------------ training


def train_from_pairs(
    pairs: Sequence[tuple[str, str]],
    categories: Sequence[Category],
    source: FeatureSource | None = None,
    *,
    base: Head | None = None,
    folds: int = SHRINK_FOLDS,
) -> Head:
    """An adapter head trained on labelled pairs on top of ``base`` (the starter head for ``categories``; by
    default the shipped one, or one trained now for other categories), shrunk towards ``base`` as far as a
    cross-validation on the pairs says (:func:`choose_shrinkage`; ``folds=0`` keeps the adapter as fitted), and
    remembering the labelled texts themselves. Raises DataError for unknown labels."""
    source = source or FeatureSource()
    if base is None:
        base = (shipped_head() if tuple(categories) == DEFAULT_CATEGORIES else None) or train_starter(categories)
    texts = [normalise(t) for t, _ in pairs]
    labels = [lab for _, lab in pairs]
    extras = source.compute(texts)
    spec = FeatureSpec(lexicon=STARTER_SPEC.lexicon, min_df=2, extras=dict(source.widths))

    def fit(rows: Sequence[int]) -> Head:
        return train_head(
            [texts[i] for i in rows], [labels[i] for i in rows], categories, spec,
            extras={k: v[list(rows)] for k, v in extras.items()}, l2=max(L2, L2_LABELS / max(len(rows), 1)),
            base=base, max_iter=ADAPTER_ITERATIONS,
        )

    try:
        mask = allowed_mask(labels, categories)
        head = fit(range(len(texts)))
        if folds:
            head = head.shrunk(*choose_shrinkage(texts, mask, fit, categories, extras, folds))
    except ValueError as e:
        raise DataError(str(e)) from None
    head.memory_texts, head.memory_masks, head.memory_counts = label_memory(texts, mask)
    head.meta["source"] = f"{len(pairs)} labelled on top of {base.version}"
    return head


def choose_shrinkage(
    texts: Sequence[str],
    mask: np.ndarray,
    fit: Callable[[Sequence[int]], Head],
    categories: Sequence[Category],
    extras: dict[str, np.ndarray] | None = None,
    folds: int = SHRINK_FOLDS,
) -> tuple[float, float]:
    """(valence, category) weights from :data:`SHRINK_GRID` for an adapter's corrections, by ``folds``-fold
    cross-validation over the labelled ``texts`` grouped by text (``fit`` trains an adapter on the given rows):
    among the pairs whose held-out loss (the partial-label log-loss: the mood is built from probabilities, not
    argmaxes) beats (0, 0) -- the base alone -- by :data:`SHRINK_CAUTION` standard errors, the one with the lowest
    mean; (0, 0) when none does, or when there are fewer than two distinct texts."""
    groups = sorted(set(texts))
    if len(groups) < 2:
        return 0.0, 0.0
    random.Random(0).shuffle(groups)
    k = min(folds, len(groups))
    fold_of = {g: i % k for i, g in enumerate(groups)}
    fold = np.array([fold_of[t] for t in texts])
    grid = [(a, c) for a in SHRINK_GRID for c in SHRINK_GRID]
    loss = np.zeros((len(grid), len(texts)))
    for f in range(k):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        head = fit(train.tolist())
        held = [texts[int(i)] for i in test]
        feats = head.features(held, categories, {key: v[test] for key, v in (extras or {}).items()})
        for g, (a, c) in enumerate(grid):
            p = head.shrunk(a, c).proba(*feats)
            loss[g, test] = -np.log(np.maximum((p * mask[test]).sum(axis=1), 1e-12))
    diff = loss - loss[0]
    mean = diff.mean(axis=1)
    candidate = mean + SHRINK_CAUTION * diff.std(axis=1) / math.sqrt(len(texts)) < 0
    candidate[0] = True  # (0, 0): the starter head alone, mean 0
    best = grid[int(np.argmin(np.where(candidate, mean, np.inf)))]
    log.info("adapter_shrinkage", valence=best[0], category=best[1], labels=len(texts), folds=k)
    return best


def head_path(models_dir: Path, now: datetime | None = None) -> Path:
    """``models_dir/head-<UTC timestamp to the microsecond>.npz``: names sort by age."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return models_dir / f"head-{stamp}.npz"


def save_head(head: Head, models_dir: Path, now: datetime | None = None) -> Path:
    path = head_path(models_dir, now)
    head.save(path)
    log.info("head_saved", path=str(path), version=head.version)
    return path


def known_labels(pairs: Sequence[tuple[str, str]], categories: Sequence[Category]) -> tuple[list[tuple[str, str]], int]:
    """Pairs whose label is a configured category or a valence; the others are counted, not fatal (stored labels
    may name categories that were since removed from the config)."""
    names = {c.name for c in categories}
    keep = [(t, lab.strip().lower()) for t, lab in pairs if lab.strip().lower() in names | set(VALENCES)]
    return keep, len(pairs) - len(keep)


# ------------------------------------------------------------------------------------------------ commands


def _progress_bar(stream: TextIO) -> Callable[[int, int], None] | None:
    if not stream.isatty():
        return None

    def show(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show


async def stored_examples(cfg: Config) -> list[tuple[str, str]]:
    """Every labelled example in the database as (text, label)."""
    from bot.storage.store import open_storage

    async with open_storage(cfg.storage, spool_dir=cfg.resolve(cfg.storage.spool_dir)) as storage:
        docs = await storage.labeled_examples()
    return [(d.prompt, d.completion) for d in docs]


async def cmd_train(cfg: Config, from_file: Path | None, *, out: TextIO | None = None) -> int:
    """(Re)build the head from the stored labelled examples plus ``from_file``; save it next to the models."""
    out = out or sys.stdout
    pairs = read_examples(from_file) if from_file else []
    stored, dropped = known_labels(await stored_examples(cfg), cfg.categories)
    pairs = stored + pairs
    if dropped:
        print(f"left out {dropped} stored examples whose label is no longer a category", file=out)
    if not pairs:
        raise DataError("no labelled examples: label messages with !label in chat, or pass --from FILE")
    source = await asyncio.to_thread(open_sources, cfg)
    try:
        t0 = time.perf_counter()
        base = await asyncio.to_thread(starter_head, cfg)
        head = await asyncio.to_thread(train_from_pairs, pairs, cfg.categories, source, base=base)
        path = save_head(head, cfg.resolve(cfg.classifier.models_dir))
    finally:
        source.close()
    shrink = head.meta.get("shrink", {})
    print(f"trained {head.version} on {len(stored)} stored + {len(pairs) - len(stored)} file examples "
          f"(on top of the starter head) in {time.perf_counter() - t0:.1f}s -> {path}", file=out)
    print(f"the labels' lessons kept (cross-validated on them): {shrink.get('valence', 1.0):.0%} of the valence "
          f"correction, {shrink.get('category', 1.0):.0%} of the category correction; the labelled messages "
          "themselves are read as labelled", file=out)
    return 0


def _format_eval(result: dict[str, Any], path: Path) -> str:
    lines = [
        f"{path}: {result['n']} messages, {result['space']} labels, model {result['model']}",
        f"accuracy {result['accuracy']:.3f}   macro-F1 {result['macro_f1']:.3f}   {result['msgs_per_s']:.0f} msg/s",
        "",
        f"{'class':<10} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}",
    ]
    for c, m in result["per_class"].items():
        lines.append(f"{c:<10} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>6.3f} {m['support']:>8d}")
    labels = result["confusion"]["labels"]
    lines += ["", "confusion (rows: true, columns: predicted)", " " * 10 + "".join(f"{c[:8]:>9}" for c in labels)]
    for c, row in zip(labels, result["confusion"]["matrix"], strict=True):
        lines.append(f"{c:<10}" + "".join(f"{v:>9d}" for v in row))
    return "\n".join(lines)


async def cmd_eval(cfg: Config, file: Path, text_col: str = "text", label_col: str = "label",
                   as_json: bool = False, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Score the classifier (newest head) on a labelled CSV/JSONL file."""
    out, err = out or sys.stdout, err or sys.stderr
    pairs = read_examples(file, text_col, label_col)
    clf = await asyncio.to_thread(load_classifier, cfg)
    try:
        result = await asyncio.to_thread(
            evaluate, clf, pairs, cfg.categories, batch_size=cfg.classifier.batch_size,
            cache_size=cfg.classifier.cache_size, progress=_progress_bar(err),
        )
    finally:
        clf.close()
    print(json.dumps(result) if as_json else _format_eval(result, file), file=out)
    return 0


async def cmd_classify(cfg: Config, texts: Sequence[str], as_json: bool = False, *,
                       out: TextIO | None = None) -> int:
    """Classify texts given on the command line; ``--json`` prints one object per text."""
    out = out or sys.stdout
    clf = await asyncio.to_thread(load_classifier, cfg)
    try:
        verdicts = await asyncio.to_thread(clf.classify, list(texts))
    finally:
        clf.close()
    for text, v in zip(texts, verdicts, strict=True):
        if as_json:
            print(json.dumps({"text": text, "label": v.label, "confidence": v.confidence, "probs": dict(v.probs),
                              "model": v.model}), file=out)
        else:
            top = sorted(v.probs.items(), key=lambda kv: -kv[1])[:3]
            print(f"{v.label:<8} {v.confidence:.2f}  {text}   ({', '.join(f'{k} {p:.2f}' for k, p in top)})",
                  file=out)
    return 0


def export_lines(pairs: Sequence[tuple[str, str]], categories: Sequence[Category], fmt: str,
                 system: str, prompt_template: str) -> list[str]:
    """JSONL fine-tuning lines: OpenAI chat (``{"messages": [system, user, assistant]}``) or prompt-completion."""
    from bot.classify.prompt import render_prompt

    lines = []
    for text, label in pairs:
        if fmt == "chat":
            obj: dict[str, Any] = {"messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": text},
                {"role": "assistant", "content": label},
            ]}
        elif fmt == "prompt-completion":
            # the prompt the LLM path scores: ends at the answer cue (the template file's final newline dropped)
            prompt = render_prompt(prompt_template, categories).rstrip().replace("{message}", text)
            obj = {"prompt": prompt, "completion": " " + label}
        else:
            raise ValueError(f"unknown export format {fmt!r}: chat or prompt-completion")
        lines.append(json.dumps(obj, ensure_ascii=False))
    return lines


def _prompt_files(cfg: Config) -> tuple[str, str]:
    from bot.classify.prompt import render_prompt

    tpl_path = cfg.resolve(cfg.classifier.prompt_template)
    sys_path = tpl_path.with_name("system.txt")
    try:
        template = tpl_path.read_text("utf-8")
        system = sys_path.read_text("utf-8") if sys_path.is_file() else "Label the mood of the chat message.\n"
    except OSError as e:
        raise DataError(f"{tpl_path}: cannot read the prompt template: {e.strerror or e}") from None
    return render_prompt(system, cfg.categories).strip(), template


async def cmd_export(cfg: Config, fmt: str, out_path: Path, *, out: TextIO | None = None) -> int:
    """Write the stored labelled examples as JSONL fine-tuning data."""
    out = out or sys.stdout
    system, template = _prompt_files(cfg)
    pairs = await stored_examples(cfg)
    lines = export_lines(pairs, cfg.categories, fmt, system, template)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), "utf-8")
    tmp.replace(out_path)
    print(f"wrote {len(lines)} examples ({fmt}) to {out_path}", file=out)
    return 0


