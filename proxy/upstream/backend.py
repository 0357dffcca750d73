"""One upstream server (an lb pool's backend, a cdn origin) and everything known about it: address,
weight, health (active checks, core/health.py), draining/removed, in-flight count, idle keep-alive
connections (proxy/upstream/conn.py) and counters. Pure state: the daemons decide with it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from proxy.core.config import parse_hostport
from proxy.core.health import HealthState
from proxy.core.metrics import Histogram
from proxy.upstream.config import BackendConfig

__all__ = ["STATUS_CLASSES", "Backend", "expire_idle"]

# Status classes counted per backend; fixed so label values never come from the wire.
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


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
        self.latency = Histogram()
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
