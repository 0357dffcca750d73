"""Hot keys: bounded top-K counting (Space-Saving) per table group, exact counts per shard, skew.

Theory of operation
-------------------
`SpaceSaving` (Metwally, Agrawal, El Abbadi, "Efficient computation of frequent and top-k
elements in data streams", 2005) keeps at most `capacity` counters. A key already counted is
incremented; a new key takes a free counter, or else replaces the key with the smallest count m
and starts at m + weight with error m. So memory is bounded whatever the key space, and:

* every key whose true count exceeds total / capacity is in the summary (the celebrity is
  never missed);
* for a key in the summary, ``count - error <= true count <= count``.

The minimum is found through a lazy heap of (count, key) entries: an entry whose count no longer
matches its key's counter is stale and skipped; the heap is rebuilt from the counters when stale
entries outnumber live ones three to one, so an offer costs O(log capacity) amortized.

`HotKeys` keeps one summary per table group and exact per-shard counts (shards are few), and
derives the skew figures /metrics shows: each shard's share of statements, the ratio of the
busiest shard's count to the mean (1.0 is balanced), and the hottest key's share of its group.
Summaries from several workers merge (`merged`): counts and errors add, then the largest
`capacity` are kept (the merged summary keeps the guarantee for the combined stream). With
`workers = N` each worker sends its `HotKeys.to_json()` and the supervisor shows
`HotKeys.merged(...)` of them (keys are integers or text, which JSON keeps apart).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from itertools import count as _counter
from typing import Any

__all__ = ["HotKey", "HotKeys", "Skew", "SpaceSaving"]


class SpaceSaving:
    """At most `capacity` counters; heavy hitters above total/capacity are always kept."""

    __slots__ = ("capacity", "total", "_counts", "_errors", "_heap", "_seq")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.total = 0
        self._counts: dict[Hashable, int] = {}
        self._errors: dict[Hashable, int] = {}
        # (count, seq, key); seq breaks ties without comparing keys of different types.
        self._heap: list[tuple[int, int, Hashable]] = []
        self._seq = _counter()

    def __len__(self) -> int:
        return len(self._counts)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._counts

    def offer(self, key: Hashable, weight: int = 1) -> None:
        if weight < 1:
            raise ValueError(f"weight must be >= 1, got {weight}")
        self.total += weight
        counts = self._counts
        if key in counts:
            counts[key] += weight
        elif len(counts) < self.capacity:
            counts[key] = weight
            self._errors[key] = 0
        else:
            smallest, victim = self._pop_min()
            del counts[victim]
            del self._errors[victim]
            counts[key] = smallest + weight
            self._errors[key] = smallest
        heapq.heappush(self._heap, (counts[key], next(self._seq), key))
        if len(self._heap) > 4 * max(len(counts), 16):
            self._rebuild()

    def _pop_min(self) -> tuple[int, Hashable]:
        heap, counts = self._heap, self._counts
        while True:
            c, _, key = heapq.heappop(heap)
            if counts.get(key) == c:
                return c, key

    def _rebuild(self) -> None:
        self._heap = [(c, next(self._seq), k) for k, c in self._counts.items()]
        heapq.heapify(self._heap)

    def count(self, key: Hashable) -> tuple[int, int]:
        """(count, error) of `key`; (0, 0) when it is not counted."""
        return self._counts.get(key, 0), self._errors.get(key, 0)

    def top(self, n: int | None = None) -> list[tuple[Hashable, int, int]]:
        """(key, count, error), largest count first; ties by the smaller error."""
        items = sorted(self._counts.items(), key=lambda kv: (-kv[1], self._errors[kv[0]]))
        if n is not None:
            items = items[:n]
        return [(k, c, self._errors[k]) for k, c in items]

    def items(self) -> dict[Hashable, tuple[int, int]]:
        return {k: (c, self._errors[k]) for k, c in self._counts.items()}

    def to_json(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "total": self.total,
                "items": [[k, c, self._errors[k]] for k, c in self._counts.items()]}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SpaceSaving:
        out = cls(int(data["capacity"]))
        out.total = int(data["total"])
        for k, c, e in data["items"]:
            out._counts[k] = int(c)
            out._errors[k] = int(e)
        out._rebuild()
        return out

    @classmethod
    def merged(cls, summaries: Iterable[SpaceSaving], capacity: int) -> SpaceSaving:
        """One summary of the concatenated streams: for every key kept, count is still an upper
        bound and count - error a lower bound of its true count in all of them."""
        counts: dict[Hashable, int] = {}
        errors: dict[Hashable, int] = {}
        total = 0
        acc_floor = 0  # what a key unseen so far may have had in the summaries already merged
        for s in summaries:
            total += s.total
            # A key absent from a full summary may have had up to its minimum count there.
            floor = min(s._counts.values()) if len(s._counts) >= s.capacity else 0
            for k in counts:
                if k not in s._counts:
                    counts[k] += floor
                    errors[k] += floor
            for k, c in s._counts.items():
                if k in counts:
                    counts[k] += c
                    errors[k] += s._errors[k]
                else:
                    counts[k] = acc_floor + c
                    errors[k] = acc_floor + s._errors[k]
            acc_floor += floor
        out = cls(capacity)
        keep = sorted(counts, key=lambda k: -counts[k])[:capacity]
        out._counts = {k: counts[k] for k in keep}
        out._errors = {k: errors[k] for k in keep}
        out.total = total
        out._rebuild()
        return out


@dataclass(frozen=True)
class HotKey:
    group: str
    key: Hashable
    shard: str
    count: int  # an upper bound of the key's statements
    error: int  # count - error is a lower bound
    share: float  # count / statements of the group


@dataclass(frozen=True)
class Skew:
    shard_counts: Mapping[str, int]
    busiest: str | None
    max_to_mean: float  # busiest shard's statements / the mean over shards; 1.0 = balanced
    hottest_key_share: Mapping[str, float]  # per group: the hottest key's share of statements


class HotKeys:
    """Per-group key summaries and per-shard statement counts (one per worker; merge to show)."""

    def __init__(self, shards: Iterable[str], capacity: int = 1000) -> None:
        self.capacity = capacity
        self.shard_counts: dict[str, int] = dict.fromkeys(shards, 0)
        self.groups: dict[str, SpaceSaving] = {}
        self._shard_of: dict[tuple[str, Hashable], str] = {}

    def record(self, group: str, key: Hashable, shard: str, weight: int = 1) -> None:
        """A statement for `key` of `group` went to `shard`."""
        summary = self.groups.get(group)
        if summary is None:
            summary = self.groups[group] = SpaceSaving(self.capacity)
        summary.offer(key, weight)
        self.record_shard(shard, weight)
        self._shard_of[(group, key)] = shard
        if len(self._shard_of) > 2 * self.capacity * max(len(self.groups), 1):
            self._shard_of = {(g, k): s for (g, k), s in self._shard_of.items()
                              if k in self.groups[g]}

    def record_shard(self, shard: str, weight: int = 1) -> None:
        """A statement (keyed or not) went to `shard`."""
        self.shard_counts[shard] = self.shard_counts.get(shard, 0) + weight

    def top(self, n: int = 10) -> list[HotKey]:
        """The `n` hottest keys over all groups, largest count first."""
        out = []
        for group, summary in self.groups.items():
            for key, c, err in summary.top(n):
                share = c / summary.total if summary.total else 0.0
                out.append(HotKey(group, key, self._shard_of.get((group, key), ""), c, err, share))
        out.sort(key=lambda h: (-h.count, h.error, h.group, str(h.key)))
        return out[:n]

    def skew(self) -> Skew:
        counts = self.shard_counts
        busiest = max(counts, key=lambda s: (counts[s], s)) if counts else None
        mean = sum(counts.values()) / len(counts) if counts else 0.0
        ratio = counts[busiest] / mean if busiest is not None and mean > 0 else 1.0
        shares = {}
        for group, summary in self.groups.items():
            top = summary.top(1)
            shares[group] = top[0][1] / summary.total if top and summary.total else 0.0
        return Skew(dict(counts), busiest, ratio, shares)

    def to_json(self) -> dict[str, Any]:
        """This worker's counts, for the supervisor (`merged`)."""
        return {"capacity": self.capacity, "shard_counts": dict(self.shard_counts),
                "groups": {g: s.to_json() for g, s in self.groups.items()},
                "shard_of": [[g, k, s] for (g, k), s in self._shard_of.items() if k in self.groups[g]]}  # fmt: skip

    @classmethod
    def merged(cls, parts: Iterable[Mapping[str, Any]], shards: Iterable[str], capacity: int) -> HotKeys:
        """One view of several workers' `to_json()`: shard counts add up, each group's
        summaries merge (SpaceSaving.merged), `shards` (config order) listed even at 0."""
        out = cls(shards, capacity)
        by_group: dict[str, list[SpaceSaving]] = {}
        for part in parts:
            for shard, n in part["shard_counts"].items():
                out.shard_counts[shard] = out.shard_counts.get(shard, 0) + int(n)
            for g, data in part["groups"].items():
                by_group.setdefault(g, []).append(SpaceSaving.from_json(data))
            for g, k, s in part["shard_of"]:
                out._shard_of[(g, k)] = s
        out.groups = {g: SpaceSaving.merged(summaries, capacity) for g, summaries in by_group.items()}
        return out

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        """(name, labels, value) samples for /metrics; label values come from config."""
        sk = self.skew()
        out: list[tuple[str, dict[str, str], float]] = [
            ("tierproxy_shard_statements_total", {"shard": s}, float(c))
            for s, c in sk.shard_counts.items()
        ]
        out.append(("tierproxy_shard_skew_ratio", {}, sk.max_to_mean))
        out += [("tierproxy_shard_hottest_key_share", {"group": g}, v)
                for g, v in sk.hottest_key_share.items()]
        return out
