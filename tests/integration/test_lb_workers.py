"""`workers = N`: several processes on one port, one /metrics, consistent health, signals reach all."""

from __future__ import annotations

import http.client
import json
import os
import signal
import urllib.request

from tests.integration.conftest import backends_toml
from tests.integration.lbproc import http_json, wait_for
from tests.integration.load import Load

HEALTH = "[pools.web.health]\ninterval = 0.5\ntimeout = 0.5\nrise = 1\nfall = 1\n"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_workers_share_the_port_and_metrics_add_up(web_worker_factory, lb_factory):
    a, b = web_worker_factory("a"), web_worker_factory("b")
    lb = lb_factory('workers = 2\n[pools.web]\nalgorithm = "round_robin"\n' + HEALTH + backends_toml("web", [a, b]))
    status = lb.status()
    pids = status["worker_pids"]
    assert len(pids) == 2 and lb.pid not in pids and all(_alive(p) for p in pids)
    # both workers listen: the kernel spreads new connections over them (SO_REUSEPORT)
    with Load(lb.port, threads=8, max_requests=400) as load:
        load.wait_count(400)
        result = load.stop()
    assert result.failures == [] and result.total == 400
    for _ in range(40):
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
        conn.request("GET", "/whoami")
        conn.getresponse().read()
        conn.close()
    # the supervisor's /metrics and /status add up the workers' counters
    with urllib.request.urlopen(lb.admin("/metrics"), timeout=5) as resp:
        metrics = resp.read().decode()
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("tierproxy_lb_backend_requests_total{")
    )
    assert total == 440
    assert lb.status()["requests"] == 440
    # each worker served some of the 40 new connections (counted by the workers themselves)
    per_worker = lb.status()["worker_requests"]
    assert len(per_worker) == 2 and sum(per_worker) == 440 and min(per_worker) > 0


def test_health_is_consistent_across_workers(web_worker_factory, lb_factory):
    a, b = web_worker_factory("a"), web_worker_factory("b")
    lb = lb_factory('workers = 2\n[pools.web]\nalgorithm = "round_robin"\nretries = 0\n'
                    "[pools.web.outlier]\nenabled = false\n" + HEALTH + backends_toml("web", [a, b]))
    req = http.client.HTTPConnection("127.0.0.1", b.port, timeout=5)
    req.request("POST", "/admin/health", body=b"fail")
    assert req.getresponse().status == 200
    wait_for(lambda: lb.backend("web", "b")["state"] == "down", 10, "b down")
    # with retries and outlier detection off, any worker still sending to b would show it here
    seen = set()
    for _ in range(60):
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
        conn.request("GET", "/whoami")
        seen.add(json.loads(conn.getresponse().read())["instance"])
        conn.close()
    assert seen == {"a"}


def test_admin_changes_and_sighup_reach_every_worker(web_worker_factory, lb_factory):
    a, b, c = (web_worker_factory(n) for n in ("a", "b", "c"))
    body = 'workers = 2\n[pools.web]\nalgorithm = "round_robin"\n[pools.web.health]\ntype = "none"\n'
    lb = lb_factory(body + backends_toml("web", [a, b]))

    def instances(n: int = 40) -> set[str]:
        seen = set()
        for _ in range(n):
            conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
            conn.request("GET", "/whoami")
            seen.add(json.loads(conn.getresponse().read())["instance"])
            conn.close()
        return seen

    assert instances() == {"a", "b"}
    code, _ = http_json(lb.admin("/pools/web/backends/a/drain"), "POST")
    assert code == 200
    assert instances() == {"b"}
    code, _ = http_json(lb.admin("/pools/web/backends"), "POST", {"name": "c", "address": c.address})
    assert code == 201
    assert instances() == {"b", "c"}
    lb.write_config(body + backends_toml("web", [a]))
    lb.signal(signal.SIGHUP)
    wait_for(lambda: [x["name"] for x in lb.status()["pools"]["web"]["backends"]] == ["a"], 10, "reload")
    assert instances() == {"a"}


def test_sigterm_stops_all_workers(web_worker_factory, lb_factory):
    a = web_worker_factory("a")
    lb = lb_factory('workers = 3\n[pools.web]\n[pools.web.health]\ntype = "none"\n' + backends_toml("web", [a]))
    pids = lb.status()["worker_pids"]
    assert len(pids) == 3
    lb.signal(signal.SIGTERM)
    assert lb.proc.wait(30) == 0
    assert [p for p in pids if _alive(p)] == []


def test_workers_exit_when_the_supervisor_is_killed(web_worker_factory, lb_factory):
    a = web_worker_factory("a")
    lb = lb_factory('workers = 2\n[pools.web]\n[pools.web.health]\ntype = "none"\n' + backends_toml("web", [a]))
    pids = lb.status()["worker_pids"]
    os.kill(lb.pid, signal.SIGKILL)
    lb.proc.wait(10)
    wait_for(lambda: not any(_alive(p) for p in pids), 20, "orphaned workers to exit")
