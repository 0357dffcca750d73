"""Protocol behaviour through `tierproxy shard` on four real PostgreSQL shards: client pipelines
(psycopg's pipeline mode, several Syncs in flight; asyncpg's executemany), and `timeouts.query`
(a statement running longer is canceled on its shard(s) and the client gets 57014, as with the
server's own statement_timeout; the session goes on), and when the router reads a client whose
statement is running (it keeps reading until more arrives, then pauses)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest

from proxy.devstack.poll import wait_until
from proxy.devstack.shard import ShardRouterServer, start_shard_router
from proxy.pgwire import encode
from proxy.pgwire.messages import ReadyForQuery

from . import test_shard_daemon as base
from .pgraw import RawPg, shape
from .sockq import queues
from .test_shard_daemon import GROUPS, SHARDS, Shards, expected_shard

shards = base.shards  # the module's fixtures: four shards and the router over them
router = base.router


def test_psycopg_pipeline_keeps_order_over_shards(router: ShardRouterServer, shards: Shards) -> None:
    shards.truncate()
    with psycopg.connect(router.dsn(), autocommit=True) as c:
        with c.pipeline() as p:
            curs = [c.execute("INSERT INTO users (user_id, name) VALUES (%s, %s) RETURNING user_id", (k, f"p{k}"))
                    for k in range(12)]
            p.sync()
            reads = [c.execute("SELECT name FROM users WHERE user_id = %s", (k,)) for k in range(11, -1, -1)]
            count = c.execute("SELECT count(*) FROM users WHERE name LIKE %s", ("p%",))
        assert [cur.fetchone() for cur in curs] == [(k,) for k in range(12)]
        assert [cur.fetchone() for cur in reads] == [(f"p{k}",) for k in range(11, -1, -1)]
        assert count.fetchone() == (12,)
        # An error inside a pipeline: the statements after it up to the Sync are skipped, the
        # ones after the Sync run.
        with pytest.raises(psycopg.errors.UniqueViolation):
            with c.pipeline() as p:
                c.execute("INSERT INTO users (user_id, name) VALUES (%s, %s)", (100, "new"))
                c.execute("INSERT INTO users (user_id, name) VALUES (%s, %s)", (1, "dup"))
                p.sync()
        assert c.execute("SELECT name FROM users WHERE user_id = 1").fetchone() == ("p1",)
    for k in range(12):
        assert shards.where(k) == [expected_shard(k)]


def test_asyncpg_executemany_over_shards_and_in_a_transaction(router: ShardRouterServer, shards: Shards) -> None:
    shards.truncate()

    async def go() -> None:
        c = await asyncpg.connect(router.dsn())
        try:
            await c.executemany("INSERT INTO users (user_id, name) VALUES ($1, $2)", [(k, f"m{k}") for k in range(50)])
            stmt = await c.prepare("SELECT name FROM users WHERE user_id = $1")
            assert [await stmt.fetchval(k) for k in range(50)] == [f"m{k}" for k in range(50)]
            async with c.transaction():  # one shard inside a transaction: atomic, as direct
                await c.executemany("UPDATE users SET name = $2 WHERE user_id = $1", [(4, "x"), (8, "y")])
            assert await c.fetchval("SELECT count(*) FROM users WHERE name IN ('x', 'y')") == 2
        finally:
            await c.close()

    asyncio.run(go())
    for k in range(50):
        assert shards.where(k) == [expected_shard(k)]


@pytest.fixture(scope="module")
def timeout_router(shards: Shards, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShardRouterServer]:
    c0 = shards.clusters[0]
    server = start_shard_router({n: c.primary for n, c in zip(SHARDS, shards.clusters, strict=True)},
                                log_dir=tmp_path_factory.mktemp("shard_timeout"), backend_user=c0.user,
                                backend_password=c0.password, groups=GROUPS, name="shard_timeout",
                                extra="[timeouts]\nquery = 1.5\n")  # fmt: skip
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("sql", [
    "SELECT pg_sleep(60) FROM users WHERE user_id = 1",  # one shard, relayed
    "SELECT count(*) FROM users WHERE pg_sleep(60) IS NOT NULL",  # every shard, gathered
    "SELECT pg_sleep(60)",  # no table
])
def test_query_timeout_cancels_on_the_shards_and_the_session_goes_on(timeout_router: ShardRouterServer,
                                                                     shards: Shards, sql: str) -> None:
    shards.truncate()
    with psycopg.connect(timeout_router.dsn(), autocommit=True) as c:
        c.execute("INSERT INTO users (user_id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')")
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute(sql)
        assert c.execute("SELECT count(*) FROM users").fetchone() == (4,)
        assert c.execute("SELECT pg_sleep(0.1), 1").fetchone() == ("", 1)  # shorter: answered
        c.autocommit = False
        c.execute("INSERT INTO users (user_id, name) VALUES (5, 'e')")
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("SELECT pg_sleep(60) FROM users WHERE user_id = 5")
        c.rollback()
    for conn in shards.conns.values():  # nothing left running on the shards
        assert conn.execute("select count(*) from pg_stat_activity where query like '%pg_sleep(60)%' "
                            "and state = 'active' and pid <> pg_backend_pid()").fetchone() == (0,)


def test_query_timeout_over_the_extended_protocol(timeout_router: ShardRouterServer, shards: Shards) -> None:
    shards.truncate()

    async def go() -> None:
        c = await asyncpg.connect(timeout_router.dsn())
        try:
            await c.execute("INSERT INTO users (user_id, name) VALUES (1, 'a'), (2, 'b')")
            with pytest.raises(asyncpg.QueryCanceledError):
                await c.fetchval("SELECT pg_sleep($1) FROM users WHERE user_id = $2", 60, 1)
            with pytest.raises(asyncpg.QueryCanceledError):
                await c.fetchval("SELECT count(*) FROM users WHERE pg_sleep($1) IS NOT NULL", 60)
            assert await c.fetchval("SELECT count(*) FROM users WHERE name <> $1", "z") == 2
        finally:
            await c.close()

    asyncio.run(go())


def test_timeouts_are_counted_on_metrics(timeout_router: ShardRouterServer, tmp_path: Path) -> None:
    text = timeout_router.admin_get("/metrics").decode()
    line = next(x for x in text.splitlines() if x.startswith("tierproxy_shard_query_timeouts_total"))
    assert float(line.split()[-1]) >= 1


def _poll(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    wait_until(check, timeout, what)  # the dev stack's poll (PollTimeout names `what`)


def _statement(protocol: str, sql: str, key: int) -> bytes:
    """`sql` with `$1` = key: a Query with the key written in, or Parse/Bind/Describe/Execute/Sync
    in one write, as pgbench -M extended sends them."""
    if protocol == "simple":
        return encode.query(sql.replace("$1", str(key)))
    return (encode.parse("", sql, [20]) + encode.bind("", "", [str(key).encode()]) + encode.describe("P")
            + encode.execute() + encode.sync())  # fmt: skip


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_the_client_is_read_while_a_statement_runs_and_paused_once_it_sends_more(
        router: ShardRouterServer, shards: Shards, protocol: str) -> None:  # fmt: skip
    # A one-shard statement on an attached connection (the fast paths: a Query, a Sync's batch)
    # used to pause the client's reading at every statement and resume it at every answer: two
    # system calls per statement (epoll_ctl; io_uring_enter under uvloop, which could wait for
    # milliseconds) for clients that send nothing meanwhile. Now the router keeps reading, and
    # pauses only when more arrives before the answer (pipelining), so a client still cannot
    # make it buffer without bound.
    key = 5
    assert expected_shard(key) == "s1"
    shards.conns["s1"].execute("insert into users values (%s, 'locked') on conflict do nothing", (key,))
    holder = psycopg.connect(shards.clusters[1].primary.dsn, autocommit=True)
    client = RawPg("127.0.0.1", router.port, "app", "app-secret")
    try:
        client.send(_statement(protocol, "SELECT name FROM users WHERE user_id = $1", key))  # attaches s1
        assert ("DataRow", b"locked") in shape(client.until(ReadyForQuery))
        holder.execute("select pg_advisory_lock(4711)")
        client.send(_statement(protocol, "SELECT pg_advisory_lock(4711)::text FROM users WHERE user_id = $1", key))
        _poll(lambda: holder.execute("select count(*) from pg_locks where locktype = 'advisory' and not granted")
              .fetchone()[0] == 1, "the statement waits for the lock on s1")  # fmt: skip
        port = client.sock.getsockname()[1]
        in_router = (lambda: queues(port, router.port)[0] == 0), "the router's socket has it (acknowledged)"
        client.send(_statement(protocol, "SELECT name || '-2' FROM users WHERE user_id = $1", key))
        _poll(*in_router)
        _poll(lambda: queues(router.port, port)[1] == 0, "the router reads the next statement while the first runs")
        third = _statement(protocol, "SELECT name || '-3' FROM users WHERE user_id = $1", key)
        client.send(third)
        _poll(*in_router)
        router.status()  # its loop has run since `third` was in its socket: had it been reading, it read it
        assert queues(router.port, port)[1] == len(third)  # paused: it waits in the kernel
        holder.execute("select pg_advisory_unlock(4711)")
        assert ("DataRow", b"") in shape(client.until(ReadyForQuery))
        assert ("DataRow", b"locked-2") in shape(client.until(ReadyForQuery))
        assert ("DataRow", b"locked-3") in shape(client.until(ReadyForQuery))
        assert queues(router.port, port)[1] == 0
    finally:
        client.close()
        holder.close()
