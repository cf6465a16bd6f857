"""Miss-ratio curves: the fraction of accesses an LRU cache of each size would miss, from a block trace.

- `exact_mrc`: every access's stack distance (how many distinct blocks were used since this block's
  last access, itself included; an LRU cache of C blocks hits exactly when it is <= C), counted
  with a Fenwick tree over access times: O(N log M) for N accesses of M distinct blocks.
- `shards_mrc`: SHARDS (Waldspurger et al., FAST'15), fixed rate: only blocks whose hash falls below
  R are followed, and their distances are scaled by 1/R. About R of the work, and an error near 0.01.
- `recommend`: the smallest cache that reaches a target hit ratio.

Pure Python (no numpy in this project's runtime). Traces are sequences of non-negative block
numbers, best an array('q') (storage/traces.py reads them so).
"""
from __future__ import annotations

import math
import random
import sys
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Iterable, Sequence

HASH_BITS = 16  # SHARDS' hash is 16 bits: rates are multiples of 1/65536
_HASH_RANGE = 1 << HASH_BITS


class NoSampleError(ValueError):
    """SHARDS followed no access at all: the trace is too short for the sample rate."""


@dataclass(frozen=True, eq=False)
class MissRatioCurve:
    """Hit ratio as a function of LRU cache size, as a step function: at `distances[i]` blocks and
    more, the fraction `cumulative[i]` of accesses hit."""

    accesses: int  # accesses in the whole trace
    distinct: int  # distinct blocks in the trace (estimated from the sample: sampled distinct / rate)
    sample_rate: float  # 1.0: exact
    sampled: int  # accesses the curve was computed from
    distances: list[float] = field(repr=False)
    cumulative: list[float] = field(repr=False)

    def hit_ratio(self, size: float) -> float:
        """The fraction of accesses an LRU cache of `size` blocks hits (first accesses always miss)."""
        i = bisect_right(self.distances, size)
        return min(1.0, max(0.0, self.cumulative[i - 1])) if i else 0.0

    def miss_ratio(self, size: float) -> float:
        return 1.0 - self.hit_ratio(size)

    @property
    def best_hit_ratio(self) -> float:
        """What an unbounded cache hits: every access but the first of each block."""
        return min(1.0, max(0.0, self.cumulative[-1])) if self.cumulative else 0.0


@dataclass(frozen=True)
class Recommendation:
    target: float  # the hit ratio asked for
    blocks: int | None  # the smallest cache reaching it; None: no size does (first accesses always miss)
    bytes: int | None
    hit_ratio: float  # at `blocks`; when unreachable, the best any size reaches
    best_blocks: int  # the size at which the curve stops rising (every reuse hits)


def stack_distances(trace: Iterable[int]) -> tuple[list[int], int, int]:
    """(histogram, first accesses, accesses): histogram[d] counts the accesses at stack distance d.

    Each access takes a new time slot; a Fenwick tree counts the slots that are dead (their block was
    used again later). The blocks used since time p are the live slots after p, so the distance is
    the slots after p minus the dead ones among them, plus one (the block itself). When the slots
    run out, the live ones are renumbered 1..M: O(M) once per at least M accesses, and the tree stays
    about 2 M long, so each access costs two walks of log2(2 M) steps."""
    last: dict[int, int] = {}
    size = 1 << 16
    dead_tree = [0] * (size + 1)
    histogram = [0] * (size + 2)
    now = dead = first = 0
    get = last.get
    for key in trace:
        now += 1
        if now > size:
            order = sorted(last, key=last.__getitem__)
            last = dict(zip(order, range(1, len(order) + 1)))
            get = last.get
            now = len(order) + 1
            size = max(2 * len(order), 1 << 16)
            dead_tree = [0] * (size + 1)
            dead = 0
            if len(histogram) < size + 2:
                histogram.extend([0] * (size + 2 - len(histogram)))
        previous = get(key)
        if previous is None:
            first += 1
        else:
            i, dead_before = previous, 0
            while i:
                dead_before += dead_tree[i]
                i &= i - 1
            histogram[now - previous - dead + dead_before] += 1
            i = previous
            while i <= size:
                dead_tree[i] += 1
                i += i & -i
            dead += 1
        last[key] = now
    accesses = first + sum(histogram)
    while histogram and not histogram[-1]:
        histogram.pop()
    return histogram, first, accesses


def exact_mrc(trace: Iterable[int]) -> MissRatioCurve:
    """The LRU miss-ratio curve of the whole trace, exactly."""
    histogram, first, accesses = stack_distances(trace)
    return _curve(histogram, first, accesses, accesses, rate=1.0, scale=1.0, adjustment=0.0)


def shards_mrc(trace: Sequence[int], rate: float) -> MissRatioCurve:
    """The LRU miss-ratio curve estimated from the blocks SHARDS samples at `rate` (0 < rate <= 1).

    SHARDS_adj: the sample holds more or fewer accesses than rate x N, mostly because a hot block
    was or was not drawn; the difference is added at the smallest distance, as the paper does."""
    sampled, rate = shards_sample(trace, rate)
    histogram, first, count = stack_distances(sampled)
    if not count:
        raise NoSampleError(f"no block of the {len(trace)} accesses was sampled at rate {rate:g}")
    expected = len(trace) * rate
    return _curve(histogram, first, count, len(trace), rate=rate, scale=1.0 / rate, adjustment=expected - count)


def _curve(histogram: list[int], first: int, counted: int, accesses: int, *, rate: float, scale: float,
           adjustment: float) -> MissRatioCurve:
    total = counted + adjustment
    distances: list[float] = []
    cumulative: list[float] = []
    hits = adjustment
    if adjustment and scale > 1:
        distances.append(1.0)
        cumulative.append(hits / total)
    for distance, count in enumerate(histogram):
        if count:
            hits += count
            distances.append(distance * scale)
            cumulative.append(hits / total)
    if not distances:  # no block was used twice
        distances, cumulative = [1.0], [0.0]
    return MissRatioCurve(accesses=accesses, distinct=round(first / rate), sample_rate=rate, sampled=counted,
                          distances=distances, cumulative=cumulative)


# SHARDS' sampling hash is simple tabulation hashing (Zobrist; 3-independent): the XOR of one random
# byte per byte of the block number. It runs over the whole trace at once with bytes.translate on
# each byte plane and big-integer XOR, a few nanoseconds per access, where a Python hash per
# access would cost more than a tenth of the exact algorithm. Fixed seed: the same blocks are
# sampled on every run and machine.
_rng = random.Random(0x5A4D5)
_TABLES_HIGH = [bytes(_rng.randrange(256) for _ in range(256)) for _ in range(8)]
_TABLES_LOW = [bytes(_rng.randrange(256) for _ in range(256)) for _ in range(8)]
del _rng


def shards_sample(trace: Sequence[int], rate: float) -> tuple[array, float]:
    """(the accesses of the sampled blocks in trace order, the rate used): a block is sampled when
    its 16-bit hash is below rate x 65536, so the rate is rounded to a multiple of 1/65536."""
    if not 0 < rate <= 1:
        raise ValueError(f"sample rate {rate!r}: expected more than 0 and at most 1")
    threshold = round(rate * _HASH_RANGE)
    if threshold < 1:
        raise ValueError(f"sample rate {rate!r}: below the smallest, 1/{_HASH_RANGE} ({1 / _HASH_RANGE:.2g})")
    keys = trace if isinstance(trace, array) and trace.typecode == "q" else array("q", trace)
    if threshold == _HASH_RANGE:
        return keys, 1.0
    high = _hash_bytes(keys, _TABLES_HIGH)
    high_limit, low_limit = threshold >> 8, threshold & 0xFF
    # The high byte decides, except when it equals high_limit: then the low byte does (one in 256).
    candidates = high.translate(bytes(1 if v <= high_limit else 0 for v in range(256)))
    sampled = array("q")
    i = candidates.find(1)
    while i >= 0:
        if high[i] < high_limit or _hash_byte(keys[i], _TABLES_LOW) < low_limit:
            sampled.append(keys[i])
        i = candidates.find(1, i + 1)
    return sampled, threshold / _HASH_RANGE


def _hash_bytes(keys: array, tables: list[bytes]) -> bytes:
    """One hash byte per key: XOR over the key's 8 bytes of tables[j][byte j]."""
    n = len(keys)
    raw = keys.tobytes()
    constant = 0
    mixed = 0
    for j in range(8):
        plane = raw[j::8] if sys.byteorder == "little" else raw[7 - j::8]
        if plane.count(0) == n:  # no key uses this byte (block numbers are rarely above 2^32)
            constant ^= tables[j][0]
            continue
        mixed ^= int.from_bytes(plane.translate(tables[j]), "little")
    out = mixed.to_bytes(n, "little")
    return out.translate(bytes(v ^ constant for v in range(256))) if constant else out


def _hash_byte(key: int, tables: list[bytes]) -> int:
    value = 0
    for j in range(8):
        value ^= tables[j][(key >> (8 * j)) & 0xFF]
    return value


def recommend(curve: MissRatioCurve, target: float, block_size: int) -> Recommendation:
    """The smallest cache (blocks and bytes) whose hit ratio on this curve reaches `target`.

    A higher target never gets a smaller cache. Unreachable when first accesses alone miss more than
    1 - target: then `blocks` is None and `hit_ratio` is the best any size reaches."""
    best_blocks = math.ceil(curve.distances[-1])
    i = bisect_left(curve.cumulative, target - 1e-12)
    if i == len(curve.cumulative):
        return Recommendation(target, None, None, curve.best_hit_ratio, best_blocks)
    blocks = max(1, math.ceil(curve.distances[i] - 1e-9))
    return Recommendation(target, blocks, blocks * block_size, curve.hit_ratio(blocks), best_blocks)


def even_sizes(largest: int, points: int = 100) -> list[int]:
    """`points` cache sizes evenly spaced up to `largest` blocks (fewer when largest is small)."""
    return sorted({max(1, round(largest * k / points)) for k in range(1, points + 1)})


def mean_absolute_error(reference: MissRatioCurve, estimate: MissRatioCurve, sizes: Iterable[int]) -> float:
    """Mean over `sizes` of |miss ratio of reference - miss ratio of estimate|, as SHARDS reports it."""
    sizes = list(sizes)
    if not sizes:
        return 0.0
    return sum(abs(reference.miss_ratio(s) - estimate.miss_ratio(s)) for s in sizes) / len(sizes)
