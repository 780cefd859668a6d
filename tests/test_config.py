from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from bot.config import DEFAULT_CATEGORIES, MONGODB_URL_ENV, Config, load_config, parse_config, summary
from bot.errors import ConfigError
from bot.logs import configure_logging

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "bots.toml.example"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bots.toml"
    p.write_text(text, encoding="utf-8")
    return p


class TestExample:
    """The shipped example is valid and documents every key the models accept."""

    def test_example_loads(self) -> None:
        cfg = load_config(EXAMPLE, {})
        assert cfg.bots[0].channels == ("my_channel",)
        assert cfg.category_names == tuple(c.name for c in DEFAULT_CATEGORIES)

    def test_every_key_is_documented(self) -> None:
        text = EXAMPLE.read_text()

        def keys(model: type, prefix: str = "") -> list[str]:
            out = []
            for name, field in model.model_fields.items():  # type: ignore[attr-defined]
                if name == "source":
                    continue
                out.append(name)
                ann = field.annotation
                if isinstance(ann, type) and hasattr(ann, "model_fields"):
                    out += keys(ann, f"{prefix}{name}.")
            return out

        missing = [k for k in keys(Config) if k not in text]
        assert missing == []


class TestErrors:
    """Every error names the key path and the bad value; unknown keys are errors."""

    def test_misspelled_key(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as e:
            load_config(write(tmp_path, '[storage]\ndatabse = "x"\n'), {})
        assert e.value.problems == ("storage.databse: unknown key (got 'x')",)

    def test_bad_values_all_reported(self, tmp_path: Path) -> None:
        text = "[mood]\nhalf_life_s = -1\n[overlay]\nport = 99999\n"
        with pytest.raises(ConfigError) as e:
            load_config(write(tmp_path, text), {})
        problems = "\n".join(e.value.problems)
        assert "mood.half_life_s" in problems and "-1" in problems
        assert "overlay.port" in problems and "99999" in problems

    def test_bad_category(self, tmp_path: Path) -> None:
        text = '[[categories]]\nname = "neutral"\ncolour = "grey"\nvalence = 0\ndescription = "x"\n'
        with pytest.raises(ConfigError) as e:
            load_config(write(tmp_path, text), {})
        assert any("categories.0.colour" in p and "'grey'" in p for p in e.value.problems)

    def test_neutral_required(self, tmp_path: Path) -> None:
        text = "".join(
            f'[[categories]]\nname = "{n}"\ncolour = "#000000"\nvalence = 1\ndescription = "x"\n' for n in ("a", "b")
        )
        with pytest.raises(ConfigError, match="neutral"):
            load_config(write(tmp_path, text), {})

    def test_not_toml(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="not valid TOML"):
            load_config(write(tmp_path, "[storage\n"), {})

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="cannot read"):
            load_config(tmp_path / "nope.toml", {})

    def test_bad_channel_name(self, tmp_path: Path) -> None:
        text = '[[bots]]\nname = "b"\naccount = "bot"\nchannels = ["no spaces"]\n'
        with pytest.raises(ConfigError) as e:
            load_config(write(tmp_path, text), {})
        assert "bots.0.channels" in e.value.problems[0] and "no spaces" in e.value.problems[0]

    def test_duplicate_command_word(self, tmp_path: Path) -> None:
        text = '[commands.mood]\naliases = ["reset"]\n'
        with pytest.raises(ConfigError, match="'reset' is used by both"):
            load_config(write(tmp_path, text), {})


class TestSecrets:
    """Secrets come from the environment when asked, and never show in reprs or summaries."""

    def test_env_reference(self, tmp_path: Path) -> None:
        cfg = load_config(write(tmp_path, '[twitch]\nclient_secret = "env:SECRET_X"\n'), {"SECRET_X": "hunter2"})
        assert cfg.twitch.client_secret is not None
        assert cfg.twitch.client_secret.get_secret_value() == "hunter2"
        assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg)

    def test_missing_env_reference(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="'SECRET_X' is not set"):
            load_config(write(tmp_path, '[overlay]\naccess_token = "env:SECRET_X"\n'), {})

    def test_mongodb_url_override(self) -> None:
        cfg = parse_config({"storage": {"mongodb_url": "mongodb://a"}}, {MONGODB_URL_ENV: "mongodb://u:pw@b:1"})
        assert cfg.storage.mongodb_url.get_secret_value() == "mongodb://u:pw@b:1"
        assert "pw" not in repr(cfg)
        assert "u:***@b:1" in summary(cfg)

    def test_bad_secret_value_not_echoed(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as e:
            load_config(write(tmp_path, "[twitch]\nclient_secret = 12345678\n"), {})
        assert "12345678" not in str(e.value)


class TestPaths:
    def test_relative_paths_resolve_against_the_file(self, tmp_path: Path) -> None:
        cfg = load_config(write(tmp_path, '[storage]\nspool_dir = "sp"\n'), {})
        assert cfg.resolve(cfg.storage.spool_dir) == tmp_path / "sp"


class TestCheckConfigCommand:
    """`chatmood check-config` exits 0 with a summary, non-zero naming the key."""

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot", "check-config", *args], capture_output=True, text=True)

    def test_example_ok(self) -> None:
        r = self.run(str(EXAMPLE))
        assert r.returncode == 0, r.stderr
        assert "categories: hype" in r.stdout

    def test_misspelled_key_fails(self, tmp_path: Path) -> None:
        r = self.run(str(write(tmp_path, '[commands]\nprefx = "?"\n')))
        assert r.returncode == 1
        assert "commands.prefx: unknown key" in r.stderr


class TestLogging:
    """JSON lines off a TTY; stdlib loggers share the renderer; secrets are masked."""

    def test_json_and_routing_and_masking(self) -> None:
        out = io.StringIO()
        configure_logging("info", "auto", stream=out)
        try:
            structlog.get_logger("t").info("evt", access_token="abc", url="mongodb://u:pw@h/x")
            logging.getLogger("twitchAPI.eventsub").warning("refresh failed refresh_token=zzz123")
            logging.getLogger("aiohttp.access").info("hidden below warning")
        finally:
            configure_logging("warning", "json", stream=sys.stderr)
        lines = [json.loads(x) for x in out.getvalue().splitlines()]
        assert lines[0]["event"] == "evt" and lines[0]["access_token"] == "***"
        assert lines[0]["url"] == "mongodb://u:***@h/x"
        assert lines[1]["logger"] == "twitchAPI.eventsub" and "zzz123" not in lines[1]["event"]
        assert len(lines) == 2


class TestPersona:
    """``[bots.persona]``: optional, validated like the rest; a prompt file is read when the config is loaded."""

    BOT = '[[bots]]\nname = "chatty"\naccount = "chatty_a"\nchannels = ["streamer"]\n'

    def test_a_bot_without_a_persona_has_none(self, tmp_path: Path) -> None:
        assert load_config(write(tmp_path, self.BOT), {}).bots[0].persona is None

    def test_defaults(self, tmp_path: Path) -> None:
        persona = load_config(write(tmp_path, self.BOT + "[bots.persona]\n"), {}).bots[0].persona
        assert persona is not None
        assert (persona.model, persona.join_chance, persona.role, persona.reply_to_mentions) == (
            "smollm2", 0.0, "chatter", True)
        assert persona.models == ("smollm2",)

    def test_unknown_keys_and_bad_values_are_named(self, tmp_path: Path) -> None:
        text = self.BOT + '[bots.persona]\njoin_chanse = 0.5\njoin_chance = 2\nrole = "admin"\nblocklist = [" "]\n'
        with pytest.raises(ConfigError) as e:
            load_config(write(tmp_path, text), {})
        problems = "\n".join(e.value.problems)
        assert "bots.0.persona.join_chanse: unknown key" in problems
        assert "bots.0.persona.join_chance" in problems and "2" in problems
        assert "bots.0.persona.role" in problems and "'admin'" in problems
        assert "bots.0.persona.blocklist" in problems

    def test_prompt_inline_or_file_not_both(self, tmp_path: Path) -> None:
        text = self.BOT + '[bots.persona]\nsystem_prompt = "hi"\nsystem_prompt_file = "x.txt"\n'
        with pytest.raises(ConfigError, match="not both"):
            load_config(write(tmp_path, text), {})

    def test_the_prompt_file_is_read_from_prompts(self, tmp_path: Path) -> None:
        (tmp_path / "prompts").mkdir()
        (tmp_path / "prompts" / "chatty.txt").write_text("You are Chatty.\n", encoding="utf-8")
        cfg = load_config(write(tmp_path, self.BOT + '[bots.persona]\nsystem_prompt_file = "chatty.txt"\n'), {})
        assert cfg.bots[0].persona is not None and cfg.bots[0].persona.system_prompt == "You are Chatty."

    def test_a_missing_or_escaping_prompt_file_is_an_error(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="system_prompt_file: cannot read"):
            load_config(write(tmp_path, self.BOT + '[bots.persona]\nsystem_prompt_file = "nope.txt"\n'), {})
        with pytest.raises(ConfigError, match="under prompts/"):
            load_config(write(tmp_path, self.BOT + '[bots.persona]\nsystem_prompt_file = "../secret"\n'), {})

    def test_a_moderator_needs_the_angry_category(self, tmp_path: Path) -> None:
        cats = "".join(
            f'[[categories]]\nname = "{n}"\ncolour = "#000000"\nvalence = 0\ndescription = "x"\n'
            for n in ("neutral", "happy")
        )
        with pytest.raises(ConfigError, match="moderator"):
            load_config(write(tmp_path, cats + self.BOT + '[bots.persona]\nrole = "moderator"\n'), {})
        assert load_config(write(tmp_path, cats + self.BOT + "[bots.persona]\n"), {}).bots[0].persona is not None

    def test_the_example_documents_every_persona_key(self) -> None:
        from bot.config import PersonaConfig

        text = EXAMPLE.read_text()
        assert [k for k in PersonaConfig.model_fields if f"\n{k} = " not in text and f"# {k} = " not in text] == []
