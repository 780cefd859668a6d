"""bot.reload: a valid bots.toml is applied in place, an invalid one is refused and the old one keeps running."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from bot.config import Config, load_config
from bot.reload import Reloader, restart_needed


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


class TestReloader:
    async def test_good_file_applies_and_bad_file_keeps_the_old(self, tmp_path: Path) -> None:
        path = write(tmp_path / "bots.toml", "[mood]\nhalf_life_s = 30\n")
        applied: list[tuple[float, float]] = []

        async def apply(old: Config, new: Config) -> None:
            applied.append((old.mood.half_life_s, new.mood.half_life_s))

        reloader = Reloader(path, load_config(path, {}), apply, environ={})
        write(path, "[mood]\nhalf_life_s = 90\n")
        assert await reloader.reload()
        assert applied == [(30.0, 90.0)] and reloader.current.mood.half_life_s == 90.0 and reloader.generation == 1

        write(path, "[mood]\nhalf_life_s = -1\n")
        with capture_logs() as logs:
            assert not await reloader.reload()
        assert reloader.current.mood.half_life_s == 90.0 and reloader.generation == 1 and len(applied) == 1
        rejected = [e for e in logs if e["event"] == "config_reload_rejected"]
        assert rejected and any("half_life_s" in p for p in rejected[0]["problems"])

    async def test_a_failing_apply_keeps_the_old_config(self, tmp_path: Path) -> None:
        path = write(tmp_path / "bots.toml", "[mood]\nhalf_life_s = 30\n")

        async def apply(old: Config, new: Config) -> None:
            raise RuntimeError("bot refused")

        reloader = Reloader(path, load_config(path, {}), apply, environ={})
        write(path, "[mood]\nhalf_life_s = 45\n")
        with capture_logs() as logs:
            assert not await reloader.reload()
        assert reloader.current.mood.half_life_s == 30.0
        assert any(e["event"] == "config_reload_failed" for e in logs)

    async def test_a_reloaded_file_logs_its_warnings(self, tmp_path: Path) -> None:
        path = write(tmp_path / "bots.toml", "[mood]\nhalf_life_s = 30\n")

        async def apply(old: Config, new: Config) -> None:
            pass

        reloader = Reloader(path, load_config(path, {}), apply, environ={})
        write(path, '[overlay]\naccess_token = "tok-written-inline"\n')
        with capture_logs() as logs:
            assert await reloader.reload()
        warned = [e for e in logs if e["event"] == "config_warning"]
        assert len(warned) == 1 and "overlay.access_token is written in the file" in warned[0]["problem"]
        assert "tok-written-inline" not in repr(logs)

    def test_sections_that_need_a_restart_are_named(self, tmp_path: Path) -> None:
        old = load_config(write(tmp_path / "a.toml", "[storage]\ndatabase = \"one\"\n"), {})
        new = load_config(write(tmp_path / "b.toml", "[storage]\ndatabase = \"two\"\n[mood]\nhalf_life_s = 5\n"), {})
        assert restart_needed(old, new) == ["storage"]
