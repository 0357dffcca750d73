"""`tierproxy geodns`: wires config, the query engine, the DNS listeners, health checks, metrics
and the admin API.

Lifecycle (proxy.core.runtime): `start()` runs every health target's first check, then binds UDP
and TCP on `listen` and the admin port; `reload()` (SIGHUP, POST /reload) re-reads the file and
swaps in a new engine (zones, regions, policies; health checks restarted and checked once before
the swap; runtime drains end, as with the lb); `drain()` stops the listeners and lets TCP
connections finish what they sent, up to `drain_timeout`.

Roles (proxy/core/workers.py): with `workers = N` the supervisor runs the health checks and the
admin API and N workers serve the port with SO_REUSEPORT. Messages: supervisor -> worker
{"op": "state", "healthy": {dc: bool}, "drained": [dc]} | {"op": "reload"} | {"op": "stats"};
worker -> supervisor {"op": "ready"} and the stats answers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from proxy.core.admin import AdminServer, admin_guard, admin_server, make_admin_app
from proxy.core.adminguard import AdminGuard
from proxy.core.config import parse_hostport, reload_config
from proxy.core.metrics import FuncCollector, new_registry
from proxy.core.workers import ControlChannel, WorkerSet, process_role, start_worker_channel
from proxy.geodns.admin import SERIES, add_admin_routes
from proxy.geodns.config import GeoDnsConfig
from proxy.geodns.handler import Engine
from proxy.geodns.health import DcHealth
from proxy.geodns.server import DnsServer

__all__ = ["GeoDnsDaemon", "merge"]

log = logging.getLogger("tierproxy.geodns")

_COUNTERS = ("queries", "rcodes", "regions", "datacenters")
_SCALARS = ("dropped", "errors", "cache_hits", "cache_misses", "cache_entries")


def merge(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the workers' counter snapshots."""
    out: dict[str, Any] = {k: {} for k in _COUNTERS} | {k: 0 for k in _SCALARS}
    for s in snaps:
        for k in _COUNTERS:
            for label, n in s.get(k, {}).items():
                out[k][label] = out[k].get(label, 0) + n
        for k in _SCALARS:
            out[k] += s.get(k, 0)
    return out


class GeoDnsDaemon:
    def __init__(self, cfg: GeoDnsConfig, config_path: str | Path | None = None,
                 worker_fd: int | None = None) -> None:  # fmt: skip
        self.cfg = cfg
        self.config_path = Path(config_path) if config_path else None
        self.worker_fd = worker_fd
        self.role = process_role(worker_fd, cfg.workers, self.config_path)
        self.engine = Engine(cfg)
        self.health: DcHealth | None = None
        self.drained: set[str] = set()
        self.server: DnsServer | None = None
        self.admin: AdminServer | None = None
        self.admin_guard: AdminGuard | None = None
        self.workers: WorkerSet | None = None
        self.control: ControlChannel | None = None
        self._merged: dict[str, Any] | None = None
        self.registry = new_registry()
        self.registry.register(FuncCollector(self._collect))
        self.started_at = time.time()
        self.reloads = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.role != "worker":
            self.health = DcHealth(self.cfg, self._health_changed)
            await self.health.first_checks()
            self.engine.set_state(self.health.healthy(), self.drained)
        if self.role != "supervisor":
            self.server = DnsServer(self.cfg.listen, self.engine.handle, self.cfg.tcp_idle_timeout)
            await self.server.start(reuse_port=self.role == "worker")
        if self.role == "worker":
            assert self.worker_fd is not None
            self.control = await start_worker_channel(self.worker_fd, self._on_control)
            return
        if self.role == "supervisor":
            assert self.config_path is not None
            self.workers = WorkerSet(self.config_path, self.cfg.workers, self._worker_ready, daemon="geodns")
            await self.workers.start()
        self.admin_guard = admin_guard(self.cfg.admin)
        app = make_admin_app(self.registry, before_scrape=self._refresh_stats, guard=self.admin_guard, series=SERIES)
        add_admin_routes(app, self)
        self.admin = admin_server(app, self.cfg.admin)
        try:
            await self.admin.start()
        except OSError:
            await self._stop_all()
            raise
        assert self.health is not None
        self.health.start()
        log.info("listening", extra={"listen": self.cfg.listen, "admin": self.cfg.admin.address,
                                     "workers": self.cfg.workers,
                                     "zones": [z.origin for z in self.cfg.zones]})  # fmt: skip

    async def reload(self) -> None:
        new = reload_config(self.config_path, GeoDnsConfig, self.cfg)
        token = new.admin.token
        engine = Engine(new)
        if self.role != "worker":
            health = DcHealth(new, self._health_changed)
            await health.first_checks()
            old = self.health
            self.health = health
            self.drained = set()
            engine.set_state(health.healthy(), self.drained)
            if old is not None:
                await old.stop()
            if self.admin is not None:
                health.start()
        else:
            engine.set_state(self.engine.healthy, self.engine.drained)
        old_engine = self.engine
        self.engine = engine
        self.cfg = new
        if self.server is not None:
            self.server.set_handle(engine.handle)
        old_engine.regions.close()
        self.reloads += 1
        if self.admin_guard is not None:
            self.admin_guard.update(token, new.admin.allowed_hosts)
        if self.workers is not None:
            self.workers.broadcast({"op": "reload"})
            self._broadcast_state()
        log.info("reloaded", extra={"zones": [z.origin for z in new.zones]})

    async def drain(self) -> None:
        await self._stop_all()

    async def _stop_all(self) -> None:
        if self.health is not None:
            await self.health.stop()
        if self.workers is not None:
            await self.workers.stop(self.cfg.drain_timeout + 5.0)
        if self.server is not None:
            await self.server.drain(self.cfg.drain_timeout)
        if self.control is not None:
            self.control.close()
        if self.admin is not None:
            await self.admin.stop()
        self.engine.regions.close()

    # -- state changes ---------------------------------------------------------------------

    def _apply_state(self) -> None:
        assert self.health is not None
        before = self.engine.available
        self.engine.set_state(self.health.healthy(), self.drained)
        if self.engine.available != before:
            log.warning("data centers available changed",
                        extra={"available": sorted(self.engine.available),
                               "drained": sorted(self.drained)})  # fmt: skip
        self._broadcast_state()

    def _health_changed(self) -> None:
        if self.health is not None:
            self._apply_state()

    def set_drained(self, dc: str, drained: bool) -> None:
        if dc not in self.cfg.datacenters:
            raise KeyError(dc)
        if drained:
            self.drained.add(dc)
        else:
            self.drained.discard(dc)
        self._apply_state()

    def _state_message(self) -> dict[str, Any]:
        return {"op": "state", "healthy": self.engine.healthy, "drained": sorted(self.drained)}

    def _broadcast_state(self) -> None:
        if self.workers is not None:
            self.workers.broadcast(self._state_message())

    def _worker_ready(self, index: int) -> None:
        assert self.workers is not None
        self.workers.send_to(index, self._state_message())

    async def _on_control(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        op = msg.get("op")
        if op == "stats":
            return {"id": msg["id"], "snapshot": self.engine.snapshot()}
        if op == "reload":
            await self.reload()
        elif op == "state":
            self.engine.set_state(msg.get("healthy", {}), msg.get("drained", []))
        return None

    # -- status and metrics ----------------------------------------------------------------

    async def _refresh_stats(self) -> None:
        if self.workers is not None:
            self._merged = merge(await self.workers.snapshots())

    def _snapshot(self) -> dict[str, Any]:
        if self.role == "supervisor":
            return self._merged if self._merged is not None else merge([])
        return self.engine.snapshot()

    async def status_async(self) -> dict[str, Any]:
        await self._refresh_stats()
        return self.status()

    def status(self) -> dict[str, Any]:
        targets = self.health.status() if self.health is not None else {}
        dcs = {}
        for name, dcc in self.cfg.datacenters.items():
            dcs[name] = {
                "addresses": dcc.addresses, "healthy": self.engine.healthy.get(name, True),
                "drained": name in self.drained, "available": name in self.engine.available,
                "targets": targets.get(name, []),
            }  # fmt: skip
        names = {}
        for name, pol in self.engine.zones.policies():
            names[name.to_text()] = {
                "policy": pol.policy, "ttl": pol.ttl, "drain_ttl": pol.drain_ttl,
                "datacenters": pol.datacenters, "weights": pol.weights,
                "regions": {r: rule.model_dump() for r, rule in pol.regions.items()},
            }  # fmt: skip
        return {
            "listen": self.cfg.listen, "admin": self.cfg.admin.address, "workers": self.cfg.workers,
            "worker_pids": self.workers.pids() if self.workers is not None else [os.getpid()],
            "uptime_s": time.time() - self.started_at, "reloads": self.reloads,
            "fail_open": self.cfg.fail_open, "zones": [z.origin for z in self.cfg.zones],
            "datacenters": dcs, "names": names, "counters": self._snapshot(),
        }  # fmt: skip

    @property
    def port(self) -> int:
        return parse_hostport(self.cfg.listen)[1]

    def _collect(self) -> Iterable[Metric]:
        snap = self._snapshot()
        p = "tierproxy_geodns_"
        families: list[Metric] = []
        for key, metric, label, doc in (
            ("queries", "queries", "qtype", "DNS queries answered, by query type"),
            ("rcodes", "responses", "rcode", "DNS responses sent, by response code"),
            ("regions", "region_queries", "region", "policy-name queries, by client region"),
            ("datacenters", "datacenter_answers", "datacenter", "policy answers naming each data center"),
        ):
            fam = CounterMetricFamily(p + metric, doc, labels=[label])
            for value, n in sorted(snap[key].items()):
                fam.add_metric([value], n)
            families.append(fam)
        for key, doc in (("dropped", "queries dropped without an answer (short, or a response)"),
                         ("errors", "internal errors answered SERVFAIL"),
                         ("cache_hits", "answers served from the wire-answer cache"),
                         ("cache_misses", "answers built with dnspython")):  # fmt: skip
            families.append(CounterMetricFamily(p + key, doc, value=snap[key]))
        families.append(GaugeMetricFamily(p + "cache_entries", "wire answers cached", value=snap["cache_entries"]))
        up = GaugeMetricFamily(p + "datacenter_up", "1 if every health target of the data center passes",
                               labels=["datacenter"])  # fmt: skip
        drained = GaugeMetricFamily(p + "datacenter_drained", "1 while drained by an operator",
                                    labels=["datacenter"])  # fmt: skip
        for dc in self.cfg.datacenters:
            up.add_metric([dc], 1.0 if self.engine.healthy.get(dc, True) else 0.0)
            drained.add_metric([dc], 1.0 if dc in self.drained else 0.0)
        families += [up, drained]
        return families
