"""Two-phase commit and the primary's own state through `tierproxy dbproxy` (issue 12, item 7).

Each scenario runs twice, directly against the primary and through the proxy, and must give the
same answers: psycopg's tpc_begin/tpc_prepare/tpc_recover/tpc_commit/tpc_rollback, and the same
with raw SQL (PREPARE TRANSACTION, pg_prepared_xacts, COMMIT/ROLLBACK PREPARED). A standby's
pg_prepared_xacts is empty until it replays the PREPARE, so a recovery read sent to a replica
finds nothing; the replicas are paused here to make that certain.
"""

from __future__ import annotations

import asyncio
import itertools
import os

import asyncpg
import psycopg
import pytest

from tests.integration.test_dbproxy_consistency import ROUTING, replay_paused

_runs = itertools.count(1)


def _tpc_scenario(dsn: str, table: str) -> list[object]:
    tag = f"{os.getpid()}-{next(_runs)}"
    out: list[object] = []
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    # psycopg's two-phase API: prepare on one connection, recover and finish on another.
    for i, finish in ((1, "commit"), (2, "rollback")):
        conn = psycopg.connect(dsn)  # not `with`: its exit would commit(), refused after a prepare
        try:
            xid = conn.xid(4711, f"tierproxy-{tag}-{i}", "branch")
            conn.tpc_begin(xid)
            conn.execute(f"INSERT INTO {table} VALUES (%s)", (i,))
            conn.tpc_prepare()
        finally:
            conn.close()
        with psycopg.connect(dsn, autocommit=True) as other:
            # Real PIDs: the session's own backend, as the server and pg_stat_activity know it.
            pid = other.info.backend_pid
            out.append(("pid", other.execute("SELECT pg_backend_pid() = %s", (pid,)).fetchone(),
                        other.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()))
            # The prepared transaction still holds its lock, owned by no backend.
            out.append(("locked", other.execute(
                "SELECT count(*) FROM pg_locks WHERE pid IS NULL AND relation = %s::regclass", (table,)).fetchone()))
            found = [x for x in other.tpc_recover() if x.gtrid == f"tierproxy-{tag}-{i}"]
            out.append(("recovered", i, [(x.format_id, x.gtrid.replace(tag, "TAG"), x.bqual, x.database) for x in found]))
            assert found, "the prepared transaction was not recovered"
            (other.tpc_commit if finish == "commit" else other.tpc_rollback)(found[0])
            out.append(("after", i, other.execute(f"SELECT array_agg(id ORDER BY id) FROM {table}").fetchone()))
    # The same with psycopg's own tpc_commit on the preparing connection.
    with psycopg.connect(dsn) as conn:
        conn.tpc_begin(conn.xid(4711, f"tierproxy-{tag}-3", "branch"))
        conn.execute(f"INSERT INTO {table} VALUES (3)")
        conn.tpc_prepare()
        conn.tpc_commit()
    # Raw SQL, autocommit: each statement routed on its own.
    gid = f"raw-{tag}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {table} VALUES (4)")
        conn.execute(f"PREPARE TRANSACTION '{gid}'")
        out.append(("prepared", conn.execute("SELECT gid = %s, database FROM pg_prepared_xacts WHERE gid = %s",
                                             (gid, gid)).fetchall()))  # fmt: skip
        out.append(("count", conn.execute("SELECT count(*) FROM pg_prepared_xacts WHERE gid = %s", (gid,)).fetchone()))
        conn.execute(f"COMMIT PREPARED '{gid}'")
        out.append(("left", conn.execute("SELECT count(*) FROM pg_prepared_xacts WHERE gid = %s", (gid,)).fetchone()))
        out.append(("rows", conn.execute(f"SELECT array_agg(id ORDER BY id) FROM {table}").fetchone()))
        conn.execute(f"DROP TABLE {table}")
    return out


def test_two_phase_commit_gives_the_same_answers_direct_and_through_the_proxy(pg_cluster, dbproxy_factory):
    proxy = dbproxy_factory(pg_cluster, extra=ROUTING)

    async def both() -> tuple[list[object], list[object]]:
        async with replay_paused(pg_cluster):
            direct = await asyncio.to_thread(_tpc_scenario, pg_cluster.primary.dsn, f"tpc_direct_{os.getpid()}")
            proxied = await asyncio.to_thread(_tpc_scenario, proxy.dsn(), f"tpc_direct_{os.getpid()}")
        return direct, proxied

    direct, proxied = asyncio.run(both())
    assert direct[0] == ("pid", (True,), (1,)) and direct[1] == ("locked", (1,))  # the scenario itself works
    assert direct[2][2] and direct[-1] == ("rows", ([1, 3, 4],))
    assert proxied == direct


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM pg_stat_replication",
    "SELECT count(*) FROM pg_stat_wal_receiver",
])  # fmt: skip
async def test_views_a_standby_answers_differently_are_read_on_the_primary(pg_cluster, dbproxy_factory, sql):
    proxy = dbproxy_factory(pg_cluster, extra=ROUTING)
    direct = await asyncpg.connect(pg_cluster.primary.dsn)
    through = await asyncpg.connect(proxy.dsn())
    try:
        assert await through.fetchval("SELECT pg_is_in_recovery()")  # plain reads do reach replicas
        if "pg_stat_replication" in sql:
            assert await direct.fetchval(sql) == len(pg_cluster.replicas)
        assert await through.fetchval(sql) == await direct.fetchval(sql)
        # The session's backend PID is one of the primary's backends.
        pid = await through.fetchval("SELECT pg_backend_pid()")
        assert await direct.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) == 1
    finally:
        await direct.close()
        await through.close()
