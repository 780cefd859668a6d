"""Who owns chatmood's long-lived tasks, and what a crash of one does.

Two shapes, and no third:

* **Services** are the pipeline's and the app's own loops (the classifier worker, the command queue, the mood
  ticker and snapshots, the reply sender, config reload). :func:`supervise` runs them in one
  ``asyncio.TaskGroup``: one crash cancels the others and leaves the block with that error; leaving the block
  cancels and awaits them all.
* **Owned tasks** belong to a resource that must also work outside the app (storage's flusher runs under
  ``open_storage`` in tests and benchmarks; a Twitch bot's supervisor and token validator run while its
  ``async with`` is open). The owner holds them in a :class:`TaskSet`: named, held, cancelled and awaited by
  the owner's own exit. The app adds each owner's :meth:`TaskSet.watch` to its services, so a crashed owned task
  stops the app at once, not at shutdown.

Request-scoped tasks (a WebSocket's pusher) are created and awaited by their handler and end with the request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any

import structlog

from bot.errors import ChatmoodError

log = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def supervise(services: Mapping[str, Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    """Run named service tasks for the duration of the block; on exit cancel and await them.

    A crashing service cancels the block and the others; a chatmood error inside is
    re-raised on its own so the CLI can print it.
    """
    try:
        async with asyncio.TaskGroup() as tg:
            held = [tg.create_task(coro, name=name) for name, coro in services.items()]
            try:
                yield
            finally:
                for task in held:
                    task.cancel()
    except BaseExceptionGroup as group:
        ours = [e for e in group.exceptions if isinstance(e, ChatmoodError)]
        if ours:
            raise ours[0] from None
        raise


class TaskSet:
    """The long-lived tasks of one owner. ``spawn`` starts a named task and holds it until it ends;
    ``aclose`` cancels and awaits every held task; ``watch`` raises the first failure as soon as it happens."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failed: asyncio.Future[None] | None = None

    def _failure(self) -> asyncio.Future[None]:
        if self._failed is None:
            self._failed = asyncio.get_running_loop().create_future()
        return self._failed

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        failed = self._failure()
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            error = t.exception()
            if error is not None:
                log.error("task_crashed", owner=self.owner, task=t.get_name(), error=repr(error))
                if not failed.done():
                    failed.set_exception(error)

        task.add_done_callback(done)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def watch(self) -> None:
        """Wait for as long as the owner lives; raise a held task's error the moment it fails."""
        await asyncio.shield(self._failure())

    async def aclose(self, grace_s: float = 0.0) -> None:
        """Cancel and await every held task (idempotent). With ``grace_s``, tasks the owner has asked to end
        get that long to finish on their own first (a task cancelled inside a database call can leave its
        connection behind). A failure stays visible to ``watch``."""
        tasks = list(self._tasks)
        if tasks and grace_s > 0:
            _, tasks_left = await asyncio.wait(tasks, timeout=grace_s)
            tasks = list(tasks_left)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        failed = self._failure()
        if not failed.done():
            failed.set_result(None)  # a clean stop: watch() returns
        elif not failed.cancelled():
            failed.exception()  # retrieved here, so an unwatched failure isn't reported as never retrieved
