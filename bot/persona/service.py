""":class:`PersonaService`: the personas on the message path.

Ingest ``offer``\\s every chat line that is not a command (a plain call that never waits): the service keeps
each persona channel's recent lines, asks the :class:`~bot.persona.decide.Coordinator` who answers, and queues a
job. ``run()`` (a service task) takes one job at a time: it writes the reply with the persona's model on a worker
thread (:class:`~bot.llm.chat.ChatGenerator`, one per model file and thread count, shared by the personas that
use it), cleans it and posts it to the :class:`~bot.outbox.Outbox` as the persona's bot, which sends it through
that account's rate limiter. ``watch_mood()`` (a service task) posts a moderator persona's calming line when
the angry share stays high. ``channel_live`` sends intros.

Time budget: a job's deadline is the message's arrival plus ``reply_timeout_s``. A job still queued at its
deadline is dropped unwritten; generation stops at the deadline (checked between tokens, since a thread cannot
be cancelled) and a late reply is dropped. Every drop is logged (``persona_reply_dropped`` with a reason) and
counted.

Models: the persona's ``model``, then its ``fallback_models`` in order; one that fails to load or errors while
generating is skipped from then on (until a reload names it again). They load off the loop when ``run()``
starts, after a reload, or at first use; :meth:`aclose` frees them (waiting for a generation in progress).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog

from bot.config import BotConfig, Config
from bot.domain import ChatLine, MoodState
from bot.errors import ModelError
from bot.llm.chat import ChatGenerator, Generated
from bot.llm.registry import resolve_model
from bot.outbox import Outbox, Outgoing
from bot.persona.clean import clean_reply
from bot.persona.decide import Coordinator
from bot.persona.prompt import EXAMPLE_QUESTION, Kind, build_messages, mood_in_words

log = structlog.get_logger(__name__)

WINDOW = 50  # recent lines kept per channel (context_messages is at most 50)
ANGRY = "angry"
N_CTX = 2048
ATTEMPTS = 3  # samples of one reply, when one only echoes the prompt or cleans to nothing
RESAMPLE = ("echo", "empty")


class MoodSource(Protocol):
    """The channel's current mood (:class:`~bot.mood.publisher.MoodPublisher`)."""

    def state(self, channel: str) -> MoodState: ...


@dataclass(frozen=True, slots=True)
class Job:
    bot: str
    kind: Kind
    channel: str
    deadline: float  # on the service's clock
    line: ChatLine | None = None
    history: tuple[ChatLine, ...] = ()


@dataclass(frozen=True, slots=True)
class Written:
    """A reply written for a job: its text, or why there is none; the model and its figures when one ran."""

    text: str | None
    reason: str | None = None
    model: str | None = None
    result: Generated | None = None
    mood: str = ""
    error: str | None = None

    def fields(self) -> dict[str, Any]:
        """For the log line."""
        out: dict[str, Any] = {"model": self.model}
        if self.result is not None:
            out |= {"tokens": self.result.tokens, "seconds": round(self.result.seconds, 3),
                    "stopped": self.result.stopped}
            if self.text is None:
                out["raw"] = self.result.text[:200]
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class PersonaStats:
    replies: int = 0  # handed to the outbox
    dropped: int = 0
    last_reply_at: datetime | None = None
    last_drop: str | None = None
    last_tokens_per_s: float | None = None
    tokens: int = 0  # written, sent or not
    writing_s: float = 0.0  # spent writing them


@dataclass
class _Model:
    """A loaded chat model, or why it cannot be used."""

    generator: ChatGenerator | None = None
    error: str | None = None


@dataclass
class _Watch:
    angry_since: float | None = None
    calmed_at: float | None = None


def personas_of(cfg: Config) -> list[BotConfig]:
    return [b for b in cfg.bots if b.persona is not None]


class PersonaService:
    def __init__(
        self,
        cfg: Config,
        mood: MoodSource,
        outbox: Outbox,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        queue_size: int = 32,
        watch_every_s: float = 1.0,
    ) -> None:
        self._mood = mood
        self._outbox = outbox
        self._clock = clock
        self._rng = rng or random.Random()
        self._queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=queue_size)
        self._watch_every_s = watch_every_s
        self._coordinator = Coordinator((), frozenset(), clock=clock, rng=self._rng)
        self._history: dict[str, deque[ChatLine]] = {}
        self._models: dict[tuple[str, int], _Model] = {}
        self._live: set[str] = set()
        self._watches: dict[tuple[str, str], _Watch] = {}
        self.stats: dict[str, PersonaStats] = {}
        self._bots: dict[str, BotConfig] = {}
        self._models_dir = Path("models")
        self._working = False
        self._loading = asyncio.Lock()
        self.update(cfg)

    # --- config -----------------------------------------------------------------------------------

    def update(self, cfg: Config) -> None:
        """Apply a (re)loaded config: personas, prompts, models (loaded by the worker), cooldowns kept."""
        old = self._bots
        self._bots = {b.name: b for b in personas_of(cfg)}
        self._models_dir = cfg.resolve(cfg.classifier.models_dir)
        self._coordinator.update(tuple(self._bots.values()), cfg.bot_accounts)
        channels = {ch for b in self._bots.values() for ch in b.channels}
        for ch in list(self._history):
            if ch not in channels:
                del self._history[ch]
        for ch in channels:
            self._history.setdefault(ch, deque(maxlen=WINDOW))
        for name in self._bots:
            self.stats.setdefault(name, PersonaStats())
        for name in set(self.stats) - set(self._bots):
            del self.stats[name]
        if old and old != self._bots:
            # forget models that failed, so a reload that names them again tries them again
            for key in [k for k, m in self._models.items() if m.generator is None]:
                del self._models[key]
            self._queue_nowait(None)  # the worker preloads the new models and frees unused ones

    @property
    def personas(self) -> tuple[BotConfig, ...]:
        return tuple(self._bots.values())

    # --- the message path -------------------------------------------------------------------------

    def offer(self, line: ChatLine) -> None:
        """A chat line (never a command). Never waits; queues at most one job."""
        window = self._history.get(line.channel)
        if window is None:
            return
        pick = self._coordinator.pick(line)
        if pick is not None:
            bot = self._bots[pick.bot]
            assert bot.persona is not None
            self._queue_job(Job(pick.bot, pick.kind, line.channel, self._clock() + bot.persona.reply_timeout_s,
                                line, tuple(window)))
        window.append(line)

    def channel_live(self, channel: str, live: bool) -> None:
        """A channel went live (each persona reading it says its intro, once per live period) or offline."""
        if not live:
            self._live.discard(channel)
            return
        if channel in self._live:
            return  # several bots read the channel: each reports it
        self._live.add(channel)
        for bot in self._bots.values():
            assert bot.persona is not None
            if channel in bot.channels and bot.persona.intro_message:
                self._post(bot, Outgoing(channel, bot.persona.intro_message, None, sender=bot.name), "intro")

    def _queue_nowait(self, job: Job | None) -> bool:
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            return False
        return True

    def _queue_job(self, job: Job) -> None:
        if not self._queue_nowait(job):
            self._drop(job, "busy")

    # --- the worker -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Service loop: load the models, then write one reply at a time."""
        await self.prepare()
        while True:
            job = await self._queue.get()
            self._working = True
            try:
                if job is None:
                    await self.prepare()
                else:
                    await self._handle(job)
            except asyncio.CancelledError:
                raise
            except Exception:  # one failed reply is logged and dropped; the personas keep going
                if job is None:
                    log.exception("persona_models_failed")
                else:
                    log.exception("persona_job_failed", bot=job.bot, channel=job.channel, kind=job.kind)
                    self._drop(job, "error")
            finally:
                self._working = False
                self._queue.task_done()

    async def _handle(self, job: Job) -> None:
        bot = self._bots.get(job.bot)
        if bot is None:
            return  # removed by a reload
        written = await self.write(job)
        if written.result is not None:
            stats = self.stats.setdefault(bot.name, PersonaStats())
            stats.tokens += written.result.tokens
            stats.writing_s += written.result.seconds
        if written.text is None:
            self._drop(job, written.reason or "empty", **written.fields())
            return
        reply_to = job.line.message_id if job.kind == "reply" and job.line is not None else None
        if self._post(bot, Outgoing(job.channel, written.text, reply_to, sender=bot.name), job.kind):
            assert written.result is not None
            self.stats[bot.name].last_tokens_per_s = round(written.result.tokens_per_s, 1)
            log.info("persona_replied", bot=bot.name, channel=job.channel, kind=job.kind, text=written.text,
                     message_id=job.line.message_id if job.line is not None else None, **written.fields())

    async def write(self, job: Job) -> Written:
        """Write ``job``'s reply with the persona's models (fallbacks in order) and clean it; nothing is sent.

        A sampled reply that only echoes the prompt or cleans to nothing is sampled again (up to
        :data:`ATTEMPTS` times, within the budget) unless the persona samples greedily (temperature 0)."""
        bot = self._bots.get(job.bot)
        if bot is None or bot.persona is None:
            return Written(None, "no_persona")
        if self._clock() >= job.deadline:
            return Written(None, "timeout")
        mood = mood_in_words(self._mood.state(job.channel))
        messages = build_messages(bot, job.kind, channel=job.channel, mood=mood, history=job.history, line=job.line)
        written = Written(None, "no_model", mood=mood)
        for attempt in range(ATTEMPTS):
            written = await self._sample(bot, job, messages, mood)
            if written.reason not in RESAMPLE or bot.persona.temperature == 0 or self._clock() >= job.deadline:
                break
            log.debug("persona_resample", bot=bot.name, reason=written.reason, attempt=attempt + 1)
        return written

    async def _sample(self, bot: BotConfig, job: Job, messages: list[dict[str, str]], mood: str) -> Written:
        """One reply through the model chain (the first usable model), cleaned."""
        persona = bot.persona
        assert persona is not None
        for name in persona.models:
            generator = await self._generator(name, persona.threads)
            if generator is None:
                continue
            try:
                result = await asyncio.to_thread(
                    generator.generate, messages, max_tokens=persona.max_tokens, temperature=persona.temperature,
                    deadline=job.deadline, clock=self._clock, seed=self._rng.randrange(2**31),
                )
            except ModelError as e:
                log.error("persona_model_failed", bot=job.bot, model=name, error=str(e))
                await self._forget(name, persona.threads, str(e))
                continue
            except ValueError as e:  # the prompt does not fit the model's context
                return Written(None, "prompt_too_long", model=generator.name, mood=mood, error=str(e))
            break
        else:
            return Written(None, "no_model", mood=mood)
        if result.stopped == "deadline" or self._clock() > job.deadline:
            return Written(None, "timeout", generator.name, result, mood)
        names = [*(ln.user_login for ln in job.history), *(ln.user_name for ln in job.history)]
        echoes = [EXAMPLE_QUESTION, *(ln.text for ln in job.history[-persona.context_messages:])]
        if job.line is not None:
            names += [job.line.user_login, job.line.user_name]
            echoes.insert(0, job.line.text)
        text, reason = clean_reply(
            result.text, own=[bot.account, bot.name], names=names, echoes=echoes, blocklist=persona.blocklist,
            cut_short=result.stopped == "length",
        )
        return Written(text, reason, generator.name, result, mood)

    def _post(self, bot: BotConfig, message: Outgoing, kind: str) -> bool:
        stats = self.stats.setdefault(bot.name, PersonaStats())
        if not self._outbox.put(message):
            stats.dropped += 1
            stats.last_drop = "outbox_full"
            return False
        stats.replies += 1
        stats.last_reply_at = datetime.now(UTC)
        if kind == "intro":
            log.info("persona_intro", bot=bot.name, channel=message.channel)
        return True

    def _drop(self, job: Job, reason: str, **fields: Any) -> None:
        stats = self.stats.setdefault(job.bot, PersonaStats())
        stats.dropped += 1
        stats.last_drop = reason
        log.warning("persona_reply_dropped", bot=job.bot, channel=job.channel, kind=job.kind, reason=reason,
                    message_id=job.line.message_id if job.line is not None else None, **fields)

    # --- models -----------------------------------------------------------------------------------

    def _wanted(self) -> set[tuple[str, int]]:
        return {(name, b.persona.threads) for b in self._bots.values() if b.persona for name in b.persona.models}

    async def prepare(self) -> None:
        """Load each persona's first usable model (off the loop); free the models no persona names any more."""
        wanted = self._wanted()
        for key in [k for k in self._models if k not in wanted]:
            model = self._models.pop(key)
            if model.generator is not None:
                await asyncio.to_thread(model.generator.close)
                log.info("persona_model_unloaded", model=key[0])
        for bot in self._bots.values():
            assert bot.persona is not None
            for name in bot.persona.models:
                if await self._generator(name, bot.persona.threads) is not None:
                    break
            else:
                log.error("persona_without_model", bot=bot.name, models=list(bot.persona.models))

    async def _generator(self, name: str, threads: int) -> ChatGenerator | None:
        async with self._loading:  # a model is loaded once, even when prepare() and the worker both ask for it
            model = self._models.get((name, threads))
            if model is None:
                model = await asyncio.to_thread(self._load, name, threads)
                self._models[(name, threads)] = model
        return model.generator

    def _load(self, name: str, threads: int) -> _Model:
        try:
            path = resolve_model(name, self._models_dir)
            generator = ChatGenerator(path, threads=threads, n_ctx=N_CTX)
        except ModelError as e:
            log.error("persona_model_unavailable", model=name, error=str(e))
            return _Model(error=str(e))
        return _Model(generator=generator)

    async def _forget(self, name: str, threads: int, error: str) -> None:
        model = self._models.get((name, threads))
        self._models[(name, threads)] = _Model(error=error)
        if model is not None and model.generator is not None:
            await asyncio.to_thread(model.generator.close)

    async def aclose(self) -> None:
        """Free every model (off the loop; waits for a generation still running on its thread)."""
        models, self._models = list(self._models.values()), {}
        for model in models:
            if model.generator is not None:
                await asyncio.to_thread(model.generator.close)

    # --- moderators -------------------------------------------------------------------------------

    async def watch_mood(self) -> None:
        """Service loop: a moderator persona calms a channel whose angry share stays high (see the config)."""
        while True:
            await asyncio.sleep(self._watch_every_s)
            self.check_mood()

    def check_mood(self) -> None:
        now = self._clock()
        for bot in self._bots.values():
            persona = bot.persona
            assert persona is not None
            if persona.role != "moderator":
                continue
            for channel in bot.channels:
                watch = self._watches.setdefault((bot.name, channel), _Watch())
                state = self._mood.state(channel)
                if state.messages == 0 or state.shares.get(ANGRY, 0.0) <= persona.angry_threshold:
                    watch.angry_since = None
                    continue
                if watch.angry_since is None:
                    watch.angry_since = now
                if now - watch.angry_since < persona.angry_for_s:
                    continue
                if watch.calmed_at is not None and now - watch.calmed_at < persona.calm_interval_s:
                    continue
                watch.calmed_at = now
                log.info("persona_calming", bot=bot.name, channel=channel,
                         angry_share=round(state.shares.get(ANGRY, 0.0), 3))
                self._queue_job(Job(bot.name, "calm", channel, now + persona.reply_timeout_s, None,
                                    tuple(self._history.get(channel, ()))))

    # --- health -----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Each persona for ``/healthz`` and the dashboard: its model, replies sent and dropped, the last reply."""
        out: dict[str, Any] = {}
        for bot in self._bots.values():
            persona = bot.persona
            assert persona is not None
            stats = self.stats.get(bot.name, PersonaStats())
            state: Literal["loading", "ready", "failed"] = "failed"
            model: str | None = None
            for name in persona.models:
                loaded = self._models.get((name, persona.threads))
                if loaded is None:
                    state = "loading"
                    break
                if loaded.generator is not None:
                    state, model = "ready", loaded.generator.name
                    break
            out[bot.name] = {
                "ok": state != "failed",
                "account": bot.account,
                "role": persona.role,
                "channels": list(bot.channels),
                "state": state,
                "model": model,
                "model_loaded": state == "ready",
                "replies_sent": stats.replies,
                "replies_dropped": stats.dropped,
                "last_reply_at": stats.last_reply_at.isoformat() if stats.last_reply_at else None,
                "last_drop_reason": stats.last_drop,
                "last_tokens_per_s": stats.last_tokens_per_s,
                "pending": self.pending,
                "system_prompt": " ".join(persona.system_prompt.split())[:80],
            }
        return out

    @property
    def pending(self) -> int:
        """Jobs queued or being written (all personas share the one worker)."""
        return self._queue.qsize() + (1 if self._working else 0)

    async def join(self) -> None:
        """Wait until every job queued so far is done (needs ``run()`` running)."""
        await self._queue.join()
