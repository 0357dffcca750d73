"""Backends are checked once before a fresh balancer serves, and at once when added later: the first
requests after start succeed, and a backend that is down gets none of them."""

from __future__ import annotations

import http.client
import json

import pytest

from proxy.devstack.ports import allocate_port
from tests.integration.conftest import backends_toml
from tests.integration.lbproc import http_json, wait_for

# The defaults (interval 2 s, rise 2, fall 3): waiting for rise or fall would take seconds.
POOL = '[pools.web]\nalgorithm = "round_robin"\n'


def _whoami(conn: http.client.HTTPConnection) -> tuple[int, str]:
    conn.request("GET", "/whoami")
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, json.loads(body)["instance"] if resp.status == 200 else body.decode()


def test_fresh_balancer_serves_at_once_and_sends_nothing_to_a_backend_down_at_start(
    web_worker_factory, lb_factory
):
    alive = web_worker_factory("s1")
    dead = allocate_port()  # locked for us, nothing listens: connects are refused
    lb = lb_factory(POOL + f'[[pools.web.backends]]\nname = "dead"\naddress = "127.0.0.1:{dead.port}"\n'
                    + backends_toml("web", [alive]))  # fmt: skip
    try:
        # lb_factory returns as soon as the admin port answers: the process is ready
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
        answers = [_whoami(conn) for _ in range(6)]
        assert answers == [(200, "s1")] * 6
        b = lb.backend("web", "dead")
        assert b["state"] == "down" and "connect" in b["reason"]
        assert b["requests"] == 0  # not even one attempt that a retry had to cover
        assert lb.backend("web", "s1")["state"] == "up"
    finally:
        dead.release()


@pytest.mark.parametrize("workers", [1, 2])
def test_backend_added_at_runtime_is_checked_at_once(web_worker_factory, lb_factory, workers):
    first, second = web_worker_factory("r1"), web_worker_factory("r2")
    # with worker processes the supervisor checks, and the workers wait for its first result
    lb = lb_factory(f"workers = {workers}\n" + POOL + backends_toml("web", [first]))
    dead = allocate_port()
    try:
        code, body = http_json(lb.admin("/pools/web/backends"), "POST",
                               {"name": "dead", "address": f"127.0.0.1:{dead.port}"})  # fmt: skip
        assert code == 201, body
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
        answers = [_whoami(conn) for _ in range(6)]
        assert answers == [(200, "r1")] * 6
        assert lb.backend("web", "dead")["requests"] == 0
        b = wait_for(lambda: (b := lb.backend("web", "dead"))["health"]["consecutive_fail"] and b, 10,
                     "the first check of 'dead'")  # fmt: skip
        assert b["state"] == "down" and "connect" in b["reason"]
        # a healthy one added at runtime takes traffic after one check, not `rise` of them
        code, body = http_json(lb.admin("/pools/web/backends"), "POST", {"name": "r2", "address": second.address})
        assert code == 201, body
        wait_for(lambda: lb.backend("web", "r2")["state"] == "up", 10, "r2 up")
        seen = {_whoami(conn)[1] for _ in range(4)}
        assert seen == {"r1", "r2"}
    finally:
        dead.release()
