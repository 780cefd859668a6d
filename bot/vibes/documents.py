"""The ``channel_profiles`` collection: one :class:`ChannelProfileDoc` per channel (``_id`` = its login).

It keeps a :class:`~bot.vibes.profile.Profile` whole, so a refresh continues where the last one stopped. The
schema keeps to what MongoDB 7/8 and FerretDB v1 both support: arrays of scalars only (terms and the sample are
parallel arrays), category names as the only object keys (they never hold ``.`` or ``$``), no NUL (stored chat
text is already clean). Numbers that only chatmood reads back (the embedding sum, the sample's hashes, the
remembered ids, their ``seq`` and times) are packed little-endian into binary fields: a third of the size of BSON
arrays, and FerretDB reads every byte of every profile to rank them. Nothing but ``_id`` is ever filtered on, so
no further index is needed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from beanie import Document
from pydantic import Field

from bot.vibes.profile import Profile, SampleLine


def pack_ints(values: list[int]) -> bytes:
    return np.asarray(values, dtype="<i8").tobytes()


def unpack_ints(data: bytes) -> list[int]:
    return [int(x) for x in np.frombuffer(data, dtype="<i8")]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // _US


def _from_micros(us: int) -> datetime:
    return _EPOCH + us * _US


class ChannelProfileDoc(Document):
    id: str = Field(alias="_id")  # type: ignore[assignment]  # the channel login
    channel: str
    categories: list[str]
    sample_size: int
    messages: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    classified: int = 0
    label_counts: dict[str, int] = Field(default_factory=dict)
    valence_sum: float = 0.0
    word_keys: list[str] = Field(default_factory=list)
    word_counts: list[int] = Field(default_factory=list)
    emote_keys: list[str] = Field(default_factory=list)
    emote_counts: list[int] = Field(default_factory=list)
    sample_hashes: bytes = b""  # int64 each, ascending; the texts and labels in the same order
    sample_texts: list[str] = Field(default_factory=list)
    sample_labels: list[str] = Field(default_factory=list)
    embedding_model: str = ""
    # float64 each; the sum over every sample line's embedding (empty: nothing embedded yet)
    embedding_sum: bytes = b""
    seq_through: int = 0
    verdicts_through: datetime | None = None
    reread_seq: int = 0
    reread_at: datetime | None = None
    recent_keys: bytes = b""  # int64 id hashes folded in since reread_seq ...
    recent_seqs: bytes = b""  # ... and their seq
    verdict_keys: bytes = b""  # int64 id hashes whose verdicts were folded in since reread_at ...
    verdict_micros: bytes = b""  # ... and their classified_at, in microseconds since the epoch
    updated_at: datetime

    class Settings:
        name = "channel_profiles"

    @classmethod
    def from_profile(cls, p: Profile, *, model: str, at: datetime) -> ChannelProfileDoc:
        """The profile as stored. Its embedding sum must cover exactly its sample (as after a refresh)."""
        order = sorted(p.sample)
        return cls(
            _id=p.channel,
            channel=p.channel,
            categories=list(p.categories),
            sample_size=p.sample_size,
            messages=p.messages,
            first_at=p.first_at,
            last_at=p.last_at,
            classified=p.classified,
            label_counts=dict(p.label_counts),
            valence_sum=p.valence_sum,
            word_keys=list(p.words),
            word_counts=list(p.words.values()),
            emote_keys=list(p.emotes),
            emote_counts=list(p.emotes.values()),
            sample_hashes=pack_ints(order),
            sample_texts=[p.sample[h].text for h in order],
            sample_labels=[p.sample[h].label for h in order],
            embedding_model=model,
            embedding_sum=b"" if p.embedding_sum is None or not p.embedded
            else np.asarray(p.embedding_sum, dtype="<f8").tobytes(),
            seq_through=p.seq_through,
            verdicts_through=p.verdicts_through,
            reread_seq=p.reread_seq,
            reread_at=p.reread_at,
            recent_keys=pack_ints(list(p.recent)),
            recent_seqs=pack_ints(list(p.recent.values())),
            verdict_keys=pack_ints(list(p.recent_verdicts)),
            verdict_micros=pack_ints([_micros(t) for t in p.recent_verdicts.values()]),
            updated_at=at,
        )

    def to_profile(self) -> Profile:
        hashes = unpack_ints(self.sample_hashes)
        embedding = np.frombuffer(self.embedding_sum, dtype="<f8").astype(np.float64) if self.embedding_sum else None
        return Profile(
            channel=self.channel,
            categories=tuple(self.categories),
            sample_size=self.sample_size,
            messages=self.messages,
            first_at=self.first_at,
            last_at=self.last_at,
            classified=self.classified,
            label_counts=dict(self.label_counts),
            valence_sum=self.valence_sum,
            words=dict(zip(self.word_keys, self.word_counts, strict=True)),
            emotes=dict(zip(self.emote_keys, self.emote_counts, strict=True)),
            sample={h: SampleLine(t, lb) for h, t, lb in zip(hashes, self.sample_texts, self.sample_labels,
                                                              strict=True)},
            embedding_sum=embedding,
            embedded=frozenset(hashes) if embedding is not None else frozenset(),
            seq_through=self.seq_through,
            verdicts_through=self.verdicts_through,
            reread_seq=self.reread_seq,
            reread_at=self.reread_at,
            recent=dict(zip(unpack_ints(self.recent_keys), unpack_ints(self.recent_seqs), strict=True)),
            recent_verdicts=dict(zip(unpack_ints(self.verdict_keys),
                                     (_from_micros(us) for us in unpack_ints(self.verdict_micros)), strict=True)),
        )
