"""dbproxy counters as data: a JSON-able snapshot per process, merged across workers, exported.

`snapshot(daemon)` reads a serving process's counters; with `workers = N` the supervisor asks each
worker for one and `merge`s them (sums; pool rows with the same key add up); `collect(snap,
backends)` turns a snapshot plus the monitor's view of the backends into Prometheus metrics. The
same path serves one process and many, so /metrics means the same thing either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from proxy.core.metrics import Histogram
from proxy.pgfront.pool import add_pool_rows

from .cluster_view import add_worker_counters, worker_counters
from .qcache_ops import cache_metrics, cache_snapshot, merge_cache
from .router import PRIMARY

if TYPE_CHECKING:
    from .daemon import DbProxyDaemon

__all__ = ["collect", "empty", "merge", "merge_console", "snapshot"]

P = "tierproxy_dbproxy_"
COUNTERS = (
    ("clients_accepted", "Clients that logged in"),
    ("auth_failures", "Failed client authentications"),
    ("login_failures", "Client logins refused for a wrong password (28P01)"),
    ("logins_throttled", "Client logins refused unchecked: their address failed too often (53300)"),
    ("server_connects", "Server connections opened"),
    ("server_connect_failures", "Server connections that failed"),
    ("server_lost", "Server connections lost while attached"),
    ("cancels", "Cancel requests forwarded"),
    ("reads_retried", "Reads re-sent after their replica died unanswered"),
)


def empty() -> dict[str, Any]:
    return {"routes": [], "latency": {}, "counters": {name: 0 for name, _ in COUNTERS},
            "cache": {"hits": 0, "misses": 0, "size": 0}, "clients": 0, "pools": [],
            "outstanding": {}, "replica_sessions": {}, "backends": [], "failover": {}, "qcache": None}  # fmt: skip


def snapshot(d: DbProxyDaemon) -> dict[str, Any]:
    m = d.metrics
    return {
        "routes": m.route_rows(),
        "latency": {role: {"bounds": list(h.bounds), "counts": list(h.counts), "sum": h.sum, "count": h.count}
                    for role, h in m.latency.items()},
        "counters": {"clients_accepted": m.clients_total, "auth_failures": m.auth_failures,
                     "login_failures": m.login_failures, "logins_throttled": m.logins_throttled,
                     "server_connects": d.pools.connects, "server_connect_failures": d.pools.connect_failures,
                     "server_lost": m.server_lost, "cancels": m.cancels, "reads_retried": m.retried},
        "cache": {"hits": d.cache.hits, "misses": d.cache.misses, "size": len(d.cache)},
        "clients": len(d.sessions),
        "pools": d.pool_rows(),
        "outstanding": dict(d.outstanding),
        "replica_sessions": dict(d.replica_sessions.counts),  # balance = "session": sessions bound
        "backends": list(d.pools.addresses),
        "failover": worker_counters(d.cluster_status()),  # the hold's counters, following Patroni
        "qcache": cache_snapshot(d.qcache),  # the query cache's counters (qcache_ops.py)
    }  # fmt: skip


def merge(snaps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out = empty()
    routes: dict[tuple[str, str], int] = {}
    pools: dict[tuple[Any, ...], dict[str, Any]] = {}
    backends: dict[str, None] = {}
    for s in snaps:
        for backend, reason, n in s["routes"]:
            routes[(backend, reason)] = routes.get((backend, reason), 0) + n
        for role, h in s["latency"].items():
            mine = out["latency"].setdefault(role, {"bounds": h["bounds"], "counts": [0] * len(h["counts"]),
                                                    "sum": 0.0, "count": 0})  # fmt: skip
            mine["counts"] = [a + b for a, b in zip(mine["counts"], h["counts"])]
            mine["sum"] += h["sum"]
            mine["count"] += h["count"]
        for name, value in s["counters"].items():
            out["counters"][name] = out["counters"].get(name, 0) + value
        for name, value in s["cache"].items():
            out["cache"][name] += value
        out["clients"] += s["clients"]
        add_pool_rows(pools, s["pools"])
        for name, n in s["outstanding"].items():
            out["outstanding"][name] = out["outstanding"].get(name, 0) + n
        for name, n in s.get("replica_sessions", {}).items():
            out["replica_sessions"][name] = out["replica_sessions"].get(name, 0) + n
        backends.update(dict.fromkeys(s["backends"]))
        add_worker_counters(out["failover"], s.get("failover", {}))
    out["routes"] = [[b, r, n] for (b, r), n in sorted(routes.items())]
    out["pools"] = [pools[k] for k in sorted(pools)]
    out["backends"] = list(backends)
    out["qcache"] = merge_cache([s.get("qcache") for s in snaps])
    return out


def merge_console(snaps: Sequence[dict[str, Any]], backends: list[dict[str, Any]]) -> dict[str, Any]:
    """The workers' `console_snapshot`s as one (what SHOW answers with `workers = N`): pools
    added up, servers and clients listed together, route counts summed. `backends` are the
    supervisor's monitor rows; their outstanding counts and (replicas) sessions bound become the
    workers' sums."""
    pools: dict[tuple[Any, ...], dict[str, Any]] = {}
    routes: dict[tuple[str, str], int] = {}
    outstanding: dict[str, int] = {}
    sessions: dict[str, int] = {}
    servers: list[dict[str, Any]] = []
    clients: list[dict[str, Any]] = []
    for s in snaps:
        add_pool_rows(pools, s["pools"])
        servers += s["servers"]
        clients += s["clients"]
        for backend, reason, n in s["routes"]:
            routes[(backend, reason)] = routes.get((backend, reason), 0) + n
        for b in s["backends"]:
            outstanding[b["name"]] = outstanding.get(b["name"], 0) + b.get("outstanding", 0)
            sessions[b["name"]] = sessions.get(b["name"], 0) + b.get("sessions", 0)
    rows = [dict(b, outstanding=outstanding.get(b["name"], 0)) for b in backends]
    for row in rows:
        if "sessions" in row:  # replicas'
            row["sessions"] = sessions.get(row["name"], 0)
    version = snaps[0]["version"] if snaps else ""
    return {"pools": [pools[k] for k in sorted(pools)], "servers": servers, "clients": clients,
            "backends": rows, "routes": [[b, r, n] for (b, r), n in sorted(routes.items())],
            "version": version, "qcache": merge_cache([s.get("qcache") for s in snaps])}  # fmt: skip


def _histogram(h: dict[str, Any]) -> Histogram:
    hist = Histogram(h["bounds"])
    hist.counts, hist.sum, hist.count = list(h["counts"]), h["sum"], h["count"]
    return hist


def collect(snap: dict[str, Any], backends: Iterable[dict[str, Any]]) -> Iterable[Metric]:
    """Prometheus metrics from a (merged) snapshot and the monitor's rows (see `_backends`)."""
    routed = CounterMetricFamily(P + "statements", "Statements (batches) routed, by backend and reason",
                                 labels=["backend", "role", "reason"])  # fmt: skip
    for backend, reason, n in snap["routes"]:
        routed.add_metric([backend, "primary" if backend == PRIMARY else "replica", reason], n)
    yield routed
    hits = CounterMetricFamily(P + "classifier_cache", "Classifier cache lookups", labels=["result"])
    hits.add_metric(["hit"], snap["cache"]["hits"])
    hits.add_metric(["miss"], snap["cache"]["misses"])
    yield hits
    up = GaugeMetricFamily(P + "backend_up", "1 if the monitor reached the backend", labels=["backend"])
    usable = GaugeMetricFamily(P + "backend_usable", "1 if the backend takes reads", labels=["backend"])
    lag_b = GaugeMetricFamily(P + "replica_lag_bytes", "WAL bytes not yet replayed", labels=["backend"])
    lag_s = GaugeMetricFamily(P + "replica_lag_seconds", "Replay delay", labels=["backend"])
    outstanding = GaugeMetricFamily(P + "outstanding_queries", "Queries in flight", labels=["backend"])
    bound = GaugeMetricFamily(P + "replica_sessions", 'Client sessions bound to the replica (balance = "session")',
                              labels=["backend"])  # fmt: skip
    for b in backends:
        up.add_metric([b["name"]], 1.0 if b.get("up") else 0.0)
        usable.add_metric([b["name"]], 1.0 if b.get("usable") else 0.0)
        outstanding.add_metric([b["name"]], snap["outstanding"].get(b["name"], 0))
        if b["name"] != PRIMARY:
            bound.add_metric([b["name"]], snap.get("replica_sessions", {}).get(b["name"], 0))
            if b.get("lag_bytes") is not None:
                lag_b.add_metric([b["name"]], b["lag_bytes"])
            if b.get("lag_seconds") is not None:
                lag_s.add_metric([b["name"]], b["lag_seconds"])
    yield from (up, usable, lag_b, lag_s, outstanding, bound)
    conns = GaugeMetricFamily(P + "server_connections", "Server connections by state", labels=["backend", "state"])
    per: dict[tuple[str, str], int] = {}
    for name in snap["backends"]:
        per[(name, "active")] = per[(name, "idle")] = 0
    for row in snap["pools"]:
        for state in ("active", "idle"):
            per[(row["backend"], state)] = per.get((row["backend"], state), 0) + row[state]
    for (backend, state), n in sorted(per.items()):
        conns.add_metric([backend, state], n)
    yield conns
    yield GaugeMetricFamily(P + "clients", "Client connections", value=snap["clients"])
    for name, doc in COUNTERS:
        yield CounterMetricFamily(P + name, doc, value=snap["counters"].get(name, 0))
    hist = HistogramMetricFamily(P + "query_duration_seconds", "Time from a batch sent to its ReadyForQuery",
                                 labels=["role"])  # fmt: skip
    for role, h in sorted(snap["latency"].items()):
        hh = _histogram(h)
        hist.add_metric([role], hh.buckets(), hh.sum)
    yield hist
    yield from cache_metrics(snap.get("qcache"))
