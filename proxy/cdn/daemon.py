"""`tierproxy cdn`: the caching edge daemon. Wires the engine (engine.py), the client listener
(server.py) and the admin server (/ HTML page, /metrics, /status, POST /purge by URL or surrogate key, POST /trace
to record a key trace) together, and implements the
runtime's start / reload (SIGHUP) / drain (SIGTERM).

Roles (proxy/core/workers.py): with `workers = 1` one process does everything ("single"). With
`workers = N` the process the operator started is the "supervisor": it serves the admin port only
and starts N "worker" processes that bind `listen` with SO_REUSEPORT, each with its own engine,
store and origin health checks. The supervisor fans admin actions out to every worker and
merges their answers (workerstats.py): {"op": "stats"} -> a worker's /status snapshot,
{"op": "purge", "url"|"keys", "soft"} -> {"purged": n}, {"op": "reload"} after its own SIGHUP.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric

from proxy.cdn.config import CdnConfig
from proxy.cdn.engine import Answer, Engine
from proxy.cdn.server import CdnServer
from proxy.cdn.statuspage import SERIES, render_picture
from proxy.cdn.trace import TraceRecorder
from proxy.cdn.workerstats import merge_status
from proxy.core.admin import AdminServer, admin_guard, admin_server, make_admin_app
from proxy.core.adminguard import AdminGuard
from proxy.core.config import reload_config
from proxy.core.metrics import FuncCollector, new_registry
from proxy.core.statuspage import status_page
from proxy.core.workers import ControlChannel, WorkerSet, process_role, start_worker_channel
from proxy.http1 import RequestHead

__all__ = ["CdnDaemon"]

log = logging.getLogger("tierproxy.cdn")
TOP_URLS = 10  # objects listed by /status and the admin page, most answered first


class CdnDaemon:
    def __init__(self, cfg: CdnConfig, config_path: str | Path | None = None, worker_fd: int | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.worker_fd = worker_fd
        self.role = process_role(worker_fd, cfg.workers, config_path)
        self.workers: WorkerSet | None = None
        self.control: ControlChannel | None = None
        self._merged: dict[str, Any] | None = None  # the supervisor's last merged worker snapshot
        self.guard: AdminGuard | None = None
        self.engine = Engine(cfg)
        self.server: CdnServer | None = None
        self.admin: AdminServer | None = None
        self.reloads = 0
        self.purges = 0
        self._trace_flusher: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.registry = new_registry()
        self.registry.register(FuncCollector(self._collect))

    async def _handle(self, head: RequestHead, body: bytes) -> Answer:
        if head.method == b"PURGE":
            # Purging is an admin operation: only on the admin address (POST /purge).
            return Answer(403, [(b"content-type", b"text/plain")], b"purge only through the admin address\n")
        self.engine.counters["requests"] += 1  # every answer below: hit, miss, pass, revalidation, stale
        # The client side offered every request to `engine.quick` first (fresh plain hits, counted there).
        return await self.engine.handle(head, body, quick_tried=True)

    async def start(self) -> None:
        if self.role == "supervisor":
            await self._start_supervisor()
            return
        # Origin servers start down until their first check, which runs before we serve (as in the lb).
        await self.engine.origins.first_checks()
        self.server = CdnServer(self.cfg.listen, self._handle, self.engine.quick, self.cfg.client_idle_timeout)
        try:
            await self.server.start(reuse_port=self.role == "worker")
        except OSError:
            await self.engine.origins.stop()
            raise
        if self.role == "worker":
            assert self.worker_fd is not None
            self._start_serving()
            self.control = await start_worker_channel(self.worker_fd, self._on_control)
            return
        await self._start_admin()
        self._start_serving()
        log.info("listening", extra={"listen": self.cfg.listen, "admin": self.cfg.admin.address,
                                     "origins": [s.address for s in self.cfg.origin_servers]})  # fmt: skip

    async def _start_supervisor(self) -> None:
        assert self.config_path is not None
        # Workers first: when the admin port answers, the listen port does too.
        self.workers = WorkerSet(Path(self.config_path), self.cfg.workers, lambda _index: None, daemon="cdn")
        await self.workers.start()
        try:
            await self._start_admin()
        except OSError:
            await self.workers.stop(5.0)
            raise
        log.info("listening", extra={"listen": self.cfg.listen, "admin": self.cfg.admin.address,
                                     "workers": self.workers.pids()})  # fmt: skip

    def _start_serving(self) -> None:
        if self.cfg.cache.trace_file:
            self._start_trace(self.cfg.cache.trace_file, create=False)
        self.engine.origins.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _start_admin(self) -> None:
        self.guard = admin_guard(self.cfg.admin)
        app = make_admin_app(self.registry, guard=self.guard, before_scrape=self._refresh, series=SERIES)
        app.router.add_get("/", self._page)
        app.router.add_get("/status", self._status)
        app.router.add_post("/purge", self._purge)
        app.router.add_post("/trace", self._trace)
        self.admin = admin_server(app, self.cfg.admin)
        try:
            await self.admin.start()
        except OSError:
            if self.server is not None:
                await self.server.drain(0)
            await self.engine.origins.stop()
            raise

    async def _sweep(self) -> None:
        """Close origin connections idle longer than origin.idle_timeout."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            self.engine.origins.expire_idle(loop.time() - self.cfg.origin.idle_timeout)

    async def reload(self) -> None:
        new = reload_config(self.config_path, CdnConfig, self.cfg)
        if self.guard is not None:
            self.guard.update(new.admin.token, new.admin.allowed_hosts)
        if self.workers is not None:
            self.workers.broadcast({"op": "reload"})  # each worker re-reads the file
            self.cfg = new
            self.reloads += 1
            log.info("reloaded", extra={"workers": self.workers.pids()})
            return
        trace = self.engine.trace
        self.engine.apply(new)
        if new.cache.trace_file != self.cfg.cache.trace_file:
            if trace is not None and trace.path == self.cfg.cache.trace_file:
                self._stop_trace()
            if new.cache.trace_file:
                self._start_trace(new.cache.trace_file, create=False)
        self.cfg = new
        self.reloads += 1
        log.info("reloaded", extra={"origins": [s.address for s in new.origin_servers], "policy": new.cache.policy})

    async def drain(self) -> None:
        if self.workers is not None:
            await self.workers.stop(self.cfg.drain_timeout + 5.0)  # each worker drains
        if self.control is not None:
            self.control.close()
        if self.server is not None:
            await self.server.drain(self.cfg.drain_timeout)
        self._stop_trace()
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.engine.origins.stop()
        if self.admin is not None:
            await self.admin.stop()

    # -- admin -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        snap = self.engine.snapshot()
        lookups = snap["hits"] + snap["misses"]
        snap["hit_ratio"] = round(snap["hits"] / lookups, 4) if lookups else 0.0
        snap["purges"] = self.purges
        snap["reloads"] = self.reloads
        snap["trace"] = self.engine.trace.status() if self.engine.trace is not None else None
        snap["top_urls"] = [{"url": self._url(key[0]), "hits": entry.hits, "bytes": entry.size}
                            for key, entry in self.engine.store.top(TOP_URLS) if entry.hits]
        snap["origins"] = self.engine.origins.status()
        return snap

    async def _refresh(self) -> None:
        """The supervisor's view: every worker's snapshot, merged (before a scrape or a status read)."""
        if self.workers is not None:
            merged = merge_status([r["snapshot"] for r in await self.workers.ask("stats")], TOP_URLS)
            merged.update(purges=self.purges, reloads=self.reloads)
            self._merged = merged

    def current_status(self) -> dict[str, Any]:
        if self.workers is not None:
            return self._merged or merge_status([])
        return self.status()

    async def _on_control(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """A worker's handling of the supervisor's messages."""
        op = msg.get("op")
        if op == "stats":
            return {"id": msg["id"], "snapshot": {**self.status(), "pid": os.getpid()}}
        if op == "purge":
            soft = bool(msg.get("soft"))
            if msg.get("keys"):
                n = sum(self.engine.store.purge_tag(k.encode(), soft=soft) for k in msg["keys"])
            else:
                n = self.engine.store.purge(msg["primary"].encode("latin-1"), soft=soft)
            self.purges += 1
            return {"id": msg["id"], "purged": n}
        if op == "reload":
            await self.reload()
        return None

    async def _status(self, _request: web.Request) -> web.Response:
        await self._refresh()
        return web.json_response(self.current_status())

    async def _page(self, _request: web.Request) -> web.Response:
        await self._refresh()
        return status_page(_request, "cdn", *render_picture(self.current_status()))

    @staticmethod
    def _url(primary: bytes) -> str:
        host, _, target = primary.partition(b" ")
        return "http://" + host.decode("latin-1") + target.decode("latin-1")

    async def _purge(self, request: web.Request) -> web.Response:
        """POST /purge?url=http://host/path[&soft=1]: drop (or mark stale) every variant of a URL.
        POST /purge?key=K[&key=K2...][&soft=1]: the same for every object with one of these
        surrogate keys (Surrogate-Key / Cache-Tag); a key value may also list keys separated by
        spaces."""
        soft = request.query.get("soft") in ("1", "true")
        keys = [k for value in request.query.getall("key", []) for k in value.split()]
        if keys:
            if self.workers is not None:
                n = await self._fan_out_purge({"keys": keys, "soft": soft})
            else:
                n = sum(self.engine.store.purge_tag(k.encode(), soft=soft) for k in keys)
            self.purges += 1
            return web.json_response({"purged": n, "keys": keys, "soft": soft})
        url = request.query.get("url", "")
        from urllib.parse import urlsplit
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return web.json_response({"error": "url=http://host/path or key=SURROGATE-KEY is required"}, status=400)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        primary = parts.netloc.lower().encode() + b" " + target.encode()
        if self.workers is not None:
            n = await self._fan_out_purge({"primary": primary.decode("latin-1"), "soft": soft})
        else:
            n = self.engine.store.purge(primary, soft=soft)
        self.purges += 1
        return web.json_response({"purged": n, "url": url})

    async def _fan_out_purge(self, payload: dict[str, Any]) -> int:
        """Purge in every worker's store; the objects purged, in all. A worker that does not
        answer fails the purge (503): a purge must not half-succeed silently."""
        assert self.workers is not None
        replies = await self.workers.ask("purge", payload)
        if len(replies) != len(self.workers.workers):
            raise web.HTTPServiceUnavailable(text=f"purge reached {len(replies)} of {len(self.workers.workers)} workers\n")
        return sum(r["purged"] for r in replies)

    def _start_trace(self, path: str, create: bool) -> None:
        self._stop_trace()
        self.engine.trace = TraceRecorder(path, create=create)
        loop = asyncio.get_running_loop()
        self._trace_flusher = loop.create_task(self._flush_trace())
        log.info("trace recording", extra={"file": path})

    def _stop_trace(self) -> dict[str, Any] | None:
        trace, self.engine.trace = self.engine.trace, None
        if self._trace_flusher is not None:
            self._trace_flusher.cancel()
            self._trace_flusher = None
        if trace is None:
            return None
        trace.close()
        log.info("trace stopped", extra=trace.status())
        return trace.status()

    async def _flush_trace(self) -> None:
        # Once a second the buffered records reach the file, so a recording can be replayed
        # (and `tail`ed) while it runs without a partial last line more than a second old.
        while True:
            await asyncio.sleep(1.0)
            if self.engine.trace is not None:
                self.engine.trace.flush()

    async def _trace(self, request: web.Request) -> web.Response:
        """POST /trace?action=start&file=PATH: record a key trace to a new file (an existing
        one is not overwritten: 409); POST /trace?action=stop: stop and close it."""
        if self.workers is not None:
            return web.json_response({"error": "trace recording needs workers = 1"}, status=409)
        action = request.query.get("action")
        if action == "stop":
            done = self._stop_trace()
            return web.json_response({"stopped": done is not None, **(done or {})})
        if action != "start" or not request.query.get("file"):
            return web.json_response({"error": "action=start&file=PATH or action=stop"}, status=400)
        path = request.query["file"]
        try:
            self._start_trace(path, create=True)
        except FileExistsError:
            return web.json_response({"error": f"{path} exists; name a new file"}, status=409)
        except OSError as exc:
            return web.json_response({"error": f"{path}: {exc.strerror or exc}"}, status=400)
        return web.json_response({"recording": path})

    # -- metrics -----------------------------------------------------------------------------

    def _collect(self) -> Iterable[Metric]:
        snap = self.current_status() if self.workers is not None else self.engine.snapshot()
        p = "tierproxy_cdn_"
        out: list[Metric] = []
        for key, doc in (("requests", "client requests received"),
                         ("hits", "requests answered from a fresh stored object"),
                         ("misses", "requests with no usable stored object"),
                         ("stale_served", "stale objects served instead of an origin error (RFC 5861 stale-if-error, RFC 9111 4.2.4)"),
                         ("stale_if_error", "of those, served under a stale-if-error window"),
                         ("stale_while_revalidate", "stale objects served while revalidated in the background (RFC 5861)"),
                         ("background_revalidations", "background revalidations started"),
                         ("revalidated", "stale objects freshened by a 304 from the origin"),
                         ("coalesced", "misses answered by another request's origin fetch"),
                         ("origin_requests", "requests sent to the origin"),
                         ("origin_errors", "origin requests that got no usable response"),
                         ("not_stored", "origin responses RFC 9111 did not let us store"),
                         ("passes", "requests passed to the origin without the cache")):  # fmt: skip
            out.append(CounterMetricFamily(p + key, doc, value=snap.get(key, 0)))
        ev = CounterMetricFamily(p + "evictions", "objects evicted to stay under max_bytes", labels=["policy"])
        for policy, n in sorted(snap.get("evictions_by_policy", {}).items()):
            ev.add_metric([policy], n)
        out.append(ev)
        out.append(GaugeMetricFamily(p + "bytes", "bytes held by the store", value=snap.get("bytes", 0)))
        out.append(GaugeMetricFamily(p + "max_bytes", "the store's bound", value=snap.get("max_bytes", 0)))
        out.append(GaugeMetricFamily(p + "objects", "objects held by the store", value=snap.get("objects", 0)))
        up = GaugeMetricFamily(p + "origin_up", "1 when the origin server passes its health checks", labels=["origin"])
        for o in snap.get("origins") or self.engine.origins.status():
            up.add_metric([o["name"]], 1 if o["state"] == "up" else 0)
        out.append(up)
        h = self.engine.origin_latency
        hist = HistogramMetricFamily(p + "origin_latency_seconds", "origin response time")
        hist.add_metric([], h.buckets(), h.sum)
        out.append(hist)
        return out
