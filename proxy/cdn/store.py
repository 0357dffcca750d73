"""The cache's memory: objects bounded by a total byte size, evicted by a policy (LRU, LFU, FIFO,
W-TinyLFU: proxy/cdn/policies.py).

Sans-IO: no clock, no sockets. Keys are (primary key, Vary secondary key); an object's cost is
its body plus its header bytes plus a fixed overhead, so many tiny objects cannot exceed the
bound either. Objects larger than `max_object_bytes` are refused (the caller passes them through).
Objects are also indexed by their surrogate keys (Surrogate-Key / Cache-Tag) for group purges.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from proxy.cdn.policies import POLICIES, make_policy
from proxy.cdn.surrogate import surrogate_keys

__all__ = ["OBJECT_OVERHEAD", "POLICIES", "Entry", "Store"]

# Bytes charged per object besides body and headers: the entry, its keys and dict slots.
OBJECT_OVERHEAD = 256

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
    hits: int = field(default=0, compare=False)  # answers from this object (the admin's top URLs)
    hot: Any = field(default=None, compare=False)  # what a hit needs (proxy/cdn/hit.py), made once

    def cost(self) -> int:
        return len(self.body) + sum(len(n) + len(v) + 4 for n, v in self.headers) + OBJECT_OVERHEAD


class Store:
    """Byte-bounded object store. `get` counts as a use (a hit) for the policy; `peek` does not.
    The policy (proxy/cdn/policies.py) orders keys; the store holds the objects and the bytes."""

    def __init__(self, max_bytes: int, policy: str = "lru", max_object_bytes: int | None = None) -> None:
        self._policy = make_policy(policy, max_bytes)
        self.max_bytes = max_bytes
        self.policy = policy
        self.max_object_bytes = max_bytes if max_object_bytes is None else min(max_object_bytes, max_bytes)
        self.bytes = 0
        self.evictions = 0
        self._entries: dict[Key, Entry] = {}
        # primary key -> its variants' secondary keys (Vary), for lookups and purges by URL.
        self._variants: dict[bytes, set[Any]] = {}
        # surrogate key -> the stored keys it names.
        self._tags: dict[bytes, set[Key]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def keys(self) -> list[Key]:
        return list(self._entries)

    def entries(self) -> list[tuple[Key, Entry]]:
        return list(self._entries.items())

    def variants(self, primary: bytes) -> list[Any]:
        return list(self._variants.get(primary, ()))

    def variant_set(self, primary: bytes) -> set[Any] | tuple[()]:
        """`variants` without a copy, for the hit path: not to be kept or changed."""
        return self._variants.get(primary, ())

    def peek(self, key: Key) -> Entry | None:
        return self._entries.get(key)

    def touch(self, key: Key) -> None:
        """A use of the stored `key` (found with `peek`), for the eviction policy."""
        self._policy.access(key)

    def get(self, key: Key) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._policy.access(key)
        return entry

    def put(self, key: Key, entry: Entry, cost: int | None = None) -> list[Key]:
        """Store `entry`, then evict until the store is within its bound; returns the evicted
        keys, which under W-TinyLFU may include `key` itself (not admitted). An object over
        `max_object_bytes` is not stored (and nothing is evicted for it). `cost` overrides the
        entry's computed size (trace replays store no bodies)."""
        entry.size = entry.cost() if cost is None else cost
        if entry.size > self.max_object_bytes:
            return []
        if key in self._entries:
            self.remove(key)
        self._entries[key] = entry
        self.bytes += entry.size
        self._variants.setdefault(key[0], set()).add(key[1])
        entry.tags = surrogate_keys(entry.headers)
        for tag in entry.tags:
            self._tags.setdefault(tag, set()).add(key)
        self._policy.insert(key, entry.size)
        return self._evict(key)

    def remove(self, key: Key) -> Entry | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self._policy.remove(key)
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
        return entry

    def purge(self, primary: bytes, soft: bool = False) -> int:
        """Drop (or with `soft`, mark stale) every variant stored under `primary`; how many."""
        keys = [(primary, v) for v in self.variants(primary)]
        for key in keys:
            if soft:
                self._entries[key].stale = True
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
                self._entries[key].stale = True
            else:
                self.remove(key)
        return len(keys)

    def resize(self, max_bytes: int, max_object_bytes: int) -> list[Key]:
        """A new bound (reload): evict until within it."""
        self.max_bytes = max_bytes
        self.max_object_bytes = min(max_object_bytes, max_bytes)
        self._policy.resize(max_bytes)
        return self._evict(None)

    def shrink(self) -> list[Key]:
        """Evict until within `max_bytes`."""
        return self._evict(None)

    def _evict(self, incoming: Key | None) -> list[Key]:
        evicted: list[Key] = []
        while self.bytes > self.max_bytes and self._entries:
            victim = self._policy.victim(incoming)
            self.remove(victim)
            self.evictions += 1
            evicted.append(victim)
        return evicted

    def top(self, n: int) -> list[tuple[Key, Entry]]:
        """The `n` objects answered most often (O(objects): for the admin page, not the hot path)."""
        return heapq.nlargest(n, self._entries.items(), key=lambda kv: kv[1].hits)

    def status(self) -> dict[str, Any]:
        return {"policy": self.policy, "objects": len(self._entries), "bytes": self.bytes,
                "max_bytes": self.max_bytes, "evictions": self.evictions}
