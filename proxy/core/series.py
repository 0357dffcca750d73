"""Live series for the status pages: a small ring of samples read from a daemon's own registry.

Every `interval` seconds the recorder reads the same registry /metrics renders (after the
daemon's `before_scrape`, which gathers worker processes' counters) and turns the counters'
growth since the previous reading into one point per series: a rate (per second), a quantile of
a histogram's observations in that interval (from the bucket growth, as PromQL's
histogram_quantile over rate() does), a ratio of two counters' growth, or a gauge's value. The
last `points` points are kept (150 x 2 s = 5 minutes) and served as JSON at /status/series.

The arithmetic is pure (`read_totals`, `point`, `histogram_quantile`); `SeriesRecorder` only
holds the ring and runs the loop, started and stopped with the admin app (`install`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

__all__ = ["Series", "SeriesRecorder", "histogram_quantile", "install", "point", "read_totals"]

log = logging.getLogger("tierproxy.series")

Totals = dict[str, Any]  # series key -> float (rate, gauge), (num, den) (ratio), {le: count} (quantile)


@dataclass(frozen=True)
class Series:
    """One graph. `metrics`: sample names summed (counters with their `_total`; a histogram's base
    name for kind "quantile"); `where`: label filters (label, allowed values) on those samples.
    For kind "ratio", `metrics` is the numerator and `denominator` the rest of the whole
    (ratio = num / (num + den)). `scale` multiplies the value (1000: seconds to ms)."""

    key: str
    title: str
    kind: str  # "rate" | "quantile" | "ratio" | "gauge"
    metrics: tuple[str, ...]
    unit: str = "/s"
    where: tuple[tuple[str, tuple[str | None, ...]], ...] = ()  # None: the label is absent
    q: float = 0.95
    denominator: tuple[str, ...] = ()
    scale: float = 1.0
    agg: str = "sum"  # a gauge over several label sets: "sum" or "max" (the worst replica's lag)

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(name) in allowed for name, allowed in self.where)


Sample = tuple[str, dict[str, str], float]


def registry_samples(registry: CollectorRegistry) -> list[Sample]:
    return [(s.name, s.labels, s.value) for fam in registry.collect() for s in fam.samples]


def read_totals(samples: Iterable[Sample], series: Sequence[Series]) -> Totals:
    """Each series' cumulative figures in one reading of the registry (pure)."""
    samples = list(samples)
    out: Totals = {}
    for s in series:
        if s.kind == "quantile":
            buckets: dict[float, float] = {}
            names = {m + "_bucket" for m in s.metrics}
            for name, labels, value in samples:
                if name in names and s.matches(labels):
                    le = float(labels.get("le", "inf"))
                    buckets[le] = buckets.get(le, 0.0) + value
            out[s.key] = buckets
        elif s.kind == "ratio":
            num = sum(v for n, lb, v in samples if n in s.metrics and s.matches(lb))
            den = sum(v for n, lb, v in samples if n in s.denominator and s.matches(lb))
            out[s.key] = (num, den)
        else:
            values = [v for n, lb, v in samples if n in s.metrics and s.matches(lb)]
            out[s.key] = max(values, default=0.0) if s.agg == "max" else sum(values)
    return out


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float | None:
    """The q-quantile of the observations between two readings of cumulative buckets, by linear
    interpolation inside the bucket it falls in (PromQL's histogram_quantile); None if none."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0 or any(c < 0 for c in counts):
        return None  # nothing observed, or a reset
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, cum in zip(bounds, counts):
        if cum >= rank:
            if math.isinf(bound):
                return lower  # above the last finite bound: the best we can say
            inside = cum - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cum
    return lower


def point(s: Series, before: Any, after: Any, dt: float) -> float | None:
    """One series' value between two readings `dt` seconds apart (pure); None when unknown
    (no observations for a quantile or a ratio, a counter that went back: a reset)."""
    if s.kind == "gauge":
        value = after
    elif s.kind == "rate":
        if before is None or after < before or dt <= 0:
            return None
        value = (after - before) / dt
    elif s.kind == "ratio":
        if before is None:
            return None
        num, whole = after[0] - before[0], (after[0] + after[1]) - (before[0] + before[1])
        if num < 0 or whole <= 0:
            return None
        value = num / whole
    else:
        if before is None:
            return None
        value = histogram_quantile(s.q, before, after)
        if value is None:
            return None
    return round(value * s.scale, 6)


class SeriesRecorder:
    """The ring of points of one daemon's series, filled from its registry every `interval` s."""

    def __init__(self, registry: CollectorRegistry, series: Sequence[Series],
                 before: Callable[[], Awaitable[None]] | None = None, interval: float = 2.0,
                 points: int = 150, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.registry = registry
        self.series = tuple(series)
        self.before = before
        self.interval = interval
        self.clock = clock
        self.times: deque[float] = deque(maxlen=points)
        self.values: dict[str, deque[float | None]] = {s.key: deque(maxlen=points) for s in self.series}
        self._last: tuple[float, Totals] | None = None
        self._task: asyncio.Task[None] | None = None

    def take(self, samples: Iterable[Sample] | None = None) -> None:
        """One reading: a point per series (none for the very first reading, which only sets the base)."""
        now = self.clock()
        totals = read_totals(registry_samples(self.registry) if samples is None else samples, self.series)
        if self._last is not None:
            then, prev = self._last
            self.times.append(now)
            for s in self.series:
                self.values[s.key].append(point(s, prev.get(s.key), totals[s.key], now - then))
        self._last = (now, totals)

    def as_json(self) -> dict[str, Any]:
        now = self.clock()
        ages = [round(t - now, 2) for t in self.times]
        return {
            "interval_s": self.interval, "window_s": self.interval * (self.times.maxlen or 0),
            "series": [{"key": s.key, "title": s.title, "unit": s.unit,
                        "points": [[a, v] for a, v in zip(ages, self.values[s.key])]} for s in self.series],
        }  # fmt: skip

    async def run(self) -> None:
        while True:
            try:
                if self.before is not None:
                    await self.before()
                self.take()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed reading leaves a gap, never stops the graphs
                log.debug("series reading failed", exc_info=True)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def install(app: web.Application, recorder: SeriesRecorder) -> None:
    """GET /status/series on the admin app; the recorder runs while the app does."""

    async def series(_request: web.Request) -> web.Response:
        return web.json_response(recorder.as_json(), headers={"Cache-Control": "no-store"})

    async def on_startup(_app: web.Application) -> None:
        recorder.start()

    async def on_cleanup(_app: web.Application) -> None:
        await recorder.stop()

    app.router.add_get("/status/series", series)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
