"""With one shard configured, a client sees a plain PostgreSQL: the same asyncpg and psycopg code
runs direct against the shard and through a one-shard `tierproxy shard`, and what it sees is
compared (results, SQLSTATEs, notifications, cursors, COPY, 2PC, type introspection, cancel).

Each scenario returns a list of observations; the router's must equal the server's. Backend pids
and error message texts (the router may prefix a shard's name) are not compared; SQLSTATEs are.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import uuid
from typing import Any

import asyncpg
import psycopg
import pytest

from proxy.devstack.shard import ShardRouterServer

from . import test_shard_daemon as base
from .test_shard_daemon import Shards

shards = base.shards  # the module's fixtures: the shards and a router over the first one alone
one_shard_router = base.one_shard_router


def _setup(shards: Shards) -> None:
    c = shards.conns["s0"]
    shards.truncate()
    c.execute("drop table if exists parity_t; drop type if exists parity_mood; drop domain if exists parity_pos")
    c.execute("create type parity_mood as enum ('sad', 'ok', 'happy')")
    c.execute("create domain parity_pos as int check (value > 0)")
    c.execute("create table parity_t (id int primary key, m parity_mood, p parity_pos, tags text[], "
              "doc jsonb, at timestamptz, amount numeric, u uuid)")
    for tx in c.execute("select gid from pg_prepared_xacts").fetchall():
        c.execute(f"rollback prepared '{tx[0]}'")


async def _asyncpg_scenario(dsn: str) -> list[Any]:
    seen: list[Any] = []
    c = await asyncpg.connect(dsn)
    other = await asyncpg.connect(dsn)
    try:
        # prepared statements: prepare, bind many times, introspect, close (cache off)
        stmt = await c.prepare("SELECT $1::int + $2::int AS s, $3::text AS t")
        seen.append([tuple(await stmt.fetchrow(i, 2 * i, f"x{i}")) for i in range(5)])
        seen.append([(a.name, a.type.name) for a in stmt.get_attributes()])
        seen.append([p.name for p in stmt.get_parameters()])
        # type introspection: enum, domain, arrays, jsonb, timestamptz, numeric, uuid
        rows = [(i, ("sad", "ok", "happy")[i % 3], i + 1, [f"t{i}", None], f'{{"k": {i}}}',
                 dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=i), decimal.Decimal(i) / 7,
                 uuid.UUID(int=i)) for i in range(6)]
        await c.executemany("INSERT INTO parity_t VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", rows)
        seen.append([tuple(r) for r in await c.fetch("SELECT * FROM parity_t ORDER BY id")])
        # COPY: binary records in, query out
        await c.copy_records_to_table("parity_t", records=[(100 + i, "ok", 5, [], "{}", None, None, None)
                                                           for i in range(4)])
        seen.append(await c.fetchval("SELECT count(*) FROM parity_t"))
        out: list[bytes] = []

        async def sink(chunk: bytes) -> None:
            out.append(chunk)

        await c.copy_from_query("SELECT id, m FROM parity_t WHERE id >= $1 ORDER BY id", 100, output=sink)
        seen.append(b"".join(out))
        # errors, in and out of transactions
        for sql in ("SELECT 1/0", "SELECT * FROM nope", "INSERT INTO parity_t (id, p) VALUES (1000, -1)",
                    "INSERT INTO parity_t (id) VALUES (1)", "SELEC 1"):
            try:
                await c.execute(sql)
                seen.append("ok")
            except asyncpg.PostgresError as exc:
                seen.append(exc.sqlstate)
        tx = c.transaction()
        await tx.start()
        try:
            await c.execute("INSERT INTO parity_t (id) VALUES (1)")
        except asyncpg.PostgresError as exc:
            seen.append(exc.sqlstate)
        try:
            await c.fetchval("SELECT 1")
        except asyncpg.PostgresError as exc:
            seen.append(exc.sqlstate)  # 25P02
        await tx.rollback()
        async with c.transaction():
            try:
                async with c.transaction():  # a savepoint
                    await c.execute("INSERT INTO parity_t (id) VALUES (1)")
            except asyncpg.UniqueViolationError:
                seen.append("savepoint rolled back")
            seen.append(await c.fetchval("SELECT count(*) FROM parity_t"))
        # server-side cursor (portals with a row limit, in a transaction)
        async with c.transaction():
            cur = await c.cursor("SELECT id FROM parity_t ORDER BY id")
            seen.append([r[0] for r in await cur.fetch(3)])
            seen.append([r[0] for r in await cur.fetch(2)])
            seen.append([r[0] async for r in c.cursor("SELECT id FROM parity_t WHERE id > $1 ORDER BY id", 3,
                                                    prefetch=2)])
        # LISTEN/NOTIFY between two connections
        got: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        await c.add_listener("parity_ch", lambda _c, _pid, ch, payload: got.put_nowait((ch, payload)))
        await other.execute("NOTIFY parity_ch, 'hello'")
        await other.execute("SELECT pg_notify('parity_ch', 'again')")
        seen.append([await asyncio.wait_for(got.get(), 20) for _ in range(2)])
        await c.remove_listener("parity_ch", lambda *_: None)
        # cancel: a statement past asyncpg's timeout is canceled, the connection goes on
        with pytest.raises(asyncio.TimeoutError):
            await c.fetch("SELECT pg_sleep(30)", timeout=0.5)
        seen.append(await c.fetchval("SELECT 41 + 1"))
    finally:
        await other.close()
        await c.close()
    return seen


def _psycopg_scenario(dsn: str) -> list[Any]:
    seen: list[Any] = []
    with psycopg.connect(dsn) as c:
        c.prepare_threshold = 0  # server-side prepared statements from the first run
        for i in range(3):
            seen.append(c.execute("SELECT %s::int * 2, %s::text", (i, f"p{i}")).fetchone())
        c.commit()
        c.execute("DEALLOCATE ALL")  # psycopg forgets its statements too
        c.commit()
        # server-side (named) cursor: DECLARE + FETCH in a transaction
        with c.cursor(name="parity_cur") as cur:
            cur.itersize = 2
            cur.execute("SELECT id FROM parity_t ORDER BY id")
            seen.append([r[0] for r in cur])
        c.commit()
        # errors in a transaction, savepoints
        try:
            c.execute("SELECT 1/0")
        except psycopg.Error as exc:
            seen.append(exc.sqlstate)
        try:
            c.execute("SELECT 1")
        except psycopg.Error as exc:
            seen.append(exc.sqlstate)
        c.rollback()
        with c.transaction():
            try:
                with c.transaction():
                    c.execute("INSERT INTO parity_t (id) VALUES (1)")
            except psycopg.errors.UniqueViolation:
                seen.append("savepoint")
        # two-phase commit
        xid = c.xid(1, "parity-gtrid", "bq")
        c.tpc_begin(xid)
        c.execute("INSERT INTO parity_t (id) VALUES (500)")
        c.tpc_prepare()
        with psycopg.connect(dsn) as o:  # another session sees it prepared
            seen.append([x.gtrid for x in o.tpc_recover()])
        c.tpc_commit()
        seen.append(c.execute("SELECT count(*) FROM parity_t WHERE id = 500").fetchone())
        c.commit()
        # COPY text in and out, and a pipeline
        with c.cursor() as cur:
            with cur.copy("COPY parity_t (id, m) FROM STDIN") as cp:
                for i in range(600, 605):
                    cp.write_row((i, "happy"))
            seen.append(cur.rowcount)
            with cur.copy("COPY (SELECT id, m FROM parity_t WHERE id >= 600 ORDER BY id) TO STDOUT") as cp:
                seen.append(b"".join(bytes(b) for b in cp))
        c.commit()
        c.autocommit = True
        with c.pipeline():
            curs = [c.execute("SELECT %s::int", (i,)) for i in range(5)]
        seen.append([cur.fetchone() for cur in curs])
        seen.append(c.execute("SELECT count(*) FROM parity_t").fetchone())
        # (a user-defined type's OID differs between the two runs: _setup re-creates it)
        seen.append([(d.name, d.type_code if d.type_code < 16384 else "user-defined")
                     for d in c.execute("SELECT * FROM parity_t LIMIT 0").description])
    return seen


def test_asyncpg_sees_the_same_through_a_one_shard_router(one_shard_router: ShardRouterServer, shards: Shards) -> None:
    _setup(shards)
    direct = asyncio.run(_asyncpg_scenario(shards.clusters[0].primary.dsn))
    _setup(shards)
    through = asyncio.run(_asyncpg_scenario(one_shard_router.dsn()))
    assert len(through) == len(direct)
    for i, (a, b) in enumerate(zip(through, direct, strict=True)):
        assert a == b, (i, a, b)


def test_psycopg_sees_the_same_through_a_one_shard_router(one_shard_router: ShardRouterServer, shards: Shards) -> None:
    _setup(shards)
    direct = _psycopg_scenario(shards.clusters[0].primary.dsn)
    _setup(shards)
    through = _psycopg_scenario(one_shard_router.dsn())
    assert len(through) == len(direct)
    for i, (a, b) in enumerate(zip(through, direct, strict=True)):
        assert a == b, (i, a, b)
