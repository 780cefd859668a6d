"""A generated reply made fit for chat, or the reason it is dropped. Pure.

In order: special-token text and control or invisible characters removed; the first non-empty line; role
markers, speaker prefixes (``assistant:``, ``alice:``) and the persona's own ``@name`` stripped; wrapping quotes
stripped; a line that only repeats the message or the prompt dropped; leading ``/``, ``.`` and ``!`` removed, so
it is never a chat command (``/ban``, ``.timeout``) nor another bot's command; whitespace collapsed; a reply cut
by the token limit trimmed back to its last full sentence; only as many whole sentences as fit a chat line
(:data:`CHAT_CHARS`; the first always stays: a small model rambles on after a good first sentence, often
restating its instructions); at most 500 characters. Then a link or a blocklisted
word or phrase (case-insensitive, whole words) drops it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

MAX_CHARS = 500
#: A chat line's length: sentences after the first are kept only while the reply stays within it.
CHAT_CHARS = 160
_SPECIAL = re.compile(r"<\|[^|>]{1,40}\|>|</?s>")
_LINK = re.compile(r"(?i)\b(?:https?://|www\.)\S|\b[a-z0-9-]{2,}\.(?:com|net|org|tv|gg|io|ly|xyz)\b")
_ROLE_WORDS = ("assistant", "system", "user", "bot", "ai", "answer", "reply", "response")
_SENTENCE_END = re.compile(r"[.!?…](?=\s|$)")
_LEADING_MENTION = re.compile(r"^@([A-Za-z0-9_]{1,40})[,:]?\s*")
_MENTIONS = re.compile(r"@[A-Za-z0-9_]+")
_CONTROL = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")


def _prefix_pattern(names: Iterable[str]) -> re.Pattern[str]:
    alts = sorted({re.escape(n.lower().lstrip("@")) for n in names if n.strip()}, key=len, reverse=True)
    return re.compile(r"^\s*[\[(<]?@?(?:" + "|".join(alts) + r")[\])>]?\s*[:>\-–—]\s*", re.IGNORECASE)


def _letters(text: str) -> str:
    """Only the letters and digits, case-folded: how an echo is recognised despite the model's spelling."""
    return re.sub(r"[\W_]+", "", text.casefold())


def blocked_by(text: str, blocklist: Sequence[str]) -> str | None:
    """The first blocklist entry that occurs in ``text`` as whole words (case-insensitive), or None."""
    folded = text.casefold()
    for entry in blocklist:
        if re.search(r"(?<!\w)" + re.escape(entry.casefold()) + r"(?!\w)", folded):
            return entry
    return None


def _trim_to_sentence(text: str) -> str:
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]] if ends and ends[-1] >= 20 else text


def _chat_length(text: str) -> str:
    """The first sentence, and each next one while the whole stays within :data:`CHAT_CHARS`."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if len(text) <= CHAT_CHARS or not ends:
        return text
    keep = ends[0]
    for end in ends[1:]:
        if end > CHAT_CHARS:
            break
        keep = end
    return text[:keep]


def _cut(text: str, limit: int = MAX_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space >= limit // 2 else cut).rstrip() + "…"


def clean_reply(
    raw: str,
    *,
    own: Iterable[str] = (),
    names: Iterable[str] = (),
    echoes: Iterable[str] = (),
    blocklist: Sequence[str] = (),
    cut_short: bool = False,
) -> tuple[str | None, str | None]:
    """``(text, None)`` ready to send, or ``(None, reason)``: ``empty``, ``echo``, ``link`` or ``blocked``.

    ``own``: the persona's names (its ``@name`` opening the reply goes, however the model spelled it); ``names``:
    speakers whose ``name:`` prefix is stripped (the chatters in the prompt). ``echoes``: prompt texts the reply
    must not merely repeat (the message answered first). ``cut_short``: the model hit its token limit, so a
    trailing half sentence goes."""
    own = list(own)
    text = _CONTROL.sub("", _SPECIAL.sub(" ", raw))
    bare_role = re.compile(r"^(?:" + "|".join(_ROLE_WORDS) + r")\s*:?$", re.IGNORECASE)
    line = next((ln.strip() for ln in text.splitlines() if ln.strip() and not bare_role.match(ln.strip())), "")
    prefix = _prefix_pattern((*_ROLE_WORDS, *own, *names))
    self_names = {_letters(n) for n in own} - {""}
    for _ in range(3):
        stripped = prefix.sub("", line, count=1).strip()
        mention = _LEADING_MENTION.match(stripped)
        if mention is not None and _letters(mention.group(1)) in self_names:
            stripped = stripped[mention.end():].strip()
        if stripped == line:
            break
        line = stripped
    for _ in range(2):
        if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'`“”":
            line = line[1:-1].strip()
        elif len(line) >= 2 and line[0] == "“" and line[-1] == "”":
            line = line[1:-1].strip()
    for quote in "\"“”":  # a quote left open (the model stopped before closing it) or never opened
        if line.count(quote) == 1 and (line.startswith(quote) or line.endswith(quote)):
            line = line.strip(quote).strip()
    said = _letters(_MENTIONS.sub("", line))
    for echo in echoes:
        heard = _letters(_MENTIONS.sub("", echo))
        if heard and said.startswith(heard) and len(said) - len(heard) < 12:
            return None, "echo"
    line = line.lstrip("/.! \t")
    line = " ".join(line.split())
    if cut_short:
        line = _trim_to_sentence(line)
    line = _cut(_chat_length(line))
    if not line:
        return None, "empty"
    if _LINK.search(line):
        return None, "link"
    if blocked_by(line, blocklist) is not None:
        return None, "blocked"
    return line, None
