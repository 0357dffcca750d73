"""The dbproxy admin's HTML status page (GET /): the primary and replicas with their state, lag and
why, the Patroni cluster when it follows one, and the graphs (proxy/core/statuspage.py).

Pure: /status's body in, (summary, picture) HTML out; every name escaped.
"""

from __future__ import annotations

import html
from typing import Any

from proxy.core.series import Series
from proxy.core.statuspage import badge, table

__all__ = ["SERIES", "backend_state", "render_picture"]

SERIES = (
    Series("statements", "statements", "rate", ("tierproxy_dbproxy_statements_total",)),
    Series("errors", "server errors", "rate",  # connections that failed or were lost, failed logins
           ("tierproxy_dbproxy_server_connect_failures_total", "tierproxy_dbproxy_server_lost_total",
            "tierproxy_dbproxy_auth_failures_total")),
    Series("latency_p95", "query latency p95", "quantile", ("tierproxy_dbproxy_query_duration_seconds",),
           unit="ms", scale=1000.0),
    Series("replica_lag", "worst replica lag", "gauge", ("tierproxy_dbproxy_replica_lag_seconds",), unit="s",
           agg="max"),
)  # fmt: skip


def backend_state(b: dict[str, Any]) -> tuple[str, str]:
    """(state, why) of one /status backend row: up/down for the primary; usable, lagging or down
    for a replica (usable means the router may send it reads)."""
    if not b.get("up"):
        return "down", b.get("last_error") or "not reached yet"
    if b.get("role") == "primary":
        if b.get("role_ok") is False:
            return "down", "in recovery: not a primary"
        return "up", ""
    if b.get("usable"):
        return "usable", ""
    if b.get("in_recovery") is False:
        return "unusable", "not in recovery: not a replica"
    if b.get("lag_seconds") is None or b.get("lag_bytes") is None:
        return "lagging", "lag not known yet"
    return "lagging", f"lag {b['lag_seconds']:.1f} s, {b['lag_bytes']} bytes: over the routing limits"


def _lag(b: dict[str, Any]) -> str:
    if b.get("role") == "primary" or b.get("lag_seconds") is None:
        return ""
    return f"{b['lag_seconds']:.2f} s / {b['lag_bytes']} B"


def render_picture(st: dict[str, Any]) -> tuple[str, str]:
    e = html.escape
    backends = st["backends"]
    usable = sum(1 for b in backends if backend_state(b)[0] in ("up", "usable"))
    summary = (f"uptime {st['uptime']:.0f}s &middot; workers {st['workers']} &middot; clients {st['clients']} "
               f"&middot; {usable} of {len(backends)} servers usable"
               f"{'' if st.get('ready', True) else ' &middot; <b>monitor not ready</b>'}")  # fmt: skip
    rows, classes = [], []
    for b in backends:
        state, why = backend_state(b)
        rows.append([e(str(b["name"])), e(str(b.get("role", ""))), e(str(b.get("address", ""))), badge(state),
                     f"<span class='why'>{e(why)}</span>", e(_lag(b)), str(b.get("outstanding", 0)),
                     str(b.get("sessions", "")), str(b.get("failures", 0))])  # fmt: skip
        classes.append("s-down" if state == "down" else "")
    parts = ["<h2>servers</h2>",
             table(["server", "role", "address", "state", "why", "lag", "in flight", "sessions", "monitor failures"], rows,
                   ident="servers", row_classes=classes)]  # fmt: skip
    topo = st.get("topology")
    if topo:
        held = (f" &middot; <b>writes held</b>: {e(str(topo.get('hold_reason') or ''))}"
                if topo.get("writes_held") else "")  # fmt: skip
        parts.append(f"<h2>Patroni cluster</h2><p>leader <b>{e(str(topo.get('leader')))}</b> &middot; "
                     f"failovers {topo.get('failovers_total', 0)}{held}</p>")  # fmt: skip
        members = [[e(str(m["name"])), badge("leader") if m.get("leader") else e(str(m.get("role"))),
                    e(str(m.get("state"))), e(str(m.get("address") or "")), e(str(m.get("lag") or ""))]
                   for m in topo.get("members", [])]  # fmt: skip
        parts.append(table(["member", "role", "state", "address", "lag"], members, ident="members"))
    pools = [[e(str(p.get("backend"))), e(str(p.get("user"))), e(str(p.get("database"))), str(p.get("active", 0)),
              str(p.get("idle", 0))] for p in st.get("pools", [])]  # fmt: skip
    if pools:
        parts.append("<h2>server connection pools</h2>")
        parts.append(table(["server", "user", "database", "active", "idle"], pools, ident="pools"))
    return summary, "".join(parts)
