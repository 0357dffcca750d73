"""`[routing] balance = "session"` (the default) behind a real dbproxy: each session reads from one
replica and holds one replica connection (SHOW SERVERS); clients that connect together split
evenly over the two replicas (each replica's pg_stat_activity, /status, /metrics); a session moves
to the other replica, for good, when its own is frozen (SIGSTOP) and the monitor marks it down,
or falls behind its read-your-writes position, and then holds one replica connection again. The
router's rules are in tests/unit/test_dbproxy_balance.py; per-statement spreading
(`balance = "statement"`) in test_dbproxy_routing.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import urllib.request
from collections import Counter

import asyncpg
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


CLIENTS = 8  # connecting together; each reads several times


def _replica_rows(proxy) -> list[dict[str, str]]:
    return [r for r in _servers(proxy) if r["state"] == "active" and r["role"] == "replica"]


async def _clients_together(proxy, tag: str) -> tuple[list[asyncpg.Connection], list[set[int]]]:
    """CLIENTS asyncpg sessions connected at once; their first reads one after another (no query
    outstanding anywhere when each chooses: the outstanding counts cannot tell the replicas
    apart), then four more reads each, all sessions at once."""
    conns = await asyncio.gather(*(asyncpg.connect(proxy.dsn(), server_settings={"application_name": tag})
                                   for _ in range(CLIENTS)))  # fmt: skip
    ports = [{await c.fetchval("SELECT inet_server_port()")} for c in conns]
    for _ in range(4):
        got = await asyncio.gather(*(c.fetchval("SELECT inet_server_port()") for c in conns))
        for seen, port in zip(ports, got, strict=True):
            seen.add(port)
    return list(conns), ports


async def test_clients_connecting_together_split_evenly_over_the_replicas(pg_cluster, dbproxy_factory):
    proxy = dbproxy_factory(pg_cluster, extra='[routing]\nread_your_writes = "off"\n')  # balance: the default
    replicas = [r.port for r in pg_cluster.replicas]
    conns, ports = await _clients_together(proxy, "bal-even")
    try:
        for seen in ports:
            assert len(seen) == 1 and seen <= set(replicas), ports  # one replica per session
        per_replica = Counter(p for seen in ports for p in seen)
        assert per_replica == {replicas[0]: CLIENTS // 2, replicas[1]: CLIENTS // 2}, per_replica
        # Each replica's own view: CLIENTS / 2 backends of these clients (one per session).
        for replica in pg_cluster.replicas:
            n = replica.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'bal-even'")
            assert int(n) == CLIENTS // 2, (replica.port, n)
        # The proxy's: one replica connection per client, and the sessions bound per replica.
        per_client = Counter(r["client_port"] for r in _replica_rows(proxy))
        assert len(per_client) == CLIENTS and set(per_client.values()) == {1}, per_client
        bound = {b["name"]: b["sessions"] for b in proxy.status()["backends"] if b["role"] == "replica"}
        assert bound == {"replica1": CLIENTS // 2, "replica2": CLIENTS // 2}, bound
        with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        for name in ("replica1", "replica2"):
            assert f'tierproxy_dbproxy_replica_sessions{{backend="{name}"}} {float(CLIENTS // 2)}' in text
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    # Sessions that end give their counts back.
    wait_until(lambda: all(b.get("sessions", 0) == 0 for b in proxy.status()["backends"]), 10, "counts released")


def test_a_session_moved_by_read_your_writes_holds_one_replica_connection(pg_cluster, dbproxy_factory):
    """Its replica stays usable but has not replayed the session's write: the session moves to the
    other replica (once it has replayed it) and gives its connection to the old one back."""
    proxy = dbproxy_factory(pg_cluster, extra="[routing]\nmax_lag_seconds = 3600\n")
    by_port = {r.port: r for r in pg_cluster.replicas}
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bal_moved (id int)")
        pg_cluster.wait_for_replicas_caught_up()
        wait_until(lambda: _ports(conn, 1) != {pg_cluster.primary.port}, 20, "reads on a replica again")
        (first,) = _ports(conn, 3)
        (other,) = set(by_port) - {first}
        # This client's rows: the client port of its primary connection (its key's pid).
        me = next(r["client_port"] for r in _servers(proxy) if r["remote_pid"] == str(conn.info.backend_pid))
        late = by_port[first]
        late.set_apply_delay(60_000)
        try:
            conn.execute("INSERT INTO bal_moved VALUES (1)")
            wait_until(lambda: _ports(conn, 1) == {other}, 20, "the session's reads on the other replica")
            assert _ports(conn, 4) == {other}
            mine = [r for r in _replica_rows(proxy) if r["client_port"] == me]
            assert [r["port"] for r in mine] == [str(other)], mine
            bound = {b["name"]: b["sessions"] for b in proxy.status()["backends"] if b["role"] == "replica"}
            assert sorted(bound.values()) == [0, 1], bound
        finally:
            late.set_apply_delay(0)
        pg_cluster.wait_for_replicas_caught_up()
        assert _ports(conn, 4) == {other}  # stays where it moved


def test_a_pinned_session_gives_its_replica_back(pg_cluster, proxy):
    """A SET pins the session to the primary for good: its replica connection goes back to the
    pool and its replica's count of sessions falls, while another session keeps its own."""
    replicas = {r.port for r in pg_cluster.replicas}
    with psycopg.connect(proxy.dsn(), autocommit=True) as conn, \
            psycopg.connect(proxy.dsn(), autocommit=True) as other:  # fmt: skip
        assert _ports(conn, 3) <= replicas and _ports(other, 3) <= replicas
        me = next(r["client_port"] for r in _servers(proxy) if r["remote_pid"] == str(conn.info.backend_pid))
        assert [r["client_port"] for r in _replica_rows(proxy)].count(me) == 1
        conn.execute("SET application_name = 'pinned'")
        assert _ports(conn, 3) == {pg_cluster.primary.port}
        rows = _replica_rows(proxy)
        assert me not in [r["client_port"] for r in rows] and len(rows) == 1, rows
        bound = [b["sessions"] for b in proxy.status()["backends"] if b["role"] == "replica"]
        assert sorted(bound) == [0, 1], bound
