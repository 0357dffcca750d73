"""The query cache for the extended protocol (issue 20): asyncpg and psycopg statements prepared
and bound (Parse/Bind/Execute), real PostgreSQL.

Differential: the same client code runs against the primary directly and through the proxy; the
rows, their Python types and the column descriptions must be the same, on the miss that fills
an entry and on the hits that follow. That the hits are hits is seen as in the other cache tests:
a write made directly on the primary (bypassing the proxy) changes the database, not the answer."""

from __future__ import annotations

import asyncpg
import psycopg
import pytest

from tests.integration.qcacheproc import cache_dbproxy, purge_all

HINT = "/* tierproxy:cache ttl=60 */ "
QUERIES = [
    # (sql with $n placeholders, args)
    (HINT + "SELECT id, n, t, ts, j, b, arr, nul, num FROM qx WHERE id = $1", (1,)),
    (HINT + "SELECT id, t FROM qx WHERE t = $1 AND n > $2 ORDER BY id", ("two", 0)),
    (HINT + "SELECT count(*), sum(n) FROM qx WHERE id = ANY($1::int[])", ([1, 2, 3],)),
    (HINT + "SELECT id FROM qx WHERE id > 100", ()),  # no rows
]


@pytest.fixture(scope="module")
def shared_proxy(pg_cluster, tmp_path_factory):
    """One dbproxy with the cache for the module's tests (each empties its cache first)."""
    with cache_dbproxy(pg_cluster, tmp_path_factory.mktemp("qx")) as proxy:
        yield proxy


@pytest.fixture
def proxy(shared_proxy, cluster):
    purge_all(shared_proxy)  # the tables were re-created directly, bypassing the proxy
    return shared_proxy


@pytest.fixture
def cluster(pg_cluster):
    pg_cluster.primary.psql(
        "DROP TABLE IF EXISTS qx; CREATE TABLE qx (id int PRIMARY KEY, n bigint, t text, ts timestamptz,"
        " j jsonb, b bytea, arr int[], nul text, num numeric);"
        "INSERT INTO qx VALUES (1, 10, 'one', '2026-01-02 03:04:05+00', '{\"a\": [1, 2]}', '\\x00ff', '{1,2}',"
        " NULL, 1.50), (2, 20, 'two', '2026-02-03 04:05:06+00', 'null', '\\x', '{}', NULL, -2),"
        " (3, 30, 'two', NULL, '[]', NULL, NULL, 'x', 3e10)"
    )
    pg_cluster.wait_for_replicas_caught_up()
    return pg_cluster


def _bypass(cluster, v):
    cluster.primary.psql(f"UPDATE qx SET n = {v}, t = 'changed{v}', num = {v}")
    cluster.wait_for_replicas_caught_up()


def _restore(cluster):
    cluster.primary.psql("UPDATE qx SET n = id * 10, t = CASE id WHEN 1 THEN 'one' ELSE 'two' END,"
                         " num = CASE id WHEN 1 THEN 1.50 WHEN 2 THEN -2 ELSE 3e10 END")  # fmt: skip
    cluster.wait_for_replicas_caught_up()


async def _asyncpg_answers(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        out = []
        for sql, args in QUERIES:
            stmt = await conn.prepare(sql)
            rows = await stmt.fetch(*args)
            out.append(([tuple(r.items()) for r in rows], [(a.name, a.type.name) for a in stmt.get_attributes()]))
            out.append([tuple(r.items()) for r in await conn.fetch(sql, *args)])  # the statement cache
        return out
    finally:
        await conn.close()


def _psycopg_answers(dsn, prepare):
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=prepare) as conn:
        out = []
        for sql, args in QUERIES:
            text = sql.replace("$1", "%s").replace("$2", "%s")
            for _ in range(3):  # with prepare_threshold 0: Parse once, then Bind/Execute on the name
                cur = conn.execute(text, args)
                out.append((cur.fetchall(), [(c.name, c.type_code) for c in cur.description], cur.rowcount))
            cur = conn.execute(text, args, binary=True)  # binary results: another key, same rows
            out.append((cur.fetchall(), [(c.name, c.type_code) for c in cur.description]))
        return out


async def test_asyncpg_direct_and_through_the_cache_see_the_same(cluster, proxy):
    direct = await _asyncpg_answers(cluster.primary.dsn)
    assert direct[0][0][0][0] == ("id", 1) and len(direct) == 2 * len(QUERIES)
    assert await _asyncpg_answers(proxy.dsn()) == direct  # misses, then hits
    _bypass(cluster, 7)
    try:
        assert await _asyncpg_answers(proxy.dsn()) == direct  # all hits: the database changed
        assert await _asyncpg_answers(cluster.primary.dsn) != direct
        # A write through the proxy: the next read of any key of that table is the new value.
        conn = await asyncpg.connect(proxy.dsn())
        try:
            await conn.execute("UPDATE qx SET n = $1 WHERE id = 1", 8)
            assert await conn.fetchval(QUERIES[0][0].replace("id, n, t, ts, j, b, arr, nul, num", "n"), 1) == 8
            assert await conn.fetchval(QUERIES[0][0].replace("id, n, t, ts, j, b, arr, nul, num", "n"), 1) == 8
            assert (await conn.fetch(*QUERIES[0][:1], 1))[0]["n"] == 8
            # Other parameter values are other keys.
            assert (await conn.fetch(QUERIES[0][0], 2))[0]["n"] == 7
        finally:
            await conn.close()
    finally:
        _restore(cluster)


@pytest.mark.parametrize("prepare", [None, 0])
def test_psycopg_direct_and_through_the_cache_see_the_same(cluster, proxy, prepare):
    direct = _psycopg_answers(cluster.primary.dsn, prepare)
    assert _psycopg_answers(proxy.dsn(), prepare) == direct
    _bypass(cluster, 9)
    try:
        assert _psycopg_answers(proxy.dsn(), prepare) == direct  # hits, in both result formats
        assert _psycopg_answers(cluster.primary.dsn, prepare) != direct
        with psycopg.connect(proxy.dsn(), autocommit=True, prepare_threshold=prepare) as conn:
            sql = QUERIES[0][0].replace("$1", "%s")
            conn.execute("BEGIN")
            assert conn.execute(sql, (1,)).fetchone()[1] == 9  # in a transaction: never from the cache
            conn.execute("COMMIT")
            conn.execute("DELETE FROM qx WHERE id = 3")  # through the proxy: invalidates qx
            assert conn.execute(sql, (1,)).fetchone()[1] == 9
            assert conn.execute(sql, (3,)).fetchone() is None
    finally:
        cluster.primary.psql("INSERT INTO qx VALUES (3, 30, 'two', NULL, '[]', NULL, NULL, 'x', 3e10)"
                             " ON CONFLICT DO NOTHING")  # fmt: skip
        _restore(cluster)
