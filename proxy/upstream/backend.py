"""One upstream server (an lb pool's backend, a cdn origin) and everything known about it: address,
weight, health (active checks, core/health.py), draining/removed, in-flight count, idle keep-alive
connections (proxy/upstream/conn.py) and counters. Pure state: the daemons decide with it.

This file is compiled (proxy/_native.py) and is also its own pure-Python twin: backend.pxd makes
`Backend` and its `LatencyHistogram` extension types, so the lb's compiled exchange
(lb/clientcore.py) reads and counts into them in C (C fields, `observe` a C call) where it took a
generic attribute lookup each (~170 instructions) and an interpreted `observe`; the object fields
are member descriptors (proxy/_members.pxd), so interpreted code (the pools, the status pages,
the cdn) reads them as it read the pure class's slots.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from typing import Any

from proxy.core.config import parse_hostport
from proxy.core.health import HealthState
from proxy.core.metrics import DEFAULT_LATENCY_BUCKETS
from proxy.upstream.config import BackendConfig

__all__ = ["STATUS_CLASSES", "Backend", "LatencyHistogram", "expire_idle"]

# Status classes counted per backend; fixed so label values never come from the wire.
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def _probe() -> None:
    pass


# A compiled module's functions are Cython's, not Python's.
_COMPILED = type(_probe).__name__ != "function"


def _bucket(bounds: tuple[Any, ...], value: float) -> int:
    """`bisect_left(bounds, value)`, compiled (backend.pxd): a binary search in C, the float
    bounds compared as C doubles, any other kind of bound as Python compares it (the call of
    bisect_left through Python cost ~1k instructions per response). The pure twin never calls it."""
    lo = 0
    hi = len(bounds)
    while lo < hi:
        mid = (lo + hi) >> 1
        b = bounds[mid]
        if type(b) is float:
            less = float(b) < value
        else:
            less = b < value
        if less:
            lo = mid + 1
        else:
            hi = mid
    return lo


class LatencyHistogram:
    """A backend's response times: proxy/core/metrics.py's `Histogram` (the same fields, methods
    and results; the other daemons keep that one), here so that it is compiled with Backend."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Iterable[float] = DEFAULT_LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # `i` typed (backend.pxd): the list indexed in C (as an object, an int made of it and the
        # generic get and set, ~0.25k instructions).
        i = _bucket(self.bounds, value) if _COMPILED else bisect_left(self.bounds, value)
        self.counts[i] += 1
        self.sum += value
        self.count += 1

    def buckets(self) -> list[tuple[str, float]]:
        """Prometheus bucket pairs (`le`, cumulative count) ending with +Inf."""
        out, acc = [], 0
        for bound, n in zip(self.bounds, self.counts):
            acc += n
            out.append((repr(float(bound)), acc))
        out.append(("+Inf", acc + self.counts[-1]))
        return out


class Backend:
    """One upstream server of a pool and everything the balancer knows about it."""

    __slots__ = (
        "pool_name",
        "name",
        "address",
        "host",
        "port",
        "weight",
        "backup",
        "health",
        "draining",
        "removed",
        "inflight",
        "idle",
        "open_connections",
        "requests",
        "responses",
        "failures",
        "fail_streak",
        "latency",
        "health_checks_ok",
        "health_checks_failed",
        "ejections",
        "check_loop",
    )

    def __init__(self, pool_name: str, cfg: BackendConfig, health: HealthState) -> None:
        self.pool_name = pool_name
        self.name = cfg.name
        self.address = cfg.address
        self.host, self.port = parse_hostport(cfg.address)
        self.weight = cfg.weight
        self.backup = cfg.backup
        self.health = health
        self.draining = False
        self.removed = False
        self.inflight = 0
        self.idle: deque[Any] = deque()  # idle keep-alive UpstreamConn objects, newest last
        self.open_connections = 0
        self.requests = 0
        self.responses = [0, 0, 0, 0, 0]  # by STATUS_CLASSES
        self.failures: dict[str, int] = {}  # by outcome name
        self.fail_streak = 0
        self.latency = LatencyHistogram()
        self.health_checks_ok = 0
        self.health_checks_failed = 0
        self.ejections = 0
        self.check_loop: Any = None

    def close_idle(self) -> None:
        while self.idle:
            self.idle.pop().close()


def expire_idle(backend: Backend, idle_limit: float) -> None:
    """Close the idle keep-alive connections of `backend` idle since before `idle_limit`."""
    while backend.idle and backend.idle[0].idle_since < idle_limit:
        backend.idle.popleft().close()


# Compiled, Backend's object fields are member descriptors, not Cython's getsets (proxy/_members.pxd).
if _COMPILED:
    as_members(Backend, ("address", "backup", "check_loop", "draining", "ejections", "fail_streak",  # noqa: F821
                         "failures", "health", "health_checks_failed", "health_checks_ok", "host", "idle",
                         "inflight", "name", "open_connections", "pool_name", "port", "removed", "requests",
                         "responses", "weight"))
