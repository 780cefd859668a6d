"""bot.pipeline: the message path end to end on a real FerretDB and the cold-start classifier:
messages are stored with their verdicts, the mood reaches the hub, commands are answered through the outbox."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.config import Config, StorageConfig, parse_config
from bot.domain import percent
from bot.outbox import Outgoing
from bot.pipeline import open_pipeline, spool_note
from bot.storage.batch import WriterStats
from bot.storage.documents import MessageDoc
from bot.tasks import supervise
from tests.fakes.chat import chat_line


def config(storage_config: StorageConfig, tmp_path: Path) -> Config:
    cfg = parse_config({"mood": {"half_life_s": 60.0}}, {})
    storage = storage_config.model_copy(update={"spool_dir": tmp_path / "spool"})
    return cfg.model_copy(update={"storage": storage})


class TestPipeline:
    async def test_chat_is_stored_classified_moody_and_answered(self, storage_config: StorageConfig,
                                                                tmp_path: Path) -> None:
        async with open_pipeline(config(storage_config, tmp_path)) as p:
            replies: list[Outgoing] = []
            async with p.mood.hub.subscribe("chan") as overlay, supervise(
                {**p.services(), "outbox": p.outbox.drain(replies.append)}
            ):
                hype = [chat_line(text, f"fan{i}") for i, text in enumerate(["LETS GOOOO", "POGGERS", "W W W"] * 5)]
                for line in hype:
                    assert p.ingest.submit(line)
                await p.classifier.drain()  # the mood has seen the hype before anyone asks
                ask = chat_line("!mood", "curious")
                p.ingest.submit(ask)
                p.ingest.submit(hype[0])  # a redelivery changes nothing
                await p.settle(["chan"])
                published = await asyncio.wait_for(overlay.get(), 5)

            docs = await MessageDoc.find(MessageDoc.channel == "chan").to_list()
            assert len(docs) == len(hype) + 1
            classified = [d for d in docs if d.label is not None]
            assert len(classified) == len(hype)  # the command is stored, not classified
            assert published is not None and published.label == "hype"
            assert [(r.channel, r.reply_to) for r in replies] == [("chan", ask.message_id)]
            assert replies[0].text.startswith("chat mood: hype")
            assert p.summary(["chan"])[0] == f"stored: {len(hype) + 1} new, 0 already stored"


    async def test_the_summary_names_a_clear_lean(self, storage_config: StorageConfig, tmp_path: Path) -> None:
        """A mostly calm chat with a hype streak: the label is neutral but the colour is orange, and the summary says
        why (as !mood does)."""
        async with open_pipeline(config(storage_config, tmp_path)) as p, supervise(p.services()):
            calm = ["what game is this", "hello chat", "how long is the stream today", "ok", "brb", "is this ranked"]
            lines = [chat_line(t, f"v{i}") for i, t in enumerate(calm * 5)]
            lines += [chat_line(t, f"fan{i}") for i, t in enumerate(["LETS GOOOO", "POGGERS", "W W W"] * 5)]
            for line in lines:
                assert p.ingest.submit(line)
            await p.settle(["chan"])
            state = p.mood.state("chan")
            assert state.label == "neutral" and state.lean == "hype" and state.strength >= 0.5, state
            assert f"mood #chan: neutral {percent(state.share)}%, {state.leaning()}, valence" in p.summary(["chan"])[1]


class TestSummary:
    def test_says_why_messages_wait_in_the_spool(self) -> None:
        """The summary tells an unreachable database from one that is only too slow (a hung or busy server)."""
        cfg = parse_config({}, {})
        assert spool_note(WriterStats(spool_pending=0), cfg) == ""
        down = spool_note(WriterStats(spool_pending=12, last_failure="unreachable"), cfg)
        assert down == ", 12 waiting in the spool (the database is unreachable; the next start writes them back)"
        slow = spool_note(WriterStats(spool_pending=3, last_failure="timeout"), cfg)
        assert "did not answer within 2000 ms" in slow and "unreachable" not in slow
