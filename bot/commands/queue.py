"""Commands from chat, handled one at a time by a service task, never on the ingest path.

Ingest asks :meth:`CommandQueue.is_command` (cheap, pure) and ``offer``\\s command lines here; ``run`` routes each
(permissions, cooldowns) and executes it. A full queue drops the command and says so in the log.
"""

from __future__ import annotations

import asyncio

import structlog

from bot.commands.executor import CommandExecutor
from bot.commands.router import CommandRouter
from bot.domain import ChatLine

log = structlog.get_logger(__name__)


class CommandQueue:
    def __init__(self, router: CommandRouter, executor: CommandExecutor, maxsize: int = 1_000) -> None:
        self.router = router
        self.executor = executor
        self._queue: asyncio.Queue[ChatLine] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0

    def is_command(self, line: ChatLine) -> bool:
        """A command word of this router starts the line: it steers the bot and is not classified."""
        return self.router.is_command(line)

    def offer(self, line: ChatLine) -> None:
        try:
            self._queue.put_nowait(line)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("command_dropped", channel=line.channel, reason="command queue full")

    async def join(self) -> None:
        """Wait until every command offered so far has been handled (needs ``run()`` running)."""
        await self._queue.join()

    async def run(self) -> None:
        while True:
            line = await self._queue.get()
            try:
                cmd = self.router.route(line)
                if cmd is not None:
                    await self.executor.execute(cmd)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("command_failed", channel=line.channel, text=line.text[:100])
            finally:
                self._queue.task_done()
