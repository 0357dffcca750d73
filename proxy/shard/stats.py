"""tierproxy shard counters as data: a JSON-able snapshot per process, merged across workers.

`snapshot(daemon)` reads one serving process's counters, its clients (SHOW CLIENTS rows), the
shards it holds connections to, its pools and its hot-key summaries. With `workers = N` the
supervisor asks each worker for one and `merge`s them: counters and per-shard figures add up,
clients and pools are listed together, hot keys merge as Space-Saving summaries do
(hotkeys.py), and `workers` keeps each worker's own pid, clients and statements. /metrics,
/status and the console (SHOW SHARDS, SHOW HOT KEYS, SHOW CLIENTS) all read a snapshot, so they
mean the same with one process or many: the figures of every worker together.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from proxy.pgfront.pool import add_pool_rows

from .hotkeys import HotKeys

if TYPE_CHECKING:
    from .daemon import ShardDaemon

__all__ = ["collect", "hot_keys", "merge", "rows_routed", "snapshot"]

P = "tierproxy_shard_"
COUNTERS = (
    ("scatters", "Statements that ran on several shards"),
    ("errors", "ErrorResponses sent: the router's refusals and shards' errors"),
    ("clients_accepted", "Clients that logged in"),
    ("auth_failures", "Failed client authentications"),
    ("server_lost", "Shard connections lost while attached"),
    ("cancels", "Cancel requests forwarded to shards"),
    ("cancels_relayed", "Cancel requests for a key this worker did not issue, passed to the other workers"),
    ("query_timeouts", "Statements past timeouts.query, canceled on their shards"),
    ("server_connects", "Shard connections opened"),
)
_HOT_HELP = {
    "tierproxy_shard_statements_total": "Statements per shard (hot-key accounting)",
    "tierproxy_shard_skew_ratio": "Busiest shard's statements over the mean per shard (1 = balanced)",
    "tierproxy_shard_hottest_key_share": "The hottest key's share of its table group's statements",
}


def snapshot(d: ShardDaemon) -> dict[str, Any]:
    m = d.metrics
    return {
        "pid": os.getpid(),
        "routed": [[shard, kind, n] for (shard, kind), n in sorted(m.routed.items())],
        "counters": {"scatters": m.scatters, "errors": m.errors, "clients_accepted": m.clients_total,
                     "auth_failures": m.auth_failures, "server_lost": m.server_lost, "cancels": m.cancels,
                     "cancels_relayed": m.cancels_relayed, "server_connects": d.pools.connects,
                     "query_timeouts": m.query_timeouts},
        "clients": len(d.sessions),
        "client_rows": d.client_rows(),
        "connected": sorted({c.backend for c in d.pools.servers() if not c.closed}),
        "pools": d.pools.snapshot(),
        "hot": d.hot.to_json(),
    }  # fmt: skip


def merge(snaps: Sequence[dict[str, Any]], shards: Iterable[str], capacity: int) -> dict[str, Any]:
    """The workers' snapshots as one; `shards` in config order, `capacity` of the hot-key view."""
    routed: dict[tuple[str, str], int] = {}
    counters = {name: 0 for name, _ in COUNTERS}
    pools: dict[tuple[Any, ...], dict[str, Any]] = {}
    connected: set[str] = set()
    client_rows: list[dict[str, Any]] = []
    workers = []
    for s in snaps:
        for shard, kind, n in s["routed"]:
            routed[(shard, kind)] = routed.get((shard, kind), 0) + n
        for name, value in s["counters"].items():
            counters[name] = counters.get(name, 0) + value
        add_pool_rows(pools, s["pools"])
        connected.update(s["connected"])
        client_rows += s["client_rows"]
        workers.append({"pid": s["pid"], "clients": s["clients"],
                        "statements": sum(n for _, _, n in s["routed"])})  # fmt: skip
    hot = HotKeys.merged([s["hot"] for s in snaps], shards, capacity)
    return {
        "pid": os.getpid(), "routed": [[s, k, n] for (s, k), n in sorted(routed.items())],
        "counters": counters, "clients": sum(s["clients"] for s in snaps), "client_rows": client_rows,
        "connected": sorted(connected), "pools": [pools[k] for k in sorted(pools)], "hot": hot.to_json(),
        "workers": workers,
    }  # fmt: skip


def hot_keys(snap: dict[str, Any], shards: Iterable[str], capacity: int) -> HotKeys:
    """The snapshot's hot-key summaries, to query (top, skew)."""
    return HotKeys.merged([snap["hot"]], shards, capacity)


def rows_routed(snap: dict[str, Any]) -> dict[str, int]:
    """Statements routed per shard, all kinds."""
    out: dict[str, int] = {}
    for shard, _kind, n in snap["routed"]:
        out[shard] = out.get(shard, 0) + n
    return out


def collect(snap: dict[str, Any], hot: HotKeys) -> Iterable[Metric]:
    """Prometheus metrics from a (merged) snapshot and its hot keys."""
    routed = CounterMetricFamily(P + "routed_statements", "Statements routed, per shard and kind "
                                 "(single: one shard by key; multi: some shards; scatter: every shard)",
                                 labels=["shard", "kind"])  # fmt: skip
    for shard, kind, n in snap["routed"]:
        routed.add_metric([shard, kind], n)
    yield routed
    for name, doc in COUNTERS:
        yield CounterMetricFamily(P + name, doc, value=snap["counters"].get(name, 0))
    yield GaugeMetricFamily(P + "clients", "Client sessions now", value=snap["clients"])
    by_name: dict[str, GaugeMetricFamily] = {}
    for name, labels, value in hot.metrics():
        fam = by_name.get(name)
        if fam is None:
            fam = by_name[name] = GaugeMetricFamily(name, _HOT_HELP.get(name, name), labels=sorted(labels))
        fam.add_metric([labels[k] for k in sorted(labels)], value)
    yield from by_name.values()
