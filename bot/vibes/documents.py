"""The ``channel_profiles`` collection: one :class:`ChannelProfileDoc` per channel (``_id`` = its login).

It keeps a :class:`~bot.vibes.profile.Profile` whole, so a refresh continues where the last one stopped. The
schema keeps to what MongoDB 7/8 and FerretDB v1 both support: arrays of scalars only (terms and the sample
are parallel arrays), category names as the only object keys (they never hold ``.`` or ``$``), no NUL
(stored chat text is already clean). Nothing but ``_id`` is ever filtered on, so no further index is needed.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
from beanie import Document
from pydantic import Field

from bot.vibes.profile import Profile, SampleLine


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
    sample_hashes: list[int] = Field(default_factory=list)
    sample_texts: list[str] = Field(default_factory=list)
    sample_labels: list[str] = Field(default_factory=list)
    embedding_model: str = ""
    embedding_sum: list[float] = Field(default_factory=list)
    embedded_hashes: list[int] = Field(default_factory=list)
    seq_through: int = 0
    verdicts_through: datetime | None = None
    recent_ids: list[str] = Field(default_factory=list)  # folded in near the cursors (read again next time)
    recent_seqs: list[int] = Field(default_factory=list)
    verdict_ids: list[str] = Field(default_factory=list)
    verdict_ats: list[datetime] = Field(default_factory=list)
    updated_at: datetime

    class Settings:
        name = "channel_profiles"

    @classmethod
    def from_profile(cls, p: Profile, *, model: str, at: datetime) -> ChannelProfileDoc:
        lines = [(h, p.sample[h]) for h in sorted(p.sample)]
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
            sample_hashes=[h for h, _ in lines],
            sample_texts=[line.text for _, line in lines],
            sample_labels=[line.label for _, line in lines],
            embedding_model=model,
            embedding_sum=[] if p.embedding_sum is None else [float(x) for x in p.embedding_sum],
            embedded_hashes=sorted(p.embedded),
            seq_through=p.seq_through,
            verdicts_through=p.verdicts_through,
            recent_ids=list(p.recent),
            recent_seqs=list(p.recent.values()),
            verdict_ids=list(p.recent_verdicts),
            verdict_ats=list(p.recent_verdicts.values()),
            updated_at=at,
        )

    def to_profile(self) -> Profile:
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
            sample={h: SampleLine(t, lb) for h, t, lb in
                    zip(self.sample_hashes, self.sample_texts, self.sample_labels, strict=True)},
            embedding_sum=np.asarray(self.embedding_sum, dtype=np.float64) if self.embedding_sum else None,
            embedded=frozenset(self.embedded_hashes),
            seq_through=self.seq_through,
            verdicts_through=self.verdicts_through,
            recent=dict(zip(self.recent_ids, self.recent_seqs, strict=True)),
            recent_verdicts=dict(zip(self.verdict_ids, self.verdict_ats, strict=True)),
        )
