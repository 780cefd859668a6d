from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from bot.config import (
    DEFAULT_CATEGORIES,
    MONGODB_URL_ENV,
    Config,
    load_config,
    log_warnings,
    parse_config,
    summary,
)
from bot.errors import ConfigError
from bot.logs import configure_logging, redact_url, scrub
from tests.fakes.chat import chat_line

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

    def test_example_and_readme_agree_the_generated_overlay_token_is_never_logged(self) -> None:
        """What `chatmood run` does (tests/test_app.py TestOverlayToken): keeps it in a 0600 file, never logs it."""
        example = " ".join(EXAMPLE.read_text().replace("#", " ").split())
        readme = " ".join((ROOT / "README.md").read_text().split())
        for text in (example, readme):
            assert "tokens/overlay-token" in text and "never logged" in text
        assert "dashboard URL with it is logged" not in example

    def test_every_key_is_documented(self) -> None:
        text = EXAMPLE.read_text()

        def keys(model: type, prefix: str = "") -> list[str]:
            out = []
            for name, field in model.model_fields.items():  # type: ignore[attr-defined]
                if name in ("source", "warnings"):  # set by the program, never written in the file
                    continue
                out.append(name)
                ann = field.annotation
                if isinstance(ann, type) and hasattr(ann, "model_fields"):
                    out += keys(ann, f"{prefix}{name}.")
            return out

        missing = [k for k in keys(Config) if k not in text]
        assert missing == []

    def test_values_shown_are_the_defaults(self) -> None:
        """The header says "the value shown is the default": a streamer who copies the example gets the defaults
        (it once said embedding_model = "minilm", a pipeline about 40x slower than the real default)."""
        example = load_config(EXAMPLE, {})
        default = Config()
        for section in ("storage", "logging", "classifier", "mood", "overlay"):
            assert getattr(example, section) == getattr(default, section), section
        assert example.categories == default.categories
        assert example.commands == default.commands


class TestErrors:
    """Every error names the key path and the bad value; unknown keys are errors."""

    def test_misspelled_key(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as e:
            load_config(write(tmp_path, '[storage]\ndatabse = "x"\n'), {})
        assert e.value.problems == ("storage.databse: unknown key; did you mean `database`?",)

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


SECRETS = ("tok_abcdef1234567890XYZ", "s3cr3t_value_1234567890", "oauth:abcdefghij1234567890", "hunter2",
           "tok_zzzzzzzz1234567890", "pa/ss", "p@ss")


class TestNeverEchoSecrets:
    """check-config names what is wrong without showing a secret: not the value of an unknown key, not an unknown
    table, not URL credentials, not a token-like value; it suggests the key that was probably meant."""

    UNKNOWN = """
[overlay]
acces_token = "tok_abcdef1234567890XYZ"
[storage]
mongo_url = "mongodb://u:hunter2@h"
[twitch]
clientsecret = "s3cr3t_value_1234567890"
[[bots]]
name = "a"
account = "bot_a"
channels = ["chan"]
oauth_token = "oauth:abcdefghij1234567890"
[overlayy]
access_token = "tok_zzzzzzzz1234567890"
"""

    def test_unknown_keys_and_tables_are_named_not_echoed(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as e:
            load_config(write(tmp_path, self.UNKNOWN), {})
        text = "\n".join(e.value.problems) + str(e.value)
        assert not [s for s in SECRETS if s in text], text
        assert set(e.value.problems) == {
            "overlay.acces_token: unknown key; did you mean `access_token`?",
            "storage.mongo_url: unknown key; did you mean `mongodb_url`?",
            "twitch.clientsecret: unknown key; did you mean `client_secret`?",
            "bots.0.oauth_token: unknown key (known: name, account, token_file, channels, persona)",
            "overlayy: unknown key; did you mean `overlay`?",
        }

    def test_check_config_prints_no_secret(self, tmp_path: Path) -> None:
        r = subprocess.run([sys.executable, "-m", "bot", "check-config", str(write(tmp_path, self.UNKNOWN))],
                           capture_output=True, text=True)
        assert r.returncode == 1 and "did you mean `access_token`?" in r.stderr
        assert not [s for s in SECRETS if s in r.stdout + r.stderr]

    @pytest.mark.parametrize(
        ("url", "secret"),
        [("mongodb://u:pa/ss@h/db", "pa/ss"), ("mongodb://:pw@host", "pw"), ("mongodb://u:p@ss@h:1/x?y=z", "p@ss"),
         ("https://tok123@host/path", "tok123"), ("mongodb+srv://u:p%40ss@cluster.example.net/db", "p%40ss")],
    )
    def test_url_credentials_are_redacted_in_summaries_and_logs(self, url: str, secret: str) -> None:
        for shown in (redact_url(url), scrub(f"connecting to {url} now")):
            assert secret not in shown and "***@" in shown

    def test_summary_redacts_a_valid_url_with_an_escaped_password(self) -> None:
        cfg = parse_config({"storage": {"mongodb_url": "mongodb://app:pa%2F%40ss@db.example:27017/x"}}, {})
        assert "pa%2F%40ss" not in summary(cfg) and "app:***@db.example:27017" in summary(cfg)

    def test_token_like_values_in_other_errors_are_hidden(self, tmp_path: Path) -> None:
        text = '[[bots]]\nname = "a"\naccount = "bot_a"\nchannels = ["oauth:abcdefghij1234567890"]\n'
        with pytest.raises(ConfigError) as e:
            load_config(write(tmp_path, text), {})
        assert "abcdefghij1234567890" not in str(e.value) and "bots.0.channels" in str(e.value)

    def test_a_malformed_url_is_named_without_its_password(self, tmp_path: Path) -> None:
        for url in ("mongodb://u:hunter2@h:notaport", "postgres://u:hunter2@h", "mongodb://u:p@ss@h"):
            with pytest.raises(ConfigError) as e:
                load_config(write(tmp_path, f'[storage]\nmongodb_url = "{url}"\n'), {})
            assert e.value.problems[0].startswith("storage.mongodb_url: ")
            assert "hunter2" not in str(e.value) and "p@ss" not in str(e.value)


class TestMistakesThatBreakLater:
    """What used to pass check-config and broke the bot later is an error naming the key."""

    @pytest.mark.parametrize(
        ("text", "expect"),
        [
            ("[mood]\nneutral_prior = inf\n", "mood.neutral_prior: Input should be a finite number"),
            ("[mood]\nneutral_prior = nan\n", "mood.neutral_prior: Input should be a finite number"),
            ("[mood]\nhalf_life_s = inf\n", "mood.half_life_s: Input should be a finite number"),
            ("[commands.mood]\ncooldown_user_s = inf\n", "commands.mood.cooldown_user_s: Input should be a finite"),
            ('[storage]\nbatch_size = "500"\n', "storage.batch_size: Input should be a valid integer (got '500')"),
            ('[overlay]\nenabled = "yes"\n', "overlay.enabled: Input should be a valid boolean (got 'yes')"),
            ("[classifier]\nthreads = 2.0\n", "classifier.threads: Input should be a valid integer"),
            ('[[categories]]\nname = "x"\ncolour = "#000000"\nvalence = "1"\ndescription = "d"\n',
             "categories.0.valence"),
            ('[storage]\nmongodb_url = "mongodb://h:99999"\n', "storage.mongodb_url: not a valid MongoDB URL"),
            ('[storage]\nmongodb_url = "localhost:27017"\n', "storage.mongodb_url: must start with mongodb://"),
            ('[commands.mood]\naliases = ["LABEL"]\n', "command word 'label' is used by both mood (as 'LABEL') and"),
            ('[commands.mood]\naliases = ["!label"]\n', "command word 'label' is used by both mood (as '!label')"),
            ('[commands.reset]\naliases = ["!"]\n', "reset.aliases: '!' is not a command word"),
            ('[commands.mood]\naliases = ["two words"]\n', "mood.aliases: 'two words' is not a command word"),
            ('[commands]\nprefix = "! "\n', "commands.prefix"),
            ('[twitch]\napi_url = "api.twitch.tv"\n', "twitch.api_url: must be an http:// or https:// URL"),
            ('[twitch]\neventsub_url = "https://x"\n', "twitch.eventsub_url: must be a ws:// or wss:// URL"),
            ('source = "/etc"\n', "source: unknown key"),
        ],
    )
    def test_is_an_error(self, tmp_path: Path, text: str, expect: str) -> None:
        with pytest.raises(ConfigError) as e:
            load_config(write(tmp_path, text), {})
        assert any(expect in p for p in e.value.problems), e.value.problems

    def test_the_router_reads_aliases_as_the_check_does(self) -> None:
        from bot.commands.router import CommandRouter

        cfg = parse_config({"commands": {"mood": {"aliases": ["!Vibe", " FEELS "]}}}, {})
        router = CommandRouter(cfg.commands, cfg.category_names)
        line = chat_line("!vibe")
        assert router.is_command(line) and router.is_command(chat_line("!feels"))
        assert router.is_command(chat_line("!label hype"))

    @pytest.mark.parametrize(
        "text",
        ["[mood]\nneutral_prior = inf\n", '[storage]\nmongodb_url = "mongodb://u:pw@h:x"\n', "[[bots]]\nname = 1\n",
         '[storage]\nbatch_size = "500"\n', "not toml = = =\n", '[commands.mood]\naliases = ["LABEL"]\n'],
    )
    def test_no_command_ends_in_a_traceback(self, tmp_path: Path, text: str) -> None:
        path = write(tmp_path, text)
        for args in (["check-config", str(path)], ["classify", "hello", "--config", str(path)],
                     ["replay", str(ROOT / "tests" / "data" / "small.jsonl"), "--config", str(path)]):
            r = subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True, timeout=120)
            assert r.returncode == 1 and "Traceback" not in r.stderr, (args, r.stderr)
            assert r.stderr.startswith("chatmood: error: invalid configuration"), r.stderr


class TestWarnings:
    """Risky but working choices are warnings: printed by check-config, logged when a program starts."""

    def test_inline_secrets_and_an_open_overlay_without_token(self) -> None:
        cfg = parse_config({
            "twitch": {"client_secret": "abc"},
            "overlay": {"host": "0.0.0.0"},
            "storage": {"mongodb_url": "mongodb://u:pw@h"},
        }, {})
        assert len(cfg.warnings) == 3
        assert any('client_secret = "env:TWITCH_CLIENT_SECRET"' in w for w in cfg.warnings)
        assert any("storage.mongodb_url is written in the file" in w for w in cfg.warnings)
        assert any("overlay.host '0.0.0.0'" in w and "access_token" in w for w in cfg.warnings)
        assert not [w for w in cfg.warnings if "abc" in w.split() or "pw" in w]

    @pytest.mark.parametrize(
        "data",
        [{}, {"twitch": {"client_secret": "env:S"}}, {"storage": {"mongodb_url": "mongodb://h:1"}},
         {"overlay": {"host": "::1"}}, {"overlay": {"host": "localhost"}},
         {"overlay": {"host": "0.0.0.0", "access_token": "env:S"}}, {"overlay": {"host": "0.0.0.0", "enabled": False}}],
    )
    def test_safe_choices_have_none(self, data: dict[str, object]) -> None:
        assert parse_config(data, {"S": "x"}).warnings == ()

    def test_two_plain_mood_bots_in_one_channel(self) -> None:
        """Personas share channels by design; two bots without one in the same channel is a warning."""
        two = [{"name": "a", "account": "x", "channels": ["Chan"]},
               {"name": "b", "account": "y", "channels": ["#chan"]}]
        cfg = parse_config({"bots": two}, {})
        assert [w for w in cfg.warnings if "channel 'chan' is read by both bot 'a' and bot 'b'" in w]
        with_persona = [two[0], {**two[1], "persona": {}}]
        assert parse_config({"bots": with_persona}, {}).warnings == ()

    def test_check_config_prints_them_and_stays_ok(self, tmp_path: Path) -> None:
        path = write(tmp_path, '[overlay]\nhost = "0.0.0.0"\naccess_token = "tok-inline"\n')
        r = subprocess.run([sys.executable, "-m", "bot", "check-config", str(path)], capture_output=True, text=True)
        assert r.returncode == 0 and "ok (1 warning(s))" in r.stdout
        assert 'warning: overlay.access_token is written in the file' in r.stdout and "tok-inline" not in r.stdout

    def test_programs_log_them_at_start(self, tmp_path: Path) -> None:
        path = write(tmp_path, '[overlay]\nhost = "0.0.0.0"\n[classifier]\nembedding_model = ""\n')
        r = subprocess.run([sys.executable, "-m", "bot", "classify", "hello", "--config", str(path)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "config_warning" in r.stderr and "overlay.host" in r.stderr

    def test_log_warnings(self) -> None:
        cfg = parse_config({"overlay": {"host": "10.0.0.5"}}, {})
        with structlog.testing.capture_logs() as logs:
            log_warnings(cfg)
        assert [e["event"] for e in logs] == ["config_warning"] and "10.0.0.5" in logs[0]["problem"]
