"""The cdn's origin pool: its origin servers as shared upstream `Backend`s (proxy/upstream/), their
active health checks (the lb's: `backend_check` in a `CheckLoop`, rise/fall), the choice of a
server for a fetch, and reconciliation on reload.

A server is *eligible* when its health is up and it is not removed. `pick` rotates over the
eligible non-backup servers (each `weight` times in the rotation), falling back to the backups
when no other is eligible; it returns None when none is eligible: the origin is down, and the
engine answers at once (stale when it may, else 502) instead of trying a dead address. Servers
start down until their first check (`first_checks` runs before the cdn serves, as in the lb);
with `health.type = "none"` they are taken as up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from proxy.core.checks import CheckLoop, CheckResult, HttpChecker
from proxy.core.health import HealthState
from proxy.upstream.backend import Backend, expire_idle
from proxy.upstream.checks import backend_check
from proxy.upstream.config import BackendConfig, HealthConfig

__all__ = ["OriginPool"]

log = logging.getLogger("tierproxy.cdn")


class OriginPool:
    def __init__(self, servers: list[BackendConfig], health: HealthConfig, max_idle: int) -> None:
        self.health_cfg = health
        self.max_idle = max_idle
        self.backends: dict[str, Backend] = {}
        self.checker = HttpChecker()
        self._running = False
        self._rotation: tuple[Backend, ...] | None = None
        self._next = 0
        self.apply(servers, health, max_idle)

    # -- membership ------------------------------------------------------------------------

    def _new_health(self) -> HealthState:
        h = self.health_cfg
        return HealthState(h.rise, h.fall, up=True, unchecked=h.type != "none")

    def apply(self, servers: list[BackendConfig], health: HealthConfig, max_idle: int) -> None:
        """Reconcile with a (reloaded) config; servers that stay keep their state and connections."""
        health_changed = health != self.health_cfg
        self.health_cfg = health
        self.max_idle = max_idle
        wanted = {s.name: s for s in servers}
        for name in [n for n in self.backends if n not in wanted or wanted[n].address != self.backends[n].address]:
            b = self.backends.pop(name)
            b.removed = True
            b.close_idle()
            self._stop(b)
        for scfg in servers:
            b = self.backends.get(scfg.name)
            if b is None:
                b = self.backends[scfg.name] = Backend("origin", scfg, self._new_health())
                if self._running:
                    self._start(b)
            else:
                b.weight, b.backup = scfg.weight, scfg.backup
                if health_changed:
                    b.health = HealthState(health.rise, health.fall, up=b.health.up,
                                           unchecked=not b.health.checked and health.type != "none")
                    if self._running:
                        self._start(b)
        self.invalidate()

    def invalidate(self) -> None:
        self._rotation = None

    # -- choice ----------------------------------------------------------------------------

    def _build(self) -> tuple[Backend, ...]:
        ok = [b for b in self.backends.values() if b.health.up and not b.removed]
        chosen = [b for b in ok if not b.backup] or ok
        return tuple(b for b in chosen for _ in range(b.weight))

    def pick(self, exclude: tuple[Backend, ...] = ()) -> Backend | None:
        """The server for the next fetch (None: no eligible server is left)."""
        rotation = self._rotation
        if rotation is None:
            rotation = self._rotation = self._build()
        for _ in range(len(rotation)):
            self._next = (self._next + 1) % len(rotation)
            b = rotation[self._next]
            if b not in exclude:
                return b
        return None

    def down_reason(self) -> str:
        """Why no server is eligible, for logs and 502 answers: each server's health reason."""
        return "; ".join(f"{b.name}: {b.health.reason or 'down'}" for b in self.backends.values()) or "no origin"

    # -- health checks ---------------------------------------------------------------------

    async def first_checks(self) -> None:
        """Check every server not checked yet once, all at the same time (before serving)."""

        async def once(b: Backend) -> None:
            result = await backend_check(self.health_cfg, b, self.checker)()
            self._on_result(b, b.health, result, b.health.record(result.ok, result.reason, _now()))

        await asyncio.gather(*(once(b) for b in self.backends.values() if not b.health.checked))

    def start(self) -> None:
        self._running = True
        for b in self.backends.values():
            self._start(b)

    async def stop(self) -> None:
        self._running = False
        for b in self.backends.values():
            self._stop(b)
            b.close_idle()
        await self.checker.close()

    def _start(self, b: Backend) -> None:
        self._stop(b)
        if self.health_cfg.type == "none":
            return
        loop = CheckLoop(backend_check(self.health_cfg, b, self.checker), b.health, self.health_cfg.interval,
                         lambda state, result, changed: self._on_result(b, state, result, changed))
        b.check_loop = loop
        loop.start(first_delay=0.0 if not b.health.checked else None)

    @staticmethod
    def _stop(b: Backend) -> None:
        if b.check_loop is not None:
            b.check_loop.stop()
            b.check_loop = None

    def _on_result(self, b: Backend, state: HealthState, result: CheckResult, changed: bool) -> None:
        if result.ok:
            b.health_checks_ok += 1
        else:
            b.health_checks_failed += 1
        if not changed:
            return
        self.invalidate()
        if state.up:
            log.warning("origin up", extra={"origin": b.name})
        else:
            b.close_idle()
            log.warning("origin down", extra={"origin": b.name, "reason": result.reason})

    # -- upkeep and status -----------------------------------------------------------------

    def expire_idle(self, idle_limit: float) -> None:
        for b in self.backends.values():
            expire_idle(b, idle_limit)

    def status(self) -> list[dict[str, Any]]:
        return [{"name": b.name, "address": b.address, "weight": b.weight, "backup": b.backup,
                 "state": "up" if b.health.up else "down", "reason": b.health.reason,
                 "health": b.health.to_dict(), "requests": b.requests, "inflight": b.inflight,
                 "failures": dict(b.failures), "idle_connections": len(b.idle),
                 "open_connections": b.open_connections} for b in self.backends.values()]  # fmt: skip


def _now() -> float:
    return asyncio.get_running_loop().time()
