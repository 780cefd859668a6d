"""bot.cli: one verb per cmd_<verb> function next to the code it drives; usage errors exit 2, chatmood errors 1."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import COMMANDS, build_parser, main


class TestCommandTable:
    def test_every_verb_has_its_cmd_function_and_a_parser(self) -> None:
        parser_verbs = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
        assert parser_verbs == set(COMMANDS)
        for verb, (module, name) in COMMANDS.items():
            assert name == "cmd_" + verb.replace("-", "_"), verb
            fn = getattr(importlib.import_module(module), name)
            assert callable(fn) and inspect.getmodule(fn).__name__ == module  # type: ignore[union-attr]


class TestExitCodes:
    def test_usage_errors_exit_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        for argv in (["replay", "x.log", "--speed", "nan"], ["run", "--port", "70000"], ["nonsense"]):
            with pytest.raises(SystemExit) as info:
                main(argv)
            assert info.value.code == 2, argv
        assert "must be greater than 0" in capsys.readouterr().err

    def test_a_chatmood_error_is_one_line_and_exit_1(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        missing = tmp_path / "nope.log"
        assert main(["replay", str(missing), "--channel", "x"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("chatmood: error: ") and str(missing) in err and "Traceback" not in err

    def test_an_invalid_config_names_its_problems(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        cfg = tmp_path / "bots.toml"
        cfg.write_text('[mood]\nhalf_life = 3\n', encoding="utf-8")
        assert main(["classify", "--config", str(cfg), "hello"]) == 1
        err = capsys.readouterr().err
        assert "invalid configuration" in err and "mood.half_life: unknown key" in err

    def test_models_list_prints_the_registry(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["models", "list"]) == 0
        out = capsys.readouterr().out
        assert "minilm" in out and "smollm2" in out

    def test_python_dash_m_bot_is_the_same_program(self) -> None:
        r = subprocess.run([sys.executable, "-m", "bot", "--help"], capture_output=True, text=True, check=False)
        assert r.returncode == 0
        for verb in COMMANDS:
            assert verb in r.stdout
