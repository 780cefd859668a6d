"""chatmood's exceptions. One base; subclasses carry the data that explains them.

::

    ChatmoodError
    ├── ConfigError            bots.toml is missing, unparsable or invalid (``path``, ``problems``)
    ├── StorageError           the database refused or could not be reached
    │   └── StorageTimeout     it did not answer in time (``seconds``): hung, overloaded, or a query too slow
    ├── ModelError             a GGUF model or trained head is missing or unusable (``path``, ``hint``)
    ├── ReplayError            a chat log cannot be read at all (malformed lines are counted, not raised)
    ├── DataError              a labelled file cannot be used (missing columns, unknown labels, unreadable)
    └── TwitchError            Twitch refused us
        ├── AuthError          a token is missing, expired or revoked (``bot``): run ``chatmood auth``
        └── AuthRejected       Twitch's OAuth endpoint refused a token, refresh token or code (``reason``)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class ChatmoodError(Exception):
    """Base of every error chatmood raises on purpose."""


class ConfigError(ChatmoodError):
    def __init__(self, path: Path | str | None, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        where = f"{path}: " if path else ""
        super().__init__(where + "; ".join(self.problems))


class StorageError(ChatmoodError):
    pass


class StorageTimeout(StorageError):
    """The database did not answer within ``seconds``."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


class ModelError(ChatmoodError):
    def __init__(self, path: Path | str, problem: str, hint: str = "") -> None:
        self.path = path
        self.problem = problem
        self.hint = hint
        text = f"{path}: {problem}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class ReplayError(ChatmoodError):
    pass


class DataError(ChatmoodError):
    """A labelled file cannot be used (missing columns, unknown labels, unreadable)."""


class TwitchError(ChatmoodError):
    pass


class AuthError(TwitchError):
    def __init__(self, bot: str, problem: str) -> None:
        self.bot = bot
        self.problem = problem
        super().__init__(f"bot {bot!r}: {problem}; run `chatmood auth --bot {bot}`")


class AuthRejected(TwitchError):
    """Twitch refused a token, a refresh token or a code (``reason`` is Twitch's message, never a token)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"Twitch refused the credentials: {reason}")
