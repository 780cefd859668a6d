"""A bot account's user tokens and the file that keeps them.

- :class:`TokenSet`: access and refresh token (as :class:`pydantic.SecretStr`), scopes, expiry, the account.
- :class:`TokenStore`: one JSON file per bot, created with mode 0600 (a looser mode found on load is
  tightened and logged), written atomically (temp file + ``os.replace``).
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
            st = self.path.stat()
        except FileNotFoundError:
            return None
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(self.path, 0o600)
            log.warning("token_file_permissions_fixed", path=str(self.path), was=oct(stat.S_IMODE(st.st_mode)))
        try:
            data = json.loads(self.path.read_text("utf-8"))
            return TokenSet.from_json(data)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TwitchError(f"{self.path}: token file is unreadable ({type(e).__name__})") from None

    def save(self, tokens: TokenSet) -> None:
        """Write atomically; the file never exists with a mode looser than 0600."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(tokens.to_json(), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        log.info("token_saved", path=str(self.path), login=tokens.login)
