"""Runtime changes: add, drain and remove backends under load, SIGHUP reload, SIGTERM drain,
the status page and /metrics (checked with promtool)."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import urllib.request

import pytest

from tests.integration.conftest import backends_toml
from tests.integration.lbproc import http_json, wait_for
from tests.integration.load import Load

NO_HEALTH = '[pools.web]\nalgorithm = "round_robin"\n[pools.web.health]\ntype = "none"\n'


def worker_count(worker) -> int:
    with urllib.request.urlopen(worker.url + "/count", timeout=5) as resp:
        return json.loads(resp.read())["count"]


def test_add_drain_remove_under_load_lose_no_request(web_worker_factory, lb_factory):
    a, b = web_worker_factory("a"), web_worker_factory("b")
    lb = lb_factory(NO_HEALTH + backends_toml("web", [a, b]))
    with Load(lb.port, threads=6) as load:
        load.wait_count(200)
        c = web_worker_factory("c")
        code, body = http_json(lb.admin("/pools/web/backends"), "POST",
                               {"name": "c", "address": c.address, "weight": 2})
        assert code == 201, body
        wait_for(lambda: worker_count(c) > 20, 20, "new backend c to get traffic")

        code, body = http_json(lb.admin("/pools/web/backends/a/drain"), "POST")
        assert code == 200, body
        assert lb.backend("web", "a")["state"] == "draining"
        # in-flight requests on a finish; after that it gets nothing new
        wait_for(lambda: lb.backend("web", "a")["inflight"] == 0, 10, "a drained")
        served_a = worker_count(a)
        load.wait_count(load.count() + 300)
        assert worker_count(a) == served_a

        code, body = http_json(lb.admin("/pools/web/backends/b"), "DELETE")
        assert code == 200, body
        load.wait_count(load.count() + 300)
        result = load.stop()
    assert result.failures == []
    names = [x["name"] for x in lb.status()["pools"]["web"]["backends"]]
    assert names == ["a", "c"]
    assert result.served_by["c"] > 0


def test_admin_api_rejects_bad_requests(web_worker_factory, lb_factory):
    a = web_worker_factory("a")
    lb = lb_factory(NO_HEALTH + backends_toml("web", [a]))
    code, body = http_json(lb.admin("/pools/web/backends"), "POST", {"name": "x", "address": "127.0.0.1:99999"})
    assert code == 400 and "address" in body["error"] and "out of range" in body["error"]
    code, body = http_json(lb.admin("/pools/web/backends"), "POST", {"name": "a", "address": "127.0.0.1:1"})
    assert code == 409 and "already has a backend named 'a'" in body["error"]
    code, body = http_json(lb.admin("/pools/nope/backends/a/drain"), "POST")
    assert code == 404 and "no pool named 'nope'" in body["error"]
    code, body = http_json(lb.admin("/pools/web/backends/zz"), "DELETE")
    assert code == 404


def test_sighup_reload_changes_pool_without_dropping_connections(web_worker_factory, lb_factory):
    a, b, c = (web_worker_factory(n) for n in ("a", "b", "c"))
    wrr = NO_HEALTH.replace('"round_robin"', '"weighted_round_robin"')
    lb = lb_factory(wrr + backends_toml("web", [a, b]))
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)

    def who() -> str:
        conn.request("GET", "/whoami")
        resp = conn.getresponse()
        assert resp.status == 200
        assert not resp.will_close
        return json.loads(resp.read())["instance"]

    assert {who() for _ in range(4)} == {"a", "b"}
    sock_before = conn.sock
    with Load(lb.port, threads=4) as load:
        load.wait_count(100)
        lb.write_config(wrr + backends_toml("web", [a, c], weights={"c": 3}))
        lb.signal(signal.SIGHUP)
        wait_for(lambda: [x["name"] for x in lb.status()["pools"]["web"]["backends"]] == ["a", "c"],
                 10, "reload applied")
        load.wait_count(load.count() + 200)
        result = load.stop()
    assert result.failures == []
    seen = [who() for _ in range(8)]
    assert conn.sock is sock_before  # the same client connection survived the reload
    assert set(seen) == {"a", "c"} and seen.count("c") == 6  # weights 1:3
    assert lb.backend("web", "c")["weight"] == 3


def test_bad_reload_keeps_running_config(web_worker_factory, lb_factory):
    a = web_worker_factory("a")
    lb = lb_factory(NO_HEALTH + backends_toml("web", [a]))
    lb.write_config(NO_HEALTH + '[[pools.web.backends]]\nname = "x"\naddress = "127.0.0.1:0"\n')
    code, body = http_json(lb.admin("/reload"), "POST")
    assert code == 400 and "pools.web.backends[0].address: port 0 out of range" in body["error"]
    lb.signal(signal.SIGHUP)
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    conn.request("GET", "/whoami")
    assert json.loads(conn.getresponse().read())["instance"] == "a"
    assert lb.proc.poll() is None


def test_sigterm_drains_in_flight_requests(web_worker_factory, lb_factory):
    a = web_worker_factory("a")
    lb = lb_factory(NO_HEALTH + backends_toml("web", [a]))
    slow = subprocess.Popen(["curl", "-s", "-i", lb.url("/slow?ms=1500")], stdout=subprocess.PIPE)
    wait_for(lambda: lb.backend("web", "a")["inflight"] == 1, 10, "slow request in flight")
    lb.signal(signal.SIGTERM)
    out, _ = slow.communicate(timeout=20)
    assert out.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in out.lower()
    assert lb.proc.wait(20) == 0


def test_status_page_and_metrics(web_worker_factory, lb_factory):
    a = web_worker_factory("a")
    lb = lb_factory('[pools.web]\n[pools.web.health]\ninterval = 0.5\ntimeout = 0.5\n' + backends_toml("web", [a]))
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    for path in ("/whoami", "/status/503", "/status/404"):
        conn.request("GET", path)
        conn.getresponse().read()
    with urllib.request.urlopen(lb.admin("/"), timeout=5) as resp:
        page = resp.read().decode()
        assert resp.headers["Content-Type"].startswith("text/html")
    assert 'http-equiv="refresh"' in page and "<tr><td>a</td>" in page and "id='graph-requests'" in page
    with urllib.request.urlopen(lb.admin("/metrics"), timeout=5) as resp:
        metrics = resp.read().decode()
    assert 'tierproxy_lb_backend_responses_total{backend="a",class="5xx",pool="web"} 1.0' in metrics
    assert 'tierproxy_lb_backend_responses_total{backend="a",class="4xx",pool="web"} 1.0' in metrics
    assert "tierproxy_lb_backend_response_seconds_bucket" in metrics
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not installed (Debian package 'prometheus'); scripts/dev.sh installs it")
    check = subprocess.run([promtool, "check", "metrics"], input=metrics.encode(), capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
