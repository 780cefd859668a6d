"""Speed of the llama-cpp building blocks on this machine (venv python; one JSON object as the last line).

Measures, in one run: model load times; MiniLM embeddings one text per call vs a list; SmolLM2 prompt evaluation
in tokens/s for the shipped Q4_1 file vs our Q4_0 re-quantization; label scoring msg/s sequential vs batched vs
without the prefix cache, against grammar-constrained generation and free generation with one prompt per message
(the naive baseline); peak RSS. The chat lines are synthetic (generated here), so it needs nothing but models/.

    .venv/bin/python bench/llama_speed.py [--models-dir models] [--threads 2] [--n 200]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.llm.llama import Embedder, LabelScorer
from bot.llm.registry import KNOWN_MODELS, resolve_model

WORDS = ("lol pog kekw the play was insane what a clutch gg ez sadge no way he missed that omegalul love you chat "
         "hype lets go wtf is this streamer doing monkaS widepeepoHappy LUL W L ratio trash team so bad I cant "
         "believe it he is cracked hahaha yes finally nice one").split()

PREFIX = ("<|im_start|>system\nYou label the mood of Twitch chat messages.<|im_end|>\n<|im_start|>user\n"
          "Pick the one word that best describes the message's mood:\n"
          "hype: excitement, cheering, hype, big plays\nfunny: laughter, jokes, memes\n"
          "love: affection, support, gratitude\nneutral: plain talk, questions, commands\n"
          "sad: sadness, disappointment, sympathy\nangry: anger, insults, frustration, toxicity\n")
SUFFIX = "Message: {text}\nAnswer with one word.<|im_end|>\n<|im_start|>assistant\nMood:"
LABELS = ("hype", "funny", "love", "neutral", "sad", "angry")


def texts(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14))) for _ in range(n)]


def rate(n: int, fn: Callable[[], object], reps: int = 3) -> float:
    """Items per second, the best of ``reps`` runs (the machine is shared: the best run is the least disturbed)."""
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = max(best, n / (time.perf_counter() - t0))
    return round(best, 1)


def prompt_tps(path: Path, threads: int, tokens: int = 256, reps: int = 3) -> dict[str, float]:
    import llama_cpp

    t0 = time.perf_counter()
    llm = llama_cpp.Llama(str(path), n_ctx=512, n_batch=512, n_threads=threads, n_threads_batch=threads,
                          verbose=False)
    load_s = time.perf_counter() - t0
    toks = llm.tokenize((" ".join(texts(60))).encode())[:tokens]
    llm.reset()  # type: ignore[no-untyped-call]
    llm.eval(toks)  # warm-up (repacking happens on first use)
    best = 0.0
    for _ in range(reps):
        llm.reset()  # type: ignore[no-untyped-call]
        t0 = time.perf_counter()
        llm.eval(toks)
        best = max(best, len(toks) / (time.perf_counter() - t0))
    llm.close()
    return {"load_s": round(load_s, 3), "prompt_tokens_per_s": round(best, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models-dir", type=Path, default=Path("models"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    out: dict[str, object] = {"threads": args.threads, "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    msgs = texts(args.n)

    emb_path = resolve_model("minilm", args.models_dir)
    t0 = time.perf_counter()
    emb = Embedder(emb_path, threads=args.threads, n_ctx=256)
    out["embed_load_s"] = round(time.perf_counter() - t0, 3)
    emb.embed(msgs[:20])
    out["embed_one_per_call_msgs_per_s"] = rate(len(msgs), lambda: [emb.embed([m]) for m in msgs])
    out["embed_list_msgs_per_s"] = rate(len(msgs), partial(emb.embed, msgs))
    packed = Embedder(emb_path, threads=args.threads, n_ctx=256, pack_tokens=64)
    out["embed_list_packed64_msgs_per_s"] = rate(len(msgs), partial(packed.embed, msgs))
    packed.close()
    emb.close()
    out["embed_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    q40 = resolve_model("smollm2", args.models_dir)
    q41 = args.models_dir / Path(KNOWN_MODELS["smollm2"].member).name
    out["smollm2_q4_0"] = prompt_tps(q40, args.threads)
    if q41.is_file():
        out["smollm2_q4_1"] = prompt_tps(q41, args.threads)

    def scorer(path: Path, batch_size: int, cache_prefix: bool = True) -> LabelScorer:
        return LabelScorer(path, threads=args.threads, prefix=PREFIX, labels=LABELS, suffix_template=SUFFIX,
                           batch_size=batch_size, cache_prefix=cache_prefix)

    for name, path in (("q4_0", q40), ("q4_1", q41)):
        if not path.is_file():
            continue
        sizes = (1, 8, 16, 32) if name == "q4_0" else (1,)
        for bs in sizes:
            sc = scorer(path, bs)
            out["score_prefix_tokens"] = sc.n_prefix_tokens
            sc.score(msgs[:bs])
            key = "sequential" if bs == 1 else f"batched{bs}"
            out[f"{name}_score_{key}_msgs_per_s"] = rate(len(msgs), partial(sc.score, msgs))
            sc.close()
        if name != "q4_0":
            continue
        nc = scorer(path, 1, cache_prefix=False)
        few = msgs[:40]
        out[f"{name}_score_no_prefix_cache_msgs_per_s"] = rate(len(few), partial(nc.score, few))
        grammar: list[str] = []
        free: list[str | None] = []
        out[f"{name}_grammar_msgs_per_s"] = rate(
            len(few), partial(grammar.extend, map(nc.generate_label_constrained, few)), reps=1)
        out[f"{name}_generate_msgs_per_s"] = rate(len(few), partial(free.extend, map(nc.generate_label, few)), reps=1)
        scored = [LABELS[int(i)] for i in nc.score(few).argmax(axis=1)]
        agree = sum(a == b for a, b in zip(scored, grammar, strict=True))
        out[f"{name}_grammar_agrees_with_scoring"] = round(agree / len(few), 3)
        out[f"{name}_generation_gives_a_label"] = round(sum(f is not None for f in free) / len(few), 3)
        nc.close()
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure above
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
