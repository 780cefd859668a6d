"""``chatmood`` / ``python -m bot``: argparse subcommands; errors become exit codes.

Exit codes: 0 ok, 1 a chatmood error (bad config, missing model, Twitch refused, ...),
2 bad command-line usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import ChatmoodError, ConfigError

if TYPE_CHECKING:
    from bot.config import Config

DEFAULT_CONFIG = Path("bots.toml")


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
    return p


def _load(path: Path | None) -> Config:
    """The given file; without one, ./bots.toml if it exists, else the built-in defaults."""
    from bot.config import load_config, parse_config

    if path is None and not DEFAULT_CONFIG.exists():
        return parse_config({}, os.environ)
    return load_config(path or DEFAULT_CONFIG, os.environ)


async def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "devdb":
        from bot.devdb import devdb_main

        return await devdb_main(port=args.port, data_dir=args.data_dir)
    if cmd == "demo":
        from bot.app import demo

        return await demo(_load(args.config), host=args.host, port=args.port, speed=args.speed, once=args.once)

    cfg = _load(getattr(args, "config", None))
    from bot.logs import configure_logging

    configure_logging(cfg.logging.level, cfg.logging.format)
    if cmd == "run":
        from bot.app import run

        return await run(cfg, host=args.host, port=args.port)
    if cmd == "auth":
        from bot.auth import cmd_auth

        return await cmd_auth(cfg, args.bot)
    if cmd == "replay":
        from bot.app import replay_file

        return await replay_file(cfg, args.file, channel=args.channel, speed=args.speed, max_rate=args.max_rate)
    from bot import training

    if cmd == "classify":
        return await training.cmd_classify(cfg, args.texts, args.as_json)
    if cmd == "eval":
        return await training.cmd_eval(cfg, args.file, args.text_col, args.label_col, args.as_json)
    if cmd == "train":
        return await training.cmd_train(cfg, args.from_file)
    if cmd == "export":
        return await training.cmd_export(cfg, args.format, args.output)
    raise AssertionError(f"unhandled command {cmd}")


def check_config(path: Path) -> int:
    from bot.config import load_config, summary

    cfg = load_config(path, os.environ)
    print(f"{path}: ok")
    print(summary(cfg))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return check_config(args.path)
        return asyncio.run(_dispatch(args))
    except ConfigError as e:
        print(f"chatmood: error: invalid configuration {e.path or ''}", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except ChatmoodError as e:
        print(f"chatmood: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
