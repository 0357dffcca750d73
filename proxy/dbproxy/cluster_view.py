"""How the dbproxy shows the Patroni cluster it follows: /status, SHOW CLUSTER and /metrics (pure).

`PatroniFollower.status()` (failover.py) builds the `topology` object of /status from these
pieces; the console's SHOW CLUSTER and the failover metrics read that same object, so the three
views cannot disagree:

- `member_rows(topology)`: one row per member: name, role (leader, sync_standby, replica,
  standby_leader), state (Patroni's: running, streaming, stopped, starting...), address
  (host:port of its PostgreSQL), timeline, lag (bytes of WAL behind the leader; None for the
  leader or when unknown), sync (a synchronous standby under the current leader).
- `source_health(...)`: whether the topology source (Patroni REST or etcd) answered since its
  last error. An unhealthy source does not mean "no leader": the last view is kept
  (patroni_source.py), so this is for the operator, not for routing.
- `failover_metrics(status)`: `tierproxy_dbproxy_failovers` (counter), the hold time of each
  failover as a histogram `tierproxy_dbproxy_failover_hold_seconds`, `tierproxy_dbproxy_held_queries`
  (writes, transactions and logins that waited at the gate: counter), errors sent because of a
  failover, whether writes are held now, the member count by role and the source's health.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from proxy.core.metrics import Histogram

from .topology import Topology

__all__ = [
    "CLUSTER_COLUMNS",
    "WORKER_COUNTERS",
    "cluster_rows",
    "failover_metrics",
    "histogram_json",
    "member_rows",
    "source_health",
    "add_worker_counters",
    "with_worker_counters",
    "worker_counters",
]

P = "tierproxy_dbproxy_"
# The hold's counters: with `workers = N` the clients (so the held ones and the errors) are the
# workers'; each worker's follower counts its own and the supervisor shows their sums.
WORKER_COUNTERS = ("held_now", "held_total", "hold_timeouts", "hold_refused", "sessions_cut")
WORKER_TALLIES = ("session_losses", "session_errors")  # dicts: outcome or SQLSTATE -> sessions
CLUSTER_COLUMNS = ("name", "role", "state", "address", "timeline", "lag", "sync")


def member_rows(topology: Topology | None) -> list[dict[str, Any]]:
    if topology is None:
        return []
    return [
        {"name": m.name, "role": m.role, "state": m.state,
         "address": f"{m.host}:{m.port}" if m.address is not None else None,
         "timeline": m.timeline, "lag": m.lag, "sync": m.name in topology.sync_standbys,
         "leader": m.name == topology.leader}
        for m in topology.members
    ]  # fmt: skip


def cluster_rows(status: Mapping[str, Any] | None) -> list[tuple[Any, ...]]:
    """SHOW CLUSTER's rows (CLUSTER_COLUMNS) from /status's `topology` object (None: static
    topology, no rows)."""
    if not status:
        return []
    return [tuple(m.get(c) for c in CLUSTER_COLUMNS) for m in status.get("members", [])]


def worker_counters(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """A worker's share of the hold counters and session tallies (stats.snapshot sends it to the
    supervisor)."""
    if not status:
        return {}
    out: dict[str, Any] = {k: int(status.get(k, 0)) for k in WORKER_COUNTERS}
    out.update({k: dict(status.get(k) or {}) for k in WORKER_TALLIES})
    return out


def add_worker_counters(into: dict[str, Any], counters: Mapping[str, Any]) -> None:
    """Sum one worker's `counters` into `into` (numbers add up, tallies add up per key)."""
    for name, value in counters.items():
        if isinstance(value, Mapping):
            tally = into.setdefault(name, {})
            for key, n in value.items():
                tally[key] = tally.get(key, 0) + n
        else:
            into[name] = into.get(name, 0) + value


def with_worker_counters(status: dict[str, Any], summed: Mapping[str, Any]) -> dict[str, Any]:
    """The supervisor's `status` with the hold counters and session tallies summed over its
    workers (`summed`, from stats.merge) instead of its own (it serves no client: zeros)."""
    return status | {k: summed[k] for k in (*WORKER_COUNTERS, *WORKER_TALLIES) if k in summed}


def source_health(errors: int, last_error: str | None, last_error_at: float | None,
                  last_view_at: float | None, ok_at: float | None) -> dict[str, Any]:  # fmt: skip
    """`healthy`: no error yet, or a good answer came after the last one."""
    good = max((t for t in (last_view_at, ok_at) if t is not None), default=None)
    healthy = last_error_at is None or (good is not None and good >= last_error_at)
    return {"healthy": healthy, "errors": errors, "last_error": last_error,
            "last_error_at": last_error_at, "last_ok_at": good}  # fmt: skip


def histogram_json(h: Histogram) -> dict[str, Any]:
    return {"bounds": list(h.bounds), "counts": list(h.counts), "sum": round(h.sum, 6), "count": h.count}


def _buckets(h: Mapping[str, Any]) -> list[tuple[str, float]]:
    out, acc = [], 0
    for bound, n in zip(h["bounds"], h["counts"]):
        acc += n
        out.append((repr(float(bound)), acc))
    out.append(("+Inf", acc + h["counts"][-1]))
    return out


def failover_metrics(status: Mapping[str, Any] | None) -> Iterable[Metric]:
    """The failover metrics from /status's `topology` object; nothing with a static topology."""
    if status is None:
        return
    yield CounterMetricFamily(P + "failovers", "Failovers seen: writes held, then released to a confirmed leader",
                              value=status["failovers_total"])  # fmt: skip
    hold = HistogramMetricFamily(P + "failover_hold_seconds", "How long writes were held in each failover")
    h = status["hold_seconds"]
    hold.add_metric([], _buckets(h), h["sum"])
    yield hold
    yield CounterMetricFamily(P + "held_queries", "Writes, transactions and logins that waited for a leader",
                              value=status["held_total"])  # fmt: skip
    errors = CounterMetricFamily(P + "failover_errors", "Clients given an error because of a failover, by SQLSTATE",
                                 labels=["sqlstate"])  # fmt: skip
    errors.add_metric(["57P03"], status["hold_timeouts"])
    errors.add_metric(["53300"], status["hold_refused"])
    errors.add_metric(["57P01"], status["sessions_cut"])
    for sqlstate, n in sorted(status.get("session_errors", {}).items()):  # failover_session.py
        errors.add_metric([sqlstate], n)
    yield errors
    yield GaugeMetricFamily(P + "writes_held", "1 while writes wait for a confirmed leader",
                            value=1.0 if status["writes_held"] else 0.0)  # fmt: skip
    yield GaugeMetricFamily(P + "held_now", "Writes, transactions and logins waiting for a leader now",
                            value=status["held_now"])  # fmt: skip
    members = GaugeMetricFamily(P + "cluster_members", "Members of the Patroni cluster by role", labels=["role"])
    roles: dict[str, int] = {}
    for m in status["members"]:
        roles[m["role"]] = roles.get(m["role"], 0) + 1
    for role, n in sorted(roles.items()):
        members.add_metric([role], n)
    yield members
    health = status["source_health"]
    yield GaugeMetricFamily(P + "topology_source_healthy", "1 if the topology source answered since its last error",
                            value=1.0 if health["healthy"] else 0.0)  # fmt: skip
    yield CounterMetricFamily(P + "topology_source_errors", "Errors of the topology source (Patroni REST or etcd)",
                              value=health["errors"])  # fmt: skip
