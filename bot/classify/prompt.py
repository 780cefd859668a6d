"""The LLM prompt: a template under ``prompts/`` rendered with the configured categories, split into the
cached prefix and the per-message suffix.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.classify.text import normalise
from bot.config import Category, Config
from bot.errors import ModelError


def render_prompt(template: str, categories: Sequence[Category], examples: Sequence[tuple[str, str]] = ()) -> str:
    """Fill a prompt template's ``{categories}`` and ``{examples}``; ``{message}`` is left for each message.

    Each example is written in the template's own message layout (the ``{message}`` line with the text filled in
    and the label after the answer cue), one per line, so examples and the scored message look alike."""
    cats = "\n".join(f"- {c.name}: {c.description}" for c in categories)
    shots = ""
    if examples and "{message}" in template:
        head, _, tail = template.partition("{message}")
        before = head.rpartition("\n")[2].replace("{examples}", "")
        after = tail.rstrip()
        shots = "".join(f"{before}{normalise(t)}{after} {label}\n" for t, label in examples)
    return template.replace("{categories}", cats).replace("{examples}", shots)


def split_prompt(rendered: str) -> tuple[str, str]:
    """(shared prefix, per-message suffix template with ``{message}``) of a rendered template.

    The suffix loses trailing whitespace (a template file's final newline): the label is scored right after the
    answer cue (``Mood:``), as in the examples. Everything before ``{message}`` is the cached prefix, so the
    per-message part is only the text plus the cue -- keep the cue short: every suffix token is evaluated for
    every message (`` Mood:`` is 2 SmolLM2 tokens, ``\nMood:`` 4)."""
    if "{message}" not in rendered:
        raise ValueError("prompt template has no {message} placeholder")
    prefix, _, rest = rendered.partition("{message}")
    return prefix, "{message}" + rest.rstrip()


def load_prompt(cfg: Config) -> str:
    path = cfg.resolve(cfg.classifier.prompt_template)
    try:
        text = path.read_text("utf-8")
    except OSError as e:
        problem = f"cannot read the prompt template: {e.strerror or e}"
        raise ModelError(path, problem, "restore prompts/classify.txt") from None
    if "{message}" not in text:
        raise ModelError(path, "prompt template has no {message} placeholder", "see prompts/classify.txt")
    return render_prompt(text, cfg.categories)
