"""The bundled sample chat cut into one channel per phase, for trying vibes offline and for bench/vibes.py.

``bot/data/sample_chat.jsonl`` (written by ``tools/make_sample_chat.py``, all invented) follows one evening through
mood phases of known length; each phase becomes a channel ``sample_<phase>``: ``sample_opening`` (greetings,
questions), ``sample_hype`` (a clutch play), ``sample_funny`` (a fall off the map), ``sample_sad`` (the final
lost), ``sample_angry`` (lag and a suspected cheater), ``sample_love`` (a raid, gifted subs) and
``sample_closing`` (good nights). Message ids get the channel appended, so the phases store next to a demo run
of the same file.

    .venv/bin/python -m bot.vibes.samples OUT_DIR     # writes OUT_DIR/sample_<phase>.jsonl
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from bot.domain import ChatLine
from bot.replay.jsonl import to_jsonl
from bot.replay.logfile import SAMPLE_CHAT, open_log

#: (channel, seconds) in the order tools/make_sample_chat.py plays its phases; the last one runs to the end.
PHASES: tuple[tuple[str, float], ...] = (
    ("sample_opening", 45), ("sample_hype", 40), ("sample_funny", 35), ("sample_sad", 35),
    ("sample_angry", 35), ("sample_love", 40), ("sample_closing", float("inf")),
)


def sample_channels(path: Path = SAMPLE_CHAT) -> dict[str, list[ChatLine]]:
    """The sample chat's lines by phase channel, in order."""
    lines = list(open_log(path, "demo").lines)
    start = lines[0].sent_at.replace(second=0, microsecond=0)  # the phases count from the whole minute
    out: dict[str, list[ChatLine]] = {name: [] for name, _ in PHASES}
    for line in lines:
        at = (line.sent_at - start).total_seconds()
        end = 0.0
        for name, seconds in PHASES:
            end += seconds
            if at < end:
                out[name].append(dataclasses.replace(line, channel=name, channel_id="",
                                                     message_id=f"{line.message_id}-{name}"))
                break
    return out


def write_sample_channels(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, lines in sample_channels().items():
        path = folder / f"{name}.jsonl"
        path.write_text("".join(to_jsonl(line) + "\n" for line in lines), encoding="utf-8")
        written[name] = path
    return written


if __name__ == "__main__":
    for name, path in write_sample_channels(Path(sys.argv[1] if len(sys.argv) > 1 else "sample_channels")).items():
        print(f"{name}: {path}")
