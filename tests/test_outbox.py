"""bot.outbox: what chatmood wants to say is queued, never blocks its producer, and one task sends it."""

from __future__ import annotations

import asyncio

from bot.outbox import Outbox, Outgoing


class TestOutbox:
    async def test_drain_sends_in_order_and_survives_a_failed_send(self) -> None:
        box = Outbox()
        sent: list[str] = []
        both = asyncio.Event()

        async def send(message: Outgoing) -> None:
            if message.text == "boom":
                raise RuntimeError("helix said no")
            sent.append(message.text)
            if len(sent) == 2:
                both.set()

        await box.post("chan", "one", "m1")
        box.put(Outgoing("chan", "boom"))
        box.put(Outgoing("chan", "two", sender="persona"))
        drainer = asyncio.create_task(box.drain(send), name="test-drain")
        try:
            async with asyncio.timeout(2):
                await both.wait()
        finally:
            drainer.cancel()
            await asyncio.gather(drainer, return_exceptions=True)
        assert sent == ["one", "two"]

    def test_a_full_outbox_drops_and_counts(self) -> None:
        box = Outbox(maxsize=1)
        assert box.put(Outgoing("chan", "a"))
        assert not box.put(Outgoing("chan", "b"))
        assert box.dropped == 1 and len(box) == 1
