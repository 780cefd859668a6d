"""bot.tasks: services run in one TaskGroup; an owner's tasks are held, and a crash is heard at once."""

from __future__ import annotations

import asyncio

import pytest

from bot.errors import ChatmoodError
from bot.tasks import TaskSet, supervise


async def forever() -> None:
    await asyncio.Event().wait()


class TestTaskSet:
    async def test_watch_raises_the_moment_a_task_fails(self) -> None:
        tasks = TaskSet("test")
        started = asyncio.Event()

        async def crash() -> None:
            started.set()
            await asyncio.sleep(0.01)
            raise RuntimeError("writer broke")

        tasks.spawn(forever(), name="steady")
        tasks.spawn(crash(), name="crashy")
        await started.wait()
        with pytest.raises(RuntimeError, match="writer broke"):
            async with asyncio.timeout(2):
                await tasks.watch()
        assert len(tasks) == 1  # the steady one is still held
        await tasks.aclose()
        assert len(tasks) == 0

    async def test_aclose_cancels_awaits_and_ends_watch_cleanly(self) -> None:
        tasks = TaskSet("test")
        cancelled = asyncio.Event()

        async def cleanup_on_cancel() -> None:
            try:
                await forever()
            finally:
                cancelled.set()

        task = tasks.spawn(cleanup_on_cancel(), name="held")
        watcher = asyncio.create_task(tasks.watch(), name="test-watch")
        await asyncio.sleep(0)
        await tasks.aclose()
        assert task.cancelled() and cancelled.is_set()
        async with asyncio.timeout(2):
            await watcher  # returns, no error
        await tasks.aclose()  # idempotent

    async def test_tasks_that_finish_are_let_go(self) -> None:
        tasks = TaskSet("test")
        done = tasks.spawn(asyncio.sleep(0), name="short")
        await done
        await asyncio.sleep(0)
        assert len(tasks) == 0
        await tasks.aclose()

    async def test_a_watch_cancelled_from_outside_leaves_the_tasks_alone(self) -> None:
        tasks = TaskSet("test")
        held = tasks.spawn(forever(), name="held")
        watcher = asyncio.create_task(tasks.watch(), name="test-watch")
        await asyncio.sleep(0)
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
        assert not held.done()
        await tasks.aclose()


class TestSupervise:
    async def test_a_crashing_service_ends_the_block_with_its_error(self) -> None:
        async def crash() -> None:
            await asyncio.sleep(0.01)
            raise ChatmoodError("classifier gone")

        with pytest.raises(ChatmoodError, match="classifier gone"):
            async with supervise({"steady": forever(), "crashy": crash()}):
                await forever()

    async def test_leaving_the_block_cancels_every_service(self) -> None:
        seen: list[str] = []

        async def service(name: str) -> None:
            try:
                await forever()
            finally:
                seen.append(name)

        async with supervise({"a": service("a"), "b": service("b")}):
            await asyncio.sleep(0.01)
        assert sorted(seen) == ["a", "b"]

    async def test_an_owned_task_crash_stops_the_services_at_once(self) -> None:
        """The shape the programs use: an owner's watch() among the services."""
        owner = TaskSet("owner")

        async def crash() -> None:
            await asyncio.sleep(0.01)
            raise RuntimeError("flusher died")

        owner.spawn(crash(), name="flusher")
        with pytest.raises(BaseExceptionGroup) as info:
            async with asyncio.timeout(2), supervise({"owner": owner.watch(), "steady": forever()}):
                await forever()
        assert info.group_contains(RuntimeError, match="flusher died")
        await owner.aclose()


class TestGracefulClose:
    async def test_a_task_asked_to_end_finishes_its_step_instead_of_being_cancelled(self) -> None:
        tasks = TaskSet("test")
        stop = asyncio.Event()
        finished: list[str] = []

        async def flusher() -> None:
            await stop.wait()
            await asyncio.sleep(0.05)  # the step in progress (a database write)
            finished.append("step done")

        task = tasks.spawn(flusher(), name="flusher")
        stop.set()
        await tasks.aclose(grace_s=2.0)
        assert finished == ["step done"] and not task.cancelled()

    async def test_a_task_that_lingers_past_the_grace_is_cancelled(self) -> None:
        tasks = TaskSet("test")
        task = tasks.spawn(forever(), name="stuck")
        async with asyncio.timeout(2):
            await tasks.aclose(grace_s=0.05)
        assert task.cancelled()
