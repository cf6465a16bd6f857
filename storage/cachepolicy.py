"""Which blocks the SSD cache keeps: block-granular policies that answer hit or miss, one access at a time.

Pure: no I/O, no clock. A policy sees integer block numbers and a capacity in blocks; the cache server
copies data as the answer says (`request` tells it what was admitted and what was evicted). Its whole
state is a JSON-able dict (`state()` / `restore()`), so the cache survives a restart of the server.

`LfuAging` is the SSD cache's policy: least frequently used with aging, and admission that keeps a
one-off read (a backup, a scan) from pushing out a block that is read again and again. `Lru` is the
baseline it is measured against (bench/cache.py, docs/cache.md).
"""
from __future__ import annotations

import base64
import zlib
from collections import OrderedDict
from typing import Any, NamedTuple, Protocol

STATE_VERSION = 2  # 2: LfuAging's last use and stale ghosts (a version 1 state still restores)


class Outcome(NamedTuple):
    """What one access did: the server reads the SSD on a hit; on a miss it copies the block in when
    `admitted`, after dropping the blocks in `evicted` (none: there was free room)."""

    hit: bool
    admitted: bool
    evicted: tuple[int, ...]


_HIT = Outcome(True, False, ())
_BYPASSED = Outcome(False, False, ())  # a miss served from the backing store and not cached
_FILLED = Outcome(False, True, ())


class CacheStateError(ValueError):
    """A saved state that cannot be restored; the message names the field, the value and the fix."""


class CachePolicy(Protocol):
    capacity: int
    hits: int
    misses: int
    evictions: int  # blocks dropped from the cache
    admissions: int  # misses stored in the cache: writes to the SSD

    def access(self, key: int) -> bool: ...

    def request(self, key: int) -> Outcome: ...

    def state(self) -> dict[str, Any]: ...

    def __len__(self) -> int: ...

    def __contains__(self, key: object) -> bool: ...


class Lru:
    """Least recently used: every miss is admitted, the block unused for longest is evicted. O(1)."""

    kind = "lru"

    def __init__(self, capacity: int) -> None:
        self.capacity = _positive("capacity", capacity)
        self._blocks: OrderedDict[int, None] = OrderedDict()  # least recently used first
        self.hits = self.misses = self.evictions = 0

    def access(self, key: int) -> bool:
        """Record one access of block `key`; True when it was in the cache."""
        return self.request(key)[0]

    def request(self, key: int) -> Outcome:
        """Record one access of block `key` and say what the cache did about it."""
        blocks = self._blocks
        if key in blocks:
            blocks.move_to_end(key)
            self.hits += 1
            return _HIT
        self.misses += 1
        blocks[key] = None
        if len(blocks) <= self.capacity:
            return _FILLED
        victim, _ = blocks.popitem(last=False)
        self.evictions += 1
        return Outcome(False, True, (victim,))

    @property
    def admissions(self) -> int:
        return self.misses  # every miss is stored

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, key: object) -> bool:
        return key in self._blocks

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this cache is (JSON-able)."""
        return {"policy": self.kind, "version": STATE_VERSION, "capacity": self.capacity, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions, "blocks": list(self._blocks)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Lru":
        _check_header(state, cls.kind)
        cache = cls(_positive("capacity", state.get("capacity")))
        cache.hits, cache.misses, cache.evictions = (_counter(state, name) for name in ("hits", "misses", "evictions"))
        cache._blocks = _ordered_blocks(state, "blocks")
        if len(cache._blocks) > cache.capacity:
            raise CacheStateError(f"cache state: 'blocks' holds {len(cache._blocks)} blocks, more than 'capacity' "
                                  f"{cache.capacity}; the file is not a saved state of this cache")
        return cache


# LfuAging: why these choices (measured in bench/cache.py; docs/cache.md has the figures)
# - Counting: a block in the main part keeps an exact count; every access is also counted in a
#   count-min sketch (4 rows of one-byte counters, 4 counters per cached block in each row: 16 bytes
#   per block), as TinyLFU does, so blocks not in the cache have a frequency too and memory stays
#   bounded. Narrower rows overestimate: one counter per block cost up to 5 points of hit ratio.
# - Aging: every `aging_window` accesses (16 x capacity) every count, kept and sketched, is halved:
#   TinyLFU's reset. Popularity from long ago fades by half per window. Halving is one
#   bytes.translate of the sketch and one pass over the kept blocks, O(capacity) once per at least
#   `capacity` accesses, so O(1) amortised. A decaying score per block would need a heap ordered by
#   score, O(log n) per access; halving keeps counts small integers in 16 buckets.
# - Eviction: counts are capped at `max_count` (15, TinyLFU's 4 bits); the victim is the least
#   recently used block of the lowest count. Every step is O(1).
# - Admission: a block enters the main part only when its sketched frequency beats the victim's
#   count and it was seen at least twice (TinyLFU's doorkeeper), so a block read once (a scan, a
#   backup) never evicts one that is read again, even after aging has brought that one's count to 0.
# - Recency window (window=True, the default): halving alone forgets too slowly when the working set
#   moves (a new set was refused for most of each phase: 19-54 points below LRU). So, as W-TinyLFU
#   does, every miss first enters a small LRU window; the window's oldest block then competes for
#   the main part. The window's size adapts as ARC's target does: a refused block that comes back
#   grows it, an evicted main block that comes back shrinks it (ghost lists of `capacity` block
#   numbers each). Under a skewed workload it stays a few blocks; under a moving one it grows to
#   the working set. The price: every miss is written to the SSD once. window=False is the strict
#   policy: a miss is stored only when it beats the victim (fewest SSD writes, poor on moving sets).
# - Stale blocks: when the working set slides (a little of it replaced all the time) blocks that
#   left it keep the counts they earned and outlive halving for several windows, while the blocks
#   now in use are the lowest counts and get evicted (17 points below LRU with a cache half the
#   working set). So the main part also keeps its blocks in order of last use, and a block unused
#   for `stale_after` accesses is evicted before the lowest count. stale_after adapts the same way
#   the window does: a block evicted as stale that comes back raises it by 1 %, a refused block
#   that comes back lowers it by 1 %, between 1x and 32x the capacity (16x to start: halving's own
#   pace). Measured: sliding set -17.4 -> about -2 points, skewed traces about -0.7.
SKETCH_ROWS = 4
SKETCH_COUNTERS_PER_BLOCK = 4
DEFAULT_WINDOW_PER_BLOCK = 16  # aging_window = 16 x capacity accesses
DEFAULT_MAX_COUNT = 15
STALE_STEP = 1.01  # stale_after's factor per ghost hit
STALE_MIN, STALE_START, STALE_MAX = 1, 16, 32  # x capacity
_MASK64 = (1 << 64) - 1


class LfuAging:
    """Least frequently used with aging, frequency-based admission and an adaptive recency window.

    O(1) amortised per access. Memory per block of capacity: the block, 16 bytes of sketch and two
    ghost entries."""

    kind = "lfu-aging"

    def __init__(self, capacity: int, *, window: bool = True, aging_window: int | None = None,
                 max_count: int = DEFAULT_MAX_COUNT, sketch_width: int | None = None) -> None:
        self.capacity = _positive("capacity", capacity)
        if not isinstance(window, bool):
            raise CacheStateError(f"window {window!r}: expected true or false")
        self.windowed = window
        self.aging_window = _positive("aging_window", aging_window or DEFAULT_WINDOW_PER_BLOCK * capacity)
        if not isinstance(max_count, int) or isinstance(max_count, bool) or not 1 <= max_count <= 255:
            raise CacheStateError(f"max_count {max_count!r}: expected a whole number from 1 to 255")
        self.max_count = max_count
        width = sketch_width or max(64, 1 << (SKETCH_COUNTERS_PER_BLOCK * capacity - 1).bit_length())
        if not isinstance(width, int) or isinstance(width, bool) or width < 1 or width & (width - 1):
            raise CacheStateError(f"sketch_width {width!r}: expected a power of two")
        self._width = width
        self._sketch = bytearray(SKETCH_ROWS * width)
        self._halve = bytes(v >> 1 for v in range(256))
        self._count: dict[int, int] = {}  # the main part: block -> count
        self._buckets: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(max_count + 1)]
        self._lowest = 0  # the lowest non-empty bucket, when the main part holds any block
        self._window: OrderedDict[int, None] = OrderedDict()  # least recently used first
        self.window_target = max(1, capacity // 100) if window else 0
        self._refused: OrderedDict[int, None] = OrderedDict()  # ghosts: dropped from the window's end
        self._evicted: OrderedDict[int, None] = OrderedDict()  # ghosts: evicted from the main part
        self._since_aging = 0
        self.hits = self.misses = self.evictions = self.admissions = 0
        self._now = 0  # accesses so far: the clock of last use
        self._last_use: OrderedDict[int, int] = OrderedDict()  # the main part, least recently used first
        self._stale: OrderedDict[int, None] = OrderedDict()  # ghosts: evicted as stale
        self._reused: OrderedDict[int, None] = OrderedDict()  # window blocks that came back after a refusal
        self.stale_after = float(STALE_START * capacity)

    def access(self, key: int) -> bool:
        """Record one access of block `key`; True when it was in the cache."""
        return self.request(key)[0]

    def request(self, key: int) -> Outcome:
        """Record one access of block `key` and say what the cache did about it."""
        self._now += 1
        returning = False
        if key in self._stale:
            del self._stale[key]
            self.stale_after = min(STALE_MAX * self.capacity, self.stale_after * STALE_STEP)
        elif key in self._refused:
            returning = True
            self.stale_after = max(STALE_MIN * self.capacity, self.stale_after / STALE_STEP)
        estimate = self._count_in_sketch(key)
        if key in self._window:
            self._window.move_to_end(key)
            self.hits += 1
            outcome = _HIT
        elif key in self._count:
            self._bump(key)
            self.hits += 1
            outcome = _HIT
        else:
            self.misses += 1
            outcome = self._miss_windowed(key, returning) if self.windowed else \
                self._miss_strict(key, estimate, returning)
        self._since_aging += 1
        if self._since_aging >= self.aging_window:
            self._age()
        return outcome

    def _bump(self, key: int) -> None:
        self._last_use[key] = self._now
        self._last_use.move_to_end(key)
        count = self._count[key]
        bucket = self._buckets[count]
        if count < self.max_count:
            del bucket[key]
            self._count[key] = count + 1
            self._buckets[count + 1][key] = None
            if count == self._lowest and not bucket:
                self._lowest = count + 1
        else:
            bucket.move_to_end(key)  # at the cap, recency breaks the tie

    def _miss_strict(self, key: int, estimate: int, returning: bool) -> Outcome:
        kept, victim = self._place_in_main(key, estimate, stale_ok=returning)
        if not kept:
            return _BYPASSED
        self.admissions += 1
        if victim is None:
            return _FILLED
        self.evictions += 1
        return Outcome(False, True, (victim,))

    def _miss_windowed(self, key: int, returning: bool) -> Outcome:
        self._adapt_window(key)
        self._window[key] = None
        if returning:
            self._reused[key] = None
        self.admissions += 1
        gone: list[int] = []
        while len(self._window) > self.window_target or len(self._window) + len(self._count) > self.capacity:
            if len(self._window) > self.window_target or not self._count:
                candidate, _ = self._window.popitem(last=False)
                reused = candidate in self._reused
                self._reused.pop(candidate, None)
                kept, victim = self._place_in_main(candidate, self._estimate(candidate), stale_ok=reused)
                if victim is not None:
                    gone.append(victim)
                    _remember(self._evicted, victim, self.capacity)
                if not kept:
                    gone.append(candidate)
                    _remember(self._refused, candidate, self.capacity)
            else:  # the window grew (blocks refused came back): the main part makes room
                victim = self._pop_victim(stale_ok=True)
                gone.append(victim)
                _remember(self._evicted, victim, self.capacity)
        self.evictions += len(gone)
        return Outcome(False, True, tuple(gone)) if gone else _FILLED

    def _adapt_window(self, key: int) -> None:
        # ARC's rule: move the target towards the side whose ghost was hit, faster when that list is the shorter.
        if key in self._refused:
            step = max(1, len(self._evicted) // len(self._refused))
            del self._refused[key]
            self.window_target = min(self.capacity, self.window_target + step)
        elif key in self._evicted:
            step = max(1, len(self._refused) // len(self._evicted))
            del self._evicted[key]
            self.window_target = max(1, self.window_target - step)

    def _place_in_main(self, key: int, estimate: int, stale_ok: bool = False) -> tuple[bool, int | None]:
        """Put `key` in the main part if there is room or it beats the victim: (kept, evicted).
        stale_ok: `key` proved reuse (refused, then asked again), so it may take a stale block's place."""
        if len(self._window) + len(self._count) < self.capacity:
            self._insert(key, estimate)
            return True, None
        if not self._count or estimate <= max(self._lowest, 1):
            return False, None
        victim = self._pop_victim(stale_ok)
        self._insert(key, estimate)
        return True, victim

    def _pop_victim(self, stale_ok: bool = False) -> int:
        oldest, used = next(iter(self._last_use.items()))
        # Unused for long, whatever its count: it left the working set. Only for a block that proved
        # reuse: a scan longer than stale_after must not push out what it did not touch.
        if stale_ok and self._now - used > self.stale_after:
            victim = oldest
            del self._buckets[self._count.pop(victim)][victim]
            _remember(self._stale, victim, self.capacity)
        else:
            victim, _ = self._buckets[self._lowest].popitem(last=False)
            del self._count[victim]
        del self._last_use[victim]
        if self._count:
            while not self._buckets[self._lowest]:
                self._lowest += 1
        return victim

    def _insert(self, key: int, count: int) -> None:
        # A block enters with the frequency the sketch remembers for it, not 1: that is what it beat the victim with.
        self._last_use[key] = self._now
        self._count[key] = count
        self._buckets[count][key] = None
        if count < self._lowest or len(self._count) == 1:
            self._lowest = count
        while not self._buckets[self._lowest]:
            self._lowest += 1

    def _sketch_slots(self, key: int) -> tuple[int, int, int, int]:
        h = _mix64(key)
        step = (h >> 32) | 1  # double hashing: row r uses h + r * step
        width, mask = self._width, self._width - 1
        return (h & mask, width + ((h + step) & mask), 2 * width + ((h + 2 * step) & mask),
                3 * width + ((h + 3 * step) & mask))

    def _count_in_sketch(self, key: int) -> int:
        """Add one to the key's counters (conservative update: only those at the minimum) and return
        the new estimate of its frequency."""
        sketch = self._sketch
        slots = self._sketch_slots(key)
        low = min(sketch[slots[0]], sketch[slots[1]], sketch[slots[2]], sketch[slots[3]])
        if low >= self.max_count:
            return self.max_count
        for i in slots:
            if sketch[i] == low:
                sketch[i] = low + 1
        return low + 1

    def _estimate(self, key: int) -> int:
        sketch = self._sketch
        slots = self._sketch_slots(key)
        return min(sketch[slots[0]], sketch[slots[1]], sketch[slots[2]], sketch[slots[3]])

    def _age(self) -> None:
        self._since_aging = 0
        self._sketch = self._sketch.translate(self._halve)
        aged: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(self.max_count + 1)]
        for count, bucket in enumerate(self._buckets):
            if bucket:
                aged[count >> 1].update(bucket)  # 2k before 2k+1: the less used is evicted first
                self._count.update(dict.fromkeys(bucket, count >> 1))
        self._buckets = aged
        self._lowest = next((count for count, bucket in enumerate(aged) if bucket), 0)

    def __len__(self) -> int:
        return len(self._count) + len(self._window)

    def __contains__(self, key: object) -> bool:
        return key in self._count or key in self._window

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this cache is (JSON-able): the main part's
        blocks in eviction order with their counts, the window and ghosts oldest first, the sketch
        (zlib, base64), the counters."""
        return {"policy": self.kind, "version": STATE_VERSION, "capacity": self.capacity, "window": self.windowed,
                "aging_window": self.aging_window, "max_count": self.max_count, "sketch_width": self._width,
                "since_aging": self._since_aging, "hits": self.hits, "misses": self.misses,
                "evictions": self.evictions, "admissions": self.admissions, "window_target": self.window_target,
                "main": [[key, count] for count, bucket in enumerate(self._buckets) for key in bucket],
                "window_blocks": list(self._window), "refused": list(self._refused), "evicted": list(self._evicted),
                "now": self._now, "stale_after": self.stale_after, "stale": list(self._stale),
                "reused": list(self._reused),
                "last_use": [[key, used] for key, used in self._last_use.items()],
                "sketch": base64.b64encode(zlib.compress(bytes(self._sketch), 6)).decode("ascii")}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "LfuAging":
        _check_header(state, cls.kind)
        cache = cls(_positive("capacity", state.get("capacity")), window=state.get("window"),
                    aging_window=_positive("aging_window", state.get("aging_window")),
                    max_count=state.get("max_count"), sketch_width=_positive("sketch_width", state.get("sketch_width")))
        cache.hits, cache.misses, cache.evictions, cache.admissions = (
            _counter(state, name) for name in ("hits", "misses", "evictions", "admissions"))
        cache._since_aging = _counter(state, "since_aging")
        if cache._since_aging >= cache.aging_window:
            raise CacheStateError(f"cache state: 'since_aging' {cache._since_aging} is not below 'aging_window' "
                                  f"{cache.aging_window}; the file is not a saved state of this cache")
        cache.window_target = _counter(state, "window_target")
        if cache.window_target > cache.capacity or (cache.windowed and cache.window_target < 1) or (
                not cache.windowed and cache.window_target):
            raise CacheStateError(f"cache state: 'window_target' {cache.window_target} does not fit 'capacity' "
                                  f"{cache.capacity} with window {cache.windowed}")
        cache._sketch = bytearray(_sketch_bytes(state, SKETCH_ROWS * cache._width, cache.max_count))
        main = _field(state, "main", list)
        for n, entry in enumerate(main):
            if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[1], int)
                    or isinstance(entry[1], bool) or not 0 <= entry[1] <= cache.max_count):
                raise CacheStateError(f"cache state: main[{n}] {entry!r}: expected [block, count] with a count "
                                      f"from 0 to {cache.max_count}")
            key = _block(entry[0], f"main[{n}]")
            if key in cache._count:
                raise CacheStateError(f"cache state: main[{n}]: block {key} is listed twice")
            cache._count[key] = entry[1]
            cache._buckets[entry[1]][key] = None
        cache._lowest = next((count for count, bucket in enumerate(cache._buckets) if bucket), 0)
        cache._window = _ordered_blocks(state, "window_blocks")
        cache._refused = _ordered_blocks(state, "refused")
        cache._evicted = _ordered_blocks(state, "evicted")
        both = cache._window.keys() & cache._count.keys()
        if both:
            raise CacheStateError(f"cache state: block {min(both)} is in both 'main' and 'window_blocks'")
        if len(cache) > cache.capacity or len(cache._window) > cache.window_target:
            raise CacheStateError(f"cache state: {len(cache)} blocks kept ({len(cache._window)} in the window), more "
                                  f"than 'capacity' {cache.capacity} (window {cache.window_target}); the file is not a "
                                  "saved state of this cache")
        if state["version"] == 1:  # before last use was kept: every block counts as used now
            cache._now = cache.hits + cache.misses
            cache._last_use = OrderedDict((key, cache._now) for key in cache._count)
        else:
            cache._now = _counter(state, "now")
            stale_after = state.get("stale_after")
            if not isinstance(stale_after, (int, float)) or isinstance(stale_after, bool) or not (
                    STALE_MIN * cache.capacity <= stale_after <= STALE_MAX * cache.capacity):
                raise CacheStateError(f"cache state: 'stale_after' {stale_after!r}: expected a number from "
                                      f"{STALE_MIN * cache.capacity} to {STALE_MAX * cache.capacity}")
            cache.stale_after = float(stale_after)
            cache._stale = _ordered_blocks(state, "stale")
            cache._reused = _ordered_blocks(state, "reused")
            if not cache._reused.keys() <= cache._window.keys():
                raise CacheStateError("cache state: 'reused' lists a block that is not in 'window_blocks'")
            last_use = _field(state, "last_use", list)
            for n, entry in enumerate(last_use):
                if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[1], int)
                        or isinstance(entry[1], bool) or not 0 <= entry[1] <= cache._now):
                    raise CacheStateError(f"cache state: last_use[{n}] {entry!r}: expected [block, access number] "
                                          f"with a number from 0 to 'now' {cache._now}")
                cache._last_use[_block(entry[0], f"last_use[{n}]")] = entry[1]
            if cache._last_use.keys() != cache._count.keys() or len(cache._last_use) != len(last_use):
                raise CacheStateError("cache state: 'last_use' does not list exactly the blocks of 'main'")
        if max(len(cache._refused), len(cache._evicted), len(cache._stale)) > cache.capacity:
            raise CacheStateError(f"cache state: a ghost list is longer than 'capacity' {cache.capacity}")
        return cache


POLICIES: dict[str, type] = {Lru.kind: Lru, LfuAging.kind: LfuAging}


def restore(state: dict[str, Any]) -> CachePolicy:
    """The policy a `state()` dict describes, continuing exactly where it was saved."""
    if not isinstance(state, dict):
        raise CacheStateError(f"cache state: expected a JSON object, got {type(state).__name__}")
    kind = state.get("policy")
    if kind not in POLICIES:
        raise CacheStateError(f"cache state: 'policy' {kind!r}: expected one of {', '.join(sorted(POLICIES))}")
    return POLICIES[kind].from_state(state)


def _mix64(key: int) -> int:
    """splitmix64's finaliser: neighbouring block numbers land on unrelated counters."""
    z = (key + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _positive(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CacheStateError(f"{name} {value!r}: expected a whole number, at least 1")
    return value


def _check_header(state: Any, kind: str) -> None:
    if not isinstance(state, dict):
        raise CacheStateError(f"cache state: expected a JSON object, got {type(state).__name__}")
    if state.get("policy") != kind:
        raise CacheStateError(f"cache state: 'policy' {state.get('policy')!r}: expected {kind!r}")
    if state.get("version") not in (1, STATE_VERSION) or isinstance(state.get("version"), bool):
        raise CacheStateError(f"cache state: 'version' {state.get('version')!r}: this appliance reads version "
                              f"{STATE_VERSION}; remove the file to start with an empty cache")


def _field(state: dict[str, Any], name: str, kind: type) -> Any:
    value = state.get(name)
    if not isinstance(value, kind):
        raise CacheStateError(f"cache state: {name!r} {value!r}: expected a {kind.__name__}")
    return value


def _counter(state: dict[str, Any], name: str) -> int:
    value = state.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CacheStateError(f"cache state: {name!r} {value!r}: expected a whole number, at least 0")
    return value


def _remember(ghosts: OrderedDict[int, None], key: int, limit: int) -> None:
    ghosts[key] = None
    if len(ghosts) > limit:
        ghosts.popitem(last=False)


def _ordered_blocks(state: dict[str, Any], name: str) -> OrderedDict[int, None]:
    blocks = _field(state, name, list)
    ordered = OrderedDict((_block(key, f"{name}[{n}]"), None) for n, key in enumerate(blocks))
    if len(ordered) != len(blocks):
        raise CacheStateError(f"cache state: {name!r} lists a block twice")
    return ordered


def _sketch_bytes(state: dict[str, Any], size: int, max_count: int) -> bytes:
    try:
        sketch = zlib.decompress(base64.b64decode(_field(state, "sketch", str), validate=True))
    except (ValueError, zlib.error) as exc:
        raise CacheStateError(f"cache state: 'sketch' is not zlib data in base64 ({exc}); the file is damaged: "
                              "remove it to start with an empty cache") from None
    if len(sketch) != size or max(sketch, default=0) > max_count:
        raise CacheStateError(f"cache state: 'sketch' holds {len(sketch)} counters, expected {size} of at most "
                              f"{max_count}; the file is damaged: remove it to start with an empty cache")
    return sketch


def _block(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CacheStateError(f"cache state: {where}: block {value!r} is not a block number (a whole number >= 0)")
    return value
