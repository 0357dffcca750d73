"""The query cache's in-process level: answers by key, bounded in bytes, evicting LRU, LFU or FIFO.

Pure data structure, no I/O and no clock: every call that needs the time takes `now` (seconds,
any monotonic origin), and the jitter of a TTL is a random value its caller draws. The dbproxy
session owns one store per process (issue 20); Redis as a shared level is not built yet.

Size: an entry costs `len(key) + len(value) + ENTRY_OVERHEAD` bytes (the overhead stands for the
dict slots, the entry object and the table index, so a flood of tiny answers is bounded too).
`put` evicts until the new entry fits; an entry larger than the whole bound is not stored. After
every call `bytes <= max_bytes` holds.

Eviction, when room is needed (expired entries go first, whatever the policy, then):
- "lru": the entry least recently stored or hit.
- "lfu": the entry with the fewest hits since it was stored; among equals, the one that reached
  that count first (least recently hit or stored).
- "fifo": the entry stored first; hits do not change the order.
Storing a key again replaces its entry: it counts as a new entry (new position, zero hits).

Expiry: `expires_at(now, ttl, jitter, u)` spreads expiries over [ttl * (1 - jitter), ttl] with
`u` drawn uniformly from [0, 1): entries written together do not expire together, and none
outlives its TTL (the staleness bound for writes that bypass the proxy is the TTL itself).

Invalidation: each entry names the tables its statement reads; `invalidate_tables` drops every
entry of those tables (through an index table -> keys) and counts per table, for SHOW CACHE.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ENTRY_OVERHEAD", "POLICIES", "CacheEntry", "QueryCacheStore", "expires_at"]

POLICIES = ("lru", "lfu", "fifo")
ENTRY_OVERHEAD = 200


def expires_at(now: float, ttl: float, jitter: float, u: float) -> float:
    """When an entry stored at `now` expires: `ttl` shortened by up to `jitter` (a fraction in
    [0, 1]) times `u` (a random draw in [0, 1) made by the caller)."""
    if not 0.0 <= jitter <= 1.0 or not 0.0 <= u <= 1.0:
        raise ValueError("jitter and u must lie in [0, 1]")
    return now + ttl * (1.0 - jitter * u)


@dataclass(slots=True)
class CacheEntry:
    value: bytes
    tables: frozenset[str]
    expires: float
    size: int
    hits: int = 0


class QueryCacheStore:
    """Key -> answer bytes, within `max_bytes`, evicting by `policy` (one of POLICIES)."""

    def __init__(self, max_bytes: int, policy: str = "lru") -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}")
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.policy = policy
        self.bytes = 0
        # Order of eviction candidates for lru/fifo: first = next to go.
        self._entries: OrderedDict[bytes, CacheEntry] = OrderedDict()
        # lfu: hit count -> keys with that count, in the order they reached it (first = next to go).
        self._by_hits: dict[int, OrderedDict[bytes, None]] = {}
        self._by_table: dict[str, set[bytes]] = {}
        self.hits = self.misses = self.evictions = self.expirations = 0
        self.invalidations: dict[str, int] = {}  # table -> entries dropped for it

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def get(self, key: bytes, now: float) -> bytes | None:
        """The answer stored under `key` if present and not expired (a hit), else None (a miss)."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if entry.expires <= now:
            self._remove(key)
            self.expirations += 1
            self.misses += 1
            return None
        self.hits += 1
        if self.policy == "lru":
            self._entries.move_to_end(key)
        elif self.policy == "lfu":
            self._by_hits[entry.hits].pop(key)
            if not self._by_hits[entry.hits]:
                del self._by_hits[entry.hits]
            entry.hits += 1
            self._by_hits.setdefault(entry.hits, OrderedDict())[key] = None
        else:
            entry.hits += 1
        return entry.value

    def peek(self, key: bytes, now: float) -> bytes | None:
        """The answer stored under `key` if present and not expired, counting nothing and
        changing no order (the shared level checks it in Redis before it is a hit)."""
        entry = self._entries.get(key)
        return entry.value if entry is not None and entry.expires > now else None

    def put(self, key: bytes, value: bytes, tables: Iterable[str], expires: float, now: float) -> bool:
        """Store `value` until `expires`; False if it cannot fit even in an empty store."""
        if key in self._entries:
            self._remove(key)
        size = len(key) + len(value) + ENTRY_OVERHEAD
        if size > self.max_bytes or expires <= now:
            return False
        if self.bytes + size > self.max_bytes:
            self.expire(now)
        while self.bytes + size > self.max_bytes:
            self._remove(self._victim())
            self.evictions += 1
        entry = CacheEntry(value, frozenset(tables), expires, size)
        self._entries[key] = entry
        self.bytes += size
        if self.policy == "lfu":
            self._by_hits.setdefault(0, OrderedDict())[key] = None
        for table in entry.tables:
            self._by_table.setdefault(table, set()).add(key)
        return True

    def expire(self, now: float) -> int:
        """Drop every expired entry; how many."""
        dead = [key for key, entry in self._entries.items() if entry.expires <= now]
        for key in dead:
            self._remove(key)
        self.expirations += len(dead)
        return len(dead)

    def invalidate_tables(self, tables: Iterable[str]) -> int:
        """Drop every entry that reads one of `tables`; how many."""
        dropped = 0
        for table in tables:
            keys = self._by_table.get(table)
            if not keys:
                continue
            count = len(keys)
            for key in list(keys):
                self._remove(key)
            dropped += count
            self.invalidations[table] = self.invalidations.get(table, 0) + count
        return dropped

    def clear(self) -> int:
        """Drop everything (a write whose tables are unknown, a purge); how many."""
        count = len(self._entries)
        self._entries.clear()
        self._by_hits.clear()
        self._by_table.clear()
        self.bytes = 0
        return count

    def tables(self) -> dict[str, int]:
        """Table -> number of entries that read it."""
        return {table: len(keys) for table, keys in self._by_table.items()}

    def table_sizes(self) -> dict[str, tuple[int, int]]:
        """Table -> (entries that read it, their bytes): SHOW CACHE's rows."""
        entries = self._entries
        return {table: (len(keys), sum(entries[k].size for k in keys)) for table, keys in self._by_table.items()}

    def _victim(self) -> bytes:
        if self.policy == "lfu":
            bucket = self._by_hits[min(self._by_hits)]
            return next(iter(bucket))
        return next(iter(self._entries))

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.size
        if self.policy == "lfu":
            bucket = self._by_hits[entry.hits]
            del bucket[key]
            if not bucket:
                del self._by_hits[entry.hits]
        for table in entry.tables:
            keys = self._by_table[table]
            keys.discard(key)
            if not keys:
                del self._by_table[table]
