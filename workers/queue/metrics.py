"""/metrics of a queue worker process: per queue depth, oldest age, in flight, done, retries,
dead-lettered (queue-wide, read from Redis at most every `refresh` seconds) and this process's
handler durations; its status page at / (workers/queue/statuspage.py) with the graphs' points at
/status/series.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from proxy.core.config import parse_hostport
from proxy.core.metrics import CONTENT_TYPE_LATEST, FuncCollector, new_registry, render
from proxy.core.series import SeriesRecorder, install
from proxy.core.statuspage import page_response, render_page
from workers.queue.client import QueueClient, QueueStats
from workers.queue.statuspage import SERIES, render_picture
from workers.queue.worker import Worker

__all__ = ["MetricsServer"]

P = "tierproxy_queue_"


class MetricsServer:
    def __init__(self, worker: Worker, client: QueueClient, address: str, refresh: float = 1.0) -> None:
        self.worker, self.client, self.address, self.refresh = worker, client, address, refresh
        self.stats: dict[str, QueueStats] = {}
        self._fetched = 0.0
        self._stats_started = 0.0
        self.registry = new_registry()
        self.registry.register(FuncCollector(self._collect))
        self._runner: web.AppRunner | None = None
        # The graphs read Redis on their own schedule, leaving /metrics's cache alone: a scrape right
        # after a job finished must not get a reading the recorder took just before.
        self.recorder = SeriesRecorder(self.registry, SERIES, self._fetch)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._page)
        install(app, self.recorder)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = parse_hostport(self.address)
        await web.TCPSite(self._runner, host, port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _fetch(self) -> None:
        started = time.monotonic()
        stats = {q: await self.client.stats(q) for q in self.worker.keys}
        if started >= self._stats_started:  # a slower, older reading never replaces a newer one
            self.stats, self._stats_started = stats, started

    async def _refresh(self) -> None:
        if time.monotonic() - self._fetched >= self.refresh:
            await self._fetch()
            self._fetched = time.monotonic()

    async def _page(self, _request: web.Request) -> web.Response:
        await self._refresh()
        summary, picture = render_picture(str(self.worker.consumer), self.worker.paused, self.stats)
        return page_response(render_page("queue worker", summary, picture, self.recorder.as_json(),
                                         status_json=False))  # fmt: skip

    async def _metrics(self, request: web.Request) -> web.Response:
        await self._refresh()
        body = render(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _collect(self) -> Iterable[Metric]:
        g = {
            "depth": GaugeMetricFamily(P + "depth", "jobs ready and not taken by a worker", labels=["queue"]),
            "delayed": GaugeMetricFamily(P + "delayed", "jobs not due yet (delayed, in backoff)", labels=["queue"]),
            "in_flight": GaugeMetricFamily(P + "in_flight", "jobs taken by a worker, not acknowledged",
                                           labels=["queue"]),
            "oldest_age": GaugeMetricFamily(P + "oldest_age_seconds", "age of the oldest unfinished job",
                                            labels=["queue"]),
            "parked": GaugeMetricFamily(P + "parked", "jobs waiting for their order key's earlier jobs",
                                        labels=["queue"]),
            "dead_now": GaugeMetricFamily(P + "dead_letter_depth", "jobs in the dead-letter stream",
                                          labels=["queue"]),
        }
        c = {
            "done": CounterMetricFamily(P + "done", "jobs acknowledged after their handler succeeded",
                                        labels=["queue"]),
            "retries": CounterMetricFamily(P + "retries", "failed runs put back with a backoff", labels=["queue"]),
            "dead": CounterMetricFamily(P + "dead", "jobs dead-lettered", labels=["queue"]),
        }
        for q, s in self.stats.items():
            for name, fam in (*g.items(), *c.items()):
                fam.add_metric([q], float(getattr(s, name)))
        h = HistogramMetricFamily(P + "handler_duration_seconds", "handler run time in this worker",
                                  labels=["queue"])
        for q, counters in self.worker.counters.items():
            hist = counters.duration
            h.add_metric([q], hist.buckets(), hist.sum)
        paused = GaugeMetricFamily(P + "paused", "1 while this worker pauses reading (backpressure)",
                                   labels=["queue"])
        for q in self.worker.keys:
            paused.add_metric([q], 1.0 if self.worker.paused else 0.0)
        return [*g.values(), *c.values(), h, paused]
