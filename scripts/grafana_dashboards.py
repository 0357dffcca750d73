"""Write deploy/grafana/dashboards/*.json: one Grafana dashboard per tierproxy daemon, plus an
overview, from the panel lists below (plain dicts: no library needed for this much JSON).

    python scripts/grafana_dashboards.py          # rewrite the files
    python scripts/grafana_dashboards.py --check  # exit 1 if a committed file differs (a test runs it)

Every expression names series the daemons export: tests/integration/test_deploy_monitoring.py
checks each metric name (and the labels its matchers and `by (...)` use) against a live /metrics
of every daemon. Each dashboard has a Prometheus data source variable and an `instance` variable
(label_values of `up` for the daemon's scrape job, deploy/prometheus/prometheus.yml).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards"
R = "$__rate_interval"
DS = {"type": "prometheus", "uid": "${datasource}"}

# (title, [(expr, legend)], unit, kind) per panel; `I` is the instance filter of the dashboard's job.
I = 'instance=~"$instance"'
FIVEXX = 'class="5xx"'
SERVFAIL = 'rcode="SERVFAIL"'


def rate(metric: str, by: str = "", sel: str = "") -> str:
    inner = f"rate({metric}{{{I}{', ' + sel if sel else ''}}}[{R}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(q: float, metric: str, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket{{{I}}}[{R}])))"


DASHBOARDS: dict[str, dict] = {
    "lb": {"title": "tierproxy lb", "job": "tierproxy-lb", "panels": [
        ("Client requests /s", [(rate("tierproxy_lb_requests_total"), "requests")], "reqps", "timeseries"),
        ("Backend responses /s by class", [(rate("tierproxy_lb_backend_responses_total", "class"), "{{class}}")],
         "reqps", "timeseries"),
        ("Balancer errors /s by status", [(rate("tierproxy_lb_proxy_errors_total", "status"), "{{status}}"),
                                          (rate("tierproxy_lb_client_errors_total", "status"), "client {{status}}")],
         "reqps", "timeseries"),
        ("Error ratio (5xx)", [(f"({rate('tierproxy_lb_backend_responses_total', sel=FIVEXX)} + "
                                f"({rate('tierproxy_lb_proxy_errors_total')} or vector(0))) / "
                                f"{rate('tierproxy_lb_requests_total')}", "5xx ratio")], "percentunit", "timeseries"),
        ("Backend latency p50 / p99", [(quantile(0.5, "tierproxy_lb_backend_response_seconds", "pool"), "p50 {{pool}}"),
                                       (quantile(0.99, "tierproxy_lb_backend_response_seconds", "pool"),
                                        "p99 {{pool}}")], "s", "timeseries"),
        ("Backends up", [(f"tierproxy_lb_backend_up{{{I}}}", "{{pool}}/{{backend}}")], "none", "state-timeline"),
        ("In-flight requests per backend", [(f"tierproxy_lb_backend_inflight_requests{{{I}}}", "{{pool}}/{{backend}}")],
         "none", "timeseries"),
        ("Client connections", [(f"sum(tierproxy_lb_client_connections{{{I}}})", "open")], "none", "timeseries"),
        ("Retries, ejections, no backend /s", [
            (rate("tierproxy_lb_pool_retries_total", "pool"), "retries {{pool}}"),
            (rate("tierproxy_lb_backend_ejections_total", "pool"), "ejections {{pool}}"),
            (rate("tierproxy_lb_pool_no_backend_total", "pool"), "no backend {{pool}}")], "ops", "timeseries"),
    ]},
    "dbproxy": {"title": "tierproxy dbproxy", "job": "tierproxy-dbproxy", "panels": [
        ("Statements /s by backend", [(rate("tierproxy_dbproxy_statements_total", "backend"), "{{backend}}")],
         "ops", "timeseries"),
        ("Statements /s by reason", [(rate("tierproxy_dbproxy_statements_total", "reason"), "{{reason}}")],
         "ops", "timeseries"),
        ("Replica lag", [(f"tierproxy_dbproxy_replica_lag_seconds{{{I}}}", "{{backend}}")], "s", "timeseries"),
        ("Backends up / usable", [(f"tierproxy_dbproxy_backend_up{{{I}}}", "up {{backend}}"),
                                  (f"tierproxy_dbproxy_backend_usable{{{I}}}", "usable {{backend}}")],
         "none", "state-timeline"),
        ("Query time p50 / p99 by role", [(quantile(0.5, "tierproxy_dbproxy_query_duration_seconds", "role"),
                                           "p50 {{role}}"),
                                          (quantile(0.99, "tierproxy_dbproxy_query_duration_seconds", "role"),
                                           "p99 {{role}}")], "s", "timeseries"),
        ("Clients and server connections", [(f"sum(tierproxy_dbproxy_clients{{{I}}})", "clients"),
                                            (f"sum by (state) (tierproxy_dbproxy_server_connections{{{I}}})",
                                             "server {{state}}")], "none", "timeseries"),
        ("Failovers and held writes", [(f"sum(increase(tierproxy_dbproxy_failovers_total{{{I}}}[1h]))",
                                        "failovers (1h)"),
                                       (f"max(tierproxy_dbproxy_writes_held{{{I}}})", "writes held"),
                                       (f"sum(tierproxy_dbproxy_held_now{{{I}}})", "held now")], "none", "timeseries"),
        ("Query cache hit ratio", [(f"{rate('tierproxy_dbproxy_query_cache_hits_total')} / "
                                    f"({rate('tierproxy_dbproxy_query_cache_hits_total')} + "
                                    f"{rate('tierproxy_dbproxy_query_cache_misses_total')})", "hit ratio")],
         "percentunit", "timeseries"),
        ("Server connect failures and lost /s", [
            (rate("tierproxy_dbproxy_server_connect_failures_total"), "connect failures"),
            (rate("tierproxy_dbproxy_server_lost_total"), "lost"),
            (rate("tierproxy_dbproxy_auth_failures_total"), "auth failures")], "ops", "timeseries"),
    ]},
    "shard": {"title": "tierproxy shard", "job": "tierproxy-shard", "panels": [
        ("Statements /s per shard", [(rate("tierproxy_shard_routed_statements_total", "shard"), "{{shard}}")],
         "ops", "timeseries"),
        ("Statements /s by kind", [(rate("tierproxy_shard_routed_statements_total", "kind"), "{{kind}}")],
         "ops", "timeseries"),
        ("Skew (busiest shard / mean)", [(f"max(tierproxy_shard_skew_ratio{{{I}}})", "skew")], "none", "timeseries"),
        ("Hottest key's share", [(f"max(tierproxy_shard_hottest_key_share{{{I}}})", "share")], "percentunit",
         "timeseries"),
        ("Errors and scatters /s", [(rate("tierproxy_shard_errors_total"), "errors"),
                                    (rate("tierproxy_shard_scatters_total"), "scatters")], "ops", "timeseries"),
        ("Clients", [(f"sum(tierproxy_shard_clients{{{I}}})", "clients")], "none", "timeseries"),
        ("Reshard", [(f"max(tierproxy_shard_reshard_fenced{{{I}}})", "fenced"),
                     (rate("tierproxy_shard_reshard_held_total"), "held /s")], "none", "timeseries"),
    ]},
    "geodns": {"title": "tierproxy geodns", "job": "tierproxy-geodns", "panels": [
        ("Queries /s by type", [(rate("tierproxy_geodns_queries_total", "qtype"), "{{qtype}}")], "qps", "timeseries"),
        ("Responses /s by rcode", [(rate("tierproxy_geodns_responses_total", "rcode"), "{{rcode}}")], "qps",
         "timeseries"),
        ("SERVFAIL ratio", [(f"({rate('tierproxy_geodns_responses_total', sel=SERVFAIL)} or vector(0)) / "
                             f"{rate('tierproxy_geodns_responses_total')}", "SERVFAIL")], "percentunit", "timeseries"),
        ("Answers /s by data center", [(rate("tierproxy_geodns_datacenter_answers_total", "datacenter"),
                                        "{{datacenter}}")], "qps", "timeseries"),
        ("Data centers up / drained", [(f"tierproxy_geodns_datacenter_up{{{I}}}", "up {{datacenter}}"),
                                       (f"tierproxy_geodns_datacenter_drained{{{I}}}", "drained {{datacenter}}")],
         "none", "state-timeline"),
        ("Answer cache hit ratio", [(f"{rate('tierproxy_geodns_cache_hits_total')} / "
                                     f"({rate('tierproxy_geodns_cache_hits_total')} + "
                                     f"{rate('tierproxy_geodns_cache_misses_total')})", "hit ratio")],
         "percentunit", "timeseries"),
    ]},
    "cdn": {"title": "tierproxy cdn", "job": "tierproxy-cdn", "panels": [
        ("Hit ratio", [(f"{rate('tierproxy_cdn_hits_total')} / ({rate('tierproxy_cdn_hits_total')} + "
                        f"{rate('tierproxy_cdn_misses_total')})", "hit ratio")], "percentunit", "timeseries"),
        ("Requests /s", [(rate("tierproxy_cdn_hits_total"), "hits"), (rate("tierproxy_cdn_misses_total"), "misses"),
                         (rate("tierproxy_cdn_stale_served_total"), "stale served"),
                         (rate("tierproxy_cdn_passes_total"), "passes")], "reqps", "timeseries"),
        ("Origin requests and errors /s", [(rate("tierproxy_cdn_origin_requests_total"), "requests"),
                                           (rate("tierproxy_cdn_origin_errors_total"), "errors")], "reqps",
         "timeseries"),
        ("Origin latency p50 / p99", [(quantile(0.5, "tierproxy_cdn_origin_latency_seconds"), "p50"),
                                      (quantile(0.99, "tierproxy_cdn_origin_latency_seconds"), "p99")], "s",
         "timeseries"),
        ("Store bytes", [(f"sum(tierproxy_cdn_bytes{{{I}}})", "bytes"),
                         (f"sum(tierproxy_cdn_max_bytes{{{I}}})", "max")], "bytes", "timeseries"),
        ("Objects and evictions /s", [(f"sum(tierproxy_cdn_objects{{{I}}})", "objects"),
                                      (rate("tierproxy_cdn_evictions_total", "policy"), "evictions {{policy}}")],
         "none", "timeseries"),
        ("Origins up", [(f"tierproxy_cdn_origin_up{{{I}}}", "{{origin}}")], "none", "state-timeline"),
    ]},
    "queue": {"title": "tierproxy queue", "job": "tierproxy-queue", "panels": [
        ("Depth, delayed, parked", [(f"max by (queue) (tierproxy_queue_depth{{{I}}})", "ready {{queue}}"),
                                    (f"max by (queue) (tierproxy_queue_delayed{{{I}}})", "delayed {{queue}}"),
                                    (f"max by (queue) (tierproxy_queue_parked{{{I}}})", "parked {{queue}}")],
         "none", "timeseries"),
        ("In flight", [(f"max by (queue) (tierproxy_queue_in_flight{{{I}}})", "{{queue}}")], "none", "timeseries"),
        ("Oldest unfinished job", [(f"max by (queue) (tierproxy_queue_oldest_age_seconds{{{I}}})", "{{queue}}")], "s",
         "timeseries"),
        # The done/retries/dead counters are queue-wide (read from Redis by every worker): max, not sum.
        ("Done, retries, dead-lettered /s", [
            (f"max by (queue) (rate(tierproxy_queue_done_total{{{I}}}[{R}]))", "done {{queue}}"),
            (f"max by (queue) (rate(tierproxy_queue_retries_total{{{I}}}[{R}]))", "retries {{queue}}"),
            (f"max by (queue) (rate(tierproxy_queue_dead_total{{{I}}}[{R}]))", "dead {{queue}}")], "ops", "timeseries"),
        ("Handler time p50 / p99", [(quantile(0.5, "tierproxy_queue_handler_duration_seconds", "queue"),
                                     "p50 {{queue}}"),
                                    (quantile(0.99, "tierproxy_queue_handler_duration_seconds", "queue"),
                                     "p99 {{queue}}")], "s", "timeseries"),
        ("Dead-letter stream", [(f"max by (queue) (tierproxy_queue_dead_letter_depth{{{I}}})", "{{queue}}")], "none",
         "timeseries"),
        ("Workers paused (backpressure)", [(f"sum by (queue) (tierproxy_queue_paused{{{I}}})", "{{queue}}")], "none",
         "timeseries"),
    ]},
}

OVERVIEW = {"title": "tierproxy overview", "job": "tierproxy-.*", "panels": [
    ("Targets up", [('up{job=~"tierproxy-.*"}', "{{job}} {{instance}}")], "none", "state-timeline"),
    ("lb requests /s", [('sum(rate(tierproxy_lb_requests_total[$__rate_interval]))', "requests")], "reqps",
     "timeseries"),
    ("lb 5xx ratio", [('(sum(rate(tierproxy_lb_backend_responses_total{class="5xx"}[$__rate_interval])) + '
                       '(sum(rate(tierproxy_lb_proxy_errors_total[$__rate_interval])) or vector(0))) / '
                       'sum(rate(tierproxy_lb_requests_total[$__rate_interval]))', "5xx ratio")], "percentunit",
     "timeseries"),
    ("lb backends down", [("count(tierproxy_lb_backend_up == 0) or vector(0)", "down")], "none", "stat"),
    ("dbproxy statements /s", [('sum by (role) (rate(tierproxy_dbproxy_statements_total[$__rate_interval]))',
                                "{{role}}")], "ops", "timeseries"),
    ("Worst replica lag", [("max(tierproxy_dbproxy_replica_lag_seconds)", "lag")], "s", "stat"),
    ("Failovers (24h)", [("sum(increase(tierproxy_dbproxy_failovers_total[24h])) or vector(0)", "failovers")],
     "none", "stat"),
    ("shard statements /s and skew", [('sum(rate(tierproxy_shard_routed_statements_total[$__rate_interval]))',
                                       "statements"), ("max(tierproxy_shard_skew_ratio)", "skew")], "none",
     "timeseries"),
    ("DNS queries /s and SERVFAIL", [('sum(rate(tierproxy_geodns_responses_total[$__rate_interval]))', "responses"),
                                     ('sum(rate(tierproxy_geodns_responses_total{rcode="SERVFAIL"}[$__rate_interval]))',
                                      "SERVFAIL")], "qps", "timeseries"),
    ("cdn hit ratio", [('sum(rate(tierproxy_cdn_hits_total[$__rate_interval])) / '
                        '(sum(rate(tierproxy_cdn_hits_total[$__rate_interval])) + '
                        'sum(rate(tierproxy_cdn_misses_total[$__rate_interval])))', "hit ratio")], "percentunit",
     "timeseries"),
    ("Queue depth and oldest job", [("max by (queue) (tierproxy_queue_depth)", "depth {{queue}}"),
                                    ("max by (queue) (tierproxy_queue_oldest_age_seconds)", "oldest s {{queue}}")],
     "none", "timeseries"),
]}


def _panel(i: int, title: str, targets: list[tuple[str, str]], unit: str, kind: str) -> dict:
    return {
        "id": i + 1, "type": kind, "title": title, "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": [{"refId": chr(ord("A") + n), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for n, (expr, legend) in enumerate(targets)],
    }


def dashboard(uid: str, spec: dict) -> dict:
    instance_query = f'label_values(up{{job=~"{spec["job"]}"}}, instance)'
    return {
        "uid": uid, "title": spec["title"], "tags": ["tierproxy"], "timezone": "browser", "schemaVersion": 39,
        "version": 1, "editable": True, "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
            {"name": "instance", "type": "query", "datasource": DS, "query": instance_query,
             "definition": instance_query, "includeAll": True, "multi": True, "refresh": 2,
             "current": {"text": "All", "value": "$__all"}},
        ]},
        "panels": [_panel(i, *p) for i, p in enumerate(spec["panels"])],
    }


def render() -> dict[str, str]:
    out = {f"tierproxy-{name}.json": dashboard(f"tierproxy-{name}", spec) for name, spec in DASHBOARDS.items()}
    out["tierproxy-overview.json"] = dashboard("tierproxy-overview", OVERVIEW)
    return {name: json.dumps(doc, indent=2) + "\n" for name, doc in out.items()}


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [n for n, text in files.items() if not (OUT / n).exists() or (OUT / n).read_text() != text]
        for n in stale:
            print(f"deploy/grafana/dashboards/{n} is not what scripts/grafana_dashboards.py writes", file=sys.stderr)
        return 1 if stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
