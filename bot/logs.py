"""Logging: structlog for our events, the stdlib loggers of twitchAPI, aiohttp and pymongo
routed through the same renderer. Pretty on a TTY, JSON lines otherwise.

Secrets never reach the output: values of keys that name a secret are masked, and
strings that look like OAuth tokens or URL passwords are scrubbed, whoever logged them.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_KEY = re.compile(r"(token|secret|password|authorization|api_key|code_verifier)", re.IGNORECASE)
# scheme://userinfo@ up to the last "@" of a run without spaces: passwords written with "/", "@" or no user.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>\S*)@")


def _userinfo(m: re.Match[str]) -> str:
    user, colon, _ = m["userinfo"].partition(":")
    return f"{m['scheme']}{user}:***@" if colon and "/" not in user else f"{m['scheme']}***@"


def redact_url(text: str) -> str:
    """URL credentials masked: ``mongodb://user:pw@host`` -> ``mongodb://user:***@host``; a password holding
    ``/`` or ``@``, an empty user (``mongodb://:pw@host``) and a bare token (``https://tok@host``) too."""
    return _URL_USERINFO.sub(_userinfo, text) if "@" in text else text


_SCRUB = (
    # OAuth bearer headers and token query parameters.
    (re.compile(r"(?i)(bearer|oauth)\s+[A-Za-z0-9._~+/-]{8,}"), r"\1 ***"),
    (
        re.compile(r"(?i)((?:access_token|refresh_token|client_secret|token|code)=)[^&\s\"']+"),
        r"\1***",
    ),
)
# Libraries whose records we route through our renderer, and how chatty they may be.
_FOREIGN = {
    "twitchAPI": logging.INFO,
    "aiohttp": logging.WARNING,
    "pymongo": logging.WARNING,
    "asyncio": logging.WARNING,
}


def scrub(text: str) -> str:
    """Mask things that look like credentials inside free text."""
    text = redact_url(text)
    for pattern, repl in _SCRUB:
        text = pattern.sub(repl, text)
    return text


def _mask_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if key == "event":
            if isinstance(value, str):
                event_dict[key] = scrub(value)
        elif _SECRET_KEY.search(key) and value is not None and not isinstance(value, bool | int | float):
            event_dict[key] = "***"
        elif isinstance(value, str):
            event_dict[key] = scrub(value)
    return event_dict


def _renderer(fmt: str, stream: TextIO) -> Any:
    pretty = fmt == "console" or (fmt == "auto" and stream.isatty())
    if pretty:
        return structlog.dev.ConsoleRenderer(colors=stream.isatty())
    return structlog.processors.JSONRenderer()


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Set up structlog and the stdlib root logger. Safe to call again (config reload)."""
    stream = stream or sys.stderr
    lvl = logging.getLevelName(level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _mask_secrets,
    ]
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _renderer(fmt, stream)],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(lvl)
    for name, floor in _FOREIGN.items():
        logging.getLogger(name).setLevel(max(floor, lvl))
