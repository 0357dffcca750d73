"""The dbproxy's query cache (issue 20), in-process level, against real PostgreSQL.

A write made directly on the primary (bypassing the proxy) is how a test sees that an answer came
from the cache: the database has the new value, the cached answer the old one. Reads are sent
with psycopg's ClientCursor, which uses the simple Query protocol (the only one cached so far)."""

from __future__ import annotations

import asyncpg
import psycopg
import pytest

HINT = "/* tierproxy:cache ttl=60 */ "
READ = HINT + "SELECT v FROM qc WHERE id = 1"


@pytest.fixture
def cluster(pg_cluster):
    pg_cluster.primary.psql("DROP TABLE IF EXISTS qc, qc_other; CREATE TABLE qc (id int PRIMARY KEY, v int);"
                            "INSERT INTO qc VALUES (1, 1); CREATE TABLE qc_other (id int)")  # fmt: skip
    pg_cluster.wait_for_replicas_caught_up()
    return pg_cluster


def _client(proxy):
    return psycopg.connect(proxy.dsn(), autocommit=True, cursor_factory=psycopg.ClientCursor)


def _value(conn, sql=READ):
    return conn.execute(sql).fetchone()[0]


def _bypass(cluster, v):
    # Replicas caught up too: a read not served from the cache gets the new value wherever it runs.
    cluster.primary.psql(f"UPDATE qc SET v = {v} WHERE id = 1")
    cluster.wait_for_replicas_caught_up()


def test_cached_read_then_write_through_the_proxy_then_the_new_value(cluster, dbproxy_factory):
    proxy = dbproxy_factory(cluster, extra="[cache]\nenabled = true\n")
    with _client(proxy) as conn, _client(proxy) as other:
        assert _value(conn) == 1  # a miss, stored
        _bypass(cluster, 2)
        assert _value(conn) == 1  # a hit: the database has 2
        assert _value(other) == 1  # the same entry for another session of the same user
        assert _value(conn, "SELECT v FROM qc WHERE id = 1") == 2  # no hint: not from the cache
        # a write to another table leaves the entry
        conn.execute("INSERT INTO qc_other VALUES (1)")
        assert _value(conn) == 1
        # a write through the proxy: the next read, from any session, is the new value
        conn.execute("UPDATE qc SET v = 3 WHERE id = 1")
        assert _value(conn) == 3
        _bypass(cluster, 4)
        assert _value(other) == 3  # stored again
        # a write inside a transaction: invalidated at COMMIT too, so no read in between lingers
        conn.execute("BEGIN")
        conn.execute("UPDATE qc SET v = 5 WHERE id = 1")
        assert _value(other) == 4  # uncommitted: the database still answers 4; not stored
        conn.execute("COMMIT")
        assert _value(other) == 5 and _value(conn) == 5
        # DDL drops everything
        _bypass(cluster, 6)
        conn.execute("CREATE TABLE IF NOT EXISTS qc_ddl (a int)")
        assert _value(conn) == 6


def test_unsafe_statements_and_an_open_write_transaction_are_not_cached(cluster, dbproxy_factory):
    proxy = dbproxy_factory(cluster, extra="[cache]\nenabled = true\npolicy = \"lfu\"\n")
    with _client(proxy) as conn:
        for sql in (HINT + "SELECT v FROM qc WHERE id = 1 FOR UPDATE",
                    HINT + "SELECT v + 0 * extract(epoch FROM now())::int FROM qc WHERE id = 1"):  # fmt: skip
            _bypass(cluster, 10)
            assert _value(conn, sql) == 10
            _bypass(cluster, 11)
            assert _value(conn, sql) == 11
        conn.execute("BEGIN")
        conn.execute("INSERT INTO qc_other VALUES (2)")
        _bypass(cluster, 12)
        assert _value(conn) == 12
        _bypass(cluster, 13)
        assert _value(conn) == 13  # inside a read-write transaction: never from the cache
        conn.execute("ROLLBACK")
        assert _value(conn) == 13  # stored now, outside the transaction
        conn.execute("BEGIN READ ONLY")
        _bypass(cluster, 14)
        assert _value(conn) == 14  # nor inside a read-only one
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute(READ)  # the server's answer in a failed transaction, not a cached one
        conn.execute("ROLLBACK")


def test_cache_off_by_default(cluster, dbproxy_factory):
    proxy = dbproxy_factory(cluster)
    with _client(proxy) as conn:
        _bypass(cluster, 20)
        assert _value(conn) == 20
        _bypass(cluster, 21)
        assert _value(conn) == 21


async def test_a_prepared_write_executed_again_invalidates_again(cluster, dbproxy_factory):
    # asyncpg prepares the UPDATE once; the second execution is Bind/Execute/Sync of that name.
    proxy = dbproxy_factory(cluster, extra="[cache]\nenabled = true\n")
    writer = await asyncpg.connect(proxy.dsn())
    try:
        with _client(proxy) as reader:
            for v in (30, 31, 32):
                await writer.execute("UPDATE qc SET v = $1 WHERE id = 1", v)
                assert _value(reader) == v
                _bypass(cluster, 0)
                assert _value(reader) == v  # from the cache until the next write
    finally:
        await writer.close()
