"""`tierproxy shard` end to end: four real PostgreSQL servers as shards, clients through the router.

Each shard has `users (user_id bigint primary key, name text)`. The router's group `users` uses
the `modulo` map over s0..s3 (so the expected shard of a key is `s{key % 4}`, computed here, not by
the router's code), with user 42 dedicated to s0. Rows are checked directly on the shards;
scatter/gather answers are compared with what Python computes from the rows read directly.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from proxy.devstack.poll import wait_until
from proxy.devstack.postgres import PgCluster
from proxy.devstack.shard import ShardRouterServer, start_shard_router

SHARDS = ("s0", "s1", "s2", "s3")
DEDICATED = 42  # 42 % 4 == 2, but dedicated to s0
GROUPS = f"""
[groups.users]
tables = ["users"]
key = "user_id"
key_type = "integer"
map = "modulo"
shards = ["s0", "s1", "s2", "s3"]
dedicated = {{ "{DEDICATED}" = "s0" }}
"""
PSQL = shutil.which("psql")


def expected_shard(key: int) -> str:
    return "s0" if key == DEDICATED else f"s{key % 4}"


class Shards:
    def __init__(self, clusters: list[PgCluster]) -> None:
        self.clusters = clusters
        self.conns = {name: psycopg.connect(c.primary.dsn, autocommit=True) for name, c in zip(SHARDS, clusters, strict=True)}

    def managed_processes(self) -> list:
        return [p for c in self.clusters for p in c.managed_processes()]

    def where(self, key: int) -> list[str]:
        return [n for n, c in self.conns.items() if c.execute("select 1 from users where user_id = %s", (key,)).fetchone()]

    def all_rows(self) -> list[tuple[int, str | None]]:
        return [r for c in self.conns.values() for r in c.execute("select user_id, name from users").fetchall()]

    def truncate(self) -> None:
        for c in self.conns.values():
            c.execute("truncate users")

    def reset(self) -> None:
        """What a fresh server holds, plus `users`: no prepared transaction, an empty public schema."""
        for c in self.conns.values():
            for (gid,) in c.execute("select gid from pg_prepared_xacts").fetchall():
                c.execute(f"rollback prepared '{gid}'")
            c.execute("drop schema public cascade")
            c.execute("create schema public")
            c.execute("create table users (user_id bigint primary key, name text)")

    def close(self) -> None:
        for c in self.conns.values():
            c.close()


@pytest.fixture(scope="module")
def shards(shard_servers: list[PgCluster]) -> Iterator[Shards]:
    # The session's four servers (tests/integration/conftest.py), shared with the modules that
    # reuse these fixtures; each module starts from an empty schema with `users` and runs its
    # own router over them.
    assert len(shard_servers) == len(SHARDS)
    s = Shards(shard_servers)
    try:
        s.reset()
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def router(shards: Shards, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShardRouterServer]:
    c0 = shards.clusters[0]
    server = start_shard_router({n: c.primary for n, c in zip(SHARDS, shards.clusters, strict=True)},
                                log_dir=tmp_path_factory.mktemp("shard_router"), backend_user=c0.user,
                                backend_password=c0.password, groups=GROUPS)  # fmt: skip
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def db(router: ShardRouterServer, shards: Shards) -> Iterator[psycopg.Connection]:
    shards.truncate()
    conn = psycopg.connect(router.dsn(), autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


def _psql(router: ShardRouterServer, sql: str, database: str = "postgres") -> subprocess.CompletedProcess[str]:
    assert PSQL is not None, "psql is needed (Debian package postgresql-client)"
    env = {**os.environ, "PGPASSWORD": "app-secret", "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run([PSQL, "-h", "127.0.0.1", "-p", str(router.port), "-U", "app", "-d", database,
                           "-X", "-At", "-F", "|", "-c", sql],
                          check=False, capture_output=True, text=True, env=env, timeout=60)  # fmt: skip


def test_rows_land_on_the_shard_the_map_names_and_reads_find_them(db: psycopg.Connection, shards: Shards) -> None:
    rng = random.Random(14)
    keys = list({rng.randint(-(2**62), 2**62) for _ in range(60)} | {0, 1, 2, 3, DEDICATED, -7})
    for k in keys:
        db.execute(f"INSERT INTO users (user_id, name) VALUES ({k}, 'u{k}')")
    for k in keys:
        assert shards.where(k) == [expected_shard(k)], k
        assert db.execute(f"SELECT name FROM users WHERE user_id = {k}").fetchall() == [(f"u{k}",)]


def test_in_list_spanning_shards_returns_every_row(db: psycopg.Connection, shards: Shards) -> None:
    keys = [4, 5, 6, 7, 9, 13, DEDICATED]
    for k in keys:
        db.execute(f"INSERT INTO users (user_id, name) VALUES ({k}, 'n{k}')")
    got = db.execute(f"SELECT user_id, name FROM users WHERE user_id IN ({', '.join(map(str, keys))}) "
                     "ORDER BY user_id").fetchall()
    assert got == [(k, f"n{k}") for k in sorted(keys)]


def test_multi_row_insert_is_split_by_shard(db: psycopg.Connection, shards: Shards) -> None:
    keys = list(range(100, 121)) + [DEDICATED]
    cur = db.execute("INSERT INTO users (user_id, name) VALUES " + ", ".join(f"({k}, 'm{k}')" for k in keys))
    assert cur.rowcount == len(keys)
    for k in keys:
        assert shards.where(k) == [expected_shard(k)], k
    returned = db.execute("INSERT INTO users (user_id, name) VALUES (200, 'a'), (201, 'b'), (203, 'c') RETURNING user_id").fetchall()
    assert sorted(r[0] for r in returned) == [200, 201, 203]


def test_scatter_gather_equals_what_the_shards_hold(db: psycopg.Connection, shards: Shards) -> None:
    rng = random.Random(7)
    rows = [(k, rng.choice(["a", "b", "c", None])) for k in rng.sample(range(1, 100_000), 80)]
    db.execute("INSERT INTO users (user_id, name) VALUES " + ", ".join(f"({k}, {'NULL' if n is None else repr(n)})" for k, n in rows))
    direct = shards.all_rows()
    assert sorted(direct) == sorted(rows)
    keys = sorted(k for k, _ in direct)
    assert db.execute("SELECT user_id FROM users ORDER BY user_id LIMIT 10 OFFSET 5").fetchall() == \
        [(k,) for k in keys[5:15]]
    assert db.execute("SELECT user_id FROM users ORDER BY user_id DESC LIMIT 3").fetchall() == \
        [(k,) for k in sorted(keys, reverse=True)[:3]]
    count, total, lo, hi, avg = db.execute(
        "SELECT count(*), sum(user_id), min(user_id), max(user_id), avg(user_id) FROM users").fetchone()
    assert (count, total, lo, hi) == (len(keys), sum(keys), min(keys), max(keys))
    assert abs(avg - Decimal(sum(keys)) / len(keys)) < Decimal("1e-10")
    groups: dict[str | None, list[int]] = {}
    for k, n in direct:
        groups.setdefault(n, []).append(k)
    got = db.execute('SELECT name, count(*), max(user_id) FROM users GROUP BY name ORDER BY name COLLATE "C" NULLS FIRST').fetchall()
    want = [(n, len(groups[n]), max(groups[n])) for n in sorted(groups, key=lambda x: (x is not None, x or ""))]
    assert got == want


@pytest.mark.parametrize("sql", [
    "SELECT DISTINCT name FROM users",
    "SELECT user_id, row_number() OVER () FROM users",
    "SELECT name FROM users UNION SELECT name FROM users",
])
def test_unmergeable_shapes_get_an_error(db: psycopg.Connection, sql: str) -> None:
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        db.execute(sql)
    assert db.execute("SELECT 1").fetchone() == (1,)  # the session goes on


def test_transaction_stays_on_one_shard(db: psycopg.Connection, shards: Shards) -> None:
    db.autocommit = False
    db.execute("INSERT INTO users (user_id, name) VALUES (1, 'one')")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="one shard"):
        db.execute("INSERT INTO users (user_id, name) VALUES (2, 'two')")
    db.rollback()
    db.autocommit = True
    assert shards.where(1) == [] and shards.where(2) == []
    db.execute("BEGIN")
    db.execute("INSERT INTO users (user_id, name) VALUES (5, 'five')")
    db.execute("UPDATE users SET name = 'FIVE' WHERE user_id = 5")
    db.execute("COMMIT")
    assert shards.conns["s1"].execute("select name from users where user_id = 5").fetchone() == ("FIVE",)


def test_shard_key_setting_and_comment_route(db: psycopg.Connection, shards: Shards) -> None:
    db.execute("INSERT INTO users (user_id, name) VALUES (11, 'x')")  # s3
    db.execute("SET tierproxy.shard_key = 11")
    assert db.execute("SELECT count(*) FROM users").fetchone() == (1,)  # only s3's rows
    db.execute("RESET tierproxy.shard_key")
    assert db.execute("/* tierproxy:shard=s1 */ SELECT count(*) FROM users").fetchone() == (0,)
    assert db.execute("/* tierproxy:shard=s3 */ SELECT count(*) FROM users").fetchone() == (1,)


def test_error_from_one_shard_names_it(db: psycopg.Connection, shards: Shards) -> None:
    shards.conns["s2"].execute("create table only_on_s2 (x int)")
    try:
        with pytest.raises(psycopg.errors.DuplicateTable, match="shard s2"):
            db.execute("CREATE TABLE only_on_s2 (x int)")
    finally:
        for c in shards.conns.values():
            c.execute("drop table if exists only_on_s2")


def test_console_commands_through_psql(db: psycopg.Connection, router: ShardRouterServer) -> None:
    db.execute(f"INSERT INTO users (user_id, name) VALUES ({DEDICATED}, 'celebrity')")
    for _ in range(30):
        db.execute(f"SELECT name FROM users WHERE user_id = {DEDICATED}")
    db.execute("SELECT name FROM users WHERE user_id = 3")
    r = _psql(router, "SHOW SHARDS", database="tierproxy")
    assert r.returncode == 0, r.stderr
    names = [line.split("|")[0] for line in r.stdout.splitlines()]
    assert names == list(SHARDS)
    r = _psql(router, f"SHOW SHARD FOR {DEDICATED}", database="tierproxy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"users|{DEDICATED}|s0|dedicated"
    r = _psql(router, "SHOW SHARD FOR 7", database="tierproxy")
    assert r.stdout.strip() == "users|7|s3|modulo"
    r = _psql(router, "SHOW HOT KEYS 1", database="tierproxy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("|")[:3] == ["users", str(DEDICATED), "s0"]


def test_metrics_and_status(db: psycopg.Connection, router: ShardRouterServer) -> None:
    db.execute("SELECT count(*) FROM users")
    db.execute("SELECT * FROM users WHERE user_id = 6")
    text = router.admin_get("/metrics").decode()
    assert 'tierproxy_shard_routed_statements_total{kind="scatter",shard="s1"}' in text
    assert 'tierproxy_shard_routed_statements_total{kind="single",shard="s2"}' in text
    assert "tierproxy_shard_scatters_total" in text and "tierproxy_shard_skew_ratio" in text
    st = router.status()
    assert [s["name"] for s in st["shards"]] == list(SHARDS)


def test_check_config_recognises_a_shard_config(router: ShardRouterServer, tmp_path: Path) -> None:
    import sys

    r = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(router.config_path)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and "(shard)" in r.stdout, r.stderr
    bad = tmp_path / "x.toml"
    bad.write_text(router.config_path.read_text().replace('listen =', 'workers = 0\nlisten ='))
    r = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(bad)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "workers" in r.stderr


def test_sighup_reload_applies_a_new_dedicated_entry(db: psycopg.Connection, router: ShardRouterServer,
                                                     shards: Shards) -> None:
    import signal

    original = router.config_path.read_text()
    try:
        router.config_path.write_text(original.replace(f'"{DEDICATED}" = "s0"', f'"{DEDICATED}" = "s0", "7" = "s1"'))
        os.kill(router.process.pid, signal.SIGHUP)
        wait_until(lambda: _psql(router, "SHOW SHARD FOR 7", database="tierproxy").stdout.strip()
                   == "users|7|s1|dedicated", 20, "the reload did not apply")  # fmt: skip
        db.execute("INSERT INTO users (user_id, name) VALUES (7, 'moved')")
        assert shards.where(7) == ["s1"]
    finally:
        router.config_path.write_text(original)
        os.kill(router.process.pid, signal.SIGHUP)
        wait_until(lambda: _psql(router, "SHOW SHARD FOR 7", database="tierproxy").stdout.strip()
                   == "users|7|s3|modulo", 20, "the reload back did not apply")  # fmt: skip


def test_sigterm_drains_and_exits(shards: Shards, tmp_path: Path) -> None:
    c0 = shards.clusters[0]
    server = start_shard_router({n: c.primary for n, c in zip(SHARDS, shards.clusters, strict=True)},
                                log_dir=tmp_path, backend_user=c0.user, backend_password=c0.password,
                                groups=GROUPS, name="shard_drain")  # fmt: skip
    try:
        conn = psycopg.connect(server.dsn(), autocommit=True)
        assert conn.execute("SELECT count(*) FROM users WHERE user_id = 1").fetchone() == (0,)
        assert server.process.terminate(20.0) == 0
        with pytest.raises(psycopg.OperationalError, match="terminating connection due to administrator command"):
            conn.execute("SELECT 1")
        conn.close()
    finally:
        server.close()


def test_extended_protocol_routes_at_bind_with_the_bound_key(db: psycopg.Connection, shards: Shards) -> None:
    rng = random.Random(2)
    keys = list({rng.randint(-(2**40), 2**40) for _ in range(30)} | {DEDICATED})
    for k in keys:  # psycopg: Parse/Bind/Execute with the key as $1 (prepared after 5 uses)
        db.execute("INSERT INTO users (user_id, name) VALUES (%s, %s)", (k, f"p{k}"))
    for k in keys:
        assert shards.where(k) == [expected_shard(k)], k
        assert db.execute("SELECT name FROM users WHERE user_id = %s", (k,)).fetchall() == [(f"p{k}",)]
    db.execute("UPDATE users SET name = %s WHERE user_id = %s", ("changed", keys[0]))
    owner = shards.conns[expected_shard(keys[0])]
    assert owner.execute("select name from users where user_id = %s", (keys[0],)).fetchone() == ("changed",)
    # no key: scattered and gathered through Bind too (test_shard_extended_scatter.py)
    assert db.execute("SELECT count(*) FROM users WHERE name = %s", ("changed",)).fetchone() == (1,)
    assert db.execute("SELECT %s::int + 1", (1,)).fetchone() == (2,)


def test_asyncpg_prepared_statements_route_by_key(router: ShardRouterServer, shards: Shards) -> None:
    import asyncio

    import asyncpg

    shards.truncate()

    async def run() -> None:
        conn = await asyncpg.connect(router.dsn())
        try:
            for k in range(20):
                await conn.execute("INSERT INTO users (user_id, name) VALUES ($1, $2)", k, f"a{k}")
            stmt = await conn.prepare("SELECT name FROM users WHERE user_id = $1")
            for k in range(20):
                assert await stmt.fetchval(k) == f"a{k}"
            async with conn.transaction():
                await conn.execute("UPDATE users SET name = 'tx' WHERE user_id = $1", 6)
                assert await conn.fetchval("SELECT name FROM users WHERE user_id = $1", 6) == "tx"
        finally:
            await conn.close()

    asyncio.run(run())
    for k in range(20):
        assert shards.where(k) == [expected_shard(k)], k


@pytest.fixture(scope="module")
def one_shard_router(shards: Shards, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShardRouterServer]:
    c0 = shards.clusters[0]
    groups = '[groups.users]\ntables = ["users"]\nkey = "user_id"\nmap = "modulo"\n'
    server = start_shard_router({"only": c0.primary}, log_dir=tmp_path_factory.mktemp("shard_one"),
                                backend_user=c0.user, backend_password=c0.password, groups=groups,
                                name="shard_one")  # fmt: skip
    try:
        yield server
    finally:
        server.close()


def test_one_shard_behaves_as_direct_for_psycopg_and_asyncpg(one_shard_router: ShardRouterServer,
                                                             shards: Shards) -> None:
    import asyncio

    import asyncpg

    shards.truncate()
    with psycopg.connect(one_shard_router.dsn()) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO users (user_id, name) VALUES (%s, %s)", [(i, f"o{i}") for i in range(10)])
        conn.commit()
        for _ in range(7):
            assert conn.execute("SELECT count(*), max(name) FROM users").fetchone() == (10, "o9")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM nope")
        conn.rollback()
        assert conn.execute("SELECT name FROM users WHERE user_id = %s", (3,)).fetchone() == ("o3",)

    async def run() -> None:
        c = await asyncpg.connect(one_shard_router.dsn())
        try:
            rows = await c.fetch("SELECT user_id, name FROM users WHERE user_id < $1 ORDER BY user_id", 4)
            assert [(r["user_id"], r["name"]) for r in rows] == [(i, f"o{i}") for i in range(4)]
            assert await c.fetchval("SELECT count(*) FROM users") == 10
            async with c.transaction():
                await c.execute("DELETE FROM users WHERE user_id = $1", 9)
            assert await c.fetchval("SELECT count(*) FROM users") == 9
        finally:
            await c.close()

    asyncio.run(run())
    assert shards.conns["s0"].execute("select count(*) from users").fetchone() == (9,)


def test_psycopg_transactions_with_parameters_stay_on_one_shard(router: ShardRouterServer, shards: Shards) -> None:
    shards.truncate()
    with psycopg.connect(router.dsn()) as conn:  # not autocommit: psycopg sends BEGIN itself
        conn.execute("INSERT INTO users (user_id, name) VALUES (%s, %s)", (1, "one"))
        conn.execute("UPDATE users SET name = %s WHERE user_id = %s", ("uno", 1))
        conn.commit()
        conn.execute("INSERT INTO users (user_id, name) VALUES (%s, %s)", (2, "two"))
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="one shard"):
            conn.execute("INSERT INTO users (user_id, name) VALUES (%s, %s)", (3, "three"))
        conn.rollback()
        assert conn.execute("SELECT name FROM users WHERE user_id = %s", (1,)).fetchone() == ("uno",)
    assert shards.where(1) == ["s1"] and shards.where(2) == [] and shards.where(3) == []


@pytest.mark.parametrize("sql", [
    "SELECT pg_sleep(60) FROM users WHERE user_id = 1",  # one shard, relayed
    "SELECT count(*) FROM users WHERE pg_sleep(60) IS NOT NULL",  # every shard, gathered
])
def test_cancel_reaches_the_shards_running_the_statement(db: psycopg.Connection, sql: str) -> None:
    import threading
    import time

    for k in range(4):
        db.execute(f"INSERT INTO users (user_id, name) VALUES ({k + 1}, 'c')")
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            db.execute(sql)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)
        done.set()

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 30
    while not done.is_set() and time.monotonic() < deadline:
        db.cancel()  # until the statement has started and is canceled
        done.wait(0.2)
    t.join(30)
    assert done.is_set(), "the statement was not canceled"
    assert errors and isinstance(errors[0], psycopg.errors.QueryCanceled), errors
    assert db.execute("SELECT 1").fetchone() == (1,)


def test_a_shard_that_is_down_is_named_and_the_others_keep_serving(shards: Shards, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from proxy.devstack.ports import allocate_port

    c0 = shards.clusters[0]
    dead = allocate_port("127.0.0.1")  # held, nothing listens on it
    try:
        servers = {"s0": c0.primary, "s1": shards.clusters[1].primary,
                   "gone": SimpleNamespace(address=f"127.0.0.1:{dead.port}")}
        groups = '[groups.users]\ntables = ["users"]\nkey = "user_id"\nmap = "modulo"\nshards = ["s0", "s1", "gone"]\n'
        server = start_shard_router(servers, log_dir=tmp_path, backend_user=c0.user,  # type: ignore[arg-type]
                                    backend_password=c0.password, groups=groups, name="shard_gone")
        try:
            shards.truncate()
            with psycopg.connect(server.dsn(), autocommit=True) as conn:
                conn.execute("INSERT INTO users (user_id, name) VALUES (3, 'x')")  # 3 % 3 == 0: s0
                with pytest.raises(psycopg.OperationalError, match="gone"):
                    conn.execute("INSERT INTO users (user_id, name) VALUES (2, 'y')")  # the dead shard
                with pytest.raises(psycopg.OperationalError, match="gone"):
                    conn.execute("SELECT count(*) FROM users")  # scatter needs every shard
                assert conn.execute("SELECT name FROM users WHERE user_id = 3").fetchone() == ("x",)
        finally:
            server.close()
    finally:
        dead.release()


def test_show_hot_keys_finds_the_celebrity_under_skewed_load(router: ShardRouterServer, shards: Shards) -> None:
    import signal

    shards.truncate()
    rng = random.Random(5)
    celebrity = 777  # 777 % 4 == 1
    with psycopg.connect(router.dsn(), autocommit=True) as conn:
        conn.execute("INSERT INTO users (user_id, name) VALUES " + ", ".join(f"({k}, 'k{k}')" for k in range(1000)))
        hits = 1  # its INSERT row
        for _ in range(600):
            k = celebrity if rng.random() < 0.3 else rng.randrange(1000)
            hits += k == celebrity
            conn.execute("SELECT name FROM users WHERE user_id = %s", (k,))
    r = _psql(router, "SHOW HOT KEYS 3", database="tierproxy")
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0].split("|")
    assert first[:3] == ["users", str(celebrity), "s1"]
    # count is an upper bound (Space-Saving), count - error a lower one; share = count / statements
    count, error = int(first[3]), int(first[4])
    assert count - error <= hits <= count
    # share = count / the group's statements: these 1600 (1000 INSERT rows, 600 reads) and those
    # of earlier tests on this router
    assert 0 < float(first[5]) <= count / 1600 + 1e-4
    # The operator gives it a dedicated shard: its reads and writes go there after a reload.
    original = router.config_path.read_text()
    try:
        router.config_path.write_text(original.replace(f'"{DEDICATED}" = "s0"', f'"{DEDICATED}" = "s0", "{celebrity}" = "s3"'))
        os.kill(router.process.pid, signal.SIGHUP)
        wait_until(lambda: _psql(router, f"SHOW SHARD FOR {celebrity}", database="tierproxy").stdout.strip()
                   == f"users|{celebrity}|s3|dedicated", 20, "the reload did not apply")  # fmt: skip
        shards.conns["s1"].execute(f"delete from users where user_id = {celebrity}")
        with psycopg.connect(router.dsn(), autocommit=True) as conn:
            conn.execute("INSERT INTO users (user_id, name) VALUES (%s, %s)", (celebrity, "moved"))
            assert conn.execute("SELECT name FROM users WHERE user_id = %s", (celebrity,)).fetchone() == ("moved",)
        assert shards.where(celebrity) == ["s3"]
    finally:
        router.config_path.write_text(original)
        os.kill(router.process.pid, signal.SIGHUP)
        wait_until(lambda: _psql(router, f"SHOW SHARD FOR {celebrity}", database="tierproxy").stdout.strip()
                   == f"users|{celebrity}|s1|modulo", 20, "the reload back did not apply")  # fmt: skip
