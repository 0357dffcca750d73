"""Request coalescing in the query cache (issue 20): N clients missing one key at once, one server
query, real PostgreSQL.

The statement calls `qc_slow(i)`, a function that takes its time and counts its calls in a
sequence (nextval is not transactional: every call counts). What is asserted is the count, not a
time: with N concurrent clients each running the statement once, the server ran it exactly
once, whether a client joined the leader's fill or came after it and hit the entry."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from tests.integration.qcacheproc import cache_dbproxy, purge_all

N = 8


@pytest.fixture(scope="module")
def shared_proxy(pg_cluster, tmp_path_factory):
    """One dbproxy with the cache for the module's tests (each empties its cache first)."""
    with cache_dbproxy(pg_cluster, tmp_path_factory.mktemp("qcc")) as proxy:
        yield proxy


@pytest.fixture
def proxy(shared_proxy, cluster):
    purge_all(shared_proxy)  # the tables were re-created directly, bypassing the proxy
    return shared_proxy


@pytest.fixture
def cluster(pg_cluster):
    pg_cluster.primary.psql(
        "DROP TABLE IF EXISTS qcc; CREATE TABLE qcc (id int PRIMARY KEY, v int); INSERT INTO qcc VALUES (1, 5), (2, 6);"
        "DROP SEQUENCE IF EXISTS qc_calls; CREATE SEQUENCE qc_calls;"
        "CREATE OR REPLACE FUNCTION qc_slow(i int) RETURNS int LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(0.5); PERFORM nextval('qc_calls'); RETURN i * 2; END $$"
    )
    pg_cluster.wait_for_replicas_caught_up()
    return pg_cluster


def _calls(cluster) -> int:
    out = cluster.primary.psql("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM qc_calls")
    return int(out.strip())


async def _run(proxy, sql, args, *, simple):
    conns = [await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True,
                                                   cursor_factory=psycopg.AsyncClientCursor if simple else None)
             for _ in range(N)]  # fmt: skip
    try:
        for c in conns:  # every session logged in and idle: the statements below go out together
            await c.execute("SELECT 1")

        async def one(c):
            cur = await c.execute(sql, args)
            return await cur.fetchall()

        return await asyncio.gather(*(one(c) for c in conns))
    finally:
        for c in conns:
            await c.close()


@pytest.mark.parametrize("simple", [True, False], ids=["simple-query", "extended"])
async def test_concurrent_misses_of_one_key_run_one_server_query(cluster, proxy, simple):
    sql = "/* tierproxy:cache ttl=60 */ SELECT qc_slow(v), id FROM qcc WHERE id = %s"
    answers = await _run(proxy, sql, (1,), simple=simple)
    assert answers == [[(10, 1)]] * N
    assert _calls(cluster) == 1
    # Another key: another server query, coalesced again.
    answers = await _run(proxy, sql, (2,), simple=simple)
    assert answers == [[(12, 2)]] * N and _calls(cluster) == 2
    # A leader whose statement fails: every joiner runs its own and gets its own error.
    bad = "/* tierproxy:cache ttl=60 */ SELECT qc_slow(v) / (v - 5), id FROM qcc WHERE id = %s"
    conns = [await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True,
                                                   cursor_factory=psycopg.AsyncClientCursor if simple else None)
             for _ in range(3)]  # fmt: skip
    try:
        results = await asyncio.gather(*(c.execute(bad, (1,)) for c in conns), return_exceptions=True)
        assert all(isinstance(r, psycopg.errors.DivisionByZero) for r in results), results
        assert _calls(cluster) == 2 + 3
        for c in conns:  # and each session goes on
            assert await (await c.execute("SELECT 7")).fetchone() == (7,)
    finally:
        for c in conns:
            await c.close()
