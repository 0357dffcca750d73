"""A backend that freezes (SIGSTOP) under load: once the health check marks it down, requests
waiting on it are re-sent elsewhere (idempotent) or answered 502 (POST) at once, instead of waiting
for `timeouts.backend_response` (30 s by default, left at that here)."""

from __future__ import annotations

import http.client
import threading
import time

import pytest

from tests.integration.conftest import backends_toml
from tests.integration.lbproc import http_json, wait_for
from tests.integration.load import Load
from tests.integration.misbehaving_backend import MisbehavingBackend

INTERVAL, TIMEOUT, FALL = 0.5, 0.5, 2
HEALTH = f"[pools.web.health]\ninterval = {INTERVAL}\ntimeout = {TIMEOUT}\nrise = 2\nfall = {FALL}\n"
# The longest a frozen backend can go unnoticed: `fall` failed checks, the last one timing out.
DETECTION = FALL * INTERVAL + TIMEOUT
# One retry on a healthy backend takes milliseconds; the rest is room for a loaded 2-core machine.
MARGIN = 5.0


@pytest.mark.parametrize("processes", [1, 2])
def test_frozen_backend_under_load_holds_no_request_past_detection(web_worker_factory, lb_factory, processes):
    workers = [web_worker_factory(n) for n in ("z1", "z2")]
    # with worker processes the supervisor's health check tells each worker, which moves its own
    lb = lb_factory(f'workers = {processes}\n[pools.web]\nalgorithm = "round_robin"\nretries = 1\n' + HEALTH
                    + backends_toml("web", workers))  # fmt: skip
    frozen = workers[1]
    with Load(lb.port, threads=8) as load:
        load.wait_count(300)
        frozen.process.stop()
        try:
            wait_for(lambda: lb.backend("web", "z2")["state"] == "down", 20, "z2 marked down")
            load.wait_count(load.count() + 300)
            result = load.stop()
        finally:
            frozen.process.cont()
    assert result.failures == []  # every request was a GET: all retryable, none may fail
    assert result.slowest < DETECTION + MARGIN, f"a request waited {result.slowest:.1f}s"
    # requests were caught on the frozen backend and moved, not merely lucky to miss it
    assert lb.status()["pools"]["web"]["retries"] >= 1


def test_post_waiting_on_a_backend_that_goes_down_gets_502_at_once(web_worker_factory, lb_factory):
    workers = [web_worker_factory(n) for n in ("q1", "q2")]
    lb = lb_factory('[pools.web]\nalgorithm = "round_robin"\nretries = 1\n' + HEALTH
                    + backends_toml("web", workers))  # fmt: skip
    frozen = workers[1]
    answers: list[tuple[int, bytes, float]] = []
    lock = threading.Lock()

    def post() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=20)
        started = time.monotonic()
        try:
            conn.request("POST", "/echo", body=b"do it once")
            resp = conn.getresponse()
            status, body = resp.status, resp.read()
        except OSError as exc:  # a timeout: the request was held
            status, body = 0, repr(exc).encode()
        with lock:
            answers.append((status, body, time.monotonic() - started))
        conn.close()

    frozen.process.stop()
    try:
        # Round robin over two fresh backends: one POST each, sent before any check can fail.
        threads = [threading.Thread(target=post) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        frozen.process.cont()
    statuses = sorted(a[0] for a in answers)
    assert statuses == [200, 502], answers  # the POST on the frozen backend is never re-sent
    ok = next(a for a in answers if a[0] == 200)
    assert ok[1] == b"do it once"
    failed = next(a for a in answers if a[0] == 502)
    assert b"marked down" in failed[1]
    assert failed[2] < DETECTION + MARGIN, f"the POST waited {failed[2]:.1f}s"
    assert lb.backend("web", "q2")["state"] == "down"


def test_outlier_ejection_moves_requests_waiting_on_the_ejected_backend(web_worker_factory, lb_factory):
    bad = MisbehavingBackend("bad")  # /hang/... never answers, /closenow/... resets at once
    try:
        lb = lb_factory(
            '[pools.web]\nalgorithm = "round_robin"\nretries = 1\n[pools.web.health]\ntype = "none"\n'
            "[pools.web.outlier]\nconsecutive_failures = 1\nbase_ejection = 60\n"
            f'[[pools.web.backends]]\nname = "bad"\naddress = "{bad.address}"\n'
        )
        held: list[tuple[int, str, float]] = []

        def hang() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=20)
            started = time.monotonic()
            try:
                conn.request("GET", "/hang/1")
                resp = conn.getresponse()
                resp.read()
                held.append((resp.status, resp.getheader("X-Served-By") or "", time.monotonic() - started))
            except OSError as exc:
                held.append((0, repr(exc), time.monotonic() - started))

        waiter = threading.Thread(target=hang)
        waiter.start()  # the only backend is "bad": the request waits there
        wait_for(lambda: lb.backend("web", "bad")["inflight"] == 1, 10, "the GET waiting on 'bad'")
        good = web_worker_factory("good")
        code, body = http_json(lb.admin("/pools/web/backends"), "POST", {"name": "good", "address": good.address})
        assert code == 201, body
        wait_for(lambda: lb.backend("web", "good")["state"] == "up", 10, "'good' up")
        # resets on "bad" (round robin sends every other request there) eject it
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=20)
        for i in range(4):
            conn.request("GET", f"/closenow/{i}")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 404  # retried on "good", which has no such page
        assert lb.backend("web", "bad")["state"] == "ejected"
        waiter.join(20)
        # the waiting GET moved to "good" at the ejection instead of waiting backend_response (30 s)
        assert held and held[0][:2] == (404, "good"), held
    finally:
        bad.close()
