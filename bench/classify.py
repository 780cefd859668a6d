"""Benchmark: classification throughput of the default pipeline vs. one prompt per message, and peak RSS.

Runs with the project's venv (``.venv/bin/python bench/classify.py``); the last line printed is one JSON object:

* ``batched_msgs_per_s``: the default pipeline (``Config()`` defaults, newest head or cold start), batches of
  ``classifier.batch_size``, over distinct messages, no cache;
* ``per_message_msgs_per_s``: the seeds' approach in the same run: one prompt per message, free generation by the
  LLM (SmolLM2 Q4_0, ``LabelScorer.generate_label``); null when the model is not in models/;
* ``ratio``: the first over the second;
* ``llm_scoring_msgs_per_s`` / ``llm_ratio``: the LLM path done right (batched label scoring after a cached prefix)
  against the same baseline;
* ``with_duplicates_msgs_per_s``: the HasanAbi log (../shared/data/chatlogs/hasanabi-2022-11-26.csv) replayed
  through :class:`bot.classifier.ClassifierService` with its cache, queue large enough that nothing is skipped;
  null when the log is absent;
* ``peak_rss_mb``: peak RSS of the default pipeline (measured before any LLM is loaded); ``peak_rss_total_mb``
  at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import random
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.classifier import ClassifierService, load_classifier, load_prompt, normalise, split_prompt  # noqa: E402
from bot.config import ClassifierConfig, Config  # noqa: E402
from bot.domain import ChatLine  # noqa: E402

HASAN = ROOT.parent / "shared" / "data" / "chatlogs" / "hasanabi-2022-11-26.csv"
_WORDS = "KEKW LUL Pog Sadge what the game is so good bad chat lets go streamer play LETSGO <3 no way W L".split()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_log(path: Path, limit: int | None) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = [r[1] for r in csv.reader(fh) if len(r) >= 2][1:]
    return rows[:limit] if limit else rows


def distinct_messages(n: int, source: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for text in source:
        seen.setdefault(normalise(text), None)
        if len(seen) >= n:
            break
    rng = random.Random(3)
    while len(seen) < n:
        seen.setdefault(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 8))), None)
    return list(seen)


async def replay_with_cache(cfg: Config, clf: object, texts: list[str]) -> float:
    done = 0

    def on_verdicts(pairs: list[object]) -> None:
        nonlocal done
        done += len(pairs)

    cfg = cfg.model_copy(update={"classifier": cfg.classifier.model_copy(update={"queue_size": len(texts)})})
    service = ClassifierService(clf, cfg, on_verdicts, random.Random(0))  # type: ignore[arg-type]
    at = datetime.now(UTC)
    lines = [ChatLine(message_id=str(i), channel="hasanabi", user_id="0", user_login="u", user_name="u", text=t,
                      sent_at=at) for i, t in enumerate(texts)]
    worker = asyncio.create_task(service.run(), name="bench-classifier")
    try:
        t0 = time.perf_counter()
        for line in lines:
            service.offer(line)
        await service.drain()
        elapsed = time.perf_counter() - t0
    finally:
        worker.cancel()
        try:
            await worker
        except asyncio.CancelledError:
            pass
    assert done == len(texts) and service.skipped() == 0
    return len(texts) / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--distinct", type=int, default=5000, help="distinct messages for the batched figure")
    p.add_argument("--per-message", type=int, default=40, help="messages for the one-prompt-per-message baseline")
    p.add_argument("--log-limit", type=int, default=None, help="replay only the first N lines of the HasanAbi log")
    p.add_argument("--llm", default="smollm2", help="LLM for the baseline (known name or GGUF path)")
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    cfg = Config(classifier=ClassifierConfig(models_dir=ROOT / "models",
                                             prompt_template=ROOT / "prompts" / "classify.txt"))
    log_lines = read_log(HASAN, args.log_limit) if HASAN.is_file() else []
    distinct = distinct_messages(args.distinct, log_lines)
    clf = load_classifier(cfg)
    bs = cfg.classifier.batch_size
    t0 = time.perf_counter()
    for i in range(0, len(distinct), bs):
        clf.classify(distinct[i : i + bs])
    batched = len(distinct) / (time.perf_counter() - t0)

    dup = asyncio.run(replay_with_cache(cfg, clf, log_lines)) if log_lines else None
    pipeline_rss = rss_mb()

    per_message = scoring = None
    try:
        from bot.llama import LabelScorer
        from bot.models import resolve_model

        prefix, suffix = split_prompt(load_prompt(cfg))
        scorer = LabelScorer(resolve_model(args.llm, cfg.classifier.models_dir), threads=cfg.classifier.threads,
                             prefix=prefix, labels=list(cfg.category_names),
                             suffix_template=suffix.replace("{message}", "{text}"))
    except Exception as e:  # the baseline model is optional: report null
        print(f"baseline LLM unavailable: {e}", file=sys.stderr)
    else:
        sample = distinct[: args.per_message]
        t0 = time.perf_counter()
        for text in sample:
            scorer.generate_label(text)
        per_message = len(sample) / (time.perf_counter() - t0)
        sample = distinct[: args.per_message * 4]
        t0 = time.perf_counter()
        scorer.score(sample)
        scoring = len(sample) / (time.perf_counter() - t0)
        scorer.close()

    result = {
        "batched_msgs_per_s": round(batched, 1),
        "per_message_msgs_per_s": round(per_message, 2) if per_message else None,
        "ratio": round(batched / per_message, 1) if per_message else None,
        "llm_scoring_msgs_per_s": round(scoring, 2) if scoring else None,
        "llm_ratio": round(scoring / per_message, 2) if scoring and per_message else None,
        "with_duplicates_msgs_per_s": round(dup, 1) if dup else None,
        "replayed_messages": len(log_lines) or None,
        "distinct_messages": len(distinct),
        "model": clf.version,
        "peak_rss_mb": round(pipeline_rss, 1),
        "peak_rss_total_mb": round(rss_mb(), 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
