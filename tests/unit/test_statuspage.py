"""The status pages' shared parts: series arithmetic (proxy/core/series.py), the page frame
(proxy/core/statuspage.py) and each daemon's picture, rendered from hand-written /status bodies."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from proxy.core.metrics import FuncCollector, new_registry
from proxy.core.series import Series, SeriesRecorder, histogram_quantile, point, read_totals
from proxy.core.statuspage import CSP, render_page, sparkline_path

EVIL = "<img src=x onerror=alert(1)>"


def test_histogram_quantile_interpolates_inside_the_bucket_of_the_interval():
    before = {0.1: 10.0, 0.2: 10.0, float("inf"): 10.0}
    # 100 new observations: 50 in (0, 0.1], 40 in (0.1, 0.2], 10 above 0.2
    after = {0.1: 60.0, 0.2: 100.0, float("inf"): 110.0}
    assert histogram_quantile(0.5, before, after) == pytest.approx(0.1)  # rank 50: the first bucket's top
    assert histogram_quantile(0.7, before, after) == pytest.approx(0.1 + 0.1 * 20 / 40)  # rank 70
    assert histogram_quantile(0.95, before, after) == pytest.approx(0.2)  # in +Inf: the last finite bound
    assert histogram_quantile(0.5, after, after) is None  # nothing observed
    assert histogram_quantile(0.5, after, before) is None  # went back: a reset


def test_points_rate_ratio_gauge_and_resets():
    rate = Series("r", "r", "rate", ("x_total",))
    assert point(rate, 10.0, 30.0, 2.0) == 10.0
    assert point(rate, 30.0, 5.0, 2.0) is None  # counter reset (a restart of a worker)
    assert point(rate, None, 5.0, 2.0) is None
    ratio = Series("h", "h", "ratio", ("hits_total",), denominator=("misses_total",))
    assert point(ratio, (10.0, 10.0), (16.0, 12.0), 2.0) == 0.75
    assert point(ratio, (10.0, 10.0), (10.0, 10.0), 2.0) is None
    assert point(Series("g", "g", "gauge", ("g",)), None, 3.5, 2.0) == 3.5


def test_read_totals_sums_matching_samples_and_honours_label_filters():
    samples = [("a_total", {"class": "5xx"}, 3.0), ("a_total", {"class": "2xx"}, 100.0), ("b_total", {}, 4.0),
               ("lag", {"backend": "r1"}, 0.5), ("lag", {"backend": "r2"}, 2.0)]
    series = [Series("e", "e", "rate", ("a_total", "b_total"), where=(("class", ("5xx", None)),)),
              Series("all", "all", "rate", ("a_total",)), Series("lag", "lag", "gauge", ("lag",), agg="max")]
    assert read_totals(samples, series) == {"e": 7.0, "all": 103.0, "lag": 2.0}


def test_recorder_turns_registry_growth_into_points():
    counts = {"requests": 0.0, "buckets": [0, 0, 0]}

    def collect():
        c = CounterMetricFamily("t_requests", "", value=counts["requests"])
        h = HistogramMetricFamily("t_latency_seconds", "")
        b = counts["buckets"]
        h.add_metric([], [("0.01", b[0]), ("0.1", b[0] + b[1]), ("+Inf", sum(b))], 0.0)
        return [c, h]

    reg = new_registry()
    reg.register(FuncCollector(collect))
    now = [100.0]
    rec = SeriesRecorder(reg, [Series("requests", "requests", "rate", ("t_requests_total",)),
                               Series("p95", "p95", "quantile", ("t_latency_seconds",), unit="ms", scale=1000.0)],
                         interval=2.0, points=3, clock=lambda: now[0])  # fmt: skip
    rec.take()  # the base reading: no point yet
    for step in range(4):
        now[0] += 2.0
        counts["requests"] += 20 * (step + 1)
        counts["buckets"][1] += 10  # all between 10 and 100 ms
        rec.take()
    data = rec.as_json()
    assert data["window_s"] == 6.0
    [req, p95] = data["series"]
    assert [v for _, v in req["points"]] == [20.0, 30.0, 40.0]  # the ring keeps the last 3
    assert [a for a, _ in req["points"]] == [-4.0, -2.0, 0.0]
    assert [v for _, v in p95["points"]] == [pytest.approx(95.5)] * 3  # 10 + 90 * 0.95 ms


def test_sparkline_path_skips_gaps_and_spans_the_window():
    d, n = sparkline_path([[-60, 1.0], [-40, None], [-20, 2.0], [0, 0.0]], 60)
    assert n == 3 and d.count("M") == 2 and d.count("L") == 1  # a gap lifts the pen
    assert d.startswith("M0.0 ") and "L300.0 60.0" in d  # oldest at the left edge, 0 on the baseline


def test_page_frame_has_only_our_hashed_script_and_no_external_assets():
    series = {"interval_s": 2.0, "window_s": 300.0,
              "series": [{"key": "requests", "title": "requests", "unit": "/s", "points": [[-2.0, 5.0], [0.0, 7.0]]}]}
    page = render_page("lb", "summary", "<p>picture</p>", series)
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in CSP and "default-src 'none'" in CSP
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # nothing from another origin
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers
    assert "id='graph-requests'" in page and "<path class='line' d='M" in page  # drawn on the server too


def test_every_daemons_picture_escapes_names():
    from proxy.cdn.statuspage import render_status_page as cdn_page
    from proxy.dbproxy.statuspage import render_picture as db_picture
    from proxy.geodns.admin import render_picture as geo_picture
    from proxy.lb.admin import render_picture as lb_picture
    from proxy.shard.statuspage import render_picture as shard_picture

    lb = {"listen": "127.0.0.1:1", "uptime_s": 1, "client_connections": 0, "requests": 0, "draining": False,
          "pools": {EVIL: {"algorithm": "round_robin", "mode": "stateless", "health_check": "http", "retries": 1,
                           "no_backend": 0, "backends": [{
                               "name": EVIL, "address": "127.0.0.1:2", "weight": 1, "backup": False, "state": "down",
                               "reason": EVIL, "inflight": 0, "requests": 0,
                               "responses": {"2xx": 0, "4xx": 0, "5xx": 0}, "failures": {}, "ejections": 0,
                               "open_connections": 0, "idle_connections": 0}]}}}
    db = {"uptime": 1, "workers": 1, "clients": 0, "ready": True, "pools": [],
          "backends": [{"name": "primary", "role": "primary", "address": EVIL, "up": False, "last_error": EVIL}]}
    geo = {"listen": EVIL, "zones": [EVIL], "fail_open": True,
           "counters": {"queries": {"A": 1}, "cache_hits": 0, "datacenters": {}},
           "datacenters": {EVIL: {"drained": False, "healthy": False, "addresses": [EVIL],
                                  "targets": [{"type": "tcp", "target": EVIL, "up": False, "reason": EVIL,
                                               "last": ""}]}},
           "names": {EVIL: {"policy": "geo", "x": EVIL}}}
    shard = {"uptime": 1, "workers": [], "clients": 0, "scatter": "allow", "skew": {"busiest": EVIL, "max_to_mean": 1},
             "shards": [{"name": EVIL, "address": EVIL, "state": "idle", "rows_routed": 1}],
             "groups": {EVIL: {"map": "modulo", "key": EVIL, "tables": [EVIL]}},
             "hot_keys": [{"group": EVIL, "key": EVIL, "shard": EVIL, "count": 1, "share": 1.0}]}
    cdn = {"hits": 0, "misses": 0, "hit_ratio": 0.0, "bytes": 0, "max_bytes": 1, "objects": 0, "policy": EVIL,
           "top_urls": [{"url": EVIL, "hits": 1, "bytes": 1}], "trace": None,
           "origins": [{"name": EVIL, "address": EVIL, "state": "down", "reason": EVIL, "requests": 0,
                        "inflight": 0, "failures": {EVIL: 1}}]}
    empty = {"interval_s": 2.0, "window_s": 300.0, "series": []}
    pages = [render_page(d, *pic(st), empty) for d, pic, st in
             (("lb", lb_picture, lb), ("dbproxy", db_picture, db), ("geodns", geo_picture, geo),
              ("shard", shard_picture, shard))] + [cdn_page(cdn)]  # fmt: skip
    for page in pages:
        assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "s-down" in pages[0] and "s-down" in pages[1] and "s-down" in pages[2] and "s-down" in pages[4]


def test_dbproxy_backend_state_says_why():
    from proxy.dbproxy.statuspage import backend_state

    assert backend_state({"role": "replica", "up": False, "last_error": "connection refused"}) == (
        "down", "connection refused")
    assert backend_state({"role": "replica", "up": True, "usable": True}) == ("usable", "")
    state, why = backend_state({"role": "replica", "up": True, "usable": False, "in_recovery": True,
                                "lag_seconds": 42.0, "lag_bytes": 1 << 20})
    assert state == "lagging" and "42.0 s" in why
    assert backend_state({"role": "primary", "up": True, "role_ok": True}) == ("up", "")


def test_queue_worker_picture_escapes_and_says_why():
    from workers.queue.client import QueueStats
    from workers.queue.statuspage import render_picture as queue_picture

    stats = {EVIL: QueueStats(queue=EVIL, depth=3, delayed=0, in_flight=1, done=5, retries=0, dead=0, dead_now=0,
                              skipped=0, parked=0, oldest_age=120.0)}
    summary, picture = queue_picture(EVIL, "redis memory above the limit", stats)
    page = render_page("queue worker", summary, picture, {"interval_s": 2.0, "window_s": 300.0, "series": []},
                       status_json=False)
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "s-paused" in summary and "redis memory above the limit" in summary
    assert "oldest job waiting 120 s" in picture and 'href="/status"' not in page
