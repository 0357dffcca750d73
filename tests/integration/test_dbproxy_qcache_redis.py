"""The query cache's shared level (issue 20): two dbproxy instances, one real Redis, real PostgreSQL.

One pair of instances (A and B, each `[cache] redis` on the module's own redis-server) serves the
whole module. Reads use psycopg's ClientCursor (the simple Query protocol, the one cached). A
write made directly on the primary (bypassing the proxies) is how a test sees that an answer came
from the cache: the database has the new value, a cached answer the old one."""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from proxy.devstack.dbproxy import DbProxyServer, start_dbproxy
from proxy.devstack.ports import allocate_port
from proxy.devstack.probes import redis_ping_probe
from proxy.devstack.process import ManagedProcess
from proxy.devstack.redis import find_redis_server
from tests.integration.conftest import DBPROXY_USERS

HINT = "/* tierproxy:cache ttl=300 */ "
TABLES = [f"qr{i}" for i in range(4)]
KEYS = 12
DEADLINE = 20.0  # seconds to wait for the cache to store (or resume) before failing


class Redis:
    """A redis-server on a port held for the module, that can be killed and started again there."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.lock = allocate_port("127.0.0.1")
        self.url = f"redis://127.0.0.1:{self.lock.port}/0"
        self.runs = 0
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        self.runs += 1
        argv = [find_redis_server(), "--port", str(self.lock.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.log_dir), "--logfile", ""]  # fmt: skip
        self.process = ManagedProcess(argv, name=f"redis-run{self.runs}", log_dir=self.log_dir, cwd=self.log_dir)
        self.process.wait_ready(redis_ping_probe("127.0.0.1", self.lock.port), 10.0)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def managed_processes(self) -> list[ManagedProcess]:
        return [self.process] if self.process is not None else []

    def close(self) -> None:
        if self.process is not None and self.process.running:
            self.process.kill()
        self.lock.release()


class Pair:
    def __init__(self, redis: Redis, a: DbProxyServer, b: DbProxyServer) -> None:
        self.redis, self.a, self.b = redis, a, b

    def managed_processes(self) -> list[Any]:
        return [*self.redis.managed_processes(), *self.a.managed_processes(), *self.b.managed_processes()]


@pytest.fixture(scope="module")
def pair(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    sql = "".join(f"DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (id int PRIMARY KEY, v int);"
                  f"INSERT INTO {t} SELECT g, 0 FROM generate_series(0, {KEYS - 1}) g;" for t in TABLES)  # fmt: skip
    pg_cluster.primary.psql(sql)
    pg_cluster.wait_for_replicas_caught_up()
    log_dir = tmp_path_factory.mktemp("qcache-redis")
    redis = Redis(log_dir)
    proxies: list[DbProxyServer] = []
    try:
        redis.start()
        extra = f'[cache]\nenabled = true\nredis = "{redis.url}"\n'
        for name in ("a", "b"):
            (log_dir / name).mkdir()
            proxies.append(start_dbproxy(pg_cluster, log_dir=log_dir / name, users=DBPROXY_USERS, extra=extra))
        yield Pair(redis, *proxies)
    finally:
        for p in proxies:
            p.close()
        redis.close()


def _metrics(proxy: DbProxyServer) -> dict[str, float]:
    """The `tierproxy_dbproxy_query_cache_*` samples of the instance's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    prefix = "tierproxy_dbproxy_query_cache_"
    return {name[len(prefix) :]: float(value) for name, _, value in
            (line.rpartition(" ") for line in text.splitlines() if line.startswith(prefix))}  # fmt: skip


def _connect(proxy: DbProxyServer) -> psycopg.Connection[Any]:
    return psycopg.connect(proxy.dsn(), autocommit=True, cursor_factory=psycopg.ClientCursor)


def _read(conn: psycopg.Connection[Any], table: str, key: int) -> int:
    return conn.execute(f"{HINT}SELECT v FROM {table} WHERE id = {key}").fetchone()[0]


def _bypass(cluster: Any, table: str, key: int, v: int) -> None:
    # Replicas too: a read not served from the cache gets the new value wherever it runs.
    cluster.primary.psql(f"UPDATE {table} SET v = {v} WHERE id = {key}")
    cluster.wait_for_replicas_caught_up()


def _served_from_cache(cluster: Any, conn: psycopg.Connection[Any], table: str, key: int) -> bool:
    """Read (a miss fills), change the row behind the proxies' back, read again: the old value
    means the second read was a hit. The row is put back either way, through the proxy (which
    invalidates what the second read may have stored)."""
    before = _read(conn, table, key)
    _bypass(cluster, table, key, before + 1_000_000)
    try:
        return _read(conn, table, key) == before
    finally:
        conn.execute(f"UPDATE {table} SET v = {before} WHERE id = {key}")


def _wait_for_hits(cluster: Any, conn: psycopg.Connection[Any], table: str, key: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while not _served_from_cache(cluster, conn, table, key):
        assert time.monotonic() < deadline, "the cache never served a hit"


def test_a_write_through_one_instance_is_read_through_the_other_every_time(pg_cluster, pair) -> None:
    """1,000 rounds, random table, key, direction and kind of write: a cached read through the
    reading instance, a write through the other, then a read through the first: the new value."""
    rng = random.Random(20)
    model = {(t, k): 0 for t in TABLES for k in range(KEYS)}
    with _connect(pair.a) as a, _connect(pair.b) as b:
        _wait_for_hits(pg_cluster, b, TABLES[0], 0)  # the shared level is up and storing
        assert _served_from_cache(pg_cluster, a, TABLES[0], 0)  # what B stored, found by A
        for n in range(1, 1001):
            table, key = rng.choice(TABLES), rng.randrange(KEYS)
            writer, reader = (a, b) if rng.random() < 0.5 else (b, a)
            assert _read(reader, table, key) == model[(table, key)]  # stored (or served) now
            new = model[(table, key)] = n
            kind = rng.random()
            if kind < 0.6:
                writer.execute(f"UPDATE {table} SET v = {new} WHERE id = {key}")
            elif kind < 0.8:
                with writer.transaction():
                    writer.execute(f"UPDATE {table} SET v = -1 WHERE id = {key}")
                    writer.execute(f"UPDATE {table} SET v = {new} WHERE id = {key}")
            else:
                writer.execute(f"DELETE FROM {table} WHERE id = {key}; INSERT INTO {table} VALUES ({key}, {new})")
            assert _read(reader, table, key) == new, (n, table, key)
            if n % 250 == 0:  # the cache is in use all along
                # Until a hit, not at the first read: the other instance's invalidation of this
                # key travels by Redis pub/sub and may land after the read above stored the new
                # value, dropping that (fresh) entry, so the first try can be a miss.
                _wait_for_hits(pg_cluster, reader, table, key)
    for proxy in (pair.a, pair.b):
        m = _metrics(proxy)
        assert m["redis_up"] == 1 and m["redis_hits_total"] > 0 and m["hits_total"] >= m["redis_hits_total"], m


async def test_redis_killed_and_restarted_under_load(pg_cluster, pair) -> None:
    """Clients read and write through both instances while Redis is killed and started again:
    no client error, every read sees every write acknowledged before it started, and the cache
    serves hits again afterwards."""
    table = TABLES[3]
    stop = asyncio.Event()
    acked = {k: 0 for k in range(KEYS)}
    counts = {"reads": 0, "writes": 0}
    progress = asyncio.Event()  # set by a reader once counts["reads"] reaches want[0]
    want = [0]

    async def connect(proxy: DbProxyServer) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True,
                                                     cursor_factory=psycopg.AsyncClientCursor)  # fmt: skip

    async def writer(proxy: DbProxyServer, keys: range) -> None:
        conn = await connect(proxy)
        try:
            v = 0
            while not stop.is_set():
                for k in keys:
                    v += 1
                    await conn.execute(f"UPDATE {table} SET v = {v} WHERE id = {k}")
                    acked[k] = v
                    counts["writes"] += 1
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    async def reader(proxy: DbProxyServer, seed: int) -> None:
        rng = random.Random(seed)
        conn = await connect(proxy)
        try:
            while not stop.is_set():
                k = rng.randrange(KEYS)
                floor = acked[k]
                cur = await conn.execute(f"{HINT}SELECT v FROM {table} WHERE id = {k}")
                (v,) = await cur.fetchone()
                assert v >= floor, (k, v, floor)
                counts["reads"] += 1
                if counts["reads"] >= want[0]:
                    progress.set()
        finally:
            await conn.close()

    with _connect(pair.b) as b:
        _bypass(pg_cluster, table, 0, 0)
        _wait_for_hits(pg_cluster, b, TABLES[2], 0)
    half = KEYS // 2
    tasks = [asyncio.create_task(writer(pair.a, range(0, half))), asyncio.create_task(writer(pair.b, range(half, KEYS))),
             *(asyncio.create_task(reader(p, i)) for i, p in enumerate([pair.a, pair.b, pair.a, pair.b]))]  # fmt: skip
    async def reads_go_on(by: int) -> None:
        """Wait until `by` more reads have been answered and checked (the readers set `progress`),
        60 s at most; a reader or writer that ended (a failed check) ends the wait."""
        want[0] = counts["reads"] + by
        progress.clear()
        waiter = asyncio.ensure_future(progress.wait())
        await asyncio.wait([waiter, *tasks], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        assert progress.is_set(), (counts, [t for t in tasks if t.done()])

    try:
        await reads_go_on(300)
        pair.redis.kill()
        await reads_go_on(300)  # reads went on without Redis
        await asyncio.to_thread(pair.redis.start)
        await reads_go_on(300)
    finally:
        stop.set()
        done = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [d for d in done if isinstance(d, BaseException)]
    assert not errors, errors
    assert counts["writes"] > 0 and counts["reads"] > 0
    with _connect(pair.b) as b, _connect(pair.a) as a:
        _wait_for_hits(pg_cluster, b, TABLES[2], 1)
        _wait_for_hits(pg_cluster, a, TABLES[2], 2)
    for proxy in (pair.a, pair.b):  # both saw Redis go, ran reads without it, and reach it again
        m = _metrics(proxy)
        assert m["redis_outages_total"] >= 1 and m["bypassed_total"] > 0 and m["redis_up"] == 1, m


async def test_extended_protocol_reads_are_shared_and_invalidated_across_instances(pg_cluster, pair) -> None:
    """asyncpg (Parse/Describe/Flush, then Bind/Execute/Sync) and psycopg's server-side binding
    (Parse/Bind/Describe/Execute/Sync): a read through B is stored, found by A, and a write
    through A is seen by the next read through B."""
    import asyncpg

    table, key = TABLES[2], 5
    sql = f"{HINT}SELECT v FROM {table} WHERE id = $1"

    async def fetch_v(conn: asyncpg.Connection) -> int:
        # fetch, not fetchval: asyncpg's fetchval/fetchrow Execute with a row limit (not cached)
        return (await conn.fetch(sql, key, timeout=10))[0][0]

    b_async = await asyncpg.connect(pair.b.dsn())
    a_async = await asyncpg.connect(pair.a.dsn())
    try:
        with _connect(pair.a) as a, psycopg.connect(pair.b.dsn(), autocommit=True) as b_ext:
            a.execute(f"UPDATE {table} SET v = 7 WHERE id = {key}")
            deadline = time.monotonic() + DEADLINE
            while True:  # stored by B (once the shared level stores: the grace after a restart)
                assert await fetch_v(b_async) == 7
                await asyncio.to_thread(_bypass, pg_cluster, table, key, 8)
                if await fetch_v(b_async) == 7:
                    break  # a hit: the database has 8
                a.execute(f"UPDATE {table} SET v = 7 WHERE id = {key}")
                assert time.monotonic() < deadline, "the cache never served a hit"
            assert await fetch_v(a_async) == 7  # what B stored, found by A
            for v in range(20, 30):
                a.execute(f"UPDATE {table} SET v = {v} WHERE id = {key}")
                assert await fetch_v(b_async) == v
                assert b_ext.execute(f"{HINT}SELECT v FROM {table} WHERE id = %s", (key,)).fetchone()[0] == v
                await a_async.execute(f"UPDATE {table} SET v = {v + 100} WHERE id = $1", key)
                assert b_ext.execute(f"{HINT}SELECT v FROM {table} WHERE id = %s", (key,)).fetchone()[0] == v + 100
                assert await fetch_v(b_async) == v + 100
    finally:
        await a_async.close()
        await b_async.close()


def test_workers_of_one_instance_share_the_cache(pg_cluster, pair) -> None:
    """workers = 2 (each process its own in-process level and Redis connection, clients spread by
    SO_REUSEPORT): a write through any connection is read through every other one, and what one
    stored is served to the others."""
    log_dir = pair.a.config_path.parent.parent / "w2"
    log_dir.mkdir()
    extra = f'[cache]\nenabled = true\nredis = "{pair.redis.url}"\n'
    proxy = start_dbproxy(pg_cluster, log_dir=log_dir, users=DBPROXY_USERS, extra=extra, workers=2)
    table, key = TABLES[1], 7
    conns = [_connect(proxy) for _ in range(6)]  # on both workers but with probability 1/32
    try:
        for n in range(15):
            writer = conns[n % len(conns)]
            for c in conns:
                _read(c, table, key)  # stored (or served) through every worker
            writer.execute(f"UPDATE {table} SET v = {10_000 + n} WHERE id = {key}")
            for c in conns:
                assert _read(c, table, key) == 10_000 + n, (n, conns.index(c))
        # what one worker stores, every connection gets (whatever its worker): polled, since a
        # read right after a write may find the write's mark not yet released (and not store)
        deadline = time.monotonic() + DEADLINE
        while True:
            before = [_read(c, table, key) for c in conns]
            _bypass(pg_cluster, table, key, before[0] + 1_000_000)
            after = [_read(c, table, key) for c in conns]
            conns[0].execute(f"UPDATE {table} SET v = {before[0]} WHERE id = {key}")
            if after == before:
                break
            assert time.monotonic() < deadline, (before, after)
    finally:
        for c in conns:
            c.close()
        proxy.close()


def test_copy_from_truncate_and_ddl_through_one_instance_are_read_through_the_other(pg_cluster, pair) -> None:
    table = TABLES[0]
    count = f"{HINT}SELECT count(*) FROM {table}"
    with _connect(pair.a) as a, _connect(pair.b) as b:
        n = b.execute(count).fetchone()[0]
        with a.cursor().copy(f"COPY {table} (id, v) FROM STDIN") as copy:
            for i in range(1000, 1010):
                copy.write_row((i, i))
        assert b.execute(count).fetchone()[0] == n + 10
        a.execute(f"DELETE FROM {table} WHERE id >= 1000")
        assert b.execute(count).fetchone()[0] == n
        assert b.execute(f"{HINT}SELECT count(*) FROM {TABLES[3]}").fetchone()[0] == KEYS
        a.execute("CREATE TABLE IF NOT EXISTS qr_scratch (a int); TRUNCATE qr_scratch")  # unknown tables: everything
        b.execute(f"{HINT}SELECT count(*) FROM {TABLES[3]}")
        a.execute(f"CREATE TEMP TABLE qr_tmp AS SELECT 1; INSERT INTO {TABLES[3]} VALUES (999, 0)")
        try:
            assert b.execute(f"{HINT}SELECT count(*) FROM {TABLES[3]}").fetchone()[0] == KEYS + 1
        finally:
            a.execute(f"DELETE FROM {TABLES[3]} WHERE id = 999")
        assert b.execute(f"{HINT}SELECT count(*) FROM {TABLES[3]}").fetchone()[0] == KEYS
