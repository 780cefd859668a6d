""":class:`ClassifierService` sits between ingest and the classifier: ``offer()`` never blocks (a bounded buffer,
reservoir sampling when chat outpaces the model, skipped messages counted per channel); ``run()`` classifies in
batches off the event loop, one call at a time, with an LRU cache of verdicts keyed by normalised text.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

import structlog

from bot.classify.classifier import Classifier, Reloadable
from bot.classify.text import normalise
from bot.config import Config
from bot.domain import ChatLine, Verdict

log = structlog.get_logger(__name__)


class VerdictCache:
    """A bounded LRU of verdicts by normalised text, emptied when the classifier's version changes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, Verdict] = OrderedDict()
        self._version = ""
        self.hits = 0
        self.misses = 0

    def check_version(self, version: str) -> None:
        if version != self._version:
            self._data.clear()
            self._version = version

    def get(self, key: str) -> Verdict | None:
        v = self._data.get(key)
        if v is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return v

    def put(self, key: str, verdict: Verdict) -> None:
        if self.size <= 0:
            return
        self._data[key] = verdict
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


def _lookup(cache: VerdictCache, texts: Sequence[str]) -> tuple[list[str], dict[str, Verdict], list[str]]:
    """(normalised keys, cached verdicts by key, distinct keys to classify)."""
    keys = [normalise(t) for t in texts]
    found: dict[str, Verdict] = {}
    for k in keys:
        if k not in found:
            v = cache.get(k)
            if v is not None:
                found[k] = v
    return keys, found, [k for k in dict.fromkeys(keys) if k not in found]


def _fill(cache: VerdictCache, found: dict[str, Verdict], misses: list[str], fresh: list[Verdict]) -> None:
    for k, v in zip(misses, fresh, strict=True):
        found[k] = v
        cache.put(k, v)


def classify_cached(classifier: Classifier, cache: VerdictCache, texts: Sequence[str]) -> list[Verdict]:
    """Classify with the cache: each distinct normalised text not cached is classified once, in one batch."""
    cache.check_version(classifier.version)
    keys, found, misses = _lookup(cache, texts)
    if misses:
        _fill(cache, found, misses, classifier.classify(misses))
    return [found[k] for k in keys]


OnVerdicts = Callable[[list[tuple[ChatLine, Verdict]]], Awaitable[None] | None]


class ClassifierService:
    """Bounded, sampling, batching front of a classifier. ``run()`` is owned by the app's TaskGroup."""

    def __init__(
        self,
        classifier: Classifier,
        cfg: Config,
        on_verdicts: OnVerdicts,
        rng: random.Random | None = None,
        *,
        on_skipped: Callable[[str, int], None] | None = None,
        reload_every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.classifier = classifier
        self._on_verdicts = on_verdicts
        self._on_skipped = on_skipped
        self._rng = rng or random.Random()
        self._capacity = cfg.classifier.queue_size
        self._batch_size = cfg.classifier.batch_size
        self.cache = VerdictCache(cfg.classifier.cache_size)
        self._buffer: list[tuple[int, ChatLine]] = []
        self._inflight: list[tuple[int, ChatLine]] = []
        self._overflow = 0  # offers since the buffer was last full-and-taken from, beyond its capacity
        self._seq = 0
        self._skipped: dict[str, int] = {}
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self._reload_every_s = reload_every_s
        self._clock = clock
        self._last_reload = clock()
        self.classified = 0
        self.failed = 0

    @property
    def version(self) -> str:
        return self.classifier.version

    @property
    def pending(self) -> int:
        return len(self._buffer) + len(self._inflight)

    def skipped(self, channel: str | None = None) -> int:
        """Messages not classified because chat outpaced the model (one channel, or all)."""
        if channel is None:
            return sum(self._skipped.values())
        return self._skipped.get(channel, 0)

    def _skip(self, line: ChatLine) -> None:
        self._skipped[line.channel] = self._skipped.get(line.channel, 0) + 1
        if self._on_skipped is not None:
            self._on_skipped(line.channel, 1)

    def offer(self, line: ChatLine) -> None:
        """Queue a message for classification; never blocks. When the buffer is full, reservoir sampling keeps
        a uniform sample of the messages offered since it filled, and the one left out is counted as skipped."""
        self._seq += 1
        item = (self._seq, line)
        if len(self._buffer) < self._capacity:
            self._buffer.append(item)
        else:
            self._overflow += 1
            j = self._rng.randrange(self._capacity + self._overflow)
            if j < self._capacity:
                self._skip(self._buffer[j][1])
                self._buffer[j] = item
            else:
                self._skip(line)
        self._wakeup.set()

    def _oldest_pending(self) -> float:
        seqs = [s for s, _ in self._buffer] + [s for s, _ in self._inflight]
        return min(seqs) if seqs else float("inf")

    async def drain(self) -> None:
        """Wait until every message offered so far has been classified or skipped (needs ``run()`` running)."""
        target = self._seq
        while self._oldest_pending() <= target:
            await self._progress.wait()

    def _signal_progress(self) -> None:
        ev, self._progress = self._progress, asyncio.Event()
        ev.set()

    async def run(self) -> None:
        """The worker: take a batch, classify the cache misses off the loop, hand the verdicts on. Forever."""
        while True:
            try:
                async with asyncio.timeout(self._reload_every_s):
                    await self._wakeup.wait()
            except TimeoutError:  # idle: still look for a newer head
                await self._maybe_reload()
                continue
            if not self._buffer:
                self._wakeup.clear()
                continue
            self._inflight = self._buffer[: self._batch_size]
            del self._buffer[: self._batch_size]
            self._overflow = 0
            try:
                await self._process([line for _, line in self._inflight])
            finally:
                self._inflight = []
                self._signal_progress()
            await self._maybe_reload()

    async def _process(self, lines: list[ChatLine]) -> None:
        try:
            verdicts = await self._classify([line.text for line in lines])
            pairs = list(zip(lines, verdicts, strict=True))
        except asyncio.CancelledError:
            raise
        except Exception:
            if len(lines) == 1:
                self.failed += 1
                log.exception("classify_failed", messages=1, message_id=lines[0].message_id)
                return
            # One odd message must not cost its neighbours their verdicts: find it by classifying one at a time.
            log.warning("classify_batch_failed", messages=len(lines), retry="one at a time", exc_info=True)
            pairs = await self._one_by_one(lines)
        if not pairs:
            return
        self.classified += len(pairs)
        try:
            result = self._on_verdicts(pairs)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("on_verdicts_failed", messages=len(lines))

    async def _one_by_one(self, lines: list[ChatLine]) -> list[tuple[ChatLine, Verdict]]:
        pairs: list[tuple[ChatLine, Verdict]] = []
        for line in lines:
            try:
                pairs.append((line, (await self._classify([line.text]))[0]))
            except asyncio.CancelledError:
                raise
            except Exception:  # this message alone goes without a verdict (logged with its id)
                self.failed += 1
                log.exception("classify_failed", messages=1, message_id=line.message_id)
        return pairs

    async def _classify(self, texts: list[str]) -> list[Verdict]:
        self.cache.check_version(self.classifier.version)
        keys, found, misses = _lookup(self.cache, texts)
        if misses:
            _fill(self.cache, found, misses, await asyncio.to_thread(self.classifier.classify, misses))
        return [found[k] for k in keys]

    async def _maybe_reload(self) -> None:
        now = self._clock()
        if now - self._last_reload < self._reload_every_s or not isinstance(self.classifier, Reloadable):
            return
        self._last_reload = now
        try:
            if await asyncio.to_thread(self.classifier.maybe_reload):
                self.cache.check_version(self.classifier.version)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("head_reload_failed")

    async def reload_now(self) -> bool:
        """Check for a newer head at once (the worker also checks every ``reload_every_s`` while busy)."""
        if not isinstance(self.classifier, Reloadable):
            return False
        return await asyncio.to_thread(self.classifier.maybe_reload)
