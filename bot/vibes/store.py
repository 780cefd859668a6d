"""Channel profiles in MongoDB, brought up to date incrementally from the stored messages.

:meth:`ProfileStore.refresh` continues each stored profile where its last refresh stopped: one pass over the
messages stored since (``seq`` above the profile's cursor, the newest ``seq`` it folded in) and the verdicts
written since (``classified_at`` above its verdict cursor), in a single query for every channel. Writes do not
land in ``seq`` order (a writer batches; another process may write at the same time), so each pass reads
``vibes.lookback_s`` before the cursors again and skips the ids it remembers folding in there: a message or a
verdict that reaches the database up to that late is counted, and counted once. Then only the texts that entered
or left a channel's sample are embedded.

Cost on FerretDB v1: every filter but ``_id`` reads the whole ``messages`` collection (~55 us a document, so
~5.5 s per 100,000 stored messages, whatever the filter), once per refresh for all channels together; MongoDB
reads what the filter selects (its ``channel``/``sent_at`` index does not cover ``seq``, so it too scans, but
only once). :meth:`ProfileStore.window` builds profiles of a time window from scratch (one such pass, plus
embedding every channel's sample) and stores nothing.

Not seen by an incremental refresh: messages that reach the database later than ``lookback_s`` (those replayed
from the disk spool after a long outage) and verdicts changed after being written. ``chatmood vibes --rebuild``
builds the profiles again from everything stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from beanie import init_beanie

from bot.config import Config
from bot.storage.documents import Doc
from bot.storage.store import Storage
from bot.vibes.documents import ChannelProfileDoc
from bot.vibes.embedder import ChatEmbedder
from bot.vibes.profile import Profile

log = structlog.get_logger(__name__)

REFRESH_ONLY = ("recent_keys", "recent_seqs", "verdict_keys", "verdict_micros")
FIELDS = ("channel", "text", "sent_at", "seq", "label", "probs", "classified_at", "emote_begins", "emote_ends")


@dataclass(frozen=True, slots=True)
class RefreshReport:
    channels: int  # profiles written (new, or with something new folded in)
    messages: int  # messages folded in
    verdicts: int  # verdicts folded in
    embedded: int  # texts embedded
    seconds: float


def _spans(doc: Doc) -> list[tuple[int, int]]:
    return list(zip(doc.get("emote_begins") or (), doc.get("emote_ends") or (), strict=False))


class ProfileStore:
    def __init__(self, storage: Storage, cfg: Config, embedder: ChatEmbedder, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._storage = storage
        self._categories = cfg.category_names
        self._valence = {c.name: c.valence for c in cfg.categories}
        self._vibes = cfg.vibes
        self._embedder = embedder
        self._clock = clock
        self._ready = False
        self._lock = asyncio.Lock()  # one refresh at a time (the service and a CLI or web request)
        self.version = 0  # counts the refreshes that wrote something (for caches of loaded profiles)

    def _db(self, what: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Bound a profile read or write by ``vibes.refresh_timeout_s``; PyMongo's errors as StorageError."""
        return self._storage.query(f"vibes: {what}", timeout_s=self._vibes.refresh_timeout_s)

    async def ensure_ready(self) -> None:
        """Bind the profile document to storage's database (Beanie), once."""
        if not self._ready:
            await self._storage.ensure_ready()
            async with self._db("binding channel_profiles"):
                await init_beanie(database=self._storage.db, document_models=[ChannelProfileDoc], skip_indexes=True)
            self._ready = True

    def _new(self, channel: str) -> Profile:
        return Profile(channel, self._categories, sample_size=self._vibes.sample_size)

    async def _docs(self, channels: Iterable[str] | None, *, light: bool = False) -> list[ChannelProfileDoc]:
        await self.ensure_ready()
        query: Doc = {} if channels is None else {"_id": {"$in": sorted(set(channels))}}
        projection = dict.fromkeys(REFRESH_ONLY, 0) if light else None
        coll = ChannelProfileDoc.get_pymongo_collection()
        async with self._db("loading profiles"):
            docs = [ChannelProfileDoc.model_validate(d) async for d in coll.find(query, projection)]
        return sorted(docs, key=lambda d: d.channel)

    async def load(self, channels: Iterable[str] | None = None, *, for_ranking: bool = False) -> list[Profile]:
        """The stored profiles (of ``channels``, or all), by channel name. ``for_ranking`` leaves out what only
        a refresh needs (the remembered ids): such a profile must not be refreshed or saved."""
        return [d.to_profile() for d in await self._docs(channels, light=for_ranking)]

    async def refresh(self, channels: Iterable[str] | None = None, *, rebuild: bool = False) -> RefreshReport:
        """Bring the profiles of ``channels`` (default: every channel with stored messages) up to date."""
        async with self._lock:
            return await self._refresh(None if channels is None else sorted(set(channels)), rebuild)

    async def _refresh(self, channels: list[str] | None, rebuild: bool) -> RefreshReport:
        started = time.perf_counter()
        await self.ensure_ready()
        back_ns = int(self._vibes.lookback_s * 1e9)
        back = timedelta(seconds=self._vibes.lookback_s)
        limit = self._vibes.refresh_timeout_s
        wanted = channels if channels is not None else sorted(await self._storage.message_channels(timeout_s=limit))
        stored = {} if rebuild else {d.channel: d for d in await self._docs(wanted)}
        profiles: dict[str, Profile] = {}
        for ch in wanted:
            doc = stored.get(ch)
            p = doc.to_profile() if doc is not None else self._new(ch)
            if p.categories != self._categories or p.sample_size != self._vibes.sample_size:
                p = self._new(ch)  # its numbers mean something else now: build it again
            elif doc is not None and doc.embedding_model != self._embedder.name:
                p.forget_embedding()
            profiles[ch] = p
        # What each profile reads again (Profile.remember_recent); everything for a new profile.
        seq_from = {ch: (p.reread_seq if p.messages else None) for ch, p in profiles.items()}
        at_from = {ch: (p.reread_at if p.verdicts_through else None) for ch, p in profiles.items()}
        messages = verdicts = 0
        changed = {ch for ch, p in profiles.items() if ch not in stored or not p.embedded}
        if profiles:
            starts = list(seq_from.values())
            low_seq = None if None in starts else min(s for s in starts if s is not None)
            ats = list(at_from.values())
            low_at = None if None in ats else min(a for a in ats if a is not None)
            new_messages: Doc = {} if low_seq is None else {"seq": {"$gte": low_seq}}
            new_verdicts: Doc = {"label": {"$ne": None}}
            if low_at is not None:
                new_verdicts["classified_at"] = {"$gte": low_at}
            query: Doc = {"$or": [new_messages, new_verdicts]} if new_messages else {}
            if channels is not None:
                query["channel"] = {"$in": wanted}
            async for row in self._storage.scan_messages(query, FIELDS, timeout_s=limit):
                target = profiles.get(row.get("channel", ""))
                if target is None:
                    continue  # a channel that got its first message after the list was made: next time
                mid = str(row["_id"])
                seq = int(row.get("seq") or 0)
                start = seq_from[target.channel]
                if (start is None or seq >= start) and target.add_message(
                        str(row.get("text") or ""), row["sent_at"], message_id=mid, seq=seq,
                        label=row.get("label"), spans=_spans(row)):
                    messages += 1
                    changed.add(target.channel)
                at = row.get("classified_at")
                since = at_from[target.channel]
                if row.get("label") and at is not None and (since is None or at >= since) and target.add_verdict(
                        str(row["label"]), row.get("probs"), self._valence, at, message_id=mid):
                    verdicts += 1
                    changed.add(target.channel)
        for p in profiles.values():
            p.end_pass()
            p.remember_recent(back_ns, back)
        embedded = await self._embed(profiles.values())
        # Only what changed is written: on FerretDB v1 each replace by _id scans the profiles collection.
        await self._save(profiles[ch] for ch in sorted(changed))
        report = RefreshReport(len(changed), messages, verdicts, embedded, time.perf_counter() - started)
        log.info("vibes_profiles_refreshed", channels=report.channels, messages=messages, verdicts=verdicts,
                 embedded=embedded, seconds=round(report.seconds, 3))
        return report

    async def _embed(self, profiles: Iterable[Profile]) -> int:
        """Embed what entered and left each sample (each distinct text once) and move the sums."""
        changes = [(p, *p.sample_changes()) for p in profiles]
        texts = sorted({t for _, entered, left in changes for _, t in (*entered, *left)})
        if not texts:
            return 0
        vectors = await self._embedder.embed(texts)
        row = {t: i for i, t in enumerate(texts)}
        for p, entered, left in changes:
            p.apply_embeddings([h for h, _ in entered], vectors[[row[t] for _, t in entered]],
                               [h for h, _ in left], vectors[[row[t] for _, t in left]])
        return len(texts)

    async def _save(self, profiles: Iterable[Profile]) -> None:
        at = datetime.fromtimestamp(self._clock(), UTC)
        coll = ChannelProfileDoc.get_pymongo_collection()
        wrote = False
        for p in profiles:
            doc = ChannelProfileDoc.from_profile(p, model=self._embedder.name, at=at)
            async with self._db(f"saving the profile of {p.channel}"):
                await coll.replace_one({"_id": p.channel}, doc.model_dump(by_alias=True, exclude={"revision_id"}),
                                       upsert=True)
            wrote = True
        if wrote:
            self.version += 1

    async def window(self, since: datetime, channels: Iterable[str] | None = None) -> list[Profile]:
        """Profiles of the messages sent since ``since``, built now from scratch (stored nowhere)."""
        await self.ensure_ready()
        query: Doc = {"sent_at": {"$gte": since}}
        if channels is not None:
            query["channel"] = {"$in": sorted(set(channels))}
        profiles: dict[str, Profile] = {}
        async for doc in self._storage.scan_messages(query, FIELDS, timeout_s=self._vibes.refresh_timeout_s):
            ch = str(doc.get("channel") or "")
            p = profiles.get(ch)
            if p is None:
                p = profiles[ch] = self._new(ch)
            p.add_message(str(doc.get("text") or ""), doc["sent_at"], label=doc.get("label"), spans=_spans(doc))
            if doc.get("label"):
                p.add_verdict(str(doc["label"]), doc.get("probs"), self._valence)
        for p in profiles.values():
            p.end_pass()
        await self._embed(profiles.values())
        return sorted(profiles.values(), key=lambda p: p.channel)
