"""The dbproxy's books per statement: the outstanding queries per backend, the query latency
histograms and the query timer, kept by `started` (a server goes from idle to busy: the
session's `_send`) and `finished` (it is idle again: the relay, at ReadyForQuery). The histograms are
`QueryHistogram`s (core/metrics.py's `Histogram`'s fields, methods and results; compiled, an
extension type whose counts and bounds are C arrays). Also here, for the session's per-statement
work: `RouteCounts` (the metrics' statements routed, counted by slot) and `MonitorViews` (the
replica monitor's base: its shared views a C field).

`Books` is the base class of `DbProxyDaemon` (daemon.py), which sets its fields in `__init__`
(and `query_timeout` again in `reload`); the relay and the session call `d.started(conn)` and
`d.finished(conn)` as the daemon's methods.

This module is compiled (proxy/_native.py) and is also its own pure-Python twin. Compiled,
`Books` is an extension type (books.pxd): `started` and `finished` are C methods, so the relay's
call of `finished` per answer no longer enters the interpreter (such a call from compiled code
cost ~3k instructions: docs/perf.md, "The router and books, compiled"). Its base is the relay's
`RelayBooks` (proxy/pgfront/relay.py), whose `finished` and `restart_query_timer` are cpdef
methods: the relay calls `finished` through the type's table, not by a method lookup (docs/perf.md,
"The relay's calls in C"). Its object fields are
member descriptors, as a class's `__slots__` are (proxy/_members.pxd), so the
daemon's interpreted code (the session's read of `d.outstanding` per statement, /metrics)
reads them as fast as the pure twin's slots. The connection is typed the relay's `RelayServer`
(relay.pxd), whose `counted`, `sent_at` and `timer` are C fields read and written here in C.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from typing import Any

from proxy.pgfront.relay import RelayBooks
from proxy.core.metrics import DEFAULT_LATENCY_BUCKETS

from .faults import query_timed_out
from .outstanding import Outstanding
from .route_types import PRIMARY

__all__ = ["COMPILED", "Books", "MonitorViews", "QueryHistogram", "RouteCounts"]


def _probe() -> None:
    pass


# A compiled module's functions are Cython's, not Python's.
_COMPILED = type(_probe).__name__ != "function"
COMPILED = _COMPILED

_monotonic = time.monotonic
_bisect_left = bisect_left
_get_running_loop = asyncio.get_running_loop
_query_timed_out = query_timed_out


class Books(RelayBooks):
    """The per-statement books; the daemon sets `outstanding` (an `Outstanding`, outstanding.py, where
    this module is compiled: counted by slot in C; a dict otherwise, and any mapping is counted as
    one), `query_timeout` (the
    config's `timeouts.query`, a plain attribute: a pydantic model's costs ~0.7k instructions a
    read) and `_latency_of` ({}) before any session runs. `cache` (the classifier's cache,
    classify_cache.py), `clock` (causal.py's CommitClock), `follower` (the Patroni follower or
    None), `metrics` (DbMetrics) and `monitor` (the replica monitor) are the daemon's, fields
    here so the compiled session reads them in C per statement (each a generic lookup in the
    daemon's instance dict before, ~190 instructions). `route_counts` is the metrics' `routes` (a
    `RouteCounts`), which the session counts each statement's route in."""

    __slots__ = ("_latency_of", "cache", "clock", "follower", "metrics", "monitor", "outstanding", "query_timeout",
                 "route_counts")

    def started(self, conn: Any) -> None:
        """A server went from idle to busy: count it and start the query clock."""
        if not conn.counted:
            conn.counted = True
            backend = conn.backend
            if _COMPILED and type(self.outstanding) is Outstanding:
                # outstanding.py: the backend's slot, an increment of a C array's item.
                slots = self.outstanding
                slots._n[slots.slot(backend)] += 1
            else:
                outstanding = self.outstanding
                outstanding[backend] = outstanding.get(backend, 0) + 1
        if _COMPILED:
            conn.sent_at = _c_monotonic()  # noqa: F821 (books.pxd: cpython.time's, the same clock)
        else:
            conn.sent_at = _monotonic()
        q = self.query_timeout
        if q > 0:
            conn.timer = _get_running_loop().call_later(q, _query_timed_out, self, conn)

    def finished(self, conn: Any) -> None:
        """A server went idle (its last ReadyForQuery): uncount it, observe the query's latency
        in its role's histogram, stop the query timer."""
        if conn.counted:
            conn.counted = False
            backend = conn.backend
            if _COMPILED and type(self.outstanding) is Outstanding:
                # outstanding.py: the backend's slot (KeyError for one never counted, as the
                # dict's), its count and its histogram (found once per backend) by index.
                slots = self.outstanding
                i = slots.find(backend)
                if i < 0:
                    raise KeyError(backend)
                slots._n[i] -= 1
                hist = slots.hists[i]
                if hist is None:
                    hist = self._latency_of.get(backend)
                    if hist is None:
                        hist = self._latency_for(backend)
                    slots.hists[i] = hist
            else:
                outstanding = self.outstanding
                outstanding[backend] -= 1
                latency_of = self._latency_of
                hist = latency_of.get(backend)
                if hist is None:
                    hist = self._latency_for(backend)
            if _COMPILED:
                # The histogram's observe in C (_observe), the C clock, the connection's
                # sent_at a C double (relay.pxd).
                _observe(hist, _c_monotonic() - conn.sent_at)  # noqa: F821
            else:
                # QueryHistogram.observe, inlined (one call less per statement).
                value = _monotonic() - conn.sent_at
                hist._counts[_bisect_left(hist.bounds, value)] += 1
                hist.sum += value
                hist.count += 1
        timer = conn.timer
        if timer is not None:
            timer.cancel()
            conn.timer = None

    def _latency_for(self, backend: str) -> QueryHistogram:
        """The latency histogram of `backend`'s role, made at its first observation (so /metrics
        shows a role's series once it has one), remembered per backend."""
        role = "primary" if backend == PRIMARY else "replica"
        latency = self.metrics.latency  # type: ignore[attr-defined]  # the daemon's DbMetrics
        hist = latency.get(role)
        if hist is None:
            hist = latency[role] = QueryHistogram()
        self._latency_of[backend] = hist
        return hist


class MonitorViews:
    """The replica monitor's views as the router sees them, shared until its next poll (None:
    not built yet): the base of `ReplicaMonitor` (monitor.py), whose `views()` builds them.
    Compiled, an extension type whose `_views` is a C field: the session reads it per read
    instead of calling `views()` (a Python method call from compiled code, ~0.8k instructions)."""

    __slots__ = ("_views",)


class RouteCounts:
    """The statements routed, per (backend, reason): the metrics' `routes` (DbMetrics), read as a
    mapping (backend, RouteReason) -> statements (`items`, `get`, `[]`, `len`, iteration, `==`
    with a dict), counted by the session per statement with `slot` and `add`. Each pair seen has a
    slot, a small int, for good: the session remembers the slot of its last route (a Route object
    the router reuses), so a statement's count is an increment of one item, not a Route hashed
    twice in a dict and a new int (~0.9k instructions a statement). Compiled, the counts are a C
    array of unsigned long long; interpreted, a list of ints."""

    __slots__ = ("_counts", "_index", "_keys")

    def __init__(self) -> None:
        self._index: dict[tuple[str, Any], int] = {}  # (backend, reason) -> slot
        self._keys: list[tuple[str, Any]] = []  # slot -> (backend, reason)
        self._counts: list[int] = []  # interpreted: slot -> statements (compiled: the C array)

    def __dealloc__(self) -> None:  # compiled only (the C array); a plain method interpreted
        if _COMPILED:
            _free_counts(self)  # noqa: F821 (books.pxd)

    def slot(self, route: Any) -> int:
        """The slot of `route`'s (target, reason), made at its first statement (counted 0)."""
        key = (route[0], route[1])
        i = self._index.get(key, -1)
        if i < 0:
            i = len(self._keys)
            if _COMPILED:
                _grow(self, i + 1)  # noqa: F821 (books.pxd)
            else:
                self._counts.append(0)
            self._keys.append(key)
            self._index[key] = i
        return i

    def add(self, slot: int, n: int = 1) -> None:
        """Count `n` statements more in `slot` (one `slot` gave)."""
        if _COMPILED:
            if slot < 0 or slot >= len(self._keys):
                raise IndexError(slot)
            self._n[slot] += n  # books.pxd: the C array
        else:
            self._counts[slot] += n

    def _count(self, slot: int) -> int:
        if _COMPILED:
            return self._n[slot]
        return self._counts[slot]

    def items(self) -> list[tuple[tuple[str, Any], int]]:
        """((backend, reason), statements) for each pair counted, in the order first seen."""
        return [(key, self._count(i)) for i, key in enumerate(self._keys) if self._count(i)]

    def get(self, key: tuple[str, Any], default: Any = None) -> Any:
        i = self._index.get((key[0], key[1]))
        if i is None or not self._count(i):
            return default
        return self._count(i)

    def __getitem__(self, key: tuple[str, Any]) -> int:
        n = self.get(key)
        if n is None:
            raise KeyError(key)
        return n

    def __contains__(self, key: Any) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and self.get(key) is not None

    def __iter__(self) -> Any:
        return iter([key for key, _ in self.items()])

    def __len__(self) -> int:
        return len(self.items())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RouteCounts):
            other = dict(other.items())
        return isinstance(other, dict) and dict(self.items()) == other

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]  # a mapping: compared by its counts

    def __repr__(self) -> str:
        return f"RouteCounts({dict(self.items())!r})"


class QueryHistogram:
    """A role's query latency (the metrics' `latency`): core/metrics.py's `Histogram`'s fields,
    methods and results (`bounds`, `counts`, `sum`, `count`, `observe`, `buckets`), the bounds
    floats. Compiled, an extension type whose counts are a C array of unsigned long long (`counts`
    gives them as a new list) and its bounds a C array of doubles too: `finished` counts a
    statement without a Python int made and freed (a list of ints past 256 makes one per count).
    Interpreted, `counts` is the list itself (`_counts`)."""

    __slots__ = ("_counts", "bounds", "count", "sum")

    def __init__(self, bounds: Any = DEFAULT_LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.sum = 0.0
        self.count = 0
        self._counts: list[int] = [0] * (len(self.bounds) + 1)  # interpreted's (compiled: _n)
        if _COMPILED:
            _hist_arrays(self)  # noqa: F821 (books.pxd)

    def __dealloc__(self) -> None:  # compiled only (the C arrays); a plain method interpreted
        if _COMPILED:
            _hist_free(self)  # noqa: F821 (books.pxd)

    @property
    def counts(self) -> list[int]:
        if _COMPILED:
            return [self._n[i] for i in range(len(self.bounds) + 1)]
        return self._counts

    def observe(self, value: float) -> None:
        if _COMPILED:
            _observe(self, value)
        else:
            self._counts[_bisect_left(self.bounds, value)] += 1
            self.sum += value
            self.count += 1

    def buckets(self) -> list[tuple[str, float]]:
        """Prometheus bucket pairs (`le`, cumulative count) ending with +Inf."""
        counts = self.counts
        out, acc = [], 0
        for bound, n in zip(self.bounds, counts):
            acc += n
            out.append((repr(float(bound)), acc))
        out.append(("+Inf", acc + counts[-1]))
        return out


def _observe(hist: QueryHistogram, value: float) -> None:
    """`hist.observe(value)` compiled only (`finished`): bisect_left over the bounds as C doubles
    (the same order as Python's comparison of floats), the count an item of the C array.
    Interpreted, `finished` inlines observe itself."""
    b = hist._b
    lo = 0
    hi = hist._nb
    while lo < hi:
        mid = (lo + hi) >> 1
        if b[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    hist._n[lo] += 1
    hist.sum += value
    hist.count += 1


# Compiled: the object fields as member descriptors, which CPython specialises as it does slots
# (proxy/_members.pxd): interpreted code reads and writes them as fast as the pure twin's.
if COMPILED:
    as_members(Books, Books.__slots__)  # noqa: F821
    as_members(RouteCounts, RouteCounts.__slots__)  # noqa: F821
    as_members(QueryHistogram, ("_counts",))  # noqa: F821
    as_members(MonitorViews, MonitorViews.__slots__)  # noqa: F821
