"""The dbproxy's books per statement: the outstanding queries per backend, the query latency
histograms and the query timer, kept by `started` (a server goes from idle to busy: the
session's `_send`) and `finished` (it is idle again: the relay, at ReadyForQuery). The histograms are
proxy/upstream/backend.py's `LatencyHistogram` (core/metrics.py's `Histogram`'s fields, methods
and results; compiled, an extension type whose `observe` is a C method here).

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
from proxy.upstream.backend import LatencyHistogram

from .faults import query_timed_out
from .route_types import PRIMARY

__all__ = ["COMPILED", "Books"]


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
    """The per-statement books; the daemon sets `outstanding` ({}), `query_timeout` (the
    config's `timeouts.query`, a plain attribute: a pydantic model's costs ~0.7k instructions a
    read) and `_latency_of` ({}) before any session runs. `cache` (the classifier's cache,
    classify_cache.py), `clock` (causal.py's CommitClock), `follower` (the Patroni follower or
    None), `metrics` (DbMetrics) and `monitor` (the replica monitor) are the daemon's, fields
    here so the compiled session reads them in C per statement (each a generic lookup in the
    daemon's instance dict before, ~190 instructions)."""

    __slots__ = ("_latency_of", "cache", "clock", "follower", "metrics", "monitor", "outstanding", "query_timeout")

    def started(self, conn: Any) -> None:
        """A server went from idle to busy: count it and start the query clock."""
        if not conn.counted:
            conn.counted = True
            backend = conn.backend
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
                # LatencyHistogram.observe, inlined (one call less per statement).
                value = _monotonic() - conn.sent_at
                hist.counts[_bisect_left(hist.bounds, value)] += 1
                hist.sum += value
                hist.count += 1
        timer = conn.timer
        if timer is not None:
            timer.cancel()
            conn.timer = None

    def _latency_for(self, backend: str) -> LatencyHistogram:
        """The latency histogram of `backend`'s role, made at its first observation (so /metrics
        shows a role's series once it has one), remembered per backend."""
        role = "primary" if backend == PRIMARY else "replica"
        latency = self.metrics.latency  # type: ignore[attr-defined]  # the daemon's DbMetrics
        hist = latency.get(role)
        if hist is None:
            hist = latency[role] = LatencyHistogram()
        self._latency_of[backend] = hist
        return hist


def _observe(hist: LatencyHistogram, value: float) -> None:
    """`hist.observe(value)` (LatencyHistogram's: bisect_left over its bounds, then the counts),
    compiled only (`finished`): the bounds searched as C doubles (the same order as Python's
    comparison for the bounds' values), no call through the generic call path for bisect_left
    (~1.4k instructions a statement with it). Interpreted, `finished` inlines observe itself."""
    bounds = hist.bounds
    lo = 0
    hi = len(bounds)
    while lo < hi:
        mid = (lo + hi) >> 1
        bound = bounds[mid]
        if bound < value:
            lo = mid + 1
        else:
            hi = mid
    hist.counts[lo] += 1
    hist.sum += value
    hist.count += 1


# Compiled: the object fields as member descriptors, which CPython specialises as it does slots
# (proxy/_members.pxd): interpreted code reads and writes them as fast as the pure twin's.
if COMPILED:
    as_members(Books, Books.__slots__)  # noqa: F821
