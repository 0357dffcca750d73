"""Every daemon's admin `/` in headless Chromium: after some real traffic the page's graphs are
drawn by its own script (each <svg> carries `data-drawn`, its path has that many points, the
first graph has seen traffic), and the picture says what state each part is in and why: a web
worker killed behind the balancer is shown down with the reason its health check gave.

Started once for the module (in threads): lb over two web workers (notes through the dbproxy,
jobs on a Redis queue, as in the demo), cdn over one of them,
geodns (deploy/config/geodns.toml, its health targets dead ports: data centers down, with why),
dbproxy over the shared PostgreSQL cluster, the shard router over two of its servers, and a queue
worker (the demo's notes handler; its status page is on its `metrics` address).

The load is the demo's own (`tierproxy demo --traffic`: proxy/devstack/demo_traffic.py), and a
test checks that it reaches every tier.

With TIERPROXY_STATUS_SCREENSHOTS=<dir> the test also saves `<daemon>-status.png` screenshots
(1200x900) there: docs/img/ holds the ones made so.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from proxy.devstack.daemons import start_daemon
from proxy.devstack.dbproxy import start_dbproxy
from proxy.devstack.ports import allocate_port
from proxy.devstack.demo_traffic import Targets, traffic_argv
from proxy.devstack.process import ManagedProcess, python_child_env
from proxy.devstack.queue_worker import start_queue_worker
from proxy.devstack.redis import start_redis
from proxy.devstack.shard import start_shard_router
from proxy.devstack.static_site import VERSIONED_PATTERN, write_static_site
from proxy.devstack.web import start_web_worker
from tests.integration.geodnsproc import allocate_dns_port
from tests.integration.lbproc import REPO, wait_for
from tests.integration.test_cdn_ops import chromium_dom
from workers.note_jobs import DATABASE_URL_ENV
from workers.notes import NOTES_QUEUE, SCHEMA

GRAPHS = {"lb": 4, "dbproxy": 4, "shard": 4, "geodns": 3, "cdn": 4, "queue": 4}
COUNTERS = {"lb": "tierproxy_lb_requests_total", "cdn": "tierproxy_cdn_requests_total",
            "geodns": "tierproxy_geodns_queries_total", "dbproxy": "tierproxy_dbproxy_statements_total",
            "shard": "tierproxy_shard_routed_statements_total", "queue": "tierproxy_queue_done_total"}


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _metric(port: int, name: str) -> float:
    """The sum of a family's samples on a daemon's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + " ", name + "{")))  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory, pg_cluster):
    tmp = tmp_path_factory.mktemp("statuspages")
    cleanup: list = []
    dead = allocate_port()
    cleanup.append(dead.release)
    redis = start_redis(log_dir=tmp)
    cleanup.append(redis.close)
    pg_cluster.primary.psql(SCHEMA)
    pg_cluster.primary.psql("CREATE TABLE IF NOT EXISTS statuspage_users (user_id bigint PRIMARY KEY, name text)")
    pg_cluster.replicas[0].wait_replayed(pg_cluster.primary.current_lsn())
    (tmp / "dbproxy").mkdir()
    db = start_dbproxy(pg_cluster, log_dir=tmp / "dbproxy")
    cleanup.append(db.close)
    site = write_static_site(tmp / "static")

    def lb():
        # The demo's web workers: notes through the dbproxy, a job on the queue for each.
        args = ["--database-url", db.dsn(), "--queue-redis", redis.url]
        w1 = start_web_worker("web1", static=site.directory, log_dir=tmp, extra_args=args)
        w2 = start_web_worker("web2", static=site.directory, log_dir=tmp, extra_args=args)
        cleanup.extend([w1.close, w2.close])
        port, admin = allocate_port(), allocate_port()
        port.release()
        admin.release()
        body = (f'listen = "127.0.0.1:{port.port}"\n[admin]\naddress = "127.0.0.1:{admin.port}"\n'
                '[pools.web]\n[pools.web.health]\npath = "/healthz"\ninterval = 0.5\ntimeout = 0.5\n'
                + "".join(f'[[pools.web.backends]]\nname = "{w.name}"\naddress = "{w.address}"\n' for w in (w1, w2)))
        d = start_daemon("lb", body, admin_port=admin.port, log_dir=tmp, name="lb")
        cleanup.append(d.close)
        cdn_port, cdn_admin = allocate_port(), allocate_port()
        cdn_port.release()
        cdn_admin.release()
        c = start_daemon("cdn", f'listen = "127.0.0.1:{cdn_port.port}"\norigins = ["{w1.address}"]\n'
                         f'admin = {{ address = "127.0.0.1:{cdn_admin.port}" }}\n'
                         f"[cache]\nversioned_pattern = '{VERSIONED_PATTERN}'\n", admin_port=cdn_admin.port,
                         log_dir=tmp, name="cdn")  # fmt: skip
        cleanup.append(c.close)
        return {"lb": {"admin": admin.port, "url": f"http://127.0.0.1:{port.port}", "victim": w2},
                "cdn": {"admin": cdn_admin.port, "url": f"http://127.0.0.1:{cdn_port.port}"}}

    def geodns():
        port, admin = allocate_dns_port(), allocate_port()
        port.release()
        admin.release()
        geo = (REPO / "deploy/config/geodns.toml").read_text()
        for old, new in (("127.0.0.1:5353", f"127.0.0.1:{port.port}"), ("127.0.0.1:9053", f"127.0.0.1:{admin.port}"),
                         ("127.0.0.1:8080", f"127.0.0.1:{dead.port}"), ("127.0.0.1:9080", f"127.0.0.1:{dead.port}")):
            geo = geo.replace(old, new)
        d = start_daemon("geodns", geo, admin_port=admin.port, log_dir=tmp, name="geodns")
        cleanup.append(d.close)
        return {"geodns": {"admin": admin.port, "dns": ("127.0.0.1", port.port)}}

    def queue():
        metrics = allocate_port()
        metrics.release()
        worker = start_queue_worker(tmp, "jobs1", redis.url, {NOTES_QUEUE: "workers.note_jobs:summarize"},
                                    env={DATABASE_URL_ENV: db.dsn()}, metrics=f"127.0.0.1:{metrics.port}")  # fmt: skip
        cleanup.append(lambda: worker.terminate(10))
        wait_for(lambda: _metric(metrics.port, "tierproxy_queue_done_total") >= 0, 30, "the queue worker's /metrics")
        return {"queue": {"admin": metrics.port}}

    def shard():
        (tmp / "shard").mkdir()
        groups = '[groups.users]\ntables = ["statuspage_users"]\nkey = "user_id"\nmap = "modulo"\n'
        router = start_shard_router({"s0": pg_cluster.primary, "s1": pg_cluster.replicas[0]}, log_dir=tmp / "shard",
                                    backend_user=pg_cluster.user, backend_password=pg_cluster.password, groups=groups)
        cleanup.append(router.close)
        return {"shard": {"admin": router.admin_port, "dsn": router.dsn()}}

    try:
        daemons = {"dbproxy": {"admin": db.admin_port}}
        with ThreadPoolExecutor(4) as pool:
            for f in [pool.submit(fn) for fn in (lb, geodns, shard, queue)]:
                daemons.update(f.result())
        before = {name: _metric(daemons[name]["admin"], metric) for name, metric in COUNTERS.items()}
        # The demo's load generator (`tierproxy demo --traffic`), as the demo starts it.
        targets = Targets(lb=daemons["lb"]["url"], notes=True, cdn=daemons["cdn"]["url"],
                          cdn_paths=tuple(f"/static/{a}" for a in site.assets), dns=daemons["geodns"]["dns"],
                          dns_name="www.example.test", dbproxy=db.dsn(), shard=daemons["shard"]["dsn"],
                          shard_table="statuspage_users")  # fmt: skip
        traffic = ManagedProcess(traffic_argv(targets), name="traffic", log_dir=tmp, env=python_child_env())
        cleanup.append(lambda: traffic.terminate(5))
        series: dict[str, list] = {}

        def moving(name: str) -> bool:
            series[name] = _json(f"http://127.0.0.1:{daemons[name]['admin']}/status/series")["series"][0]["points"]
            return sum(1 for _, v in series[name] if v) >= 2

        try:
            wait_for(lambda: all([moving(n) for n in daemons]), 60, "traffic in every daemon's series")
        except TimeoutError:
            raise AssertionError(f"no traffic in some series: {series}\n{traffic.log_path.read_text()}") from None
        daemons["lb"]["victim"].process.kill()

        def victim_down() -> bool:
            backends = _json(f"http://127.0.0.1:{daemons['lb']['admin']}/status")["pools"]["web"]["backends"]
            return next(b for b in backends if b["name"] == "web2")["state"] == "down"

        wait_for(victim_down, 20, "the killed worker marked down")
        yield daemons, {"before": before, "redis": redis, "traffic": traffic}
    finally:
        for fn in reversed(cleanup):
            try:
                fn()
            except Exception:
                pass


def _graphs(dom: str) -> list[tuple[str, int, str]]:
    """(id, data-drawn, path d) of each graph in a dumped DOM."""
    out = []
    for m in re.finditer(r"<svg([^>]*class=\"spark\"[^>]*)>(.*?)</svg>", dom, re.S):
        attrs, inner = m.group(1), m.group(2)
        ident = re.search(r'id="([^"]+)"', attrs)
        drawn = re.search(r'data-drawn="(\d+)"', attrs)
        line = re.search(r'<path class="line" d="([^"]*)"', inner)
        out.append((ident.group(1) if ident else "", int(drawn.group(1)) if drawn else -1,
                    line.group(1) if line else ""))  # fmt: skip
    return out


@pytest.mark.parametrize("daemon", list(GRAPHS))
def test_status_page_draws_its_graphs_in_headless_chromium(stack, daemon, tmp_path):
    daemons, _ = stack
    url = f"http://127.0.0.1:{daemons[daemon]['admin']}/"
    dom = chromium_dom(url, tmp_path)
    graphs = _graphs(dom)
    assert len(graphs) == GRAPHS[daemon], dom[:3000]
    for ident, drawn, d in graphs:
        # Drawn by the page's script (the server's drawing has no data-drawn), one path point each.
        assert drawn >= 2, (ident, drawn)
        assert len(re.findall(r"[ML]", d)) == drawn, (ident, d)
    # The first graph (requests, statements or queries) saw the traffic: its peak is above zero.
    peak = re.search(r'class="peak">([^<]*)<', dom).group(1)
    assert peak not in ("0", "-") and float(peak) > 0, peak
    shots = os.environ.get("TIERPROXY_STATUS_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        chromium_dom(url, tmp_path / "shot", f"--screenshot={Path(shots).resolve() / f'{daemon}-status.png'}",
                     "--window-size=1200,900")


def test_lb_page_refreshes_in_place_and_shows_the_killed_worker_down_with_its_reason(stack, tmp_path):
    daemons, _ = stack
    admin = daemons["lb"]["admin"]
    web2 = next(b for b in _json(f"http://127.0.0.1:{admin}/status")["pools"]["web"]["backends"]
                if b["name"] == "web2")  # fmt: skip
    assert web2["state"] == "down" and web2["reason"]
    # Seven seconds of the page's (virtual) time: it refreshes itself in place (graphs from
    # /status/series, the picture swapped from a fresh copy of the page) every 2 s.
    dom = chromium_dom(f"http://127.0.0.1:{admin}/", tmp_path, "--virtual-time-budget=7000")
    refreshes = re.search(r'<body data-refreshes="(\d+)"', dom)
    assert refreshes is not None and int(refreshes.group(1)) >= 1, dom[:500]
    assert all(drawn >= 2 for _, drawn, _ in _graphs(dom))
    row = re.search(r'<tr class="s-down"><td>web2</td>(.*?)</tr>', dom, re.S)
    assert row is not None, dom[:4000]
    assert '<span class="badge s-down">down</span>' in row.group(1)
    assert html.escape(web2["reason"], quote=False) in row.group(1)
    up = re.search(r"<tr><td>web1</td>(.*?)</tr>", dom, re.S)
    assert up is not None and '<span class="badge s-up">up</span>' in up.group(1)


def test_pages_fetch_nothing_from_outside(stack):
    daemons, _ = stack
    for name, d in daemons.items():
        with urllib.request.urlopen(f"http://127.0.0.1:{d['admin']}/", timeout=5) as resp:
            csp = resp.headers["Content-Security-Policy"]
            page = resp.read().decode()
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp, name
        assert not re.search(r"(src|href)=['\"]?(https?:)?//", page), name



def test_demo_traffic_reaches_every_tier(stack):
    """`tierproxy demo --traffic`'s load generator: each daemon's own counter rises (the queue
    worker's jobs done too: notes posted through the balancer enqueue them)."""
    daemons, extra = stack
    for name, metric in COUNTERS.items():
        start = _metric(daemons[name]["admin"], metric)
        assert start > extra["before"][name], (name, extra["traffic"].log_path.read_text())
        wait_for(lambda: _metric(daemons[name]["admin"], metric) > start, 20, f"{name}'s {metric} to rise")
    run = subprocess.run([sys.executable, "-m", "proxy.cli", "queue", "stats", "--redis", extra["redis"].url, "--json"],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    notes = json.loads(run.stdout)["queues"][NOTES_QUEUE]
    assert notes["done"] >= 1 and notes["dead"] == 0, run.stdout + run.stderr  # run by the queue worker
    wait_for(lambda: "lb POST /notes" in extra["traffic"].log_path.read_text(), 20, "the traffic's tallies")
    tallies = extra["traffic"].log_path.read_text()
    ok = {m.group(1).strip(): int(m.group(2)) for m in re.finditer(r"^  (.{14}) +(\d+) ok", tallies, re.M)}
    assert all(ok.get(s, 0) > 0 for s in ("lb /whoami", "lb /db", "lb POST /notes", "cdn", "dbproxy sql",
                                          "shard sql", "geodns")), tallies  # fmt: skip
