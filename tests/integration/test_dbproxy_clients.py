"""Real PostgreSQL clients through `tierproxy dbproxy`: psql, asyncpg, psycopg 3.

Each feature is checked against what the server itself answers: results, SQLSTATEs, rows that
COPY moved, notifications delivered. The proxy is the session-wide one in front of `pg_cluster`.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import threading

import asyncpg
import psycopg
import pytest

from tests.integration.rss import RssSampler

PSQL = shutil.which("psql")


def _psql(dbproxy, *args: str, password: str = "app-secret", database: str = "postgres",
          stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    assert PSQL is not None, "psql is needed (Debian package postgresql-client)"
    env = {**os.environ, "PGPASSWORD": password, "PGSSLMODE": "prefer", "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(
        [PSQL, "-h", "127.0.0.1", "-p", str(dbproxy.port), "-U", "app", "-d", database, "-X", "-v",
         "ON_ERROR_STOP=1", "-At", *args],
        check=False, capture_output=True, text=True, env=env, timeout=60, input=stdin,
    )  # fmt: skip


@pytest.fixture(scope="module")
def table(pg_cluster, dbproxy):
    pg_cluster.primary.psql("DROP TABLE IF EXISTS clients_t; CREATE TABLE clients_t (id int PRIMARY KEY, v text)")
    pg_cluster.wait_for_replicas_caught_up()
    return "clients_t"


def test_psql_queries_copy_errors_and_the_admin_console(dbproxy, table):
    # sslmode=prefer: the proxy answers the SSLRequest with N and psql goes on in the clear.
    r = _psql(dbproxy, "-c", "SELECT 1 + 1", "-c", f"INSERT INTO {table} VALUES (1, 'one') ON CONFLICT DO NOTHING")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "2"
    data = "".join(f"{i}\trow {i}\n" for i in range(100, 1100))
    r = _psql(dbproxy, "-c", f"\\copy {table} FROM STDIN", stdin=data)
    assert r.returncode == 0 and "COPY 1000" in r.stdout, r.stderr
    r = _psql(dbproxy, "-c", f"/* tierproxy:primary */ SELECT count(*) FROM {table} WHERE id >= 100")
    assert r.stdout.strip() == "1000"
    r = _psql(dbproxy, "-c", f"\\copy (SELECT id, v FROM {table} WHERE id BETWEEN 100 AND 104 ORDER BY id) TO STDOUT")
    assert r.stdout.splitlines() == [f"{i}\trow {i}" for i in range(100, 105)]
    # an error, then the same psql session goes on
    r = _psql(dbproxy, "-v", "ON_ERROR_STOP=0", "-c", "SELECT 1/0", "-c", "SELECT 'after'")
    assert "division by zero" in r.stderr and r.stdout.strip() == "after"
    r = _psql(dbproxy, "-c", "SHOW POOLS", database="tierproxy")
    assert r.returncode == 0 and "|app|" in r.stdout, r.stderr
    for command in ("SHOW SERVERS", "SHOW CLIENTS", "SHOW BACKENDS", "SHOW STATS"):
        r = _psql(dbproxy, "-c", command, database="tierproxy")
        assert r.returncode == 0 and r.stdout.strip(), (command, r.stderr)
    r = _psql(dbproxy, "-c", "SHOW BACKENDS", database="tierproxy")
    assert {line.split("|")[0] for line in r.stdout.splitlines()} == {"primary", "replica1", "replica2"}


def test_wrong_password_and_unknown_user_are_refused_and_others_keep_working(dbproxy):
    r = _psql(dbproxy, "-c", "SELECT 1", password="wrong")
    assert r.returncode != 0 and 'password authentication failed for user "app"' in r.stderr
    # psycopg reports failed logins as OperationalError with the server's message
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "nobody"'):
        psycopg.connect(dbproxy.dsn().replace("app:app-secret", "nobody:app-secret"))
    with pytest.raises(psycopg.OperationalError, match='database "no_such_db" does not exist'):
        psycopg.connect(dbproxy.dsn(database="no_such_db"))
    with psycopg.connect(dbproxy.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT 42").fetchone() == (42,)


async def test_asyncpg_parameters_prepared_statements_transactions_and_errors(dbproxy_statement, table):
    # balance = "statement": the session's reads spread over both replicas.
    conn = await asyncpg.connect(dbproxy_statement.dsn())
    try:
        assert await conn.fetchval("SELECT $1::int * 2", 21) == 42
        stmt = await conn.prepare("SELECT $1::text || '!'")
        # Executed many times: it lands on both replicas and is prepared on each transparently.
        assert [await stmt.fetchval(str(i)) for i in range(20)] == [f"{i}!" for i in range(20)]
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {table} VALUES (2, 'two') ON CONFLICT (id) DO UPDATE SET v = 'two'")
            assert await conn.fetchval(f"SELECT v FROM {table} WHERE id = 2") == "two"
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} VALUES (2, 'dup')")
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await conn.fetchval("SELEC 1")
        assert await conn.fetchval(f"SELECT v FROM {table} WHERE id = 2") == "two"
        await conn.executemany(f"INSERT INTO {table} VALUES ($1, $2) ON CONFLICT DO NOTHING",
                               [(i, f"m{i}") for i in range(2000, 2100)])  # fmt: skip
        assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE id >= 2000 AND id < 2100") == 100
        await conn.copy_records_to_table(table, records=[(3000 + i, f"c{i}") for i in range(500)])
        out = io.BytesIO()
        await conn.copy_from_query(f"SELECT id FROM {table} WHERE id >= 3000 ORDER BY id", output=out)
        assert out.getvalue().decode().split() == [str(3000 + i) for i in range(500)]
    finally:
        await conn.close()


async def test_cancel_requests_reach_the_server_running_the_statement(dbproxy):
    conn = await asyncpg.connect(dbproxy.dsn())
    try:
        with pytest.raises(asyncio.TimeoutError):
            # asyncpg sends a CancelRequest with the key the proxy gave it when the timeout hits
            await conn.fetchval("SELECT pg_sleep(60)", timeout=0.5)
        assert await conn.fetchval("SELECT 'still usable'") == "still usable"
    finally:
        await conn.close()
    with psycopg.connect(dbproxy.dsn(), autocommit=True) as pconn:
        timer = threading.Timer(0.5, pconn.cancel)
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            pconn.execute("SELECT pg_sleep(60)")
        timer.join()
        assert pconn.execute("SELECT 1").fetchone() == (1,)


def test_listen_notify_between_two_clients(dbproxy):
    with psycopg.connect(dbproxy.dsn(), autocommit=True) as listener, \
            psycopg.connect(dbproxy.dsn(), autocommit=True) as sender:  # fmt: skip
        listener.execute("LISTEN tierproxy_chan")
        sender.execute("NOTIFY tierproxy_chan, 'hello'")
        sender.execute("SELECT pg_notify('tierproxy_chan', 'again')")
        got = []
        for n in listener.notifies(timeout=10, stop_after=2):
            got.append((n.channel, n.payload))
        assert got == [("tierproxy_chan", "hello"), ("tierproxy_chan", "again")]


def test_psycopg_prepared_statements_copy_and_server_side_cursor(dbproxy, dbproxy_statement, table):
    # balance = "statement": the prepared statement runs on both replicas, prepared on each.
    with psycopg.connect(dbproxy_statement.dsn(), autocommit=True, prepare_threshold=0) as conn:
        for i in range(10):
            assert conn.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)
        with conn.cursor() as cur:
            with cur.copy(f"COPY {table} (id, v) FROM STDIN") as copy:
                for i in range(5000, 5300):
                    copy.write_row((i, f"p{i}"))
            assert cur.rowcount == 300
            with cur.copy(f"COPY (SELECT id FROM {table} WHERE id >= 5000 AND id < 5300 ORDER BY id) TO STDOUT") as copy:
                ids = [int(row[0]) for row in copy.rows()]
            assert ids == list(range(5000, 5300))
    with psycopg.connect(dbproxy.dsn()) as conn:  # a transaction, for the named cursor
        with conn.cursor(name="big") as cur:
            cur.execute("SELECT g FROM generate_series(1, 200000) g")
            total = 0
            while rows := cur.fetchmany(10000):
                total += sum(r[0] for r in rows)
        assert total == 200000 * 200001 // 2


def test_a_large_result_set_streams_through_in_bounded_memory(dbproxy):
    # The proxy's RSS is sampled every few milliseconds in a thread during the transfer (a spike
    # that is freed before the result has been consumed is still seen).
    with psycopg.connect(dbproxy.dsn(), autocommit=True) as conn, conn.cursor() as cur:
        total = 0
        with RssSampler(dbproxy.process.pid) as rss:
            # psycopg reads the whole result client-side: the proxy must only pass it through
            cur.execute("SELECT repeat('x', 1000) FROM generate_series(1, 150000)")
            for row in cur:
                total += len(row[0])
    assert total == 150000 * 1000
    assert rss.samples > 10, rss.samples
    assert rss.growth < 64 * 1024, f"proxy RSS grew {rss.growth} KiB (peak) for a 150 MB result"


async def test_many_concurrent_sessions_mixing_reads_and_writes(dbproxy, table):
    async def worker(i: int) -> None:
        conn = await asyncpg.connect(dbproxy.dsn())
        try:
            for j in range(20):
                key = 10000 + i * 100 + j
                await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", key, f"w{i}")
                assert await conn.fetchval(f"SELECT v FROM {table} WHERE id = $1", key) == f"w{i}"
        finally:
            await conn.close()

    await asyncio.gather(*(worker(i) for i in range(16)))  # each read-after-write is asserted
