"""Upstream pools: backends, their state, eligibility, and the pick that the data path calls.

State lives on the `Backend` object (proxy/upstream/backend.py, shared with the cdn): health (active checks), ejection (passive outlier
detection), draining, in-flight count, idle keep-alive connections and counters. A backend is
*eligible* when it is up, not ejected, not draining and not removed. The pool caches the tuple of
eligible backends and rebuilds it only when something changes (a health flip, an ejection, a
drain, a membership change), so the hot path is: cached tuple -> balancer.pick.

Backups are used only when no non-backup backend is eligible (HAProxy's `backup`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from proxy.core.health import HealthState
from proxy.lb.balancer import Balancer, make_balancer
from proxy.lb.clientcore import PoolCore
from proxy.lb.config import BackendConfig, PoolConfig
from proxy.lb.dial import make_dialer
from proxy.lb.outlier import OutlierDetector, Outcome
from proxy.lb.sticky import StickyCodec
from proxy.upstream.backend import STATUS_CLASSES, Backend

__all__ = ["STATUS_CLASSES", "Backend", "Pool"]


class Pool(PoolCore):
    """A named set of backends with one balancing algorithm and one mode (stateless/sticky). What
    the exchange reads per request, and `pick`, are PoolCore's (lb/clientcore.py: C fields and a
    C method when compiled)."""

    def __init__(self, name: str, cfg: PoolConfig, on_backend_added: Callable[[Backend], None],
                 on_backend_removed: Callable[[Backend], None],
                 on_marked_down: Callable[[Backend], None] | None = None,
                 unchecked: bool = False) -> None:  # fmt: skip
        self.name = name
        self.cfg = cfg
        # New backends start down until their first health check decides (core/health.py); the
        # daemon checks them at once. Off in a worker process, whose health comes from the
        # supervisor, for the backends it starts with.
        self.unchecked = unchecked
        self.backends: dict[str, Backend] = {}
        self._on_added = on_backend_added
        self._on_removed = on_backend_removed
        # Called when outlier detection ejects a backend (health-check flips are the daemon's).
        self._on_marked_down = on_marked_down
        self.outlier = self._make_outlier(cfg)
        self.sticky: StickyCodec | None = None
        self.retries_total = 0
        self.no_backend_total = 0
        self._eligible: tuple[Backend, ...] | None = None
        self._balancer: Balancer
        self._backup_balancer: Balancer
        self._hash_kind, _, hash_name = cfg.hash_key.partition(":")
        self.hash_name = hash_name.lower().encode()
        self.dialer = make_dialer(cfg)
        self.apply(cfg)

    @staticmethod
    def _make_outlier(cfg: PoolConfig) -> OutlierDetector:
        o = cfg.outlier
        return OutlierDetector(
            consecutive_failures=o.consecutive_failures,
            base_ejection_s=o.base_ejection,
            max_ejection_s=o.max_ejection,
            max_ejection_percent=o.max_ejection_percent,
        )

    # -- membership ------------------------------------------------------------------------

    def apply(self, cfg: PoolConfig) -> None:
        """Reconcile with a (new) config: add, remove and re-weight backends in place, keeping
        the state of those that stay (health, connections, counters)."""
        old_cfg, self.cfg = self.cfg, cfg
        if old_cfg.outlier != cfg.outlier:
            self.outlier = self._make_outlier(cfg)
        self._hash_kind, _, hash_name = cfg.hash_key.partition(":")
        self.hash_name = hash_name.lower().encode()
        # Whether a request needs a hashing key: the algorithm hashes, or the key is not the
        # client address (the other algorithms only read a header/cookie key as a hint).
        self.keyed = self._hash_kind != "client_ip" or cfg.algorithm == "consistent_hash"
        self.retry_non_idempotent = cfg.retry_non_idempotent
        if old_cfg.tls != cfg.tls or old_cfg.proxy_protocol != cfg.proxy_protocol:
            # TLS or PROXY header to backends (lb/dial.py); None: plain TCP, opened by the client.
            self.dialer = make_dialer(cfg)
            for b in self.backends.values():
                b.close_idle()  # made under the old settings
        self.sticky = (
            StickyCodec(cfg.sticky.secret.encode(), cfg.sticky.cookie)
            if cfg.mode == "sticky" and cfg.sticky is not None
            else None
        )
        wanted = {b.name: b for b in cfg.backends}
        for name in [n for n in self.backends if n not in wanted]:
            self.remove(name)
        for bcfg in cfg.backends:
            existing = self.backends.get(bcfg.name)
            if existing is not None and existing.address != bcfg.address:
                self.remove(bcfg.name)
                existing = None
            if existing is None:
                self._add(bcfg)
            else:
                existing.weight = bcfg.weight
                existing.backup = bcfg.backup
                # The file is authoritative after a reload: a runtime drain does not survive it.
                existing.draining = False
        self._rebuild()

    def _new_health(self) -> HealthState:
        h = self.cfg.health
        return HealthState(rise=h.rise, fall=h.fall, up=True, unchecked=self.unchecked and h.type != "none")

    def _add(self, bcfg: BackendConfig) -> Backend:
        backend = Backend(self.name, bcfg, self._new_health())
        self.backends[backend.name] = backend
        self._on_added(backend)
        return backend

    def add(self, bcfg: BackendConfig) -> Backend:
        """Add a backend at runtime (admin API)."""
        if bcfg.name in self.backends:
            raise ValueError(f"pool {self.name!r} already has a backend named {bcfg.name!r}")
        if any(b.address == bcfg.address for b in self.backends.values()):
            raise ValueError(f"pool {self.name!r} already has a backend at {bcfg.address}")
        backend = self._add(bcfg)
        self._rebuild()
        return backend

    def remove(self, name: str) -> Backend:
        """Take a backend out now; in-flight requests on it finish on their connections."""
        backend = self.backends.pop(name)
        backend.removed = True
        backend.close_idle()
        self._on_removed(backend)
        self._rebuild()
        return backend

    def set_draining(self, name: str, draining: bool) -> Backend:
        backend = self.backends[name]
        backend.draining = draining
        if draining:
            backend.close_idle()
        self.invalidate()
        return backend

    def _rebuild(self) -> None:
        primaries = [(b.name, b.weight) for b in self.backends.values() if not b.backup]
        backups = [(b.name, b.weight) for b in self.backends.values() if b.backup]
        options: dict[str, Any] = {}
        if self.cfg.algorithm == "consistent_hash":
            options["load_factor"] = self.cfg.load_factor
        self._balancer = make_balancer(self.cfg.algorithm, primaries, **options)
        self._backup_balancer = make_balancer(self.cfg.algorithm, backups, **options)
        self.outlier.set_members(self.backends)
        self.invalidate()

    # -- eligibility -----------------------------------------------------------------------

    def invalidate(self) -> None:
        self._eligible = None

    def is_eligible(self, b: Backend, now: float) -> bool:
        return b.health.up and not b.draining and not b.removed and not self.outlier.is_ejected(
            b.name, now
        )

    def _compute(self, now: float, exclude: Iterable[Backend] = ()) -> tuple[
        tuple[Backend, ...], bool
    ]:
        ex = set(exclude)
        ok = [b for b in self.backends.values() if b not in ex and self.is_eligible(b, now)]
        primaries = tuple(b for b in ok if not b.backup)
        if primaries:
            return primaries, False
        return tuple(b for b in ok if b.backup), True

    def eligible(self, now: float) -> tuple[Backend, ...]:
        if self._eligible is None:
            cands, backup = self._compute(now)
            self._eligible = cands
            self._eligible_backup = backup
        return self._eligible

    def tick(self, now: float) -> list[str]:
        """Periodic upkeep: end expired ejections; returns the names that came back."""
        back = self.outlier.expire(now)
        if back:
            self.invalidate()
        return back

    # -- outcomes --------------------------------------------------------------------------

    def report_failure(self, b: Backend, outcome: Outcome, now: float) -> bool:
        """A request attempt failed; returns True when this ejected the backend."""
        key = outcome.name.lower()
        b.failures[key] = b.failures.get(key, 0) + 1
        b.fail_streak += 1
        if not self.cfg.outlier.enabled or b.removed:
            return False
        if outcome is Outcome.HTTP_5XX and not self.cfg.outlier.count_5xx:
            return False
        ejected = self.outlier.record(b.name, outcome, now)
        if ejected:
            b.ejections += 1
            self.invalidate()
            if self._on_marked_down is not None:
                self._on_marked_down(b)
        return ejected

    def report_success(self, b: Backend, now: float) -> None:
        # Only touch the detector when there is a streak to reset: this runs per request.
        if b.fail_streak:
            b.fail_streak = 0
            if not b.removed:
                self.outlier.record(b.name, Outcome.SUCCESS, now)

    # -- status ----------------------------------------------------------------------------

    def backend_state(self, b: Backend, now: float) -> tuple[str, str]:
        """(state, why) for the status page: up, down, ejected, draining."""
        if b.draining:
            return "draining", "drained by operator"
        if not b.health.up:
            return "down", b.health.reason
        if self.outlier.is_ejected(b.name, now):
            until = self.outlier.ejected_until(b.name)
            return "ejected", f"outlier detection: ejected for {max(0.0, (until or now) - now):.1f}s more"
        return "up", ""

    def status(self, now: float) -> dict[str, Any]:
        out = []
        for b in self.backends.values():
            state, why = self.backend_state(b, now)
            out.append(
                {
                    "name": b.name,
                    "address": b.address,
                    "weight": b.weight,
                    "backup": b.backup,
                    "state": state,
                    "reason": why,
                    "health": b.health.to_dict(),
                    "outlier": self.outlier.status(b.name, now),
                    "inflight": b.inflight,
                    "requests": b.requests,
                    "responses": dict(zip(STATUS_CLASSES, b.responses)),
                    "failures": dict(b.failures),
                    "ejections": b.ejections,
                    "idle_connections": len(b.idle),
                    "open_connections": b.open_connections,
                }
            )
        return {
            "algorithm": self.cfg.algorithm,
            "mode": self.cfg.mode,
            "health_check": self.cfg.health.type,
            "eligible": [b.name for b in self.eligible(now)],
            "retries": self.retries_total,
            "no_backend": self.no_backend_total,
            "backends": out,
        }

    def hash_key_kind(self) -> str:
        return self._hash_kind
