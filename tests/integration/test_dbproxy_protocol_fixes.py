"""Protocol behaviour real clients depend on, through `tierproxy dbproxy` exactly as direct
(issue 12, items 1-3).

- asyncpg's close() after a prepare (Parse/Describe/Flush, no Sync, then Terminate) returns at once
  and leaves no server backend inside a transaction.
- A Parse of a name the client already has answers 42P05 and keeps the old statement; a failed
  Parse leaves no statement behind. Checked differentially: the same bytes to the primary directly
  and through the proxy give the same messages.
- A server error in the middle of an unsynced pipeline reaches the client before it sends Sync,
  as direct (PostgreSQL flushes errors at once; asyncpg's executemany stops at the first one).
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import psycopg
import pytest

from proxy.devstack.poll import wait_until
from proxy.pgwire import encode
from proxy.pgwire.messages import ErrorResponse, ReadyForQuery
from tests.integration.pgraw import RawPg, shape


@pytest.fixture(scope="module")
def pipe_table(pg_cluster, dbproxy):
    pg_cluster.primary.psql("DROP TABLE IF EXISTS pipe_t; CREATE TABLE pipe_t (a int)")
    pg_cluster.wait_for_replicas_caught_up()
    return "pipe_t"


def _direct(pg_cluster) -> RawPg:
    p = pg_cluster.primary
    return RawPg(p.host, p.port, pg_cluster.user, pg_cluster.password)


def _proxied(dbproxy) -> RawPg:
    return RawPg(dbproxy.host, dbproxy.port, "app", "app-secret")


def _open_transactions(pg_cluster, app: str) -> list[tuple[int, str]]:
    """Backends (on any server) of the client named `app` inside a transaction: after an unsynced
    Parse the state says 'active' (it is updated at ReadyForQuery) but xact_start is set."""
    rows: list[tuple[int, str]] = []
    for server in pg_cluster.servers:
        with psycopg.connect(server.dsn, autocommit=True) as admin:
            rows += admin.execute("SELECT pid, state FROM pg_stat_activity WHERE application_name = %s"
                                  " AND xact_start IS NOT NULL", (app,)).fetchall()  # fmt: skip
    return rows


@pytest.mark.parametrize("sql", ["SELECT 1", "INSERT INTO pipe_t VALUES ($1)"])
async def test_asyncpg_close_after_a_prepare_returns_and_leaves_no_open_transaction(pg_cluster, dbproxy,
                                                                                    pipe_table, sql):  # fmt: skip
    app = f"close_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(dbproxy.dsn(), server_settings={"application_name": app})
    await conn.prepare(sql)  # Parse/Describe/Flush: the server's implicit transaction is open
    assert len(_open_transactions(pg_cluster, app)) == 1
    await asyncio.wait_for(conn.close(), 10)
    # The server connection left mid-group is dropped (its backend exits), never pooled dirty.
    wait_until(lambda: not _open_transactions(pg_cluster, app), 10, "no backend of the closed client in a transaction")


def _duplicate_parse_sequence(c: RawPg) -> list[tuple[object, ...]]:
    steps = [
        encode.parse("s1", "SELECT 1") + encode.sync(),
        encode.parse("s1", "SELECT 2") + encode.sync(),  # 42P05, s1 stays SELECT 1
        encode.bind("", "s1") + encode.execute() + encode.sync(),
        encode.close("S", "s1") + encode.parse("s1", "SELECT 3") + encode.bind("", "s1") + encode.execute()
        + encode.sync(),  # closed by the client: the name is free again
        encode.parse("s2", "SELEC 4") + encode.sync(),  # fails: no s2 afterwards
        encode.parse("s2", "SELECT 4") + encode.bind("", "s2") + encode.execute() + encode.sync(),
        # s3 is prepared outside a transaction (a replica, through the proxy); inside BEGIN (the
        # primary) a Parse of s3 must still find it: 42P05, the transaction fails.
        encode.parse("s3", "SELECT 5") + encode.sync(),
        encode.query("BEGIN"),
        encode.parse("s3", "SELECT 6") + encode.sync(),
        encode.query("ROLLBACK"),
        encode.bind("", "s3") + encode.execute() + encode.sync(),
        # a pipeline: a failed Parse of s5, then s5 again in the next group (it succeeds), then used
        encode.parse("s5", "SELEC 9") + encode.sync() + encode.parse("s5", "SELECT 9") + encode.sync()
        + encode.bind("", "s5") + encode.execute() + encode.sync(),
        encode.query("SELECT 1"),  # through the proxy: a replica, where s5 was never prepared
        encode.bind("", "s5") + encode.execute() + encode.sync(),
        # a pipeline: the second Parse of s4 fails, the rest of its group is skipped
        encode.parse("s4", "SELECT 7") + encode.parse("s4", "SELECT 8") + encode.bind("", "s4") + encode.execute()
        + encode.sync() + encode.bind("", "s4") + encode.execute() + encode.sync(),
    ]  # fmt: skip
    out: list[tuple[object, ...]] = []
    for step in steps:
        c.send(step)
        for _ in range(step.count(encode.sync()) + step.count(b"Q\0")):
            out += shape(c.until(ReadyForQuery))
    return out


def test_a_parse_of_an_existing_statement_name_answers_42p05_as_direct(pg_cluster, dbproxy):
    direct = _direct(pg_cluster)
    try:
        expected = _duplicate_parse_sequence(direct)
    finally:
        direct.close()
    assert ("ErrorResponse", "42P05", 'prepared statement "s1" already exists') in expected
    proxied = _proxied(dbproxy)
    try:
        assert _duplicate_parse_sequence(proxied) == expected
    finally:
        proxied.close()


def _error_before_sync(c: RawPg) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """An unsynced pipeline of three INSERTs, the second failing: what arrives before Sync, then
    the rest after it."""
    c.send(b"".join(encode.parse("", f"INSERT INTO pipe_t {values}") + encode.bind("", "") + encode.execute()
                    for values in ("VALUES (1)", "SELECT 1/0", "VALUES (3)")))  # fmt: skip
    early = shape(c.until(ErrorResponse))
    c.send(encode.sync())
    rest = shape(c.until(ReadyForQuery))
    # several Sync groups at once, the middle one failing: each answered in order
    c.send(b"".join(encode.parse("", f"SELECT {x}") + encode.bind("", "") + encode.execute() + encode.sync()
                    for x in ("10", "1/0", "12")))  # fmt: skip
    for _ in range(3):
        rest += shape(c.until(ReadyForQuery))
    return early, rest


def test_an_error_in_an_unsynced_pipeline_reaches_the_client_at_once_as_direct(pg_cluster, dbproxy, pipe_table):
    direct = _direct(pg_cluster)
    try:
        expected = _error_before_sync(direct)
    finally:
        direct.close()
    assert expected[0][-1] == ("ErrorResponse", "22012", "division by zero")
    proxied = _proxied(dbproxy)
    try:
        assert _error_before_sync(proxied) == expected
    finally:
        proxied.close()
    # Nothing of the failed implicit transaction was committed.
    assert pg_cluster.primary.psql("SELECT count(*) FROM pipe_t WHERE a IN (1, 3)").strip() == "0"
