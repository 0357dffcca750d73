"""Parity: the classifier against a real PostgreSQL's own idea of what a read-only session may run.

PostgreSQL refuses writes in a read-only transaction with SQLSTATE 25006
(read_only_sql_transaction), and a hot standby refuses them the same way ("cannot execute X during
recovery" is 25006 too). So, with the rows of tests/unit/test_dbproxy_classify.py:

- every statement the classifier sends to a REPLICA runs inside `BEGIN READ ONLY; ...; ROLLBACK` on
  the primary without 25006 (and without any error but the few listed in REPLICA_OTHER_ERRORS);
- every statement it sends to the PRIMARY as a write (WRITE, LOCKING, VOLATILE_FUNCTION) fails
  there with 25006, except the ones in WRITES_NOT_REFUSED: each says why the classifier sends it to
  the primary anyway (most are refused by a standby, which the standby test checks);
- every pair of reads and writes joined by ';' goes to the primary exactly when the server refuses
  the pair with 25006;
- with a streaming replica, the same replica-routed statements also run on a real hot standby, and
  the write rows and the primary-only transaction starts are refused by it.

Servers, first found wins: the `pg_cluster` fixture from tests/conftest.py; else
`proxy.devstack.postgres.start_pg_cluster()`; else the DSNs in TIERPROXY_PARITY_PRIMARY_DSN (and
optionally TIERPROXY_PARITY_REPLICA_DSN); else the module is skipped, saying so. Each test works in
a schema of its own, dropped afterwards, so a shared cluster is left as found.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import asyncpg
import pytest

from proxy.dbproxy.classify import Reason, Target, classify
from proxy.devstack.poll import PollTimeout, wait_until_async
from tests.unit.test_dbproxy_classify import READS, ROWS

READ_ONLY_SQLSTATE = "25006"
REPLAY_TIMEOUT = 10.0

SCHEMA_SQL = """
CREATE TABLE t (id int PRIMARY KEY, v text);
CREATE TABLE u (id int, v text);
CREATE SEQUENCE s;
CREATE MATERIALIZED VIEW mv AS SELECT 1 AS one;
CREATE PROCEDURE p(n int) LANGUAGE sql AS $$ INSERT INTO t VALUES (n, 'p') $$;
INSERT INTO t VALUES (1, 'a');
INSERT INTO u VALUES (1, 'a');
"""

# Arguments for the rows that use placeholders (run through the extended protocol).
ARGS: dict[str, tuple] = {
    "SELECT $1::int": (1,),
    "SELECT * FROM t WHERE id = $1 AND v = $2": (1, "a"),
    "SELECT * FROM t WHERE id = $1": (1,),
    "INSERT INTO t VALUES ($1, $2) RETURNING id": (2, "b"),
    "SELECT CASE WHEN $1 THEN setval('s', 1) END": (True,),
}

# Statements run first, in the same read-only transaction, so that the row can succeed.
_CURSOR = ["DECLARE c CURSOR FOR SELECT * FROM t"]
SETUP: dict[str, list[str]] = {
    "FETCH 10 FROM c": _CURSOR,
    "MOVE NEXT IN c": _CURSOR,
    "CLOSE c": _CURSOR,
    "DEALLOCATE p": ["PREPARE p AS SELECT 1"],
}

# Replica-routed rows that fail with another SQLSTATE, on any server, read-only or not.
REPLICA_OTHER_ERRORS: dict[str, str] = {
    "SELECT nextval FROM t": "42703",  # a column that t does not have: the row tests the parser
    "DISCARD ALL": "25001",  # cannot run inside a transaction block
    "/* tierproxy:replica */ SELECT frobnicate FROM WHERE": "42601",  # the hinted syntax error
}

# Write rows a read-only transaction on the primary accepts: why they go to the primary anyway.
WRITES_NOT_REFUSED: dict[str, str] = {
    "ANALYZE t": "allowed read-only; a standby refuses it",
    "CLUSTER t USING t_pkey": "allowed read-only; a standby refuses it",
    "NOTIFY c": "allowed read-only; a standby refuses it, and listeners are pinned to the primary",
    "NOTIFY c, 'payload'": "as NOTIFY c",
    "SELECT pg_notify('c', 'x')": "as NOTIFY c",
    "LOCK t": "allowed read-only; a standby refuses ACCESS EXCLUSIVE",
    "LOCK TABLE t IN ACCESS SHARE MODE": "locks must meet the writers' locks, on the primary",
    "DO $$ BEGIN PERFORM 1; END $$": "an anonymous block may write; its body is not looked into",
    "SELECT txid_current()": "assigns an xid; a standby refuses it",
    "SELECT pg_current_xact_id()": "assigns an xid; a standby refuses it",
    "SELECT pg_current_wal_lsn()": "the primary's WAL position; a standby refuses it (55000)",
    "SELECT pg_advisory_xact_lock(1)": "excludes only lockers on the same server",
    "SELECT pg_try_advisory_xact_lock(1, 2)": "excludes only lockers on the same server",
    "SELECT lo_create(0)": "allowed read-only; a standby refuses it (XX000, no OIDs in recovery)",
    "VACUUM t": "refused in any transaction block (25001); a standby refuses it",
    "SELECT currval('s')": "needs the session that ran nextval, on the primary (55000 here)",
    "SELECT lastval()": "needs the session that ran nextval, on the primary (55000 here)",
    # PostgreSQL refuses a data-modifying WITH below the top level (0A000) before the read-only
    # check; the classifier does not rely on that.
    "SELECT * FROM (WITH y AS (UPDATE t SET v = 'x' RETURNING *) SELECT * FROM y) AS sub": "0A000",
    "SELECT * FROM t WHERE id IN (WITH d AS (DELETE FROM u RETURNING id) SELECT id FROM d)": (
        "0A000"
    ),
    "WITH a AS (SELECT 1), b AS (WITH c AS (DELETE FROM t RETURNING 1) SELECT * FROM c) "
    "SELECT * FROM a, b": "0A000",
}
# Of those, the ones a hot standby runs too: routed to the primary by policy alone.
ALLOWED_ON_STANDBY = {
    "LOCK TABLE t IN ACCESS SHARE MODE",
    "DO $$ BEGIN PERFORM 1; END $$",
    "SELECT pg_advisory_xact_lock(1)",
    "SELECT pg_try_advisory_xact_lock(1, 2)",
}
# Write rows with side effects outside the transaction or the test's schema: never executed.
NOT_EXECUTED = {
    "COPY t TO '/tmp/t.csv'",  # writes a server file
    "COPY t TO PROGRAM 'cat'",  # runs a program on the server
    "CHECKPOINT",  # server-wide
    "SELECT pg_terminate_backend(123)",  # a pid on a possibly shared server
    "SELECT pg_reload_conf()",
    "SELECT pg_stat_reset()",  # other tests read backend statistics
    "SELECT * FROM pg_create_physical_replication_slot('x')",  # slots are not transactional
}
_WRITE_REASONS = {Reason.WRITE, Reason.LOCKING, Reason.VOLATILE_FUNCTION}


def _replica_rows() -> list[str]:
    out = []
    for sql, *_ in ROWS:
        d = classify(sql)
        if d.target is Target.REPLICA and d.reason is not Reason.EMPTY:
            out.append(sql)  # (EMPTY: nothing to run; asyncpg also mishandles EmptyQueryResponse)
    return out


def _write_rows() -> list[str]:
    out = []
    for sql, *_ in ROWS:
        d = classify(sql)
        moves = d.begins_transaction or d.ends_transaction  # would end our read-only wrapper
        if d.target is Target.PRIMARY and d.reason in _WRITE_REASONS and not moves:
            if sql not in NOT_EXECUTED:
                out.append(sql)
    return out


REPLICA_ROWS = _replica_rows()
WRITE_ROWS = _write_rows()
# Writes a read-only transaction refuses: the material for the multi-statement pairs.
REFUSED_WRITES = [sql for sql in WRITE_ROWS if sql not in WRITES_NOT_REFUSED and sql not in ARGS]


# -- servers -----------------------------------------------------------------------------------


@dataclass
class Servers:
    primary_dsn: str
    replica_dsns: list[str] = field(default_factory=list)


def _dsn_of(member: object) -> str:
    dsn = getattr(member, "dsn", member)
    return dsn() if callable(dsn) else str(dsn)


@pytest.fixture(scope="module")
def servers(request: pytest.FixtureRequest) -> Iterator[Servers]:
    try:
        cluster = request.getfixturevalue("pg_cluster")
    except pytest.FixtureLookupError:
        cluster = None
    if cluster is not None:
        replicas = getattr(cluster, "replicas", None) or []
        yield Servers(_dsn_of(cluster.primary), [_dsn_of(r) for r in replicas])
        return
    try:
        from proxy.devstack.postgres import start_pg_cluster  # type: ignore[import-not-found]
    except ImportError:
        start_pg_cluster = None
    if start_pg_cluster is not None:
        cluster = start_pg_cluster()
        try:
            replicas = getattr(cluster, "replicas", None) or []
            yield Servers(_dsn_of(cluster.primary), [_dsn_of(r) for r in replicas])
        finally:
            closer = getattr(cluster, "close", None) or getattr(cluster, "stop", None)
            if closer is not None:
                closer()
        return
    primary = os.environ.get("TIERPROXY_PARITY_PRIMARY_DSN")
    if primary:
        replica = os.environ.get("TIERPROXY_PARITY_REPLICA_DSN")
        yield Servers(primary, [replica] if replica else [])
        return
    pytest.skip(
        "no PostgreSQL to check parity against: no pg_cluster fixture in tests/conftest.py, no "
        "proxy.devstack.postgres.start_pg_cluster, and TIERPROXY_PARITY_PRIMARY_DSN is not set"
    )


@contextlib.asynccontextmanager
async def parity_schema(servers: Servers) -> AsyncIterator[str]:
    """A fresh schema with t, u, s, mv and p on the primary, replayed on every replica."""
    schema = f"parity_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(servers.primary_dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}; SET search_path = {schema};" + SCHEMA_SQL)
        lsn = await conn.fetchval("SELECT pg_current_wal_lsn()")
        for dsn in servers.replica_dsns:
            await _wait_replayed(dsn, lsn)
        yield schema
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def _wait_replayed(dsn: str, lsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        query = "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn"
        await wait_until_async(lambda: conn.fetchval(query, lsn), REPLAY_TIMEOUT, f"replay of {lsn}")
    except PollTimeout:
        pytest.fail(f"replica did not replay {lsn} within {REPLAY_TIMEOUT}s")
    finally:
        await conn.close()


async def _connect(dsn: str, schema: str) -> asyncpg.Connection:
    # No statement cache: rows such as DEALLOCATE ALL would drop asyncpg's own statements.
    return await asyncpg.connect(
        dsn, statement_cache_size=0, server_settings={"search_path": schema}
    )


async def run_read_only(conn: asyncpg.Connection, sql: str) -> str | None:
    """Run sql in `BEGIN READ ONLY ... ROLLBACK`; the SQLSTATE it failed with, or None."""
    await conn.execute("BEGIN READ ONLY")
    try:
        for setup in SETUP.get(sql, ()):
            await conn.execute(setup)
        if sql in ARGS:
            await conn.fetch(sql, *ARGS[sql])
        else:
            await conn.execute(sql)  # simple protocol: multi-statement strings work
        return None
    except asyncpg.PostgresError as exc:
        return exc.sqlstate
    finally:
        await conn.execute("ROLLBACK")
        await conn.execute("DISCARD ALL")  # PREPARE, LISTEN, advisory locks survive ROLLBACK


def _replica_dsn(servers: Servers) -> str:
    if not servers.replica_dsns:
        pytest.skip("the PostgreSQL found has no streaming replica")
    return servers.replica_dsns[0]


# -- tests -------------------------------------------------------------------------------------


def test_row_lists_are_substantial():
    assert len(REPLICA_ROWS) >= 40 and len(WRITE_ROWS) >= 50 and len(REFUSED_WRITES) >= 30
    known = {sql for sql, *_ in ROWS} | set(READS)
    for listed in (REPLICA_OTHER_ERRORS, WRITES_NOT_REFUSED, SETUP, ARGS):
        assert set(listed) <= known, set(listed) - known


async def test_replica_routed_statements_run_read_only_on_the_primary(servers):
    async with parity_schema(servers) as schema:
        conn = await _connect(servers.primary_dsn, schema)
        try:
            got = {sql: await run_read_only(conn, sql) for sql in REPLICA_ROWS + READS}
        finally:
            await conn.close()
    refused = {sql: state for sql, state in got.items() if state == READ_ONLY_SQLSTATE}
    assert refused == {}, "the classifier sends these to a replica, which would refuse them"
    unexpected = {
        s: e for s, e in got.items() if e is not None and REPLICA_OTHER_ERRORS.get(s) != e
    }
    assert unexpected == {}


async def test_write_routed_statements_are_refused_read_only(servers):
    async with parity_schema(servers) as schema:
        conn = await _connect(servers.primary_dsn, schema)
        try:
            got = {sql: await run_read_only(conn, sql) for sql in WRITE_ROWS}
        finally:
            await conn.close()
    not_refused = {
        sql: state
        for sql, state in got.items()
        if state != READ_ONLY_SQLSTATE and sql not in WRITES_NOT_REFUSED
    }
    assert not_refused == {}, "sent to the primary as writes, yet a read-only transaction runs them"
    # The exceptions list must stay honest: an entry the server now refuses is stale.
    stale = [sql for sql in WRITES_NOT_REFUSED if got.get(sql) == READ_ONLY_SQLSTATE]
    assert stale == []


async def test_multi_statement_pairs_go_to_the_primary_iff_refused(servers):
    reads = [sql for sql in READS if sql not in ARGS]  # placeholders need the extended protocol
    pairs = [(a, b) for a in reads for b in REFUSED_WRITES]
    pairs += [(b, a) for a, b in pairs] + [(a, b) for a in reads for b in reads if a != b]
    async with parity_schema(servers) as schema:
        conn = await _connect(servers.primary_dsn, schema)
        try:
            mismatches = []
            for a, b in pairs:
                sql = f"{a}; {b}"
                refused = await run_read_only(conn, sql) == READ_ONLY_SQLSTATE
                if (classify(sql).target is Target.PRIMARY) != refused:
                    mismatches.append(sql)
        finally:
            await conn.close()
    assert mismatches == []


async def test_against_a_hot_standby(servers):
    replica = _replica_dsn(servers)
    primary_only_starts = [
        sql
        for sql, *_ in ROWS
        if classify(sql).detail in ("begin-serializable-read-only", "set-transaction")
        or classify(sql).detail == "begin"
        and "READ WRITE" in sql
    ]
    async with parity_schema(servers) as schema:
        conn = await _connect(replica, schema)
        try:
            assert await conn.fetchval("SELECT pg_is_in_recovery()")
            reads = {sql: await run_read_only(conn, sql) for sql in REPLICA_ROWS + READS}
            writes = {sql: await run_read_only(conn, sql) for sql in WRITE_ROWS}
            starts = {sql: await run_read_only(conn, sql) for sql in primary_only_starts}
        finally:
            await conn.close()
    failed_reads = {
        s: e for s, e in reads.items() if e is not None and REPLICA_OTHER_ERRORS.get(s) != e
    }
    assert failed_reads == {}, "routed to a replica, refused by a real hot standby"
    accepted = [s for s, e in writes.items() if e is None and s not in ALLOWED_ON_STANDBY]
    assert accepted == [], "sent to the primary as writes, yet a hot standby runs them"
    # BEGIN/SET TRANSACTION READ WRITE or SERIALIZABLE: a standby refuses them (0A000).
    assert len(starts) >= 4 and all(e is not None for e in starts.values()), starts
