"""A backend that freezes (SIGSTOP) under load: once the health check marks it down, requests
waiting on it are re-sent elsewhere (idempotent) or answered 502 (POST) at once, instead of waiting
for `timeouts.backend_response` (30 s by default, left at that here)."""

from __future__ import annotations

import http.client
import threading
import time

from tests.integration.conftest import backends_toml
from tests.integration.lbproc import wait_for
from tests.integration.load import Load

INTERVAL, TIMEOUT, FALL = 0.5, 0.5, 2
HEALTH = f"[pools.web.health]\ninterval = {INTERVAL}\ntimeout = {TIMEOUT}\nrise = 2\nfall = {FALL}\n"
# The longest a frozen backend can go unnoticed: `fall` failed checks, the last one timing out.
DETECTION = FALL * INTERVAL + TIMEOUT
# One retry on a healthy backend takes milliseconds; the rest is room for a loaded 2-core machine.
MARGIN = 5.0


def test_frozen_backend_under_load_holds_no_request_past_detection(web_worker_factory, lb_factory):
    workers = [web_worker_factory(n) for n in ("z1", "z2")]
    lb = lb_factory('[pools.web]\nalgorithm = "round_robin"\nretries = 1\n' + HEALTH
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
