"""Benchmark: classification throughput of the default pipeline vs. one prompt per message, and peak RSS.

Runs with the project's venv (``.venv/bin/python bench/classify.py``); the last line printed is one JSON object:

* ``batched_msgs_per_s``: the default pipeline (``Config()`` defaults, newest head or cold start), batches of
  ``classifier.batch_size``, over distinct messages, no cache;
* ``per_message_msgs_per_s``: the seeds' approach in the same run: one chat prompt per message (system turn from
  ``prompts/system.txt``, user turn = the rendered ``prompts/classify.txt`` with the message), free greedy generation
  of at most 8 tokens by the LLM (SmolLM2 Q4_0, llama-cpp-python's ``create_chat_completion``, which itself reuses
  the KV of the previous prompt's common prefix); null when the model is not in models/;
* ``ratio``: the first over the second;
* ``adapter_msgs_per_s``: the same batched pass through an adapter trained on 300 labels (what a channel that
  labelled runs: starter head, adapter, label memory);
* ``llm_scoring_msgs_per_s``: the LLM path as the classifier runs it (``bot.classify.classifier.open_label_scorer``:
  batched label scoring after the cached prompt prefix, only the message and `` Mood:`` evaluated per message);
  ``llm_generation_msgs_per_s``: the baseline above (= ``per_message_msgs_per_s``); ``llm_ratio``: scoring over
  generation. ``llm_generation_same_prompt_msgs_per_s``: generation with the scoring prompt itself, one message at a
  time (for reference: SmolLM2 mostly stops at once there, so it is cheaper than a real answer);
  ``llm_constrained_msgs_per_s``: grammar-constrained generation of exactly one label with the scoring prompt, one
  message at a time (the issue's other sound option); ``llm_generation_label_rate``: the share of baseline answers
  that name a category;
* ``with_duplicates_msgs_per_s``: the HasanAbi log (../shared/data/chatlogs/hasanabi-2022-11-26.csv) replayed
  through :class:`bot.classify.classifier.ClassifierService` with its cache, queue large enough that nothing is skipped;
  null when the log is absent;
* ``peak_rss_mb``: peak RSS of the default pipeline (measured before any LLM is loaded); ``peak_rss_total_mb``
  at the end; ``load_avg``: the machine's load average at the end (figures taken under load are low).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import random
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.classify.classifier import PipelineClassifier, load_classifier, open_label_scorer  # noqa: E402
from bot.classify.prompt import load_prompt, render_prompt  # noqa: E402
from bot.classify.service import ClassifierService  # noqa: E402
from bot.classify.starter import starter_examples  # noqa: E402
from bot.classify.text import normalise  # noqa: E402
from bot.classify.training import train_from_pairs  # noqa: E402
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


def chat_generation(cfg: Config, path: Path, texts: list[str]) -> tuple[float, float]:
    """The seeds' way: one chat prompt per message, greedy generation; (msgs/s, share of answers naming a label)."""
    import llama_cpp

    import bot.llm.llama  # noqa: F401  (routes llama.cpp's log lines to structlog before a model loads)

    system = render_prompt((ROOT / "prompts" / "system.txt").read_text("utf-8"), cfg.categories).strip()
    user = load_prompt(cfg)
    names = [c.lower() for c in cfg.category_names]
    llm = llama_cpp.Llama(str(path), n_ctx=1024, n_threads=cfg.classifier.threads,
                          n_threads_batch=cfg.classifier.threads, verbose=False)

    def ask(text: str) -> str:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user.replace("{message}", text)}]
        res = llm.create_chat_completion(messages=messages, max_tokens=8, temperature=0.0)  # type: ignore[arg-type]
        return str(res["choices"][0]["message"]["content"] or "")  # type: ignore[index]

    try:
        ask(texts[0])
        t0 = time.perf_counter()
        answers = [ask(text) for text in texts]
        rate = len(texts) / (time.perf_counter() - t0)
    finally:
        llm.close()
    named = sum(1 for a in answers if any(a.strip().lower().startswith(n) for n in names))
    return rate, named / len(texts)


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

    # A channel that labelled: an adapter on 300 labels (lines of the shipped set stand in for them) runs the
    # starter head and the adapter on every message, and checks its label memory.
    labels = starter_examples()[::25][:300]
    adapted = PipelineClassifier(cfg.categories, train_from_pairs(labels, cfg.categories))
    t0 = time.perf_counter()
    for i in range(0, len(distinct), bs):
        adapted.classify(distinct[i : i + bs])
    adapter_rate = len(distinct) / (time.perf_counter() - t0)

    dup = asyncio.run(replay_with_cache(cfg, clf, log_lines)) if log_lines else None
    pipeline_rss = rss_mb()

    per_message = scoring = same_prompt = constrained = label_rate = None
    try:
        from bot.llm.registry import resolve_model

        llm_path = resolve_model(args.llm, cfg.classifier.models_dir)
        scorer = open_label_scorer(cfg, llm_path)
    except Exception as e:  # noqa: BLE001 - the baseline model is optional: report null
        print(f"baseline LLM unavailable: {e}", file=sys.stderr)
    else:
        sample = distinct[: args.per_message * 4]
        scorer.score(sample[:8])  # evaluates the prefix once
        t0 = time.perf_counter()
        scorer.score(sample)
        scoring = len(sample) / (time.perf_counter() - t0)
        sample = distinct[: args.per_message]
        scorer.generate_label(sample[0])
        t0 = time.perf_counter()
        for text in sample:
            scorer.generate_label(text)
        same_prompt = len(sample) / (time.perf_counter() - t0)
        scorer.generate_label_constrained(sample[0])
        t0 = time.perf_counter()
        for text in sample:
            scorer.generate_label_constrained(text)
        constrained = len(sample) / (time.perf_counter() - t0)
        scorer.close()
        per_message, label_rate = chat_generation(cfg, llm_path, sample)

    result = {
        "batched_msgs_per_s": round(batched, 1),
        "adapter_msgs_per_s": round(adapter_rate, 1),
        "per_message_msgs_per_s": round(per_message, 2) if per_message else None,
        "ratio": round(batched / per_message, 1) if per_message else None,
        "llm_scoring_msgs_per_s": round(scoring, 2) if scoring else None,
        "llm_generation_msgs_per_s": round(per_message, 2) if per_message else None,
        "llm_ratio": round(scoring / per_message, 2) if scoring and per_message else None,
        "llm_generation_same_prompt_msgs_per_s": round(same_prompt, 2) if same_prompt else None,
        "llm_constrained_msgs_per_s": round(constrained, 2) if constrained else None,
        "llm_generation_label_rate": round(label_rate, 3) if label_rate is not None else None,
        "with_duplicates_msgs_per_s": round(dup, 1) if dup else None,
        "replayed_messages": len(log_lines) or None,
        "distinct_messages": len(distinct),
        "model": clf.version,
        "peak_rss_mb": round(pipeline_rss, 1),
        "peak_rss_total_mb": round(rss_mb(), 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
