"""Requests through a real `tierproxy lb` spread per the configured algorithm."""

from __future__ import annotations

import http.client
import json
import subprocess

from tests.integration.conftest import backends_toml
from tests.integration.lbproc import http_json, wait_for


def served_by(conn: http.client.HTTPConnection, path: str = "/whoami",
              headers: dict[str, str] | None = None) -> str:
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200, body
    return json.loads(body)["instance"]


def test_smooth_weighted_round_robin_gives_nginx_sequence(web_worker_factory, lb_factory):
    workers = [web_worker_factory(n) for n in ("a", "b", "c")]
    lb = lb_factory(
        '[pools.web]\nalgorithm = "weighted_round_robin"\n[pools.web.health]\ntype = "none"\n'
        + backends_toml("web", workers, {"a": 5, "b": 1, "c": 1})
    )
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    seq = "".join(served_by(conn) for _ in range(14))
    # nginx's smooth weighted round robin for weights 5:1:1 (ngx_http_upstream_round_robin.c).
    assert seq == "aabacaa" * 2


def test_round_robin_alternates_and_least_conn_avoids_busy(web_worker_factory, lb_factory):
    workers = [web_worker_factory(n) for n in ("w1", "w2")]
    lb = lb_factory(
        '[pools.web]\nalgorithm = "round_robin"\n[pools.web.health]\ntype = "none"\n'
        + backends_toml("web", workers)
    )
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    seq = [served_by(conn) for _ in range(6)]
    assert seq in (["w1", "w2"] * 3, ["w2", "w1"] * 3)


def test_least_conn_sends_new_requests_to_the_idle_backend(web_worker_factory, lb_factory):
    workers = [web_worker_factory(n) for n in ("w1", "w2")]
    lb = lb_factory(
        '[pools.web]\nalgorithm = "least_conn"\n[pools.web.health]\ntype = "none"\n'
        + backends_toml("web", workers)
    )
    # Three slow requests (curl, in the background) occupy the backends 2/1; while they run, a
    # quick request must go to the backend with fewer in flight.
    slow = [
        subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", lb.url("/slow?ms=2000")],
                         stdout=subprocess.PIPE)
        for _ in range(3)
    ]

    def inflight() -> dict[str, int] | None:
        counts = {b["name"]: b["inflight"] for b in lb.status()["pools"]["web"]["backends"]}
        return counts if sum(counts.values()) == 3 else None

    counts = wait_for(inflight, 10, "3 requests in flight")
    assert sorted(counts.values()) == [1, 2]
    idle = min(counts, key=counts.get)
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    assert served_by(conn) == idle
    for p in slow:
        out, _ = p.communicate(timeout=20)
        assert out == b"200"


def test_consistent_hash_moves_about_one_nth_when_a_backend_is_added(web_worker_factory, lb_factory):
    workers = [web_worker_factory(n) for n in ("h1", "h2", "h3")]
    lb = lb_factory(
        '[pools.web]\nalgorithm = "consistent_hash"\nhash_key = "header:X-User-ID"\n'
        "load_factor = 10.0\n[pools.web.health]\ntype = \"none\"\n" + backends_toml("web", workers)
    )
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    users = [f"user-{i}" for i in range(300)]
    before = {u: served_by(conn, headers={"X-User-ID": u}) for u in users}
    # the same key keeps going to the same backend
    assert all(served_by(conn, headers={"X-User-ID": u}) == before[u] for u in users[:30])
    assert set(before.values()) == {"h1", "h2", "h3"}

    h4 = web_worker_factory("h4")
    code, body = http_json(lb.admin("/pools/web/backends"), "POST", {"name": "h4", "address": h4.address})
    assert code == 201, body
    after = {u: served_by(conn, headers={"X-User-ID": u}) for u in users}
    moved = [u for u in users if after[u] != before[u]]
    # Only keys that now belong to the new backend move, and about 1/4 of them do.
    assert all(after[u] == "h4" for u in moved)
    assert 0.12 * len(users) <= len(moved) <= 0.40 * len(users)


def test_backup_only_when_primaries_are_out(web_worker_factory, lb_factory):
    primary, backup = web_worker_factory("primary"), web_worker_factory("backup")
    lb = lb_factory(
        '[pools.web]\n[pools.web.health]\ninterval = 0.3\ntimeout = 0.3\nfall = 1\nrise = 1\n'
        f'[[pools.web.backends]]\nname = "primary"\naddress = "{primary.address}"\n'
        f'[[pools.web.backends]]\nname = "backup"\naddress = "{backup.address}"\nbackup = true\n'
    )
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    assert {served_by(conn) for _ in range(5)} == {"primary"}
    code, _ = http_json(lb.admin("/pools/web/backends/primary/drain"), "POST")
    assert code == 200
    assert {served_by(conn) for _ in range(5)} == {"backup"}
