"""Metrics shared by every daemon: a registry per daemon and cheap hot-path instruments.

prometheus-client's own Counter/Histogram take a lock and do a dict lookup per observation, which
costs more than a whole proxied request's bookkeeping should. Daemons therefore count into plain
attributes (`Histogram` below is a list of bucket counts) and expose them through a collector that
runs at scrape time. Label values come from config (pool, backend), never from client input.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "CONTENT_TYPE_LATEST",
    "DEFAULT_LATENCY_BUCKETS",
    "FuncCollector",
    "Histogram",
    "new_registry",
    "render",
]

# Seconds; spans sub-millisecond proxying up to slow backends.
DEFAULT_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)


def new_registry() -> CollectorRegistry:
    """A fresh registry: one per daemon instance, never the process-global default."""
    return CollectorRegistry(auto_describe=True)


class Histogram:
    """Cumulative-at-export histogram: `observe` is a bisect and two additions."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Iterable[float] = DEFAULT_LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
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


class FuncCollector:
    """A collector whose metrics come from a function called at scrape time."""

    def __init__(self, func: Callable[[], Iterable[Metric]]) -> None:
        self._func = func

    def collect(self) -> Iterable[Metric]:
        return self._func()

    def describe(self) -> Iterable[Metric]:
        # Describing would call the function at registration time, before the daemon has state.
        return []


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format (what `promtool check metrics` reads)."""
    return generate_latest(registry)

