"""A channel's mood: classifier verdicts smoothed into weights that fade with a half-life.

Pure: no I/O, no tasks; time comes from an injected ``clock`` (seconds since the epoch).

The model, per channel:

* Every verdict adds ``confidence * probs`` to the category weights: the full probability vector, scaled by the
  classifier's confidence. The vector keeps what a one-hot label throws away (a message the head finds half
  ``hype`` and half ``funny`` counts for both), and the confidence factor lets a message the head is unsure of
  move the mood less than a clear one. Either way one message adds at most ``1.0`` of weight in total.
* Weights decay exponentially, ``w *= 0.5 ** (dt / half_life)``, lazily when the channel is next touched.
* A constant (never decaying) ``neutral_prior`` of weight sits on ``neutral``. Idle chat therefore drifts back to
  neutral as the message weights fade, and a single message (at most ``1.0``) can never outweigh an established
  mood: from idle it needs more than ``neutral_prior`` of weight, after a hype phase it needs more than the hype
  weight. A single message can only decide the dominant label when chat was already split within one
  message's weight; with ``neutral_prior >= 1`` it never turns an idle chat into a mood.
* Shares are the weights (plus the prior) over their sum; the valence is ``sum(share * category.valence)``
  (so within [-1, 1]). The colour follows :func:`bot.mood.colour.mood_colour`: the hue of the strongest
  non-neutral mood (mixed with a second strong one), moved away from the neutral colour as far as that mood
  stands above neutral. A share-weighted blend of every category looked muddy: 55% neutral, 25% hype and
  10% love was a mauve grey nobody could read as hype.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypedDict

import structlog

from bot.config import Category
from bot.domain import MoodState, Verdict
from bot.mood.colour import mood_colour

log = structlog.get_logger(__name__)

NEUTRAL = "neutral"
_TINY = 1e-12  # weights below this are zeroed so long idle periods leave no denormal dust

class SnapshotFields(TypedDict):
    """One row for the ``mood_snapshots`` timeline: the fields of storage's ``MoodSnapshotDoc`` (less its id)."""

    channel: str
    bucket: datetime  # when the snapshot was taken (UTC)
    counts: dict[str, int]  # classified messages per category within the interval since the previous snapshot
    label: str
    share: float
    valence: float
    colour: str
    shares: dict[str, float]  # smoothed shares at ``bucket``
    messages: int  # classified messages since the last reset (as in MoodState)
    skipped: int  # skipped messages since the last reset (as in MoodState)


@dataclass(slots=True)
class _Channel:
    weights: dict[str, float]
    ref: float  # the instant ``weights`` are decayed to
    messages: int = 0
    skipped: int = 0
    first_at: float | None = None
    last_at: float | None = None
    interval_counts: dict[str, int] = field(default_factory=dict)


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


class MoodTracker:
    """Per-channel smoothed mood. See the module docstring for the model."""

    def __init__(
        self,
        categories: Sequence[Category],
        half_life_s: float,
        neutral_prior: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._channels: dict[str, _Channel] = {}
        self._categories: tuple[Category, ...] = ()
        self._half_life = 1.0
        self._prior = 0.0
        self._set_config(categories, half_life_s, neutral_prior)

    # -- configuration

    def _set_config(self, categories: Sequence[Category], half_life_s: float, neutral_prior: float) -> None:
        names = [c.name for c in categories]
        if NEUTRAL not in names:
            raise ValueError(f"a category named {NEUTRAL!r} is required, got {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"category names must be unique, got {names}")
        if not (math.isfinite(half_life_s) and half_life_s > 0):
            raise ValueError(f"half_life_s must be a positive number, got {half_life_s!r}")
        if not (math.isfinite(neutral_prior) and neutral_prior >= 0):
            raise ValueError(f"neutral_prior must be >= 0, got {neutral_prior!r}")
        self._categories = tuple(categories)
        self._colours = {c.name: c.colour for c in self._categories}
        self._half_life = float(half_life_s)
        self._prior = float(neutral_prior)

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(c.name for c in self._categories)

    @property
    def half_life_s(self) -> float:
        return self._half_life

    @property
    def neutral_prior(self) -> float:
        return self._prior

    def update_config(self, categories: Sequence[Category], half_life_s: float, neutral_prior: float) -> None:
        """Apply a reloaded config (SIGHUP). Weights of categories that still exist are kept (decayed up to now
        with the old half-life); removed categories are dropped; new ones start at zero."""
        now = self._clock()
        for ch in self._channels.values():
            self._decay(ch, now)
        self._set_config(categories, half_life_s, neutral_prior)
        names = self.categories
        for ch in self._channels.values():
            ch.weights = {n: ch.weights.get(n, 0.0) for n in names}
            ch.interval_counts = {n: v for n, v in ch.interval_counts.items() if n in names}
        log.info("mood_config_updated", categories=list(names), half_life_s=half_life_s, neutral_prior=neutral_prior)

    # -- channels

    def channels(self) -> tuple[str, ...]:
        """Channels that have seen at least one observation or skip (in first-seen order)."""
        return tuple(self._channels)

    def _channel(self, channel: str, now: float) -> _Channel:
        ch = self._channels.get(channel)
        if ch is None:
            ch = _Channel(weights=dict.fromkeys(self.categories, 0.0), ref=now)
            self._channels[channel] = ch
        return ch

    def _decay(self, ch: _Channel, now: float) -> None:
        dt = now - ch.ref
        if dt <= 0:  # a clock that went backwards (or an observation from the future) never grows weights
            return
        factor = 0.5 ** (dt / self._half_life)
        for name, w in ch.weights.items():
            w *= factor
            ch.weights[name] = w if w > _TINY else 0.0
        ch.ref = now

    # -- input

    def _contribution(self, verdict: Verdict) -> dict[str, float] | None:
        """``confidence * probs`` restricted to the configured categories; one-hot on the label when the verdict
        carries no usable probabilities; None when it names nothing we know."""
        conf = verdict.confidence
        if not math.isfinite(conf):
            return None
        conf = min(1.0, max(0.0, conf))
        names = self.categories
        probs = {n: p for n in names if math.isfinite(p := float(verdict.probs.get(n, 0.0))) and p > 0}
        total = sum(probs.values())
        if total <= 0:
            if verdict.label not in names:
                return None
            probs, total = {verdict.label: 1.0}, 1.0
        return {n: conf * p / total for n, p in probs.items()}

    def observe(self, channel: str, verdict: Verdict, at: float | None = None) -> None:
        """Fold one verdict into ``channel``'s mood. ``at`` (epoch seconds, default now) may lie in the past:
        a late verdict is added already decayed by its age."""
        now = self._clock()
        at = now if at is None else at
        contrib = self._contribution(verdict)
        if contrib is None:
            log.warning("mood_verdict_ignored", channel=channel, label=verdict.label, model=verdict.model)
            return
        ch = self._channel(channel, now)
        self._decay(ch, at)
        age_factor = 0.5 ** ((ch.ref - at) / self._half_life) if at < ch.ref else 1.0
        for name, w in contrib.items():
            ch.weights[name] += w * age_factor
        ch.messages += 1
        label = verdict.label if verdict.label in ch.weights else max(contrib, key=contrib.__getitem__)
        ch.interval_counts[label] = ch.interval_counts.get(label, 0) + 1
        ch.first_at = at if ch.first_at is None else min(ch.first_at, at)
        ch.last_at = at if ch.last_at is None else max(ch.last_at, at)

    def add_skipped(self, channel: str, n: int) -> None:
        """Count ``n`` messages the classifier had to skip in ``channel`` (the mood says how much it saw)."""
        if n < 0:
            raise ValueError(f"skipped count must be >= 0, got {n}")
        if n == 0:
            return
        ch = self._channel(channel, self._clock())
        ch.skipped += n

    def reset(self, channel: str) -> None:
        """Forget ``channel``'s mood: weights, message and skip counts. The per-interval category counts for the
        timeline are kept: those messages did arrive in that interval."""
        now = self._clock()
        ch = self._channel(channel, now)
        ch.weights = dict.fromkeys(self.categories, 0.0)
        ch.ref = now
        ch.messages = ch.skipped = 0
        ch.first_at = ch.last_at = None
        log.info("mood_reset", channel=channel)

    def drop(self, channel: str) -> None:
        """Stop tracking ``channel`` entirely (it was removed from the config)."""
        self._channels.pop(channel, None)

    # -- output

    def _shares(self, weights: Mapping[str, float]) -> dict[str, float]:
        names = self.categories
        total = sum(weights.values()) + self._prior
        if total <= 0:
            return {n: (1.0 if n == NEUTRAL else 0.0) for n in names}
        return {n: (weights.get(n, 0.0) + (self._prior if n == NEUTRAL else 0.0)) / total for n in names}

    def state(self, channel: str) -> MoodState:
        """The channel's mood now. A channel never seen is neutral with no messages."""
        now = self._clock()
        ch = self._channels.get(channel)
        if ch is None:
            weights: Mapping[str, float] = {}
        else:
            self._decay(ch, now)
            weights = ch.weights
        shares = self._shares(weights)
        label = max(self.categories, key=shares.__getitem__)  # ties: the first in config order
        valence = sum(shares[c.name] * c.valence for c in self._categories)
        look = mood_colour(shares, self._colours, NEUTRAL)
        return MoodState(
            channel=channel,
            label=label,
            share=shares[label],
            valence=min(1.0, max(-1.0, valence)),
            colour=look.colour,
            shares=shares,
            lean=look.lean,
            strength=look.strength,
            label_colour=self._colours[label],
            messages=ch.messages if ch else 0,
            skipped=ch.skipped if ch else 0,
            first_at=_utc(ch.first_at) if ch and ch.first_at is not None else None,
            at=_utc(now),
        )

    def take_counts(self, channel: str) -> dict[str, int]:
        """Classified messages per category (by verdict label) since the previous call for ``channel``; starts a
        new interval."""
        ch = self._channels.get(channel)
        if ch is None:
            return {}
        counts, ch.interval_counts = ch.interval_counts, {}
        return counts

    def snapshot(self, channel: str) -> SnapshotFields:
        """The current state plus the interval's per-category counts, for one ``mood_snapshots`` row; starts a new
        interval. (Storage's ``save_snapshot(state, counts=...)`` takes the same data as a MoodState.)"""
        st = self.state(channel)
        counts = self.take_counts(channel)
        return SnapshotFields(
            channel=channel,
            bucket=st.at or _utc(self._clock()),
            counts=counts,
            label=st.label,
            share=st.share,
            valence=st.valence,
            colour=st.colour,
            shares=dict(st.shares),
            messages=st.messages,
            skipped=st.skipped,
        )
