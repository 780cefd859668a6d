"""A channel's profile: what its stored chat says and how it feels, as mergeable statistics (pure, no I/O).

:class:`Profile` is built by folding in stored messages (:meth:`Profile.add_message`) and their verdicts
(:meth:`Profile.add_verdict`) in any number of passes, so a refresh only reads what is new:

- **counts**: messages, first and last message time, classified messages, messages per label, the sum of
  each classified message's valence (the expected valence of its probabilities, else its label's);
- **words and emotes**: counted exactly within a pass, and the :data:`KEPT_TERMS` most frequent kept between
  passes (a term that is rare in every pass but frequent over many can be missed). Emotes are Twitch's emote
  fragments, camel-case tokens (``catJAM``, ``PogChamp``) and well-known emote names (:data:`EMOTE_NAMES`:
  ``KEKW``, ``Sadge``); words are the rest, lower-cased, without stop words, mentions and links;
- **the sample**: a bounded, uniform sample of the channel's *distinct* messages: the ``sample_size`` texts
  with the smallest hash of their normalised form (a bottom-k sketch). The same texts are chosen whatever the
  order or the passes, a spammed line counts once, and a new pass changes the sample only where a new text
  hashes below the current cut;
- **the chat embedding**: the sum of the sample's sentence embeddings (the caller embeds what entered the sample
  and what left it, :meth:`Profile.sample_changes`), so :attr:`Profile.embedding` is their mean direction.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

import numpy as np

KEPT_TERMS = 500  # words (and emotes) kept per channel between passes
KEPT_IDS = 256  # message ids (hashed) remembered per channel near the cursors (keeps the document small)
T = TypeVar("T", int, datetime)
_STRIP = "!?.,:;\"'()[]{}*~`<>«»“”‘’"
_CAMEL = re.compile(r"^(?:[a-z0-9]+[A-Z]|[A-Z][a-z0-9]+[A-Z])[A-Za-z0-9]*$")
_SPACES = re.compile(r"\s+")
_LINK = re.compile(r"^(?:https?://|www\.)|\.(?:com|tv|gg|net|org|io)(?:/|$)")
STOP_WORDS = frozenset(
    """
    a about above after again against all am an and any are aren't as at be because been before being below
    between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each
    few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself
    him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more most
    mustn't my myself no nor not of off on once only or other ought our ours ourselves out over own same shan't
    she she'd she'll she's should shouldn't so some such than that that's the their theirs them themselves then
    there there's these they they'd they'll they're they've this those through to too under until up very was
    wasn't we we'd we'll we're we've were weren't what what's when when's where where's which while who who's
    whom why why's with won't would wouldn't you you'd you'll you're you've your yours yourself yourselves
    im ive ill id dont doesnt didnt cant wont isnt arent wasnt thats whats youre theyre just like get got yeah
    yes yea also really one now even still going gonna wanna know think see lol u ur ok okay oh can will
    """.split()
)


def text_key(text: str) -> str:
    """A message's normalised form: what "distinct" means for the sample (case and spacing ignored)."""
    return _SPACES.sub(" ", text.strip().lower())


def sample_hash(key: str) -> int:
    """A stable 63-bit hash (BSON int64) of a normalised text: the sample keeps the smallest."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") >> 1


#: Third-party (7TV/BTTV/FFZ) and old global emotes whose names are no camel case: a token that is one of these
#: (any case) is an emote, not a word. Shouted words (TRASH, INSANE) stay words.
EMOTE_NAMES = frozenset("""
    kekw kekl kekwait omegalul lulw lul lmaoo kek zulul 4head elegiggle pepelaugh icant xdd kappa keepo
    pepega jebaited trolldespair clueless aware copium hopium kkona pog pogu poggers poggies pogg letsgo hypers
    pagchomp pagman pogslide pauseman pausechamp kreygasm swiftrage ezclap gigachad catjam ratjam pepejam peped
    forsenpls seemsgood batchest waytoodank gachigasm gachibass gachihyper sadge biblethump pepehands
    feelsbadman widepeeposad peeposad deadge notlikethis sadcat pepemeltdown feelsweirdman feelsokayman bedge
    residentsleeper monkas monkaw monkaomega wutface weirdchamp 4weird madge dansgame babyrage cmonbruh pogo
    stare susge modcheck monkahmm chatting okayge peepohappy widepeepohappy peepolove peepoglad bibleluv heyguys
    vohiyo xqcl pettheblob peepopat prayge feelsgoodman feelsamazingman feelsstrongman blobdance omegadanse
    kappapride trihard forsene haHAA lulwut pepelaughing kekg
""".lower().split())


def _is_emote_token(token: str) -> bool:
    return bool(_CAMEL.match(token)) or token.lower() in EMOTE_NAMES


def terms(text: str, spans: Iterable[tuple[int, int]] = ()) -> tuple[list[str], list[str]]:
    """``(words, emotes)`` of one message; ``spans`` are Twitch's emote fragments (``text[begin:end]``)."""
    emotes: list[str] = []
    rest = text
    for begin, end in sorted(spans, reverse=True):
        if 0 <= begin < end <= len(rest):
            emotes.append(rest[begin:end])
            rest = rest[:begin] + " " + rest[end:]
    emotes.reverse()
    words: list[str] = []
    for raw in rest.split():
        if raw.startswith("@") or _LINK.search(raw.lower()):
            continue
        token = raw.strip(_STRIP)
        if not token:
            continue
        if _is_emote_token(token):
            emotes.append(token)
            continue
        word = token.lower()
        if len(word) >= 2 and word not in STOP_WORDS and word.replace("'", "").isalpha():
            words.append(word.replace("'", ""))
    return words, emotes


def id_hash(message_id: str) -> int:
    """A message id as a 63-bit int (BSON int64): remembered ids cost 8 bytes, not a string each."""
    return int.from_bytes(hashlib.blake2b(message_id.encode("utf-8"), digest_size=8).digest(), "big") >> 1


def _newest(ids: dict[int, T], floor: T, keep: int) -> tuple[dict[int, T], T]:
    """The ids at or above ``floor``, cut to the newest ``keep`` (ties kept), and the floor that leaves."""
    kept = {k: v for k, v in ids.items() if v >= floor}
    if len(kept) > keep:
        floor = sorted(kept.values(), reverse=True)[keep - 1]
        kept = {k: v for k, v in kept.items() if v >= floor}
    return kept, floor


def _top(counts: Mapping[str, int], n: int) -> list[tuple[str, int]]:
    """The ``n`` most frequent terms, ties broken by the term (deterministic)."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


@dataclass(frozen=True, slots=True)
class SampleLine:
    text: str
    label: str  # "" when the message had no verdict yet when it entered the sample


@dataclass
class Profile:
    """One channel's statistics; see the module docstring. ``categories`` fixes the mood fields' meaning."""

    channel: str
    categories: tuple[str, ...]
    sample_size: int = 256
    messages: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    classified: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    valence_sum: float = 0.0
    words: dict[str, int] = field(default_factory=dict)
    emotes: dict[str, int] = field(default_factory=dict)
    sample: dict[int, SampleLine] = field(default_factory=dict)  # hash -> line
    embedding_sum: np.ndarray | None = None  # float64, the sum of the embedded sample lines
    embedded: frozenset[int] = frozenset()  # the sample hashes whose embeddings are in the sum
    seq_through: int = 0  # the newest message folded in (its ``seq``)
    verdicts_through: datetime | None = None  # the newest verdict folded in (its ``classified_at``)
    # What the next refresh reads again (seq >= reread_seq, classified_at >= reread_at), and the ids (hashed)
    # folded in since then, so that what it reads again is skipped: see :meth:`remember_recent`.
    reread_seq: int = 0
    reread_at: datetime | None = None
    recent: dict[int, int] = field(default_factory=dict)  # id hash -> seq
    recent_verdicts: dict[int, datetime] = field(default_factory=dict)  # id hash -> classified_at
    _order: list[int] = field(default_factory=list, repr=False)  # sample hashes, ascending
    _pass_words: Counter[str] = field(default_factory=Counter, repr=False)
    _pass_emotes: Counter[str] = field(default_factory=Counter, repr=False)
    _evicted: dict[int, str] = field(default_factory=dict, repr=False)  # embedded lines that left the sample

    def __post_init__(self) -> None:
        self._order = sorted(self.sample)

    # ---- folding in
    def add_message(self, text: str, sent_at: datetime, *, message_id: str = "", seq: int = 0,
                    label: str | None = None, spans: Iterable[tuple[int, int]] = ()) -> bool:
        """One stored message (its verdict, if any, is folded in separately by :meth:`add_verdict`). False when
        ``message_id`` was folded in already (a refresh reads a little before its cursor again)."""
        if message_id:
            key = id_hash(message_id)
            if key in self.recent:
                return False
            self.recent[key] = seq
        self.messages += 1
        if self.first_at is None or sent_at < self.first_at:
            self.first_at = sent_at
        if self.last_at is None or sent_at > self.last_at:
            self.last_at = sent_at
        self.seq_through = max(self.seq_through, seq)
        words, emotes = terms(text, spans)
        self._pass_words.update(words)
        self._pass_emotes.update(emotes)
        normal = text_key(text)
        if normal:
            self._offer(sample_hash(normal), SampleLine(text, label or ""))
        return True

    def _offer(self, h: int, line: SampleLine) -> None:
        if h in self.sample:
            if line.label and not self.sample[h].label:
                self.sample[h] = line  # the same text, now with a verdict
            return
        if len(self._order) >= self.sample_size:
            if h > self._order[-1]:
                return
            gone = self._order.pop()
            old = self.sample.pop(gone)
            if gone in self.embedded:
                self._evicted[gone] = old.text
        bisect.insort(self._order, h)
        self.sample[h] = line

    def add_verdict(self, label: str, probs: Mapping[str, float] | None, valence: Mapping[str, int],
                    at: datetime | None = None, *, message_id: str = "") -> bool:
        """A verdict of one of the channel's messages. Labels outside ``categories`` are ignored; False when the
        verdict of ``message_id`` was folded in already."""
        if label not in self.categories:
            return False
        if message_id:
            key = id_hash(message_id)
            if key in self.recent_verdicts:
                return False
            if at is not None:
                self.recent_verdicts[key] = at
        self.classified += 1
        self.label_counts[label] = self.label_counts.get(label, 0) + 1
        if probs:
            total = sum(float(p) for c, p in probs.items() if c in valence)
            if total > 0:
                self.valence_sum += sum(float(p) * valence[c] for c, p in probs.items() if c in valence) / total
        else:
            self.valence_sum += valence.get(label, 0)
        if at is not None and (self.verdicts_through is None or at > self.verdicts_through):
            self.verdicts_through = at
        return True

    def remember_recent(self, lookback_ns: int, lookback: timedelta, keep: int = KEPT_IDS) -> None:
        """Set what the next refresh reads again: ``lookback`` before the cursors, but no further back than the
        newest ``keep`` ids remembered (so a replay of 80,000 lines in a minute keeps a small document), and forget
        the ids older than that. Everything folded in at or after ``reread_*`` stays remembered."""
        self.recent, self.reread_seq = _newest(self.recent, self.seq_through - lookback_ns, keep)
        if self.verdicts_through is not None:
            self.recent_verdicts, self.reread_at = _newest(self.recent_verdicts, self.verdicts_through - lookback,
                                                           keep)

    def end_pass(self) -> None:
        """Merge this pass's term counts and keep the :data:`KEPT_TERMS` most frequent of each kind."""
        for kept, new in ((self.words, self._pass_words), (self.emotes, self._pass_emotes)):
            if new:
                for term, n in new.items():
                    kept[term] = kept.get(term, 0) + n
                top = _top(kept, KEPT_TERMS)
                kept.clear()
                kept.update(top)
                new.clear()

    # ---- the embedding
    def sample_changes(self) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        """``(entered, left)`` as ``(hash, text)``: lines to embed and add to the sum, and lines to embed and take
        out of it. Everything is embedded anew when a line that left is not known any more."""
        if any(h not in self._evicted for h in self.embedded - self.sample.keys()):
            self.forget_embedding()
        entered = [(h, self.sample[h].text) for h in self._order if h not in self.embedded]
        left = [(h, self._evicted[h]) for h in sorted(self.embedded - self.sample.keys())]
        return entered, left

    def apply_embeddings(self, entered: Sequence[int], entered_vecs: np.ndarray, left: Sequence[int],
                         left_vecs: np.ndarray) -> None:
        """Move the embedding sum to the current sample (vectors row by row, as :meth:`sample_changes` named)."""
        dim = entered_vecs.shape[1] if len(entered) else left_vecs.shape[1] if len(left) else 0
        if dim:
            total = np.zeros(dim) if self.embedding_sum is None else self.embedding_sum.astype(np.float64)
            if len(entered):
                total += entered_vecs.astype(np.float64).sum(axis=0)
            if len(left):
                total -= left_vecs.astype(np.float64).sum(axis=0)
            self.embedding_sum = total
        self.embedded = (self.embedded - set(left)) | set(entered)
        for h in left:
            self._evicted.pop(h, None)

    def forget_embedding(self) -> None:
        """The embedding model changed: everything in the sample is embedded again on the next refresh."""
        self.embedding_sum = None
        self.embedded = frozenset()
        self._evicted.clear()

    # ---- what it says
    @property
    def embedding(self) -> np.ndarray | None:
        """The unit-length mean direction of the sample's embeddings (None before any were embedded)."""
        if self.embedding_sum is None or not self.embedded:
            return None
        norm = float(np.linalg.norm(self.embedding_sum))
        return (self.embedding_sum / norm).astype(np.float32) if norm > 0 else None

    @property
    def shares(self) -> dict[str, float]:
        """Each category's share of the classified messages (all zero before any verdict)."""
        n = self.classified
        return {c: (self.label_counts.get(c, 0) / n if n else 0.0) for c in self.categories}

    @property
    def mean_valence(self) -> float:
        return self.valence_sum / self.classified if self.classified else 0.0

    @property
    def span_s(self) -> float:
        if self.first_at is None or self.last_at is None:
            return 0.0
        return (self.last_at - self.first_at).total_seconds()

    @property
    def rate_per_min(self) -> float:
        """Messages per minute between the first and the last message (at least one minute)."""
        return self.messages / max(1.0, self.span_s / 60.0)

    def dominant(self, n: int = 2) -> list[tuple[str, float]]:
        """The ``n`` largest mood shares, largest first (ties by category order)."""
        shares = self.shares
        order = sorted(self.categories, key=lambda c: (-shares[c], self.categories.index(c)))
        return [(c, shares[c]) for c in order[:n] if shares[c] > 0]

    def top_words(self, n: int = 10) -> list[tuple[str, int]]:
        return _top(self.words, n)

    def top_emotes(self, n: int = 10) -> list[tuple[str, int]]:
        return _top(self.emotes, n)

    def sample_lines(self) -> list[SampleLine]:
        """The sample, in hash order (a stable, arbitrary order)."""
        return [self.sample[h] for h in self._order]
