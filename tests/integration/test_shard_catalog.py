"""Catalog-only statements through `tierproxy shard` (catalog.py): psql's backslash commands and a
driver's type introspection go to one shard and answer exactly as that shard does. Compared
with real psql (and asyncpg) direct against the first shard."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import asyncpg
import psycopg
import pytest

from proxy.devstack.shard import ShardRouterServer

from . import test_shard_daemon as base
from .test_shard_daemon import Shards

shards = base.shards  # the module's fixtures: four shards and the router over them
router = base.router
PSQL = shutil.which("psql")


def _psql(host: str, port: int, user: str, password: str, command: str) -> str:
    assert PSQL is not None, "psql is needed (Debian package postgresql-client)"
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
    r = subprocess.run([PSQL, "-h", host, "-p", str(port), "-U", user, "-d", "postgres", "-X", "-c", command],
                       check=False, capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert r.returncode == 0, (command, r.stderr)
    return r.stdout


@pytest.mark.parametrize("command", [r"\d", r"\dt", r"\d users", r"\d+ users", r"\di", r"\dn", r"\df", r"\dT",
                                     r"\l", r"\du", r"\dx", r"\dt pg_catalog.pg_clas*"])
def test_psql_backslash_commands_answer_as_the_first_shard(router: ShardRouterServer, shards: Shards,
                                                           command: str) -> None:
    s0 = shards.clusters[0]
    direct = _psql(s0.primary.host, s0.primary.port, s0.user, s0.password, command)
    through = _psql(router.host, router.port, "app", "app-secret", command)
    assert through == direct
    assert "users" in through or command not in (r"\d", r"\dt", r"\d users")


def test_catalog_queries_in_a_transaction_follow_its_shard(router: ShardRouterServer, shards: Shards) -> None:
    shards.truncate()
    shards.conns["s3"].execute("create table only_on_s3 (x int)")
    try:
        with psycopg.connect(router.dsn(), autocommit=True) as c:
            sql = "SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = 'only_on_s3'"
            assert c.execute(sql).fetchone() == (0,)  # the first shard's catalog
            c.execute("BEGIN")
            c.execute("INSERT INTO users (user_id, name) VALUES (3, 'x')")  # s3
            assert c.execute(sql).fetchone() == (1,)
            assert c.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = %s",
                             ("only_on_s3",)).fetchone() == (1,)
            c.execute("ROLLBACK")
    finally:
        shards.conns["s3"].execute("drop table only_on_s3")


def test_asyncpg_introspects_an_enum_through_the_router(router: ShardRouterServer, shards: Shards) -> None:
    async def go() -> None:
        c = await asyncpg.connect(router.dsn())
        try:
            await c.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")  # DDL: every shard
            await c.execute("CREATE TABLE feelings (user_id bigint, m mood, tags text[])")
            for k in range(8):
                await c.execute(f"/* tierproxy:shard=s{k % 4} */ INSERT INTO feelings VALUES ($1, $2, $3)",
                                k, ("sad", "ok", "happy")[k % 3], [f"t{k}"])
            rows = await c.fetch("SELECT user_id, m, tags FROM feelings WHERE user_id < $1", 100)
            assert sorted(tuple(r) for r in rows) == [(k, ("sad", "ok", "happy")[k % 3], [f"t{k}"]) for k in range(8)]
            types = await c.fetch("SELECT typname FROM pg_catalog.pg_type WHERE typname = ANY($1::text[]) "
                                  "ORDER BY typname", ["mood", "int4"])
            assert [r[0] for r in types] == ["int4", "mood"]
        finally:
            await c.execute("DROP TABLE IF EXISTS feelings")
            await c.execute("DROP TYPE IF EXISTS mood")
            await c.close()

    asyncio.run(go())
