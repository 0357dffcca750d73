"""The cache's memory: objects bounded by a total byte size, evicted by a policy (LRU, LFU, FIFO).

Sans-IO: no clock, no sockets. Keys are (primary key, Vary secondary key); an object's cost is
its body plus its header bytes plus a fixed overhead, so many tiny objects cannot exceed the
bound either. Objects larger than `max_object_bytes` are refused (the caller passes them through).
Objects are also indexed by their surrogate keys (Surrogate-Key / Cache-Tag) for group purges.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from proxy.cdn.surrogate import surrogate_keys

__all__ = ["OBJECT_OVERHEAD", "POLICIES", "Entry", "Store"]

# Bytes charged per object besides body and headers: the entry, its keys and dict slots.
OBJECT_OVERHEAD = 256
POLICIES = ("lru", "lfu", "fifo")

Key = tuple[bytes, Any]


@dataclass(slots=True)
class Entry:
    """One stored response: status, the stored header fields, the body, and the times RFC 9111
    4.2.3 needs (when the request went out and the response came back)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    request_time: float
    response_time: float
    lifetime: float
    vary: tuple = ()
    stale: bool = False  # soft-purged: must revalidate before it is used
    tags: frozenset = frozenset()  # surrogate keys, set by Store.put from the headers
    size: int = field(default=0, compare=False)

    def cost(self) -> int:
        return len(self.body) + sum(len(n) + len(v) + 4 for n, v in self.headers) + OBJECT_OVERHEAD


class Store:
    """Byte-bounded object store. `get` counts as a use for LRU/LFU; FIFO ignores uses."""

    def __init__(self, max_bytes: int, policy: str = "lru", max_object_bytes: int | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown eviction policy {policy!r}; one of {', '.join(POLICIES)}")
        self.max_bytes = max_bytes
        self.policy = policy
        self.max_object_bytes = max_bytes if max_object_bytes is None else min(max_object_bytes, max_bytes)
        self.bytes = 0
        self.evictions = 0
        # LRU/FIFO: one ordered dict, oldest first. LFU: frequency buckets, each ordered (ties
        # go to the least recently used), plus the lowest non-empty frequency: O(1) per step.
        self._order: OrderedDict[Key, Entry] = OrderedDict()
        self._freq: dict[Key, int] = {}
        self._buckets: dict[int, OrderedDict[Key, None]] = {}
        self._min_freq = 0
        # primary key -> its variants' secondary keys (Vary), for lookups and purges by URL.
        self._variants: dict[bytes, set[Any]] = {}
        # surrogate key -> the stored keys it names.
        self._tags: dict[bytes, set[Key]] = {}

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: Key) -> bool:
        return key in self._order

    def variants(self, primary: bytes) -> list[Any]:
        return list(self._variants.get(primary, ()))

    def peek(self, key: Key) -> Entry | None:
        return self._order.get(key)

    def get(self, key: Key) -> Entry | None:
        entry = self._order.get(key)
        if entry is None:
            return None
        if self.policy == "lru":
            self._order.move_to_end(key)
        elif self.policy == "lfu":
            self._bump(key)
        return entry

    def put(self, key: Key, entry: Entry) -> list[Key]:
        """Store `entry`, evicting others until it fits; returns the evicted keys. An object
        over `max_object_bytes` is not stored (and nothing is evicted for it)."""
        entry.size = entry.cost()
        if entry.size > self.max_object_bytes:
            return []
        if key in self._order:
            self.remove(key)
        evicted: list[Key] = []
        while self.bytes + entry.size > self.max_bytes and self._order:
            victim = self._victim()
            self.remove(victim)
            self.evictions += 1
            evicted.append(victim)
        self._order[key] = entry
        self.bytes += entry.size
        self._variants.setdefault(key[0], set()).add(key[1])
        entry.tags = surrogate_keys(entry.headers)
        for tag in entry.tags:
            self._tags.setdefault(tag, set()).add(key)
        if self.policy == "lfu":
            self._freq[key] = 1
            self._buckets.setdefault(1, OrderedDict())[key] = None
            self._min_freq = 1
        return evicted

    def remove(self, key: Key) -> Entry | None:
        entry = self._order.pop(key, None)
        if entry is None:
            return None
        self.bytes -= entry.size
        variants = self._variants.get(key[0])
        if variants is not None:
            variants.discard(key[1])
            if not variants:
                del self._variants[key[0]]
        for tag in entry.tags:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tags[tag]
        if self.policy == "lfu":
            f = self._freq.pop(key)
            bucket = self._buckets[f]
            del bucket[key]
            if not bucket:
                del self._buckets[f]
        return entry

    def purge(self, primary: bytes, soft: bool = False) -> int:
        """Drop (or with `soft`, mark stale) every variant stored under `primary`; how many."""
        keys = [(primary, v) for v in self.variants(primary)]
        for key in keys:
            if soft:
                self._order[key].stale = True
            else:
                self.remove(key)
        return len(keys)

    def tagged(self, tag: bytes) -> list[Key]:
        return list(self._tags.get(tag, ()))

    def purge_tag(self, tag: bytes, soft: bool = False) -> int:
        """Drop (or with `soft`, mark stale) every object whose surrogate keys include `tag`."""
        keys = self.tagged(tag)
        for key in keys:
            if soft:
                self._order[key].stale = True
            else:
                self.remove(key)
        return len(keys)

    def shrink(self) -> list[Key]:
        """Evict until within `max_bytes` (after the bound was lowered by a reload)."""
        evicted = []
        while self.bytes > self.max_bytes and self._order:
            victim = self._victim()
            self.remove(victim)
            self.evictions += 1
            evicted.append(victim)
        return evicted

    def _bump(self, key: Key) -> None:
        f = self._freq[key]
        bucket = self._buckets[f]
        del bucket[key]
        if not bucket:
            del self._buckets[f]
            if self._min_freq == f:
                self._min_freq = f + 1
        self._freq[key] = f + 1
        self._buckets.setdefault(f + 1, OrderedDict())[key] = None

    def _victim(self) -> Key:
        if self.policy != "lfu":
            return next(iter(self._order))
        if self._min_freq not in self._buckets:
            self._min_freq = min(self._buckets)
        return next(iter(self._buckets[self._min_freq]))

    def status(self) -> dict[str, Any]:
        return {"policy": self.policy, "objects": len(self._order), "bytes": self.bytes,
                "max_bytes": self.max_bytes, "evictions": self.evictions}
