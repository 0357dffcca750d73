"""Eviction policies of the cdn's store: LRU, LFU, FIFO and W-TinyLFU, each a pure object that
only orders keys (the store holds the objects and counts the bytes).

Interface, called by `proxy/cdn/store.py:Store`:
    insert(key, size)   a new object is resident (a miss was stored)
    access(key)         a resident object was used (a hit)
    remove(key)         an object left (evicted, purged, replaced)
    victim(incoming)    the next object to evict while the store is over its byte bound;
                        `incoming` is the object just inserted
    resize(max_bytes)   the bound changed (reload)

LRU, LFU and FIFO never return `incoming` (a stored miss always enters). W-TinyLFU (Einziger,
Friedman, Manes, "TinyLFU: A Highly Efficient Cache Admission Policy", 2017; Caffeine's design)
may: a new object enters a small LRU *window* (1 % of the bytes); what the window pushes out is a
*candidate* for the main space, a segmented LRU (*probation*, and *protected* holding 80 % of
the main bytes for objects used again while in probation). The candidate is admitted only if
the frequency sketch (proxy/cdn/sketch.py) says it is used more often than probation's least
recently used object, which is then evicted; otherwise the candidate itself is evicted. The
window lets bursts of new objects build up frequency; the admission filter keeps one-hit
wonders from flushing popular objects; the sketch's aging follows shifting popularity.
Caffeine's hill climbing of the window size and its random admission against hash flooding are
not implemented: the window is a fixed 1 %.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol

from proxy.cdn.sketch import FrequencySketch

__all__ = ["POLICIES", "FifoPolicy", "LfuPolicy", "LruPolicy", "Policy", "WTinyLfuPolicy", "make_policy"]

POLICIES = ("lru", "lfu", "fifo", "wtinylfu")

Key = Any


class Policy(Protocol):
    name: str

    def insert(self, key: Key, size: int) -> None: ...
    def access(self, key: Key) -> None: ...
    def remove(self, key: Key) -> None: ...
    def victim(self, incoming: Key | None) -> Key: ...
    def resize(self, max_bytes: int) -> None: ...


class LruPolicy:
    """Least recently used first. The incoming object is the most recent, never first while
    anything else is resident."""

    name = "lru"

    def __init__(self, max_bytes: int) -> None:
        self._order: OrderedDict[Key, None] = OrderedDict()

    def insert(self, key: Key, size: int) -> None:
        self._order[key] = None

    def access(self, key: Key) -> None:
        self._order.move_to_end(key)

    def remove(self, key: Key) -> None:
        del self._order[key]

    def victim(self, incoming: Key | None) -> Key:
        return next(iter(self._order))

    def resize(self, max_bytes: int) -> None:
        pass


class FifoPolicy(LruPolicy):
    """First in, first out: uses do not reorder."""

    name = "fifo"

    def access(self, key: Key) -> None:
        pass


class LfuPolicy:
    """Least frequently used first (uses counted while resident), ties to the least recently used;
    frequency buckets and the lowest non-empty frequency make each step O(1). The incoming object
    (one use) is skipped: it is not evicted for itself."""

    name = "lfu"

    def __init__(self, max_bytes: int) -> None:
        self._freq: dict[Key, int] = {}
        self._buckets: dict[int, OrderedDict[Key, None]] = {}
        self._min = 0

    def insert(self, key: Key, size: int) -> None:
        self._freq[key] = 1
        self._buckets.setdefault(1, OrderedDict())[key] = None
        self._min = 1

    def access(self, key: Key) -> None:
        f = self._freq[key]
        bucket = self._buckets[f]
        del bucket[key]
        if not bucket:
            del self._buckets[f]
            if self._min == f:
                self._min = f + 1
        self._freq[key] = f + 1
        self._buckets.setdefault(f + 1, OrderedDict())[key] = None

    def remove(self, key: Key) -> None:
        f = self._freq.pop(key)
        bucket = self._buckets[f]
        del bucket[key]
        if not bucket:
            del self._buckets[f]

    def victim(self, incoming: Key | None) -> Key:
        if self._min not in self._buckets:
            self._min = min(self._buckets)
        for key in self._buckets[self._min]:
            if key != incoming:
                return key
        # Only the incoming object has the lowest frequency: the next one up (rare, O(buckets)).
        return next(iter(self._buckets[min(f for f in self._buckets if f > self._min)]))

    def resize(self, max_bytes: int) -> None:
        pass


WINDOW, PROBATION, PROTECTED = 0, 1, 2


class WTinyLfuPolicy:
    """Window LRU + segmented main LRU behind a TinyLFU admission filter (see the module doc)."""

    name = "wtinylfu"
    WINDOW_SHARE = 0.01
    PROTECTED_SHARE = 0.80
    # Sketch width per byte of capacity: one counter per 256 bytes of the bound in each row, i.e.
    # many per object for web objects (Caffeine sizes it to the maximum entry count, which a
    # byte-bounded store does not know). 1 MiB of counters for a 64 MiB cache.
    BYTES_PER_COUNTER = 256
    # Aging period: 10 counted uses per resident object, as Caffeine's 10 x maximum size.
    SAMPLE_PER_OBJECT = 10

    def __init__(self, max_bytes: int) -> None:
        self._segments: tuple[OrderedDict[Key, int], ...] = (OrderedDict(), OrderedDict(), OrderedDict())
        self._bytes = [0, 0, 0]
        self._where: dict[Key, int] = {}
        self._ix: dict[Key, tuple[int, int, int, int]] = {}  # sketch counters of resident keys
        self._candidates: list[Key] = []  # pushed out of the window by the latest insert
        self.resize(max_bytes)
        width = min(1 << 22, max(1024, max_bytes // self.BYTES_PER_COUNTER))
        self.sketch = FrequencySketch(width, sample_size=self.SAMPLE_PER_OBJECT * 64)

    def resize(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.window_max = int(max_bytes * self.WINDOW_SHARE)
        self.protected_max = int((max_bytes - self.window_max) * self.PROTECTED_SHARE)

    def segment_bytes(self) -> dict[str, int]:
        return {"window": self._bytes[WINDOW], "probation": self._bytes[PROBATION],
                "protected": self._bytes[PROTECTED]}

    def where(self, key: Key) -> str | None:
        seg = self._where.get(key)
        return None if seg is None else ("window", "probation", "protected")[seg]

    def _move(self, key: Key, to: int) -> None:
        seg = self._where[key]
        size = self._segments[seg].pop(key)
        self._bytes[seg] -= size
        self._segments[to][key] = size
        self._bytes[to] += size
        self._where[key] = to

    def insert(self, key: Key, size: int) -> None:
        self.sketch.sample_size = self.SAMPLE_PER_OBJECT * max(64, len(self._where) + 1)
        ix = self._ix[key] = self.sketch.indexes(key)
        self.sketch.increment_at(ix)
        self._segments[WINDOW][key] = size
        self._bytes[WINDOW] += size
        self._where[key] = WINDOW
        # The window's overflow moves to probation; those objects are this insert's candidates.
        self._candidates = []
        window = self._segments[WINDOW]
        while self._bytes[WINDOW] > self.window_max and window:
            old = next(iter(window))
            self._move(old, PROBATION)
            self._candidates.append(old)

    def access(self, key: Key) -> None:
        self.sketch.increment_at(self._ix[key])
        seg = self._where[key]
        if seg == PROBATION:
            # Used again while on probation: protected. Protected's overflow goes back to
            # probation's most recent end.
            self._move(key, PROTECTED)
            protected = self._segments[PROTECTED]
            while self._bytes[PROTECTED] > self.protected_max and len(protected) > 1:
                self._move(next(iter(protected)), PROBATION)
        else:
            self._segments[seg].move_to_end(key)

    def remove(self, key: Key) -> None:
        seg = self._where.pop(key)
        del self._ix[key]
        self._bytes[seg] -= self._segments[seg].pop(key)
        if key in self._candidates:
            self._candidates.remove(key)

    def _first(self, seg: int, skip: list[Key]) -> Key | None:
        for key in self._segments[seg]:
            if key not in skip:
                return key
        return None

    def victim(self, incoming: Key | None) -> Key:
        if self._candidates:
            candidate = self._candidates[0]
            victim = self._first(PROBATION, self._candidates)
            if victim is None:
                victim = self._first(PROTECTED, [])
            if victim is None:
                return candidate  # nothing in main to compare with: the candidate goes
            freq = self.sketch.frequency_at
            if freq(self._ix[candidate]) > freq(self._ix[victim]):
                self._candidates.pop(0)  # admitted: it stays on probation
                return victim
            return candidate
        for seg in (PROBATION, PROTECTED, WINDOW):
            if self._segments[seg]:
                return next(iter(self._segments[seg]))
        raise LookupError("no resident object to evict")


_CLASSES: dict[str, type] = {"lru": LruPolicy, "lfu": LfuPolicy, "fifo": FifoPolicy, "wtinylfu": WTinyLfuPolicy}


def make_policy(name: str, max_bytes: int) -> Policy:
    try:
        cls = _CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown eviction policy {name!r}; one of {', '.join(POLICIES)}") from None
    return cls(max_bytes)  # type: ignore[no-any-return]
