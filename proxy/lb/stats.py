"""Counters of a balancer process as plain data: snapshot, merge across workers, export.

A *snapshot* is a JSON-able dict of one process's counters (client side and per backend). With
`workers = N` each worker sends its snapshot to the supervisor over the control channel and the
supervisor sums them, so /metrics and /status show the whole balancer on one port. Health and
eligibility come from the process that runs the health checks (the supervisor), passed in as
`views` when exporting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from proxy.core.metrics import DEFAULT_LATENCY_BUCKETS

if TYPE_CHECKING:
    from proxy.lb.listeners import Listeners
    from proxy.lb.pool import Pool

__all__ = ["collect", "empty_snapshot", "merge", "snapshot"]

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def empty_snapshot() -> dict[str, Any]:
    return {"conns": 0, "accepted": 0, "refused": 0, "slow": 0, "requests": 0, "client_errors": {},
            "proxy_errors": {}, "pools": {}, "listeners": {}}


def snapshot(front: Listeners | None, pools: Mapping[str, Pool]) -> dict[str, Any]:
    """This process's counters: totals, and per listener."""
    snap = empty_snapshot()
    if front is not None:
        client_errors: dict[str, int] = {}
        proxy_errors: dict[str, int] = {}
        for fe in front.frontends:
            snap["conns"] += len(fe.conns)
            snap["accepted"] += fe.accepted_total
            snap["refused"] += fe.refused_total
            snap["slow"] += fe.slow_clients_total
            snap["requests"] += fe.requests_total
            for k, v in fe.client_errors.items():
                client_errors[str(k)] = client_errors.get(str(k), 0) + v
            for k, v in fe.proxy_errors.items():
                proxy_errors[str(k)] = proxy_errors.get(str(k), 0) + v
            term = front.tls.get(fe.name)
            snap["listeners"][fe.name] = {
                "conns": len(fe.conns), "accepted": fe.accepted_total, "requests": fe.requests_total,
                "tls_versions": dict(fe.tls_versions), "handshake_failures": dict(fe.handshake_failures),
                "proxy_refused": fe.proxy_refused, "proxy_bad": fe.proxy_bad,
                "tls_reloads_failed": term.reloads_failed if term is not None else 0,
                "ocsp_stapled": term.ocsp.stapled if term is not None else 0,
                "h2_requests": fe.h2_requests, "h2_conns": len(fe.h2_conns), "h2_abuse": dict(fe.h2_abuse),
            }
        snap["client_errors"] = client_errors
        snap["proxy_errors"] = proxy_errors
    for pname, pool in pools.items():
        backends = {}
        for b in pool.backends.values():
            backends[b.name] = {
                "requests": b.requests,
                "responses": list(b.responses),
                "failures": dict(b.failures),
                "ejections": b.ejections,
                "inflight": b.inflight,
                "open": b.open_connections,
                "idle": len(b.idle),
                "lat_counts": list(b.latency.counts),
                "lat_sum": b.latency.sum,
                "checks_ok": b.health_checks_ok,
                "checks_failed": b.health_checks_failed,
            }
        snap["pools"][pname] = {"retries": pool.retries_total, "no_backend": pool.no_backend_total,
                                "backends": backends}
    return snap


def _add(into: Any, value: Any) -> Any:
    """Sum two values of the same JSON shape: numbers add, lists add elementwise, dicts by key."""
    if isinstance(value, dict):
        out = dict(into) if isinstance(into, dict) else {}
        for k, v in value.items():
            out[k] = _add(out[k], v) if k in out else v
        return out
    if isinstance(value, list):
        if not isinstance(into, list) or len(into) != len(value):
            return list(value)
        return [a + b for a, b in zip(into, value)]
    return (into or 0) + value


def merge(snaps: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum worker snapshots into one."""
    total = empty_snapshot()
    for s in snaps:
        total = _add(total, s)
    return total


def collect(snap: dict[str, Any], views: Mapping[str, Mapping[str, tuple[bool, bool]]]) -> list[Metric]:
    """Prometheus families from a (merged) snapshot. `views[pool][backend] = (up, eligible)`."""
    p = "tierproxy_lb_"
    conns = GaugeMetricFamily(p + "client_connections", "Open client connections.")
    conns.add_metric([], snap["conns"])
    accepted = CounterMetricFamily(p + "client_connections_accepted", "Client connections accepted.")
    accepted.add_metric([], snap["accepted"])
    refused = CounterMetricFamily(
        p + "client_connections_refused", "Client connections refused (over max_client_connections or draining)."
    )
    refused.add_metric([], snap["refused"])
    slow = CounterMetricFamily(
        p + "client_connections_too_slow", "Client connections cut for moving under min_transfer_rate."
    )
    slow.add_metric([], snap["slow"])
    requests = CounterMetricFamily(p + "requests", "Client requests received.")
    requests.add_metric([], snap["requests"])
    client_err = CounterMetricFamily(
        p + "client_errors", "Requests rejected for protocol errors or timeouts, by status.", labels=["status"]
    )
    for status, n in sorted(snap["client_errors"].items()):
        client_err.add_metric([status], n)
    proxy_err = CounterMetricFamily(
        p + "proxy_errors", "Responses generated by the balancer (502/503/504), by status.", labels=["status"]
    )
    for status, n in sorted(snap["proxy_errors"].items()):
        proxy_err.add_metric([status], n)
    pb = ["pool", "backend"]
    b_req = CounterMetricFamily(p + "backend_requests", "Request attempts sent to a backend.", labels=pb)
    b_resp = CounterMetricFamily(p + "backend_responses", "Backend responses by status class.", labels=pb + ["class"])
    b_fail = CounterMetricFamily(p + "backend_failures", "Failed attempts by outcome.", labels=pb + ["outcome"])
    b_eject = CounterMetricFamily(p + "backend_ejections", "Outlier-detection ejections.", labels=pb)
    b_checks = CounterMetricFamily(p + "backend_health_checks", "Active health checks by result.", labels=pb + ["result"])
    b_up = GaugeMetricFamily(p + "backend_up", "1 if the backend passes its health checks.", labels=pb)
    b_elig = GaugeMetricFamily(p + "backend_eligible", "1 if the backend can take new requests now.", labels=pb)
    b_infl = GaugeMetricFamily(p + "backend_inflight_requests", "Requests in progress.", labels=pb)
    b_conns = GaugeMetricFamily(p + "backend_connections", "Backend TCP connections by state.", labels=pb + ["state"])
    b_lat = HistogramMetricFamily(p + "backend_response_seconds", "Request start to response end, per backend.", labels=pb)
    retries = CounterMetricFamily(p + "pool_retries", "Attempts retried on another backend.", labels=["pool"])
    nob = CounterMetricFamily(p + "pool_no_backend", "Requests answered 503 because no backend was eligible.", labels=["pool"])
    for pname, pool in snap["pools"].items():
        if pname not in views:
            continue  # removed by a reload while a worker still reported it
        retries.add_metric([pname], pool["retries"])
        nob.add_metric([pname], pool["no_backend"])
        for bname, b in pool["backends"].items():
            if bname not in views[pname]:
                continue
            up, eligible = views[pname][bname]
            lv = [pname, bname]
            b_req.add_metric(lv, b["requests"])
            for cls, n in zip(STATUS_CLASSES, b["responses"]):
                b_resp.add_metric(lv + [cls], n)
            for outcome, n in sorted(b["failures"].items()):
                b_fail.add_metric(lv + [outcome], n)
            b_eject.add_metric(lv, b["ejections"])
            b_checks.add_metric(lv + ["pass"], b["checks_ok"])
            b_checks.add_metric(lv + ["fail"], b["checks_failed"])
            b_up.add_metric(lv, 1 if up else 0)
            b_elig.add_metric(lv, 1 if eligible else 0)
            b_infl.add_metric(lv, b["inflight"])
            b_conns.add_metric(lv + ["open"], b["open"])
            b_conns.add_metric(lv + ["idle"], b["idle"])
            acc, buckets = 0, []
            for bound, n in zip(DEFAULT_LATENCY_BUCKETS, b["lat_counts"]):
                acc += n
                buckets.append((repr(float(bound)), acc))
            buckets.append(("+Inf", acc + b["lat_counts"][-1]))
            b_lat.add_metric(lv, buckets, b["lat_sum"])
    return [conns, accepted, refused, slow, requests, client_err, proxy_err, b_req, b_resp, b_fail,
            b_eject, b_checks, b_up, b_elig, b_infl, b_conns, b_lat, retries, nob,
            *_listener_families(p, snap.get("listeners", {}))]


def _listener_families(p: str, listeners: Mapping[str, Any]) -> list[Metric]:
    """Per listener (names come from the config): connections, requests, TLS versions,
    handshake failures by reason, PROXY headers refused or malformed, failed TLS reloads,
    handshakes with a stapled OCSP response."""
    lb = ["listener"]
    l_conns = GaugeMetricFamily(p + "listener_client_connections", "Open client connections per listener.", labels=lb)
    l_acc = CounterMetricFamily(p + "listener_connections_accepted", "Connections accepted per listener.", labels=lb)
    l_req = CounterMetricFamily(p + "listener_requests", "Requests per listener and protocol.", labels=lb + ["protocol"])
    l_tls = CounterMetricFamily(p + "listener_tls_handshakes", "Completed TLS handshakes by version.", labels=lb + ["version"])
    l_fail = CounterMetricFamily(p + "listener_tls_handshake_failures", "Failed TLS handshakes by reason.", labels=lb + ["reason"])
    l_pp = CounterMetricFamily(p + "listener_proxy_protocol_refused",
                               "Connections closed: PROXY header from an untrusted network (untrusted) or malformed (malformed).",
                               labels=lb + ["why"])  # fmt: skip
    l_rel = CounterMetricFamily(p + "listener_tls_reloads_failed", "Certificate reloads that kept the old pair.", labels=lb)
    l_ocsp = CounterMetricFamily(p + "listener_tls_ocsp_stapled", "TLS handshakes that carried a stapled OCSP response.",
                                 labels=lb)  # fmt: skip
    l_h2c = GaugeMetricFamily(p + "listener_http2_connections", "Open HTTP/2 client connections.", labels=lb)
    l_abuse = CounterMetricFamily(p + "listener_http2_connections_cut",
                                  "HTTP/2 connections closed for abuse: continuation (CONTINUATION flood), "
                                  "header_list (HPACK bomb, oversized headers), rapid_reset.", labels=lb + ["reason"])  # fmt: skip
    for name, x in sorted(listeners.items()):
        l_conns.add_metric([name], x["conns"])
        l_acc.add_metric([name], x["accepted"])
        h2 = x.get("h2_requests", 0)
        l_req.add_metric([name, "http/1.1"], x["requests"] - h2)
        l_req.add_metric([name, "h2"], h2)
        l_h2c.add_metric([name], x.get("h2_conns", 0))
        for reason, n in sorted(x.get("h2_abuse", {}).items()):
            l_abuse.add_metric([name, reason], n)
        for version, n in sorted(x["tls_versions"].items()):
            if version in ("TLSv1.2", "TLSv1.3"):
                l_tls.add_metric([name, version], n)
        for reason, n in sorted(x["handshake_failures"].items()):
            l_fail.add_metric([name, reason], n)
        l_pp.add_metric([name, "untrusted"], x["proxy_refused"])
        l_pp.add_metric([name, "malformed"], x["proxy_bad"])
        l_rel.add_metric([name], x["tls_reloads_failed"])
        l_ocsp.add_metric([name], x.get("ocsp_stapled", 0))
    return [l_conns, l_acc, l_req, l_tls, l_fail, l_pp, l_rel, l_ocsp, l_h2c, l_abuse]
