"""``chatmood persona``: the reply a persona would give, without Twitch or a database; and the demo's persona."""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from bot.app import cmd_demo
from bot.config import Config, load_config, parse_config
from bot.domain import ChatLine
from bot.errors import ChatmoodError, ConfigError
from bot.llm.registry import KNOWN_MODELS
from bot.outbox import Loopback, Outgoing
from bot.persona.offline import cmd_persona, demo_persona, parse_mood
from bot.storage.devdb import DevDb
from tests.fakes.gguf import write_tiny_llama

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "bots.toml.example"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("offline") / "tiny-chat.gguf")


def config_with(tmp_path: Path, persona: str) -> Config:
    path = tmp_path / "bots.toml"
    path.write_text(f'[[bots]]\nname = "chatty"\naccount = "chatty_a"\nchannels = ["streamer"]\n'
                    f"[bots.persona]\n{persona}\n")
    return load_config(path, {})


class TestPersonaCommand:
    async def test_prints_the_reply_then_model_and_timing(self, tmp_path: Path, tiny: Path) -> None:
        cfg = config_with(tmp_path, f'model = "{tiny}"\ntemperature = 0.0')
        out = io.StringIO()
        assert await cmd_persona(cfg, "chatty", "@chatty_a how is chat feeling?", mood="hype:61", out=out) == 0
        first, model, mood = out.getvalue().splitlines()
        assert first and "\n" not in first and len(first) <= 500
        assert model.startswith(f"model: {tiny.name}, ") and "tokens/s" in model
        assert mood == "mood: chat is hype right now, 61%"

    async def test_the_same_prompt_gives_the_same_greedy_reply(self, tmp_path: Path, tiny: Path) -> None:
        cfg = config_with(tmp_path, f'model = "{tiny}"\ntemperature = 0.0')
        outs = [io.StringIO(), io.StringIO()]
        for out in outs:
            await cmd_persona(cfg, "chatty", "hello there", out=out)
        assert outs[0].getvalue().splitlines()[0] == outs[1].getvalue().splitlines()[0]

    async def test_errors_say_what_is_wrong(self, tmp_path: Path, tiny: Path) -> None:
        cfg = config_with(tmp_path, f'model = "{tmp_path / "missing.gguf"}"')
        with pytest.raises(ChatmoodError, match="none of its models loaded"):
            await cmd_persona(cfg, "chatty", "hi", out=io.StringIO())
        with pytest.raises(ChatmoodError, match="no bot named 'nobody'"):
            await cmd_persona(cfg, "nobody", "hi", out=io.StringIO())
        plain = load_config(_write(tmp_path, '[[bots]]\nname = "m"\naccount = "m"\nchannels = ["c"]\n'), {})
        with pytest.raises(ChatmoodError, match=r"no \[bots\.persona\] table"):
            await cmd_persona(plain, "m", "hi", out=io.StringIO())

    def test_mood_option(self) -> None:
        cfg = parse_config({}, {})
        hype = parse_mood(cfg, "hype")
        assert hype is not None and (hype.label, hype.share) == ("hype", 0.6)
        assert parse_mood(cfg, None) is None
        for bad in ("hyped", "hype:abc", "hype:0", "hype:101"):
            with pytest.raises(ConfigError):
                parse_mood(cfg, bad)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plain.toml"
    path.write_text(text)
    return path


class TestDemoPersona:
    def test_without_a_persona_the_built_in_one_joins_the_demo(self) -> None:
        cfg = demo_persona(parse_config({}, {}))
        (bot,) = cfg.bots
        assert (bot.account, bot.channels) == ("my_mood_bot", ("demo",))
        assert bot.persona is not None and bot.persona.model == "smollm2"

    def test_the_configs_first_persona_plays_it(self) -> None:
        cfg = demo_persona(load_config(EXAMPLE, {}))
        assert [(b.name, b.channels) for b in cfg.bots] == [("moodbot", ("demo",))]
        assert cfg.bots[0].persona is not None and "Moody" in cfg.bots[0].persona.system_prompt


@pytest.mark.slow
class TestShippedModel:
    def test_the_example_persona_answers_in_one_line(self) -> None:
        """The README's command with the shipped SmolLM2 (``make test`` fetches it): a one-line reply first."""
        model = ROOT / "models" / KNOWN_MODELS["smollm2"].file_name
        assert model.is_file(), f"{model} is missing: `make setup` fetches it"
        proc = subprocess.run(
            [sys.executable, "-m", "bot", "persona", "--config", str(EXAMPLE), "moodbot",
             "@my_mood_bot how is chat feeling?", "--mood", "hype:61", "--seed", "3"],
            capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        reply, model_line, mood_line = proc.stdout.splitlines()
        assert 2 <= len(reply.split()) and len(reply) <= 500 and not reply.startswith(("/", "."))
        assert model_line.startswith("model: SmolLM2-135M-Instruct.Q4_0.gguf, ")
        assert mood_line == "mood: chat is hype right now, 61%"


class TestDemo:
    async def test_the_persona_answers_the_sample_chat_in_the_terminal_and_on_the_dashboard(
        self, tmp_path: Path, tiny: Path, ferretdb: DevDb, storage_config: Any
    ) -> None:
        """`chatmood demo --once`: the config's persona (as @my_mood_bot) answers the sample chat's mentions; each
        answer is printed and stored as the bot's own chat line, so the dashboard's recent messages show it."""
        path = tmp_path / "bots.toml"
        path.write_text(
            f'[storage]\nmongodb_url = "{ferretdb.url}"\ndatabase = "{storage_config.database}"\n'
            '[classifier]\nembedding_model = ""\n[overlay]\nport = 0\naccess_token = "tok-123"\n'
            '[[bots]]\nname = "moodbot"\naccount = "my_mood_bot"\nchannels = ["my_channel"]\n'
            f'[bots.persona]\nmodel = "{tiny}"\ntemperature = 0.0\nuser_cooldown_s = 0.0\n'
        )
        out = io.StringIO()
        assert await cmd_demo(load_config(path, {}), speed=100.0, once=True, out=out) == 0
        said = [ln for ln in out.getvalue().splitlines() if ln.startswith("[#demo] my_mood_bot: ")]
        assert len(said) == 2, out.getvalue()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(ferretdb.url)
        try:
            db = client[storage_config.database]
            stored = [d async for d in db.messages.find({"user_login": "my_mood_bot"})]
            mentions = {d["_id"] async for d in db.messages.find({"text": {"$regex": "^@my_mood_bot"}})}
        finally:
            await client.close()
        assert sorted(d["text"] for d in stored) == sorted(ln.split(": ", 1)[1] for ln in said)
        assert {d["reply_to"] for d in stored} == mentions and len(mentions) == 2

    def test_loopback_stamps_a_bots_line_just_after_the_chat(self) -> None:
        got: list[ChatLine] = []
        out = io.StringIO()
        chat = Loopback(got.append, {"moodbot": "my_mood_bot"}, out)
        at = datetime(2025, 11, 8, 20, 0, 55, tzinfo=UTC)
        chat.submit(ChatLine("m1", "demo", "1", "vic", "Vic", "@my_mood_bot hi", at))
        chat(Outgoing("demo", "hello Vic", "m1", sender="moodbot"))
        chat(Outgoing("demo", "chat mood: hype", None))  # no sender: a command reply, only logged
        assert out.getvalue() == "[#demo] my_mood_bot: hello Vic\n"
        assert [(x.user_login, x.text, x.reply_to) for x in got[1:]] == [("my_mood_bot", "hello Vic", "m1")]
        assert got[1].sent_at == at + timedelta(milliseconds=1)
