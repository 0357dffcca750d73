"""`[routing] balance = "session"` behind a real dbproxy: each session reads from one replica and
holds one replica connection (SHOW SERVERS), and moves to the other replica, for good, when its
own is frozen (SIGSTOP) and the monitor marks it down. The router's rules are in
tests/unit/test_dbproxy_balance.py; the default per-statement spreading in test_dbproxy_routing.py."""

from __future__ import annotations

import os
import subprocess
from collections import Counter

import psycopg
import pytest

from proxy.devstack.poll import wait_until

SESSIONS = 6


def _ports(conn: psycopg.Connection, n: int) -> set[int]:
    return {conn.execute("SELECT inet_server_port()").fetchone()[0] for _ in range(n)}


def _servers(proxy) -> list[dict[str, str]]:
    """SHOW SERVERS through psql, one dict per row."""
    env = {**os.environ, "PGPASSWORD": "app-secret", "PGSSLMODE": "disable"}
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(proxy.port), "-U", "app", "-A", "-F", "\t",
                          "-P", "footer=off", "tierproxy", "-c", "SHOW SERVERS"],
                         env=env, capture_output=True, text=True, check=True, timeout=30).stdout  # fmt: skip
    head, *rows = out.splitlines()
    return [dict(zip(head.split("\t"), row.split("\t"), strict=True)) for row in rows]


@pytest.fixture
def proxy(pg_cluster, dbproxy_factory):
    return dbproxy_factory(pg_cluster, extra='[routing]\nbalance = "session"\nread_your_writes = "off"\n')


def test_each_session_reads_from_one_replica_and_holds_one_replica_connection(pg_cluster, proxy):
    replicas = {r.port for r in pg_cluster.replicas}
    conns = [psycopg.connect(proxy.dsn(), autocommit=True) for _ in range(SESSIONS)]
    try:
        seen = [_ports(c, 8) for c in conns]
        for ports in seen:
            assert len(ports) == 1 and ports <= replicas, seen
        mine = {c.info.backend_pid for c in conns}  # each session's primary connection (its key)
        assert len(mine) == SESSIONS
        rows = [r for r in _servers(proxy) if r["state"] == "active"]
        # Per client: its primary connection and exactly one replica connection.
        per_client = Counter((r["client_port"], r["role"]) for r in rows)
        clients = {port for port, _ in per_client}
        assert len(clients) == SESSIONS, rows
        for port in clients:
            assert per_client[(port, "primary")] == 1 and per_client[(port, "replica")] == 1, rows
    finally:
        for c in conns:
            c.close()


def test_a_session_moves_when_its_replica_freezes_and_stays_moved(pg_cluster, proxy):
    by_port = {r.port: r for r in pg_cluster.replicas}
    names = {r.port: f"replica{i}" for i, r in enumerate(pg_cluster.replicas, 1)}  # the proxy's names
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        (first,) = _ports(conn, 5)
        frozen = by_port[first]
        (other,) = set(by_port) - {first}
        frozen.pause()
        try:
            wait_until(lambda: not {b["name"]: b for b in proxy.status()["backends"]}[names[first]]["usable"],
                       20, "the frozen replica marked unusable")  # fmt: skip
            assert _ports(conn, 5) == {other}
        finally:
            frozen.resume()
        wait_until(lambda: all(b["usable"] for b in proxy.status()["backends"]), 20, "all usable again")
        assert _ports(conn, 5) == {other}  # stays where it moved
