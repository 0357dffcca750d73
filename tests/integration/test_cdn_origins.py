"""`tierproxy cdn` and its origin pool: several real origin processes (cdnorigin.py) behind the cdn,
active health checks as in the lb (proxy/upstream/), keep-alive reuse, failover, and serve-stale
driven by origin health: origins killed, cached objects served stale with the reason in
Cache-Status, uncached ones answered 502 at once, recovery when the origins come back."""

from __future__ import annotations

import time

import pytest

from tests.integration import cdnproc
from tests.integration.lbproc import http_json, wait_for
from tests.integration.test_cdn import Cdn, Origin, curl

# Fast checks so that a kill is noticed within a second: rise/fall 1, a TCP connect every 0.2 s.
POOL = """[origin]
health = {{ type = "tcp", interval = 0.2, timeout = 0.2, rise = 1, fall = 1 }}
[[origin.servers]]
name = "a"
address = "127.0.0.1:{a}"
[[origin.servers]]
name = "b"
address = "127.0.0.1:{b}"
"""


# One pair of origins and one cdn for the module: each test leaves both origins running and up.
@pytest.fixture(scope="module")
def origins(tmp_path_factory):
    with cdnproc.running_origin(tmp_path_factory.mktemp("a")) as a, \
            cdnproc.running_origin(tmp_path_factory.mktemp("b")) as b:
        yield [a, b]


@pytest.fixture(scope="module")
def cdn(tmp_path_factory, origins):
    a, b = origins
    with cdnproc.running_cdn(tmp_path_factory.mktemp("cdn"), None, origin_toml=POOL.format(a=a.port, b=b.port)) as c:
        yield c


def states(cdn: Cdn) -> dict[str, str]:
    return {o["name"]: o["state"] for o in cdn.status()["origins"]}


def total(origins: list[Origin], path: str) -> int:
    return sum(o.count(path)["requests"] for o in origins)


def test_fetches_spread_over_the_pool_on_keep_alive_connections(cdn, origins):
    # First in the module: the origins have seen no request yet.
    assert states(cdn) == {"a": "up", "b": "up"}
    for i in range(20):
        status, headers, body = curl(cdn, f"/obj/ka{i}?cc=max-age=300")
        assert status == 200 and body == f"/obj/ka{i} #1" and "fwd=uri-miss" in headers["cache-status"]
    # Both servers took misses, each over one reused connection (sequential misses: one at a time).
    served = [sum(o.count(f"/obj/ka{i}")["requests"] for i in range(20)) for o in origins]
    assert served == [10, 10]
    assert [http_json(f"http://127.0.0.1:{o.port}/_conns")[1]["connections"] for o in origins] == [1, 1]
    st = {o["name"]: o for o in cdn.status()["origins"]}
    assert st["a"]["requests"] == 10 and st["b"]["requests"] == 10


def test_one_origin_killed_the_other_serves_everything(cdn, origins):
    a, b = origins
    a.stop()
    # Before and after the checks notice, every miss is answered (a refused connect moves on).
    for i in range(10):
        status, _, body = curl(cdn, f"/obj/fo{i}?cc=max-age=300")
        assert status == 200 and body == f"/obj/fo{i} #1"
    wait_for(lambda: states(cdn) == {"a": "down", "b": "up"}, 15, "origin a marked down")
    reason = next(o for o in cdn.status()["origins"] if o["name"] == "a")["reason"]
    assert "tcp connect failed" in reason
    for i in range(10, 20):
        assert curl(cdn, f"/obj/fo{i}?cc=max-age=300")[0] == 200
    assert b.count("/obj/fo19")["requests"] == 1
    a.start()
    wait_for(lambda: states(cdn) == {"a": "up", "b": "up"}, 15, "origin a back up")
    for i in range(20, 30):
        assert curl(cdn, f"/obj/fo{i}?cc=max-age=300")[0] == 200
    assert sum(a.count(f"/obj/fo{i}")["requests"] for i in range(20, 30)) == 5


def test_origins_killed_stale_served_uncached_502_fast_then_recovery(cdn, origins):
    stale = "/obj/k1?cc=max-age=1&age=5"  # stored already stale: each use must ask the origin
    fresh = "/obj/k2?cc=max-age=300"
    for p in (stale, fresh):
        assert curl(cdn, p)[0] == 200
    first = curl(cdn, stale)[2]
    for o in origins:
        o.stop()
    wait_for(lambda: states(cdn) == {"a": "down", "b": "down"}, 15, "both origins marked down")
    # A cached object keeps being served, stale, saying why.
    status, headers, body = curl(cdn, stale)
    assert status == 200 and body == first
    cs = headers["cache-status"]
    assert "fwd=stale" in cs and 'detail="origin-down"' in cs, cs
    status, headers, _ = curl(cdn, fresh)
    assert status == 200 and headers["cache-status"].startswith("tierproxy; hit")
    # An uncached one: 502 at once (nothing is tried while every origin is down).
    t0 = time.monotonic()
    status, headers, body = curl(cdn, "/obj/k3?cc=max-age=300")
    elapsed = time.monotonic() - t0
    assert status == 502 and 'detail="origin-down"' in headers["cache-status"]
    assert elapsed < 3.0, elapsed
    assert cdn.status()["stale_served"] >= 1
    # The origins come back (same ports): the checks see it and the cdn fetches again.
    for o in origins:
        o.start()
    wait_for(lambda: states(cdn) == {"a": "up", "b": "up"}, 15, "both origins back up")
    status, headers, body = curl(cdn, "/obj/k3?cc=max-age=300")
    assert status == 200 and body == "/obj/k3 #1"
    status, headers, body = curl(cdn, stale)
    assert status == 200 and "fwd=stale; fwd-status=200" in headers["cache-status"]
    assert total(origins, "/obj/k1") == 1  # the restarted origins' own count


def test_an_http_check_failing_marks_a_live_origin_down(tmp_path, origins):
    a = origins[0]
    http_pool = ('[origin]\nhealth = { type = "http", path = "/healthz", interval = 0.2, timeout = 0.2, '
                 f'rise = 1, fall = 1 }}\n[[origin.servers]]\nname = "a"\naddress = "127.0.0.1:{a.port}"\n')
    with cdnproc.running_cdn(tmp_path, None, origin_toml=http_pool) as c:
        stale = "/obj/h1?cc=max-age=1&age=5"
        assert curl(c, stale)[0] == 200
        assert http_json(f"http://127.0.0.1:{a.port}/_health?status=503", "POST")[0] == 200
        wait_for(lambda: states(c) == {"a": "down"}, 15, "origin a marked down by its HTTP check")
        assert c.status()["origins"][0]["reason"] == "http status 503"
        status, headers, body = curl(c, stale)
        assert status == 200 and body == "/obj/h1 #1" and 'detail="origin-down"' in headers["cache-status"]
        assert a.count("/obj/h1")["requests"] == 1  # the origin answers, but the check says down
        assert http_json(f"http://127.0.0.1:{a.port}/_health?status=0", "POST")[0] == 200
        wait_for(lambda: states(c) == {"a": "up"}, 15, "origin a back up")
        status, headers, body = curl(c, stale)
        assert body == "/obj/h1 #2" and "fwd=stale; fwd-status=200" in headers["cache-status"]
