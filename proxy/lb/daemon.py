"""`tierproxy lb`: wires config, pools, health checks, the frontend, metrics and the admin API.

Lifecycle (driven by proxy.core.runtime): `start()` binds the listener and the admin port and
starts one health-check loop per backend; `reload()` re-reads the config file and reconciles pools
in place (existing connections and backend state survive); `drain()` stops accepting and lets
in-flight requests finish up to `timeouts.drain` seconds.

Roles: with `workers = 1` one process does everything ("single"). With `workers = N` the process
the operator started is the "supervisor" (admin API, health checks, pool truth) and N "worker"
processes serve the listen port with SO_REUSEPORT; see proxy/core/workers.py. The messages:
supervisor -> worker {"op": "health"|"add"|"remove"|"drain"|"enable"|"reload"|"stats", ...};
worker -> supervisor {"op": "ready"} and the stats answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client.core import Metric

from proxy.core.admin import AdminServer, admin_guard, admin_server, make_admin_app
from proxy.core.adminguard import AdminGuard
from proxy.core.checks import CheckLoop, CheckResult, HttpChecker
from proxy.core.config import RESTART_ONLY, parse_hostport, reload_config
from proxy.core.health import HealthState
from proxy.core.metrics import FuncCollector, new_registry
from proxy.lb.admin import SERIES, add_admin_routes
from proxy.lb.config import BackendConfig, LbConfig
from proxy.lb.listeners import Listeners
from proxy.lb.pool import STATUS_CLASSES, Backend, Pool
from proxy.lb.stats import collect, merge, snapshot
from proxy.core.workers import ControlChannel, WorkerSet, process_role, start_worker_channel
from proxy.upstream.checks import backend_check

__all__ = ["LbDaemon"]

log = logging.getLogger("tierproxy.lb")


def _bound(cfg: LbConfig) -> list[tuple[object, ...]]:
    """What a listener binds and how it takes connections: fixed until a restart."""
    return [(x.name, x.address, x.protocol, x.proxy_protocol, tuple(x.proxy_protocol_from))
            for x in cfg.all_listeners]  # fmt: skip


class LbDaemon:
    def __init__(self, cfg: LbConfig, config_path: str | Path | None = None,
                 worker_fd: int | None = None) -> None:
        self.cfg = cfg
        self.config_path = Path(config_path) if config_path else None
        self.worker_fd = worker_fd
        self.role = process_role(worker_fd, cfg.workers, self.config_path)
        self.workers: WorkerSet | None = None
        self.control: ControlChannel | None = None
        self._merged: dict[str, Any] | None = None
        self._worker_requests: list[int] = []
        self.pools: dict[str, Pool] = {}
        self.registry = new_registry()
        self.registry.register(FuncCollector(self._collect))
        self.checker = HttpChecker()
        self.fe: Listeners | None = None
        self.admin: AdminServer | None = None
        self.admin_guard: AdminGuard | None = None
        self.started_at = time.time()
        self._running = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        # Backends start down until their first check (core/health.py). A worker's health comes
        # from the supervisor, which checked every backend before starting it: a worker starts
        # with them up, and only backends added later wait for the supervisor's first check.
        checks_here = self.role != "worker"
        for name, pcfg in self.cfg.pools.items():
            pool = Pool(name, pcfg, self._backend_added, self._backend_removed, self._marked_down,
                        unchecked=checks_here)  # fmt: skip
            pool.unchecked = True
            self.pools[name] = pool
        if checks_here:
            # Before the listener opens: a fresh balancer neither refuses traffic its backends
            # could serve nor sends any to a backend that is down.
            await self._first_checks()
        if self.role != "supervisor":
            self.fe = Listeners(self.cfg, self.pools)
            try:
                await self.fe.start(reuse_port=self.role == "worker")
            except OSError:
                await self.checker.close()  # the first checks opened its session
                raise
        if self.role == "worker":
            assert self.worker_fd is not None
            # Health, admin changes and reloads come from the supervisor.
            self.control = await start_worker_channel(self.worker_fd, self._on_control)
            return
        if self.role == "supervisor":
            # Workers first: when the admin port answers, the listen port does too.
            assert self.config_path is not None
            self.workers = WorkerSet(self.config_path, self.cfg.workers, self._worker_ready)
            await self.workers.start()
        self.admin_guard = admin_guard(self.cfg.admin)
        for warning in self.cfg.warnings():
            log.warning(warning)
        app = make_admin_app(self.registry, before_scrape=self._refresh_stats, guard=self.admin_guard, series=SERIES)
        add_admin_routes(app, self)
        self.admin = admin_server(app, self.cfg.admin)
        try:
            await self.admin.start()
        except OSError:
            if self.fe is not None:
                await self.fe.drain(0)
            if self.workers is not None:
                await self.workers.stop(5.0)
            await self.checker.close()
            raise
        self._running = True
        for pool in self.pools.values():
            for b in pool.backends.values():
                self._start_checks(pool, b)
        log.info(
            "listening",
            extra={"listen": [x.address for x in self.cfg.all_listeners], "admin": self.cfg.admin.address,
                   "pools": list(self.pools), "workers": self.cfg.workers},
        )

    async def reload(self) -> None:
        new = reload_config(self.config_path, LbConfig, self.cfg,
                            (("listeners (names, addresses, protocols, PROXY protocol)", _bound), *RESTART_ONLY[1:]))
        token = new.admin.token  # read before anything changes: a vanished file fails the reload
        self.apply_config(new)
        if self.admin_guard is not None:
            self.admin_guard.update(token, new.admin.allowed_hosts)  # a token rotates with a reload
        if self.workers is not None:
            self.workers.broadcast({"op": "reload"})
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
                pool = Pool(name, pcfg, self._backend_added, self._backend_removed,
                            self._marked_down, unchecked=True)  # fmt: skip
                self.pools[name] = pool
                for b in pool.backends.values():
                    self._start_checks(pool, b)
                continue
            health_changed = pool.cfg.health != pcfg.health
            pool.apply(pcfg)
            if health_changed:
                for b in pool.backends.values():
                    b.health = HealthState(pcfg.health.rise, pcfg.health.fall, up=b.health.up,
                                           unchecked=not b.health.checked and pcfg.health.type != "none")
                    self._start_checks(pool, b)
                pool.invalidate()
        self.cfg = new
        if self.fe is not None:
            self.fe.set_config(new)

    async def drain(self) -> None:
        self._running = False
        for pool in self.pools.values():
            for b in pool.backends.values():
                self._stop_checks(b)
        if self.workers is not None:
            await self.workers.stop(self.cfg.timeouts.drain + 5.0)
        if self.fe is not None:
            await self.fe.drain(self.cfg.timeouts.drain)
        if self.control is not None:
            self.control.close()
        if self.admin is not None:
            await self.admin.stop()
        await self.checker.close()

    # -- runtime changes (admin API) -------------------------------------------------------

    def add_backend(self, pool_name: str, bcfg: BackendConfig) -> Backend:
        backend = self.pools[pool_name].add(bcfg)
        if self.workers is not None:
            self.workers.broadcast({"op": "add", "pool": pool_name, "backend": bcfg.model_dump()})
        return backend

    def remove_backend(self, pool_name: str, name: str) -> None:
        self.pools[pool_name].remove(name)
        if self.workers is not None:
            self.workers.broadcast({"op": "remove", "pool": pool_name, "name": name})

    def set_draining(self, pool_name: str, name: str, draining: bool) -> Backend:
        backend = self.pools[pool_name].set_draining(name, draining)
        if self.workers is not None:
            self.workers.broadcast({"op": "drain", "pool": pool_name, "name": name, "draining": draining})
        return backend

    # -- workers ---------------------------------------------------------------------------

    def _health_message(self, b: Backend) -> dict[str, Any]:
        return {"op": "health", "pool": b.pool_name, "backend": b.name, "up": b.health.up,
                "reason": b.health.reason}

    def _worker_ready(self, index: int) -> None:
        """A worker started with every backend up: tell it what the checks know by now."""
        assert self.workers is not None
        for pool in self.pools.values():
            for b in pool.backends.values():
                if not b.health.up:
                    self.workers.send_to(index, self._health_message(b))
                if b.draining:
                    self.workers.send_to(index, {"op": "drain", "pool": pool.name, "name": b.name,
                                                 "draining": True})

    async def _on_control(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """A worker's handling of the supervisor's messages (see proxy/core/workers.py)."""
        op = msg.get("op")
        if op == "stats":
            return {"id": msg["id"], "snapshot": snapshot(self.fe, self.pools)}
        if op == "reload":
            await self.reload()
            return None
        pool = self.pools.get(msg.get("pool", ""))
        if pool is None:
            return None
        if op == "health":
            b = pool.backends.get(msg["backend"])
            if b is not None:
                b.health = HealthState(1, 1, up=True)
                if not msg["up"]:
                    b.health.record(False, msg.get("reason", ""))
                    b.close_idle()
                pool.invalidate()
                if not msg["up"]:
                    self._marked_down(b)
        elif op == "add":
            bcfg = BackendConfig.model_validate(msg["backend"])
            if bcfg.name not in pool.backends:
                pool.add(bcfg)
        elif op == "remove":
            if msg["name"] in pool.backends:
                pool.remove(msg["name"])
        elif op == "drain":
            if msg["name"] in pool.backends:
                pool.set_draining(msg["name"], bool(msg["draining"]))
        return None

    # -- health checks ---------------------------------------------------------------------

    def _backend_added(self, backend: Backend) -> None:
        if self._running:
            pool = self.pools.get(backend.pool_name)
            if pool is not None:
                self._start_checks(pool, backend)

    def _marked_down(self, backend: Backend) -> None:
        """A backend went down (health check or outlier ejection): with the pool's
        `on_marked_down = "redispatch"`, requests waiting on it move now (lb/markdown.py). Run on
        the next loop turn: an ejection is reported from inside an exchange's own failure
        handling, which must finish first."""
        pool = self.pools.get(backend.pool_name)
        if self.fe is None or pool is None or pool.cfg.on_marked_down != "redispatch":
            return
        self.fe.loop.call_soon(self._shutdown_sessions, pool, backend)

    def _shutdown_sessions(self, pool: Pool, backend: Backend) -> None:
        if self.fe is None or pool.is_eligible(backend, self.fe.loop.time()):
            return  # back up already: nothing to move
        resent, failed = self.fe.backend_marked_down(backend)
        if resent or failed:
            log.warning(
                "requests moved off a backend that went down",
                extra={"pool": pool.name, "backend": backend.name, "resent": resent,
                       "answered_502": failed},
            )

    def _backend_removed(self, backend: Backend) -> None:
        self._stop_checks(backend)

    def _stop_checks(self, backend: Backend) -> None:
        if backend.check_loop is not None:
            backend.check_loop.stop()
            backend.check_loop = None

    async def _first_checks(self) -> None:
        """Check every backend once, all at the same time (each within its check timeout)."""

        async def once(pool: Pool, backend: Backend) -> None:
            state = backend.health
            result = await self._check_fn(pool, backend)()
            changed = state.record(result.ok, result.reason, asyncio.get_running_loop().time())
            self._on_check_result(backend, state, result, changed, first=True)

        await asyncio.gather(*(once(pool, b) for pool in self.pools.values()
                               for b in pool.backends.values() if not b.health.checked))

    def _check_fn(self, pool: Pool, backend: Backend) -> Callable[[], Awaitable[CheckResult]]:
        def tls_for(b: Backend) -> tuple[Any, str | None]:
            # Read at each check: a reload may change the pool's TLS (its dialer) without a restart of checks.
            return pool.dialer.ssl_for(b) if pool.dialer else (None, None)

        return backend_check(pool.cfg.health, backend, self.checker, tls_for)

    def _on_check_result(self, backend: Backend, state: HealthState, result: CheckResult,
                         changed: bool, first: bool) -> None:  # fmt: skip
        """`first`: the backend's first check, which decides its state (core/health.py)."""
        if result.ok:
            backend.health_checks_ok += 1
        else:
            backend.health_checks_failed += 1
        if not changed and not first:
            return
        current = self.pools.get(backend.pool_name)
        if current is not None:
            current.invalidate()
        if self.workers is not None:
            # Also a first result that leaves the backend down: a worker may hold it as up.
            self.workers.broadcast(self._health_message(backend))
        if state.up:
            if not first:  # a first pass is the expected start, not news
                log.warning("backend up", extra={"pool": backend.pool_name, "backend": backend.name})
            return
        backend.close_idle()
        log.warning(
            "backend down",
            extra={"pool": backend.pool_name, "backend": backend.name, "reason": result.reason},
        )
        if changed:
            self._marked_down(backend)

    def _start_checks(self, pool: Pool, backend: Backend) -> None:
        self._stop_checks(backend)
        hc = pool.cfg.health
        if hc.type == "none":
            return
        # A backend not checked yet (added at runtime or by a reload) is checked at once.
        first = not backend.health.checked

        def on_result(state: HealthState, result: CheckResult, changed: bool) -> None:
            nonlocal first
            self._on_check_result(backend, state, result, changed, first)
            first = False

        loop = CheckLoop(self._check_fn(pool, backend), backend.health, hc.interval, on_result)
        backend.check_loop = loop
        loop.start(first_delay=0.0 if first else None)

    # -- status and metrics ----------------------------------------------------------------

    async def _refresh_stats(self) -> None:
        """Before a scrape or a status read: gather the workers' counters."""
        if self.workers is not None:
            snaps = await self.workers.snapshots()
            self._worker_requests = [s["requests"] for s in snaps]
            self._merged = merge(snaps)

    def _snapshot(self) -> dict[str, Any]:
        if self.role == "supervisor":
            if self._merged is None:
                return merge([])
            return self._merged
        return snapshot(self.fe, self.pools)

    async def status_async(self) -> dict[str, Any]:
        await self._refresh_stats()
        return self.status()

    def status(self) -> dict[str, Any]:
        now = asyncio.get_running_loop().time()
        snap = self._snapshot()
        pools = {}
        for name, pool in self.pools.items():
            pstatus = pool.status(now)
            counters = snap["pools"].get(name)
            if self.role == "supervisor" and counters is not None:
                # Counters come from the workers; health and config from here.
                pstatus["retries"] = counters["retries"]
                pstatus["no_backend"] = counters["no_backend"]
                for b in pstatus["backends"]:
                    c = counters["backends"].get(b["name"])
                    if c is None:
                        continue
                    b.update(requests=c["requests"], inflight=c["inflight"], ejections=c["ejections"],
                             failures=c["failures"], idle_connections=c["idle"],
                             open_connections=c["open"],
                             responses=dict(zip(STATUS_CLASSES, c["responses"])))
            pools[name] = pstatus
        return {
            "listen": self.cfg.all_listeners[0].address,
            "listeners": {x.name: {"address": x.address, "protocol": x.protocol}
                          for x in self.cfg.all_listeners},
            "admin": self.cfg.admin.address,
            "workers": self.cfg.workers,
            "worker_pids": self.workers.pids() if self.workers is not None else [os.getpid()],
            "worker_requests": self._worker_requests if self.workers is not None else [snap["requests"]],
            "uptime_s": time.time() - self.started_at,
            "draining": not self._running,
            "client_connections": snap["conns"],
            "requests": snap["requests"],
            "pools": pools,
        }

    @property
    def port(self) -> int:
        assert self.fe is not None
        return self.fe.port

    @property
    def admin_port(self) -> int:
        return parse_hostport(self.cfg.admin.address)[1]

    def _collect(self) -> Iterable[Metric]:
        if not self.pools:
            return []
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:
            return []
        views = {}
        for pname, pool in self.pools.items():
            eligible = set(pool.eligible(now))
            views[pname] = {b.name: (b.health.up, b in eligible) for b in pool.backends.values()}
        return collect(self._snapshot(), views)
