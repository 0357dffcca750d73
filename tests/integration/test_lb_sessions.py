"""Sticky vs stateless: what happens to a user's session when their backend dies.

Sticky mode with in-memory sessions keeps a user on one backend, so the session works, until that
backend dies and the session is lost. Stateless mode with sessions in Redis spreads the user over
all backends and the session survives any one of them dying. The tests show both.
"""

from __future__ import annotations

import http.client
import http.cookies
import json

from proxy.lb.sticky import sign
from tests.integration.conftest import backends_toml
from tests.integration.lbproc import wait_for

SECRET = "integration-test-secret-0123456789"
HEALTH = "[pools.web.health]\ninterval = 0.5\ntimeout = 0.5\nrise = 1\nfall = 1\n"


class Browser:
    """A keep-alive client with a cookie jar, like a browser tab."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self, path: str) -> tuple[int, dict, list[str]]:
        headers = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            self.conn.request("GET", path, headers=headers)
            resp = self.conn.getresponse()
        except (OSError, http.client.HTTPException):
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.conn.request("GET", path, headers=headers)
            resp = self.conn.getresponse()
        body = resp.read()
        set_cookies = resp.headers.get_all("Set-Cookie") or []
        for raw in set_cookies:
            jar = http.cookies.SimpleCookie()
            jar.load(raw)
            for k, morsel in jar.items():
                self.cookies[k] = morsel.value
        return resp.status, json.loads(body), set_cookies


def test_sticky_keeps_user_on_one_backend_and_loses_memory_session_when_it_dies(
    web_worker_factory, lb_factory
):
    workers = {n: web_worker_factory(n, sessions="memory") for n in ("s1", "s2", "s3")}
    lb = lb_factory(
        f'[pools.web]\nmode = "sticky"\nalgorithm = "round_robin"\n[pools.web.sticky]\nsecret = "{SECRET}"\n'
        + HEALTH + backends_toml("web", list(workers.values()))
    )
    user = Browser(lb.port)
    status, first, set_cookies = user.get("/session")
    assert status == 200 and first["count"] == 1
    assert any(c.startswith("tp_backend=") and "HttpOnly" in c for c in set_cookies)
    pinned = first["instance"]
    for expected in range(2, 8):
        status, body, _ = user.get("/session")
        assert (status, body["instance"], body["count"]) == (200, pinned, expected)

    # Another user is spread elsewhere by round robin, and is sticky too.
    other = Browser(lb.port)
    other_first = other.get("/session")[1]["instance"]
    assert all(other.get("/session")[1]["instance"] == other_first for _ in range(3))

    workers[pinned].process.kill()
    wait_for(lambda: lb.backend("web", pinned)["state"] == "down", 10, "pinned backend down")
    status, body, set_cookies = user.get("/session")
    # Replaced transparently, cookie re-issued, but the in-memory session is gone.
    assert status == 200 and body["instance"] != pinned
    assert body["count"] == 1
    assert any(c.startswith("tp_backend=") for c in set_cookies)
    new_home = body["instance"]
    status, body, _ = user.get("/session")
    assert (body["instance"], body["count"]) == (new_home, 2)


def test_forged_sticky_cookie_is_ignored(web_worker_factory, lb_factory):
    workers = [web_worker_factory(n) for n in ("t1", "t2")]
    lb = lb_factory(
        f'[pools.web]\nmode = "sticky"\n[pools.web.sticky]\nsecret = "{SECRET}"\n'
        + HEALTH + backends_toml("web", workers)
    )
    # A cookie signed with our secret pins the user; the same name with a wrong tag does not.
    good = sign("t2", SECRET.encode())
    forged = good.rsplit(".", 1)[0] + ".AAAAAAAAAAAAAAAAAAAAAA"
    seen_good, seen_forged = set(), set()
    for _ in range(6):
        conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
        conn.request("GET", "/whoami", headers={"Cookie": f"tp_backend={good}"})
        resp = conn.getresponse()
        seen_good.add(json.loads(resp.read())["instance"])
        assert resp.getheader("Set-Cookie") is None  # a valid pin is not re-issued
        conn.request("GET", "/whoami", headers={"Cookie": f"tp_backend={forged}"})
        resp = conn.getresponse()
        seen_forged.add(json.loads(resp.read())["instance"])
        assert resp.getheader("Set-Cookie", "").startswith("tp_backend=")
    assert seen_good == {"t2"}
    assert seen_forged == {"t1", "t2"}


def test_stateless_with_redis_sessions_survives_backend_death(web_worker_factory, lb_factory):
    workers = {n: web_worker_factory(n, sessions="redis") for n in ("r1", "r2", "r3")}
    lb = lb_factory(
        '[pools.web]\nmode = "stateless"\nalgorithm = "round_robin"\n'
        + HEALTH + backends_toml("web", list(workers.values()))
    )
    user = Browser(lb.port)
    served = []
    for expected in range(1, 7):
        status, body, set_cookies = user.get("/session")
        assert (status, body["count"]) == (200, expected)
        assert not any(c.startswith("tp_backend=") for c in set_cookies)
        served.append(body["instance"])
    assert set(served) == {"r1", "r2", "r3"}  # no affinity

    workers["r1"].process.kill()
    wait_for(lambda: lb.backend("web", "r1")["state"] == "down", 10, "r1 down")
    for expected in range(7, 13):
        status, body, _ = user.get("/session")
        assert (status, body["count"]) == (200, expected)
        assert body["instance"] in ("r2", "r3")
