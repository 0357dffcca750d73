"""Data-center health: each DC's targets checked on an interval (proxy.core.checks), each with a
rise/fall `HealthState` (proxy.core.health). A data center is healthy when every one of its
targets is up (a DC without targets always is).

Target kinds: `http` (GET, status in `expect_status`), `tcp` (connect) and `lb_status`: a
`tierproxy lb` admin `/status`, healthy while the share of its backends in state "up" is at least
`min_healthy` (`lb_share` is the pure part). The first check of every target runs before the
server answers, so a fresh server never sends clients to a dead data center.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp

from proxy.core.checks import CheckLoop, CheckResult, HttpChecker, tcp_check
from proxy.core.health import HealthState
from proxy.geodns.config import GeoDnsConfig, HealthTarget

__all__ = ["DcHealth", "lb_share"]


def lb_share(status: Any) -> tuple[int, int]:
    """(backends up, backends) across all pools of a `tierproxy lb` /status document."""
    up = total = 0
    for pool in (status.get("pools") or {}).values():
        for b in pool.get("backends") or []:
            total += 1
            up += b.get("state") == "up"
    return up, total


class _Target:
    def __init__(self, dc: str, cfg: HealthTarget, state: HealthState) -> None:
        self.dc = dc
        self.cfg = cfg
        self.state = state
        self.loop: CheckLoop | None = None
        self.last = ""


class DcHealth:
    """Runs the checks; calls `on_change()` whenever some data center's health flips."""

    def __init__(self, cfg: GeoDnsConfig, on_change: Callable[[], None]) -> None:
        self.cfg = cfg
        self.on_change = on_change
        self.http = HttpChecker()
        self._session: aiohttp.ClientSession | None = None
        self.targets: list[_Target] = []
        for dc, dcc in cfg.datacenters.items():
            for t in dcc.health:
                self.targets.append(_Target(dc, t, HealthState(cfg.health.rise, cfg.health.fall, unchecked=True)))

    def healthy(self) -> dict[str, bool]:
        out = {dc: True for dc in self.cfg.datacenters}
        for t in self.targets:
            if not t.state.up:
                out[t.dc] = False
        return out

    def status(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {dc: [] for dc in self.cfg.datacenters}
        for t in self.targets:
            out[t.dc].append({"type": t.cfg.type, "target": t.cfg.url or t.cfg.address,
                              "last": t.last, **t.state.to_dict()})  # fmt: skip
        return out

    async def _lb_status(self, host: str, port: int, path: str, t: HealthTarget) -> CheckResult:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        timeout = self.cfg.health.timeout
        try:
            async with asyncio.timeout(timeout):
                async with self._session.get(f"http://{host}:{port}{path}") as resp:
                    body = await resp.read()
                    code = resp.status
        except TimeoutError:
            return CheckResult(False, f"lb status timed out after {timeout:g}s")
        except (aiohttp.ClientError, OSError) as exc:
            return CheckResult(False, f"lb status failed: {type(exc).__name__}: {exc}")
        if code != 200:
            return CheckResult(False, f"lb status answered {code}")
        try:
            up, total = lb_share(json.loads(body))
        except (ValueError, AttributeError, TypeError):
            return CheckResult(False, "lb status: not a tierproxy lb /status document")
        share = up / total if total else 0.0
        if share < t.min_healthy:
            return CheckResult(False, f"{up}/{total} backends up, below min_healthy {t.min_healthy:g}")
        return CheckResult(True, f"{up}/{total} backends up")

    def _check(self, t: _Target) -> Callable[[], Any]:
        host, port, path = t.cfg.host_port_path()
        timeout = self.cfg.health.timeout

        async def check() -> CheckResult:
            if t.cfg.type == "tcp":
                return await tcp_check(host, port, timeout)
            if t.cfg.type == "http":
                return await self.http.check(host, port, path, timeout, t.cfg.expect_status)
            return await self._lb_status(host, port, path, t.cfg)

        return check

    def _result(self, t: _Target, result: CheckResult, changed: bool) -> None:
        t.last = result.reason or ("ok" if result.ok else "failed")
        if changed:
            self.on_change()

    async def first_checks(self) -> None:
        async def once(t: _Target) -> None:
            result = await self._check(t)()
            t.state.record(result.ok, result.reason, asyncio.get_running_loop().time())
            t.last = result.reason or ("ok" if result.ok else "failed")

        await asyncio.gather(*(once(t) for t in self.targets))

    def start(self) -> None:
        for t in self.targets:
            def on_result(state: HealthState, result: CheckResult, changed: bool, t: _Target = t) -> None:
                self._result(t, result, changed)

            t.loop = CheckLoop(self._check(t), t.state, self.cfg.health.interval, on_result)
            t.loop.start()

    async def stop(self) -> None:
        for t in self.targets:
            if t.loop is not None:
                t.loop.stop()
                t.loop = None
        await self.http.close()
        if self._session is not None:
            await self._session.close()
