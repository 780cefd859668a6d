"""SIGHUP reload of bots.toml.

A valid file is applied to the running process without dropping connections (log
level, mood smoothing, commands, categories' colours, channels and bots); parts that
need a restart (database, overlay address, models, history sizes) are named in the log. An invalid
file is rejected with its reasons logged, and the old config keeps running.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import structlog

from bot.config import Config, load_config, log_warnings
from bot.errors import ConfigError

log = structlog.get_logger(__name__)

ApplyFn = Callable[[Config, Config], Awaitable[None]]

# Sections that only take effect at the next start.
RESTART_ONLY = ("storage", "overlay", "classifier", "history")


def restart_needed(old: Config, new: Config) -> list[str]:
    return [name for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]


class Reloader:
    def __init__(self, path: Path, current: Config, apply: ApplyFn, environ: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.current = current
        self._apply = apply
        self._environ = environ
        self.requested = asyncio.Event()
        self.generation = 0

    def request(self) -> None:
        """Signal-handler safe: just sets an event the reload task waits on."""
        self.requested.set()

    async def reload(self) -> bool:
        environ = self._environ if self._environ is not None else os.environ
        try:
            new = await asyncio.to_thread(load_config, self.path, environ)
        except ConfigError as e:
            log.error("config_reload_rejected", path=str(self.path), problems=list(e.problems))
            return False
        pending = restart_needed(self.current, new)
        try:
            await self._apply(self.current, new)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("config_reload_failed", path=str(self.path))
            return False
        self.current = new
        self.generation += 1
        log_warnings(new)
        log.info("config_reloaded", path=str(self.path), restart_needed_for=pending or None)
        return True

    async def run(self) -> None:
        while True:
            await self.requested.wait()
            self.requested.clear()
            await self.reload()
