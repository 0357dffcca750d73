"""Server backends reused by `tierproxy dbproxy`'s pools, as clients see them: DROP DATABASE and
ALTER DATABASE ... RENAME of a database earlier sessions used (psql, psycopg, asyncpg), and
`pool.server_reuse = "fresh"` giving every client session a new server backend.

Direct to PostgreSQL, a database whose clients have all disconnected can be dropped; through a
session pool the proxy's own idle connections to it used to make that fail with 55006.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import asyncpg
import psycopg
from proxy.devstack.poll import wait_until_async

PSQL = shutil.which("psql")


def _psql(proxy, sql: str, database: str = "postgres") -> subprocess.CompletedProcess[str]:
    assert PSQL is not None, "psql is needed (Debian package postgresql-client)"
    env = {**os.environ, "PGPASSWORD": "app-secret", "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run([PSQL, "-h", "127.0.0.1", "-p", str(proxy.port), "-U", "app", "-d", database, "-X",
                           "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
                          check=False, capture_output=True, text=True, env=env, timeout=60)  # fmt: skip


async def _use(proxy, database: str) -> None:
    """A session that creates, writes and reads a table in `database`, then disconnects."""
    conn = await asyncpg.connect(proxy.dsn(database=database))
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS t (id int); INSERT INTO t VALUES (1)")
        assert await conn.fetchval("SELECT count(*) FROM t") >= 1
        assert await conn.fetchval("SELECT 1") == 1  # a read: may use a replica connection too
    finally:
        await conn.close()


def _exists(cluster, database: str) -> bool:
    return cluster.primary.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{database}'").strip() == "1"


async def test_drop_and_rename_a_database_that_earlier_sessions_used(pg_cluster, dbproxy_factory):
    proxy = dbproxy_factory(pg_cluster)
    r = _psql(proxy, "CREATE DATABASE reuse_a")
    assert r.returncode == 0, r.stderr
    try:
        for _ in range(3):
            await _use(proxy, "reuse_a")
        # psql, simple protocol
        r = _psql(proxy, "DROP DATABASE reuse_a")
        assert r.returncode == 0, r.stderr
        assert not _exists(pg_cluster, "reuse_a")
    finally:
        pg_cluster.primary.psql("DROP DATABASE IF EXISTS reuse_a WITH (FORCE)")
    assert _psql(proxy, "CREATE DATABASE reuse_b").returncode == 0
    try:
        await _use(proxy, "reuse_b")
        # psycopg, extended protocol (Parse/Bind/Execute/Sync of the unnamed statement)
        with psycopg.connect(proxy.dsn(), autocommit=True) as conn:
            conn.execute("ALTER DATABASE reuse_b RENAME TO reuse_c")
            await _use(proxy, "reuse_c")
            conn.execute("DROP DATABASE reuse_c")
            assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on
        assert not _exists(pg_cluster, "reuse_b") and not _exists(pg_cluster, "reuse_c")
    finally:
        pg_cluster.primary.psql("DROP DATABASE IF EXISTS reuse_b WITH (FORCE)")
        pg_cluster.primary.psql("DROP DATABASE IF EXISTS reuse_c WITH (FORCE)")


async def test_drop_database_succeeds_when_its_last_client_leaves_while_the_drop_waits(pg_cluster, dbproxy_factory):
    # Direct, PostgreSQL waits up to 5 s for the database's other backends to exit. Through the
    # proxy the leaving client's server connection goes back to the pool instead: the server
    # answers 55006, the proxy closes its idle connections and runs the DROP once more.
    proxy = dbproxy_factory(pg_cluster)
    assert _psql(proxy, "CREATE DATABASE reuse_d").returncode == 0
    try:
        last = await asyncpg.connect(proxy.dsn(database="reuse_d"))
        await last.execute("CREATE TABLE t (id int)")
        dropper = await asyncpg.connect(proxy.dsn())
        try:
            drop = asyncio.create_task(dropper.execute("DROP DATABASE reuse_d"))

            async def drop_is_waiting() -> bool:
                rows = await asyncio.to_thread(pg_cluster.primary.psql,
                                               "SELECT count(*) FROM pg_stat_activity WHERE query = 'DROP DATABASE reuse_d'"
                                               " AND state = 'active'")  # fmt: skip
                return rows.strip() == "1"

            await wait_until_async(drop_is_waiting, 10, "the DROP DATABASE waiting for other backends")
            await last.close()
            assert await asyncio.wait_for(drop, 30) == "DROP DATABASE"
            assert not _exists(pg_cluster, "reuse_d")
        finally:
            await dropper.close()
    finally:
        pg_cluster.primary.psql("DROP DATABASE IF EXISTS reuse_d WITH (FORCE)")


async def _backend(proxy) -> tuple[int, object, object]:
    """(pid, backend_start, clock_timestamp()) of the session's primary server backend."""
    conn = await asyncpg.connect(proxy.dsn())
    try:
        row = await conn.fetchrow("SELECT pid, backend_start, clock_timestamp() AS now FROM pg_stat_activity "
                                  "WHERE pid = pg_backend_pid()")  # fmt: skip
        return row["pid"], row["backend_start"], row["now"]
    finally:
        await conn.close()


async def test_server_reuse_fresh_gives_each_session_a_new_backend(pg_cluster, dbproxy_factory):
    proxy = dbproxy_factory(pg_cluster, extra='[pool]\nserver_reuse = "fresh"\n')
    prev_pid, _, prev_now = await _backend(proxy)
    for _ in range(3):
        pid, start, now = await _backend(proxy)
        assert pid != prev_pid
        assert start > prev_now, (start, prev_now)  # started after the previous session's query
        prev_pid, prev_now = pid, now
