"""The overlay app's edge: access tokens, security headers and query-parameter checks.

Everything a browser sends is checked here before the handlers in ``bot/web/server.py``
use it. Three kinds of access:

- **read** (overlay page, its WebSocket, ``/api/mood``, ``/api/timeline``): open, unless
  ``overlay.overlay_requires_token``; then ``?token=``, a bearer header or the dashboard
  cookie is needed.
- **dashboard** (the page and ``/api/messages``): the access token as ``?token=`` once
  (answered with a redirect that sets an HttpOnly, SameSite=Strict cookie and drops the
  token from the address), ``Authorization: Bearer``, or that cookie.
- **write** (``POST /api/reset``): a header, never the cookie alone: ``Authorization:
  Bearer <token>`` (scripts), or ``X-CSRF-Token`` (printed into the dashboard page) together
  with the cookie (the dashboard's button). A cross-site page can't set either header.

Tokens are compared with :func:`hmac.compare_digest`. Missing credentials get 401,
wrong ones 403; with no access token configured the dashboard and writes are off (403).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiohttp import web
from multidict import MultiMapping

COOKIE = "chatmood_dashboard"
TOKEN_HEADER = "X-Chatmood-Token"
CSRF_HEADER = "X-CSRF-Token"

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

STYLES = ("bar", "glow", "orb")
POSITIONS = ("top", "bottom")
DEFAULT_SIZE = {"bar": 12, "glow": 48, "orb": 160}
MAX_SIZE = 2000
OVERLAY_PARAMS = ("style", "label", "size", "thickness", "position", "token")
RANGES: Mapping[str, int] = {"15m": 15 * 60, "1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600}
DEFAULT_SINCE_S = 3600
MAX_SINCE = timedelta(days=7)
LABEL_TARGET = 100  # labelled examples per category that fine-tuning guides recommend
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class ParamError(ValueError):
    """A query parameter with a bad value; the message names the parameter and the value."""


def _derive(token: str, purpose: str) -> str:
    return hmac.new(token.encode("utf-8"), purpose.encode("ascii"), hashlib.sha256).hexdigest()


def _same(given: str | None, expected: str) -> bool:
    """Constant-time equality; an empty expectation never matches."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class TokenAuth:
    """Checks requests against the overlay access token (see the module docstring)."""

    def __init__(self, token: str, *, overlay_requires_token: bool) -> None:
        self._token = token
        self.enabled = bool(token)
        self.overlay_requires_token = overlay_requires_token
        self.csrf_token = _derive(token, "chatmood-csrf") if token else ""
        self._cookie = _derive(token, "chatmood-dashboard-cookie") if token else ""

    def __repr__(self) -> str:
        return f"TokenAuth(enabled={self.enabled}, overlay_requires_token={self.overlay_requires_token})"

    @staticmethod
    def _bearer(request: web.Request) -> str | None:
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            return value.strip() if scheme.lower() == "bearer" else ""
        return request.headers.get(TOKEN_HEADER)

    def _disabled(self) -> web.HTTPForbidden:
        return web.HTTPForbidden(text="the dashboard is disabled: set overlay.access_token in bots.toml\n")

    @staticmethod
    def _missing() -> web.HTTPUnauthorized:
        return web.HTTPUnauthorized(
            text="this needs the overlay access token: add ?token=... once, or send Authorization: Bearer ...\n",
            headers={"WWW-Authenticate": 'Bearer realm="chatmood"'},
        )

    @staticmethod
    def _wrong() -> web.HTTPForbidden:
        return web.HTTPForbidden(text="wrong access token\n")

    def _check(self, request: web.Request, *, query: bool) -> None:
        """Accept a bearer/header token, the dashboard cookie, or (when ``query``) ``?token=``."""
        if not self.enabled:
            raise self._disabled()
        offered = False
        for given, expected in (
            (self._bearer(request), self._token),
            (request.query.get("token") if query else None, self._token),
            (request.cookies.get(COOKIE), self._cookie),
        ):
            if given is None:
                continue
            offered = True
            if _same(given, expected):
                return
        raise self._wrong() if offered else self._missing()

    def require_read(self, request: web.Request) -> None:
        """Overlay data: open unless ``overlay_requires_token``."""
        if self.overlay_requires_token:
            self._check(request, query=True)

    def require_token(self, request: web.Request) -> None:
        """Private reads (chat messages): bearer/header token or the dashboard cookie."""
        self._check(request, query=False)

    def require_dashboard(self, request: web.Request) -> web.Response | None:
        """The dashboard page. A valid ``?token=`` is traded for the cookie with a redirect (returned)."""
        if not self.enabled:
            raise self._disabled()
        given = request.query.get("token")
        if given is None:
            self._check(request, query=False)
            return None
        if not _same(given, self._token):
            raise self._wrong()
        clean = request.rel_url.with_query({k: v for k, v in request.query.items() if k != "token"})
        response = web.Response(status=303, headers={"Location": str(clean)}, text="signed in\n")
        response.set_cookie(COOKIE, self._cookie, httponly=True, samesite="Strict", path="/")
        return response

    def require_write(self, request: web.Request) -> None:
        """State changes: a header token, never a cookie alone (CSRF)."""
        if not self.enabled:
            raise self._disabled()
        bearer = self._bearer(request)
        csrf = request.headers.get(CSRF_HEADER)
        if bearer is None and csrf is None:
            raise self._missing()
        if bearer is not None and _same(bearer, self._token):
            return
        if csrf is not None and _same(csrf, self.csrf_token) and _same(request.cookies.get(COOKIE), self._cookie):
            return
        raise self._wrong()


@dataclass(frozen=True, slots=True)
class OverlayParams:
    style: str
    label: bool
    size: int
    position: str


def shown(value: str, limit: int = 40) -> str:
    """A query value quoted for an error message, cut to ``limit`` characters (400 nines need not come back)."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} characters)"


def check_query(query: MultiMapping[str], known: Sequence[str]) -> None:
    """Every route names the parameters it takes: an unknown one, or one given twice, is a :class:`ParamError`."""
    unknown = sorted(set(query) - set(known))
    if unknown:
        takes = f"known: {', '.join(known)}" if known else "this route takes none"
        raise ParamError(f"unknown query parameter(s): {', '.join(unknown)} ({takes})")
    for name in known:
        if len(query.getall(name, ())) > 1:
            raise ParamError(f"{name} is given more than once")


def parse_int(value: str | None, name: str, *, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ParamError(f"{name} must be a whole number, got {shown(value)}") from None
    if not low <= number <= high:
        raise ParamError(f"{name} must be between {low} and {high}, got {number}")
    return number


def parse_overlay_params(query: Mapping[str, str]) -> OverlayParams:
    """``style``, ``label``, ``size``/``thickness``, ``position``; unknown names are errors too."""
    unknown = sorted(set(query) - set(OVERLAY_PARAMS))
    if unknown:
        raise ParamError(f"unknown query parameter(s): {', '.join(unknown)} (known: {', '.join(OVERLAY_PARAMS)})")
    style = query.get("style", "glow")
    if style not in STYLES:
        raise ParamError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    label = query.get("label", "1")
    if label not in ("1", "0"):
        raise ParamError(f"label must be 1 (show the mood name) or 0 (hide it), got {label!r}")
    size_text, thickness = query.get("size"), query.get("thickness")
    if size_text is not None and thickness is not None and size_text != thickness:
        raise ParamError(f"size and thickness mean the same; got size={size_text!r} and thickness={thickness!r}")
    size = parse_int(
        size_text if size_text is not None else thickness, "size", default=DEFAULT_SIZE[style], low=1, high=MAX_SIZE
    )
    position = query.get("position", "bottom")
    if position not in POSITIONS:
        raise ParamError(f"position must be top or bottom, got {position!r}")
    return OverlayParams(style=style, label=label == "1", size=size, position=position)


VIBES_PARAMS = ("q", "top", "token")
MAX_QUERY = 200


def parse_vibes_params(query: Mapping[str, str], *, default_top: int = 5) -> tuple[str, int]:
    """``q`` (at most 200 characters, trimmed; may be empty) and ``top`` (1-50); unknown names are errors."""
    unknown = sorted(set(query) - set(VIBES_PARAMS))
    if unknown:
        raise ParamError(f"unknown query parameter(s): {', '.join(unknown)} (known: q, top)")
    text = " ".join(query.get("q", "").split())
    if len(text) > MAX_QUERY:
        raise ParamError(f"q may be at most {MAX_QUERY} characters, got {len(text)}")
    return text, parse_int(query.get("top"), "top", default=default_top, low=1, high=50)


def parse_since(value: str | None, *, now: datetime | None = None) -> datetime:
    """``since=``: an ISO 8601 time (naive means UTC), or seconds ago (``900``, ``15m``, ``6h``, ``1d``).

    Anything else, or a time beyond what a datetime holds, is a :class:`ParamError` naming ``since``."""
    now = now or datetime.now(UTC)
    if value is None or value == "":
        return now - timedelta(seconds=DEFAULT_SINCE_S)
    text = value.strip()
    m = _DURATION.match(text)
    if m:
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]  # 400 nines make inf: refused below, never converted
        if seconds <= 0:
            raise ParamError(f"since must be more than 0 seconds ago, got {shown(value)}")
        if not seconds <= MAX_SINCE.total_seconds():
            raise ParamError(f"since may reach back at most {MAX_SINCE.days} days, got {shown(value)}")
        return now - timedelta(seconds=seconds)
    try:
        at = datetime.fromisoformat(text.replace(" ", "+") if text.count(" ") == 1 and "T" in text else text)
        # An offset can push a valid local time past year 1 or 9999 (0001-01-01T00:00:00+14:00).
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except OverflowError:
        raise ParamError(f"since may reach back at most {MAX_SINCE.days} days, got {shown(value)}") from None
    except ValueError:
        raise ParamError(
            "since must be an ISO 8601 time (2026-01-31T20:15:00Z) or seconds ago (900, 15m, 6h),"
            f" got {shown(value)}"
        ) from None
    if now - at > MAX_SINCE:
        raise ParamError(f"since may reach back at most {MAX_SINCE.days} days, got {shown(value)}")
    if at > now:
        raise ParamError(f"since is in the future: {shown(value)}")
    return at
