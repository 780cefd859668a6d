"""The form a chat message is classified and cached in (one normalisation for features, cache and prompts).
"""

from __future__ import annotations

import re

_WS = re.compile(r"\s+")
_RUN = re.compile(r"(.)\1{3,}")

def normalise(text: str) -> str:
    """The form a message is classified (and cached) in: whitespace collapsed, letter runs cut to three,
    a token repeated back to back kept once ("KEKW KEKW KEKW" -> "KEKW"). Case is kept: it carries meaning."""
    text = _RUN.sub(lambda m: m.group(1) * 3, _WS.sub(" ", text).strip())
    tokens = text.split(" ")
    out = [t for i, t in enumerate(tokens) if i == 0 or t != tokens[i - 1]]
    return " ".join(out)
