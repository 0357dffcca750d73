"""Backends that die, freeze or refuse: clients see no failed GET, and the balancer notices."""

from __future__ import annotations

import http.client
import json
import socket

from proxy.devstack.ports import allocate_port
from tests.integration.conftest import backends_toml
from tests.integration.lbproc import wait_for
from tests.integration.load import Load

FAST_HEALTH = "[pools.web.health]\ninterval = 0.5\ntimeout = 0.5\nrise = 2\nfall = 2\n"


def test_backend_killed_under_load_loses_no_get(web_worker_factory, lb_factory):
    workers = [web_worker_factory(n) for n in ("k1", "k2", "k3")]
    lb = lb_factory("[pools.web]\nretries = 2\n" + FAST_HEALTH + backends_toml("web", workers))
    with Load(lb.port, threads=8) as load:
        load.wait_count(300)
        workers[1].process.kill()
        load.wait_count(load.count() + 1500)
        result = load.stop()
    assert result.failures == []
    assert result.total >= 1800
    # the killed backend was taken out: health checks (or outlier detection) say why
    state = wait_for(lambda: (b := lb.backend("web", "k2")) and b["state"] != "up" and b, 10, "k2 out")
    assert state["state"] in ("down", "ejected")
    assert state["reason"]


def test_frozen_backend_is_ejected_then_returns_after_rise_checks(web_worker_factory, lb_factory):
    workers = [web_worker_factory(n) for n in ("f1", "f2")]
    lb = lb_factory(
        "[timeouts]\nbackend_response = 1.0\n[pools.web]\nretries = 1\n"
        + FAST_HEALTH + backends_toml("web", workers)
    )
    frozen = workers[1]
    frozen.process.stop()  # SIGSTOP: the kernel still accepts connections, nothing answers
    try:
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=20)
        for _ in range(4):
            conn.request("GET", "/whoami")
            resp = conn.getresponse()
            body = json.loads(resp.read())
            assert resp.status == 200 and body["instance"] == "f1"  # timed-out GETs are retried
        down = wait_for(lambda: (b := lb.backend("web", "f2")) and b["state"] == "down" and b, 15, "f2 down")
        assert "timed out" in down["reason"]
        assert lb.status()["pools"]["web"]["eligible"] == ["f1"]
    finally:
        frozen.process.cont()
    back = wait_for(lambda: (b := lb.backend("web", "f2")) and b["state"] == "up" and b, 15, "f2 back")
    assert back["health"]["consecutive_ok"] >= 2
    seen = set()
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=20)
    for _ in range(6):
        conn.request("GET", "/whoami")
        seen.add(json.loads(conn.getresponse().read())["instance"])
    assert seen == {"f1", "f2"}


def test_no_healthy_backend_gives_503_with_retry_after_at_once(web_worker_factory, lb_factory):
    w = web_worker_factory("only")
    lb = lb_factory("[pools.web]\n" + FAST_HEALTH + backends_toml("web", [w]))
    req = http.client.HTTPConnection("127.0.0.1", w.port, timeout=5)
    req.request("POST", "/admin/health", body=b"fail")
    assert req.getresponse().status == 200
    wait_for(lambda: lb.backend("web", "only")["state"] == "down", 10, "backend down")
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=2)  # a hang would time out
    conn.request("GET", "/whoami")
    resp = conn.getresponse()
    assert resp.status == 503
    assert resp.getheader("Retry-After") == "1"
    resp.read()
    # the connection is still usable for the next request
    conn.request("GET", "/whoami")
    assert conn.getresponse().status == 503


def _dead_address() -> tuple[str, object]:
    """A loopback port that is locked for us and has no listener: connects are refused."""
    lock = allocate_port()
    return f"127.0.0.1:{lock.port}", lock


def test_connect_refused_is_retried_for_any_method(web_worker_factory, lb_factory):
    alive = web_worker_factory("alive")
    dead, lock = _dead_address()
    lb = lb_factory(
        '[pools.web]\nalgorithm = "round_robin"\nretries = 1\n[pools.web.health]\ntype = "none"\n'
        f'[pools.web.outlier]\nenabled = false\n[[pools.web.backends]]\nname = "dead"\naddress = "{dead}"\n'
        + backends_toml("web", [alive])
    )
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    for _ in range(4):
        conn.request("POST", "/echo", body=b"payload")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"payload"
    failures = lb.backend("web", "dead")["failures"]
    assert failures.get("connect_failed", 0) >= 2
    assert lb.status()["pools"]["web"]["retries"] >= 2
    del lock


def test_post_that_times_out_is_not_retried_but_get_is(web_worker_factory, lb_factory):
    workers = [web_worker_factory(n) for n in ("p1", "p2")]
    lb = lb_factory(
        '[timeouts]\nbackend_response = 0.5\n[pools.web]\nalgorithm = "round_robin"\nretries = 1\n'
        '[pools.web.health]\ntype = "none"\n[pools.web.outlier]\nenabled = false\n'
        + backends_toml("web", workers)
    )

    def total_requests() -> int:
        return sum(b["requests"] for b in lb.status()["pools"]["web"]["backends"])

    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    before = total_requests()
    conn.request("POST", "/echo?delay_ms=3000", body=b"x" * 10)
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 504
    assert total_requests() - before == 1  # one attempt only

    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    before = total_requests()
    conn.request("GET", "/slow?ms=3000")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 504
    assert total_requests() - before == 2  # first attempt + one retry on the other backend


def test_backend_garbage_gives_502_and_others_unaffected(web_worker_factory, lb_factory):
    good = web_worker_factory("good")
    lock = allocate_port()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", lock.port))
    srv.listen(16)
    lb = lb_factory(
        '[pools.web]\nalgorithm = "round_robin"\nretries = 0\n[pools.web.health]\ntype = "none"\n'
        f'[[pools.web.backends]]\nname = "liar"\naddress = "127.0.0.1:{lock.port}"\n'
        + backends_toml("web", [good])
    )
    try:
        statuses = []
        for _ in range(2):
            c = socket.create_connection(("127.0.0.1", lb.port), timeout=10)
            c.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
            srv.settimeout(0.5)
            try:
                peer, _ = srv.accept()
                peer.recv(65536)
                peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello!!")
                peer.close()
            except TimeoutError:
                pass  # this request went to the good backend
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
            statuses.append(int(data.split()[1]))
            c.close()
        assert sorted(statuses) == [200, 502]
    finally:
        srv.close()
        lock.release()


def test_5xx_answers_eject_a_backend_but_never_more_than_the_max_share(web_worker_factory, lb_factory):
    workers = [web_worker_factory(n) for n in ("o1", "o2")]
    lb = lb_factory(
        '[pools.web]\nalgorithm = "round_robin"\n[pools.web.health]\ntype = "none"\n'
        "[pools.web.outlier]\nconsecutive_failures = 3\nbase_ejection = 1.0\nmax_ejection_percent = 50\n"
        + backends_toml("web", workers)
    )
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    for _ in range(12):
        conn.request("GET", "/status/500")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 500  # a backend's own 5xx is passed through, not retried
    states = {b["name"]: b for b in lb.status()["pools"]["web"]["backends"]}
    ejected = [n for n, b in states.items() if b["state"] == "ejected"]
    assert len(ejected) == 1  # the second would exceed 50% of the pool
    assert "outlier detection" in states[ejected[0]]["reason"]
    assert states[ejected[0]]["ejections"] == 1
    # the ejection lasts base_ejection x 1, then the backend is back
    wait_for(lambda: all(b["state"] == "up" for b in lb.status()["pools"]["web"]["backends"]), 10,
             "ejection to expire")
