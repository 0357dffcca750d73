"""Read consistency through `tierproxy dbproxy` across clients (issue 12, items 6, 8b, 8c).

Staleness is made deterministic: `pg_wal_replay_pause()` on both replicas (resumed at teardown),
so a read a replica answers misses whatever the primary committed after the pause. The proxies
here accept any lag (`max_lag_seconds`/`max_lag_bytes` huge), so paused replicas stay usable and
reads that may go to them do: each test checks that a plain read still lands on a replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
from collections.abc import AsyncIterator

import asyncpg
import pytest

from proxy.dbproxy.causal import CommitClock, WalPosition
from proxy.devstack.poll import wait_until_async
from proxy.pgwire import encode
from proxy.pgwire.messages import DataRow, ErrorResponse, ReadyForQuery
from tests.integration.test_dbproxy_malformed import Raw

ROUTING = "[routing]\nmax_lag_seconds = 86400\nmax_lag_bytes = 1099511627776\n"
_names = itertools.count(1)


def _name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_names)}"


@contextlib.asynccontextmanager
async def replay_paused(cluster) -> AsyncIterator[None]:
    """Both replicas stop applying WAL (they still receive it) until the block ends."""
    conns = [await asyncpg.connect(r.dsn) for r in cluster.replicas]
    try:
        for c in conns:
            await c.execute("SELECT pg_wal_replay_pause()")
        for c in conns:
            await wait_until_async(
                lambda c=c: c.fetchval("SELECT pg_get_wal_replay_pause_state() = 'paused'"), 10.0, "replay paused"
            )
        yield
    finally:
        for c in conns:
            await c.execute("SELECT pg_wal_replay_resume()")
            await c.close()


async def _on_replica(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval("SELECT pg_is_in_recovery()")


PSQL = shutil.which("psql")


def _psql_describe(proxy, table: str) -> subprocess.CompletedProcess[str]:
    assert PSQL is not None, "psql is needed (Debian package postgresql-client)"
    env = {**os.environ, "PGPASSWORD": "app-secret", "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run([PSQL, "-h", "127.0.0.1", "-p", str(proxy.port), "-U", "app", "-d", "postgres",
                           "-X", "-c", rf"\d {table}"],
                          check=False, capture_output=True, text=True, env=env, timeout=60)  # fmt: skip


# SQLAlchemy 2's PostgreSQL dialect, has_table (what an ORM asks before CREATE TABLE).
HAS_TABLE = (
    "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace "
    "ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace "
    "WHERE pg_catalog.pg_class.relname = $1 AND pg_catalog.pg_class.relkind = ANY (ARRAY['r', 'p', 'f', 'v', 'm']) "
    "AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != 'pg_catalog'"
)


async def test_catalog_reads_see_a_table_another_client_just_created(pg_cluster, dbproxy_factory):
    proxy = dbproxy_factory(pg_cluster, extra=ROUTING)
    table = _name("created_elsewhere")
    async with replay_paused(pg_cluster):
        a = await asyncpg.connect(proxy.dsn())
        b = await asyncpg.connect(proxy.dsn())
        try:
            await a.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
            assert await _on_replica(b)  # b's plain reads still go to the (paused) replicas
            # An ORM's has_table, then its CREATE TABLE: the table is there.
            assert await b.fetchval(HAS_TABLE, table) == table
            assert await b.fetchval("SELECT to_regclass($1) IS NOT NULL", table) is True
            assert await b.fetchval(f"SELECT '{table}'::regclass::text") == table
            assert await b.fetchval("SELECT count(*) FROM information_schema.tables WHERE table_name = $1", table) == 1
            described = await asyncio.to_thread(_psql_describe, proxy, table)
            assert described.returncode == 0 and f'Table "public.{table}"' in described.stdout, described
            with pytest.raises(asyncpg.DuplicateTableError):
                await b.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
            # The same after a DROP: the catalogs no longer show it.
            await a.execute(f"DROP TABLE {table}")
            assert await b.fetchval(HAS_TABLE, table) is None
            assert await _on_replica(b)
        finally:
            await a.close()
            await b.close()


async def test_global_mode_reads_see_every_clients_acknowledged_commits(pg_cluster, dbproxy_factory):
    table = _name("global_t")
    pg_cluster.primary.psql(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    await pg_cluster.wait_for_replicas_caught_up_async()
    proxy = dbproxy_factory(pg_cluster, extra=ROUTING + 'read_your_writes = "global"\n')
    b = await asyncpg.connect(proxy.dsn())
    try:
        async with replay_paused(pg_cluster):
            assert await _on_replica(b)  # nothing acknowledged yet: reads go to replicas
            writers = [await asyncpg.connect(proxy.dsn()) for _ in range(3)]
            try:
                for i, w in enumerate(writers, 1):
                    await w.execute(f"INSERT INTO {table} VALUES ($1)", i)
                    # Each commit, acknowledged to another client, is seen by b's next read.
                    assert await b.fetchval(f"SELECT count(*) FROM {table}") == i
            finally:
                for w in writers:
                    await w.close()
        # Once the replicas have replayed past the newest commit, reads go to them again.
        await pg_cluster.wait_for_replicas_caught_up_async()

        async def from_a_replica() -> int | None:
            n, on_replica = await b.fetchrow(f"SELECT count(*), pg_is_in_recovery() FROM {table}")
            return n if on_replica else None

        assert await wait_until_async(from_a_replica, 15.0, "a read answered by a caught-up replica") == 3
    finally:
        await b.close()


async def test_global_mode_holds_across_workers(pg_cluster, dbproxy_factory):
    # Eight readers on two workers (SO_REUSEPORT spreads connections by address): with counts
    # kept per worker, the readers on the writer's other worker would read the paused replicas.
    table = _name("global_workers_t")
    pg_cluster.primary.psql(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    await pg_cluster.wait_for_replicas_caught_up_async()
    proxy = dbproxy_factory(pg_cluster, extra=ROUTING + 'read_your_writes = "global"\n', workers=2)
    readers = [await asyncpg.connect(proxy.dsn()) for _ in range(8)]
    writer = await asyncpg.connect(proxy.dsn())
    try:
        async with replay_paused(pg_cluster):
            assert all([await _on_replica(r) for r in readers])
            for i in (1, 2):
                await writer.execute(f"INSERT INTO {table} VALUES ($1)", i)
                assert [await r.fetchval(f"SELECT count(*) FROM {table}") for r in readers] == [i] * 8
    finally:
        for c in (*readers, writer):
            await c.close()


async def _raw_until_ready(raw: Raw) -> list[object]:
    out = []
    while True:
        m = await asyncio.to_thread(raw.recv)
        assert m is not None, "the proxy closed the connection"
        out.append(m)
        if isinstance(m, ReadyForQuery):
            return out


async def _unnamed_statement_survives_a_write(proxy, table: str) -> list[object]:
    raw = Raw(proxy.port)
    try:
        await asyncio.to_thread(raw.login)
        # The writes use a named statement: a simple Query, or a Parse of the unnamed one, would
        # destroy the unnamed statement on PostgreSQL too. A write first, so that (with replicas)
        # the unnamed statement follows the session to the primary (read-your-writes).
        write = encode.parse("w", f"INSERT INTO {table} VALUES ($1)")
        raw.send(write + encode.bind("", "w", [b"1"]) + encode.execute() + encode.sync())
        await _raw_until_ready(raw)
        raw.send(encode.parse("", "SELECT $1::int + 1") + encode.sync())
        await _raw_until_ready(raw)
        raw.send(encode.bind("", "w", [b"2"]) + encode.execute() + encode.sync())
        await _raw_until_ready(raw)
        raw.send(encode.bind("", "", [b"41"]) + encode.execute() + encode.sync())
        return await _raw_until_ready(raw)
    finally:
        raw.close()


def _answer(messages: list[object]) -> list[object]:
    errors = [m.fields.get("M") for m in messages if isinstance(m, ErrorResponse)]
    assert not errors, errors
    return [m.values for m in messages if isinstance(m, DataRow)]


async def test_the_unnamed_statement_survives_a_write_with_replicas(pg_cluster, dbproxy_factory):
    table = _name("unnamed_t")
    pg_cluster.primary.psql(f"CREATE TABLE {table} (id int)")
    await pg_cluster.wait_for_replicas_caught_up_async()
    proxy = dbproxy_factory(pg_cluster)
    assert _answer(await _unnamed_statement_survives_a_write(proxy, table)) == [(b"42",)]


async def test_the_unnamed_statement_survives_a_write_without_replicas(pg_cluster_factory, dbproxy_factory):
    cluster = pg_cluster_factory(replicas=0)
    cluster.primary.psql("CREATE TABLE unnamed_t (id int)")
    proxy = dbproxy_factory(cluster)
    assert _answer(await _unnamed_statement_survives_a_write(proxy, "unnamed_t")) == [(b"42",)]
    # With no replica there is no bound to fetch: the proxy opened no LSN connection.
    assert cluster.primary.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tierproxy-lsn'") == "0"


async def test_a_read_after_commit_prepared_sees_what_it_committed(pg_cluster, dbproxy_factory):
    table, gid = _name("prepared_t"), _name("gid")
    pg_cluster.primary.psql(f"CREATE TABLE {table} (id int)")
    await pg_cluster.wait_for_replicas_caught_up_async()
    proxy = dbproxy_factory(pg_cluster, extra=ROUTING)
    conn = await asyncpg.connect(proxy.dsn())
    try:
        await conn.execute("BEGIN")
        await conn.execute(f"INSERT INTO {table} VALUES (1)")
        await conn.execute(f"PREPARE TRANSACTION '{gid}'")
        # The replicas replay the PREPARE, and the proxy sees that they did (a read of this
        # session reaches one again); then they stop before the COMMIT PREPARED.
        await pg_cluster.wait_for_replicas_caught_up_async()
        await wait_until_async(lambda: _on_replica(conn), 15.0, "a read on a replica after the PREPARE")
        async with replay_paused(pg_cluster):
            await conn.execute(f"COMMIT PREPARED '{gid}'")
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 1
            assert await _on_replica(conn) is False  # still owed: the replicas have not replayed it
    finally:
        await conn.close()
        leftover = pg_cluster.primary.psql(f"SELECT count(*) FROM pg_prepared_xacts WHERE gid = '{gid}'")
        if leftover != "0":
            pg_cluster.primary.psql(f"ROLLBACK PREPARED '{gid}'")


async def test_lsn_fetches_are_coalesced_on_the_proxys_own_connection(pg_cluster):
    primary = pg_cluster.primary

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(primary.dsn)

    clock = CommitClock(WalPosition(connect, 10.0), global_mode=True)
    try:
        before = primary.current_lsn()
        clock.acknowledged(False)
        results = await asyncio.gather(*(clock.covering(1) for _ in range(20)))
        assert results == [True] * 20 and clock.fetches == 1
        assert clock.epochs.known_lsn is not None and clock.epochs.known_lsn >= before
        # A commit acknowledged while a fetch is in flight needs a fetch that starts after it.
        clock.acknowledged(False)
        first = asyncio.ensure_future(clock.covering(2))
        await asyncio.sleep(0)  # the first fetch is now in flight
        clock.acknowledged(True)
        assert await asyncio.gather(first, clock.covering(3)) == [True, True]
        assert clock.fetches == 3 and clock.epochs.known_commits == 3
        assert clock.epochs.ddl_lsn == clock.epochs.known_lsn
    finally:
        clock.close()
