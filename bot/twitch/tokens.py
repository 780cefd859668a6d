"""A bot account's user tokens and the file that keeps them, and the one way chatmood writes a secret file.

- :class:`TokenSet`: access and refresh token (as :class:`pydantic.SecretStr`), scopes, expiry, the account.
- :class:`TokenStore`: one JSON file per bot, created with mode 0600 (a looser mode found on load is
  tightened and logged), written atomically (temp file + ``os.replace``).
- :func:`write_secret_file` / :func:`read_secret_file`: those rules for any secret file (the overlay token too).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pydantic import SecretStr

from bot.errors import TwitchError

log = structlog.get_logger(__name__)


def tighten_mode(path: Path) -> None:
    """A secret file readable by others is made 0600 (and logged); a missing file raises ``FileNotFoundError``."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)
        log.warning("token_file_permissions_fixed", path=str(path), was=oct(mode))


def read_secret_file(path: Path) -> str | None:
    """The text of a secret file, its mode tightened to 0600 first; None when there is no file."""
    try:
        tighten_mode(path)
    except FileNotFoundError:
        return None
    return path.read_text("utf-8")


def write_secret_file(path: Path, text: str) -> None:
    """Write ``text`` atomically (temp file + ``os.replace``) so the file never exists with a mode looser than
    0600, whatever mode an older file at ``path`` had. The folder is created 0700 if missing."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: SecretStr
    refresh_token: SecretStr | None
    scopes: tuple[str, ...] = ()
    expires_at: float | None = None  # unix time
    login: str = ""
    user_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token.get_secret_value(),
            "refresh_token": self.refresh_token.get_secret_value() if self.refresh_token else None,
            "scopes": list(self.scopes),
            "expires_at": self.expires_at,
            "login": self.login,
            "user_id": self.user_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenSet:
        refresh = data.get("refresh_token")
        return cls(
            access_token=SecretStr(str(data["access_token"])),
            refresh_token=SecretStr(str(refresh)) if refresh else None,
            scopes=tuple(str(s) for s in data.get("scopes") or ()),
            expires_at=float(data["expires_at"]) if data.get("expires_at") is not None else None,
            login=str(data.get("login") or ""),
            user_id=str(data.get("user_id") or ""),
        )


class TokenStore:
    """The token file of one bot."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"TokenStore({str(self.path)!r})"

    def load(self) -> TokenSet | None:
        """The stored tokens, or ``None`` when there is no file; a malformed file raises ``TwitchError``."""
        try:
            text = read_secret_file(self.path)
            if text is None:
                return None
            return TokenSet.from_json(json.loads(text))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TwitchError(f"{self.path}: token file is unreadable ({type(e).__name__})") from None

    def save(self, tokens: TokenSet) -> None:
        """Write atomically; the file never exists with a mode looser than 0600."""
        write_secret_file(self.path, json.dumps(tokens.to_json()))
        log.info("token_saved", path=str(self.path), login=tokens.login)
