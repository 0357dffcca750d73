"""`tierproxy lb`: wires config, pools, health checks, the frontend, metrics and the admin API.

Lifecycle (driven by proxy.core.runtime): `start()` binds the listener and the admin port and
starts one health-check loop per backend; `reload()` re-reads the config file and reconciles pools
in place (existing connections and backend state survive); `drain()` stops accepting and lets
in-flight requests finish up to `timeouts.drain` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from proxy.core.admin import AdminServer, make_admin_app
from proxy.core.checks import CheckLoop, CheckResult, HttpChecker, tcp_check
from proxy.core.config import load_config, parse_hostport
from proxy.core.health import HealthState
from proxy.core.metrics import FuncCollector, new_registry
from proxy.lb.admin import add_admin_routes
from proxy.lb.config import BackendConfig, LbConfig
from proxy.lb.frontend import Frontend
from proxy.lb.pool import STATUS_CLASSES, Backend, Pool

__all__ = ["LbDaemon"]

log = logging.getLogger("tierproxy.lb")


class LbDaemon:
    def __init__(self, cfg: LbConfig, config_path: str | Path | None = None) -> None:
        self.cfg = cfg
        self.config_path = Path(config_path) if config_path else None
        self.pools: dict[str, Pool] = {}
        self.registry = new_registry()
        self.registry.register(FuncCollector(self._collect))
        self.checker = HttpChecker()
        self.fe: Frontend | None = None
        self.admin: AdminServer | None = None
        self.started_at = time.time()
        self._running = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        for name, pcfg in self.cfg.pools.items():
            self.pools[name] = Pool(name, pcfg, self._backend_added, self._backend_removed)
        self.fe = Frontend(self.cfg, self.pools)
        app = make_admin_app(self.registry)
        add_admin_routes(app, self)
        self.admin = AdminServer(app, self.cfg.admin.address)
        await self.fe.start()
        try:
            await self.admin.start()
        except OSError:
            await self.fe.drain(0)
            raise
        self._running = True
        for pool in self.pools.values():
            for b in pool.backends.values():
                self._start_checks(pool, b)
        log.info(
            "listening",
            extra={"listen": self.cfg.listen, "admin": self.cfg.admin.address,
                   "pools": list(self.pools)},
        )

    async def reload(self) -> None:
        if self.config_path is None:
            raise RuntimeError("no config file to reload from")
        new = load_config(self.config_path, LbConfig)
        if new.listen != self.cfg.listen or new.admin.address != self.cfg.admin.address:
            raise ValueError("listen and admin.address cannot change on reload; restart instead")
        self.apply_config(new)
        log.info("reloaded", extra={"pools": list(self.pools)})

    def apply_config(self, new: LbConfig) -> None:
        """Reconcile running state with `new`: pools and backends added, removed, re-weighted."""
        for name in [n for n in self.pools if n not in new.pools]:
            pool = self.pools.pop(name)
            for bname in list(pool.backends):
                pool.remove(bname)
        for name, pcfg in new.pools.items():
            pool = self.pools.get(name)
            if pool is None:
                pool = Pool(name, pcfg, self._backend_added, self._backend_removed)
                self.pools[name] = pool
                for b in pool.backends.values():
                    self._start_checks(pool, b)
                continue
            health_changed = pool.cfg.health != pcfg.health
            pool.apply(pcfg)
            if health_changed:
                for b in pool.backends.values():
                    b.health = HealthState(pcfg.health.rise, pcfg.health.fall, up=b.health.up)
                    self._start_checks(pool, b)
                pool.invalidate()
        self.cfg = new
        assert self.fe is not None
        self.fe.set_config(new)

    async def drain(self) -> None:
        self._running = False
        for pool in self.pools.values():
            for b in pool.backends.values():
                self._stop_checks(b)
        if self.fe is not None:
            await self.fe.drain(self.cfg.timeouts.drain)
        if self.admin is not None:
            await self.admin.stop()
        await self.checker.close()

    # -- runtime changes (admin API) -------------------------------------------------------

    def add_backend(self, pool_name: str, bcfg: BackendConfig) -> Backend:
        pool = self.pools[pool_name]
        backend = pool.add(bcfg)
        return backend

    def remove_backend(self, pool_name: str, name: str) -> None:
        self.pools[pool_name].remove(name)

    # -- health checks ---------------------------------------------------------------------

    def _backend_added(self, backend: Backend) -> None:
        if self._running:
            pool = self.pools.get(backend.pool_name)
            if pool is not None:
                self._start_checks(pool, backend)

    def _backend_removed(self, backend: Backend) -> None:
        self._stop_checks(backend)

    def _stop_checks(self, backend: Backend) -> None:
        if backend.check_loop is not None:
            backend.check_loop.stop()
            backend.check_loop = None

    def _start_checks(self, pool: Pool, backend: Backend) -> None:
        self._stop_checks(backend)
        hc = pool.cfg.health
        if hc.type == "none":
            return
        if hc.type == "tcp":

            async def check() -> CheckResult:
                return await tcp_check(backend.host, backend.port, hc.timeout)
        else:

            async def check() -> CheckResult:
                return await self.checker.check(
                    backend.host, backend.port, hc.path, hc.timeout, hc.expect_status, hc.host
                )

        def on_result(state: HealthState, result: CheckResult, changed: bool) -> None:
            if result.ok:
                backend.health_checks_ok += 1
            else:
                backend.health_checks_failed += 1
            if changed:
                current = self.pools.get(backend.pool_name)
                if current is not None:
                    current.invalidate()
                if state.up:
                    log.warning("backend up", extra={"pool": backend.pool_name, "backend": backend.name})
                else:
                    backend.close_idle()
                    log.warning(
                        "backend down",
                        extra={"pool": backend.pool_name, "backend": backend.name,
                               "reason": result.reason},
                    )

        loop = CheckLoop(check, backend.health, hc.interval, on_result)
        backend.check_loop = loop
        loop.start()

    # -- status and metrics ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        fe = self.fe
        assert fe is not None
        now = fe.loop.time()
        return {
            "listen": self.cfg.listen,
            "admin": self.cfg.admin.address,
            "uptime_s": time.time() - self.started_at,
            "draining": fe.draining,
            "client_connections": len(fe.conns),
            "requests": fe.requests_total,
            "pools": {name: pool.status(now) for name, pool in self.pools.items()},
        }

    @property
    def port(self) -> int:
        assert self.fe is not None
        return self.fe.port

    @property
    def admin_port(self) -> int:
        return parse_hostport(self.cfg.admin.address)[1]

    def _collect(self) -> Iterable[Metric]:
        fe = self.fe
        if fe is None:
            return []
        p = "tierproxy_lb_"
        now = fe.loop.time()
        conns = GaugeMetricFamily(p + "client_connections", "Open client connections.")
        conns.add_metric([], len(fe.conns))
        accepted = CounterMetricFamily(p + "client_connections_accepted", "Client connections accepted.")
        accepted.add_metric([], fe.accepted_total)
        refused = CounterMetricFamily(
            p + "client_connections_refused", "Client connections refused (over max_client_connections or draining)."
        )
        refused.add_metric([], fe.refused_total)
        requests = CounterMetricFamily(p + "requests", "Client requests received.")
        requests.add_metric([], fe.requests_total)
        client_err = CounterMetricFamily(
            p + "client_errors", "Requests rejected for protocol errors or timeouts, by status.", labels=["status"]
        )
        for status, n in sorted(fe.client_errors.items()):
            client_err.add_metric([str(status)], n)
        proxy_err = CounterMetricFamily(
            p + "proxy_errors", "Responses generated by the balancer (502/503/504), by status.", labels=["status"]
        )
        for status, n in sorted(fe.proxy_errors.items()):
            proxy_err.add_metric([str(status)], n)
        pb = ["pool", "backend"]
        b_req = CounterMetricFamily(p + "backend_requests", "Request attempts sent to a backend.", labels=pb)
        b_resp = CounterMetricFamily(
            p + "backend_responses", "Backend responses by status class.", labels=pb + ["class"]
        )
        b_fail = CounterMetricFamily(
            p + "backend_failures", "Failed attempts by outcome.", labels=pb + ["outcome"]
        )
        b_eject = CounterMetricFamily(p + "backend_ejections", "Outlier-detection ejections.", labels=pb)
        b_checks = CounterMetricFamily(
            p + "backend_health_checks", "Active health checks by result.", labels=pb + ["result"]
        )
        b_up = GaugeMetricFamily(p + "backend_up", "1 if the backend passes its health checks.", labels=pb)
        b_elig = GaugeMetricFamily(
            p + "backend_eligible", "1 if the backend can take new requests now.", labels=pb
        )
        b_infl = GaugeMetricFamily(p + "backend_inflight_requests", "Requests in progress.", labels=pb)
        b_conns = GaugeMetricFamily(
            p + "backend_connections", "Backend TCP connections by state.", labels=pb + ["state"]
        )
        b_lat = HistogramMetricFamily(
            p + "backend_response_seconds", "Request start to response end, per backend.", labels=pb
        )
        retries = CounterMetricFamily(p + "pool_retries", "Attempts retried on another backend.", labels=["pool"])
        nob = CounterMetricFamily(
            p + "pool_no_backend", "Requests answered 503 because no backend was eligible.", labels=["pool"]
        )
        for pname, pool in self.pools.items():
            retries.add_metric([pname], pool.retries_total)
            nob.add_metric([pname], pool.no_backend_total)
            eligible = set(pool.eligible(now))
            for b in pool.backends.values():
                lv = [pname, b.name]
                b_req.add_metric(lv, b.requests)
                for cls, n in zip(STATUS_CLASSES, b.responses):
                    b_resp.add_metric(lv + [cls], n)
                for outcome, n in sorted(b.failures.items()):
                    b_fail.add_metric(lv + [outcome], n)
                b_eject.add_metric(lv, b.ejections)
                b_checks.add_metric(lv + ["pass"], b.health_checks_ok)
                b_checks.add_metric(lv + ["fail"], b.health_checks_failed)
                b_up.add_metric(lv, 1 if b.health.up else 0)
                b_elig.add_metric(lv, 1 if b in eligible else 0)
                b_infl.add_metric(lv, b.inflight)
                b_conns.add_metric(lv + ["open"], b.open_connections)
                b_conns.add_metric(lv + ["idle"], len(b.idle))
                b_lat.add_metric(lv, b.latency.buckets(), b.latency.sum)
        return [conns, accepted, refused, requests, client_err, proxy_err, b_req, b_resp, b_fail,
                b_eject, b_checks, b_up, b_elig, b_infl, b_conns, b_lat, retries, nob]

