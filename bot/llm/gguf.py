"""GGUF files without llama.cpp: checking that a file is a complete GGUF, and writing a BERT GGUF from
safetensors with numpy and the ``gguf`` package only (no torch), following the tensor and key names of
llama.cpp's BERT architecture (``gguf.MODEL_ARCH.BERT``).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog

from bot.errors import ModelError

log = structlog.get_logger(__name__)

GGUF_MAGIC = b"GGUF"
FETCH_HINT = "run `make setup` or `chatmood models fetch`"
BertFileType = Literal["f32", "f16", "q8_0"]

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

    with atomic_path(out) as tmp:
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


@contextlib.contextmanager
def atomic_path(out: Path) -> Iterator[Path]:
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
