"""COPY through `tierproxy shard` on four real PostgreSQL shards (copy_route.py): COPY FROM STDIN
split by key (text and csv, psycopg and psql), COPY TO STDOUT gathered, errors. Rows are checked
directly on the shards; a one-shard router is compared with the shard direct."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from proxy.devstack.shard import ShardRouterServer

from . import test_shard_daemon as base
from .test_shard_daemon import DEDICATED, Shards, expected_shard

shards = base.shards  # the module's fixtures: four shards, the router over them, a one-shard router
router = base.router
one_shard_router = base.one_shard_router
PSQL = shutil.which("psql")
NAMES = ["plain", "tab\there", "new\nline", "back\\slash", "quote\"d", "comma,", "ünï", "", None, "\\N", "\r"]


def _rows(n: int, seed: int) -> list[tuple[int, str | None]]:
    rng = random.Random(seed)
    keys = rng.sample(range(-10_000, 10_000), n) + [DEDICATED]
    return [(k, rng.choice(NAMES)) for k in keys]


def test_copy_from_stdin_splits_rows_by_key(router: ShardRouterServer, shards: Shards) -> None:
    shards.truncate()
    rows = _rows(300, 1)
    with psycopg.connect(router.dsn(), autocommit=True) as c:
        with c.cursor() as cur:
            with cur.copy("COPY users (user_id, name) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
            assert cur.rowcount == len(rows)
        assert c.execute("SELECT count(*) FROM users").fetchone() == (len(rows),)
    for k, name in rows:
        owner = expected_shard(k)
        assert shards.where(k) == [owner], k
        assert shards.conns[owner].execute("select name from users where user_id = %s", (k,)).fetchone() == (name,)


def test_copy_csv_with_header_and_quoted_newlines(router: ShardRouterServer, shards: Shards) -> None:
    shards.truncate()
    data = 'name,user_id\n"a\nb",1\n"x,""y""",2\n,3\n"",4\nlast,5'
    with psycopg.connect(router.dsn(), autocommit=True) as c, c.cursor() as cur:
        with cur.copy("COPY users (name, user_id) FROM STDIN WITH (FORMAT csv, HEADER)") as cp:
            for i in range(0, len(data), 3):  # in pieces that cut rows and quotes
                cp.write(data[i : i + 3].encode())
        assert cur.rowcount == 5
    got = {k: shards.conns[expected_shard(k)].execute("select name from users where user_id = %s", (k,)).fetchone()
           for k in range(1, 6)}
    assert got == {1: ("a\nb",), 2: ('x,"y"',), 3: (None,), 4: ("",), 5: ("last",)}


def test_psql_copy_from_a_file_and_copy_to_stdout(router: ShardRouterServer, shards: Shards, tmp_path: Path) -> None:
    assert PSQL is not None, "psql is needed (Debian package postgresql-client)"
    shards.truncate()
    rows = _rows(50, 2)
    src = tmp_path / "in.tsv"
    with psycopg.connect(shards.clusters[0].primary.dsn) as d:  # the file in COPY's own text format
        d.execute("create temp table t (user_id bigint, name text)")
        with d.cursor().copy("COPY t FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
        with d.cursor().copy("COPY t TO STDOUT") as cp:
            src.write_bytes(b"".join(bytes(b) for b in cp))
    env = {**os.environ, "PGPASSWORD": "app-secret"}
    argv = [PSQL, "-h", router.host, "-p", str(router.port), "-U", "app", "-d", "postgres", "-X", "-v", "ON_ERROR_STOP=1"]
    r = subprocess.run(argv + ["-c", rf"\copy users (user_id, name) from '{src}'"], capture_output=True, text=True,
                       env=env, timeout=60, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "COPY 51", (r.stdout, r.stderr)
    r = subprocess.run(argv + ["-c", "COPY users TO STDOUT"], capture_output=True, env=env, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(src.read_bytes().splitlines())
    with psycopg.connect(router.dsn(), autocommit=True) as c, c.cursor() as cur:
        with cur.copy("COPY (SELECT user_id FROM users WHERE user_id > 0) TO STDOUT WITH (FORMAT csv, HEADER)") as cp:
            out = b"".join(bytes(b) for b in cp).decode().splitlines()
        assert out[0] == "user_id" and out.count("user_id") == 1
        assert sorted(int(x) for x in out[1:]) == sorted(k for k, _ in rows if k > 0)
        assert cur.rowcount == len(out) - 1
        with cur.copy(f"COPY (SELECT name FROM users WHERE user_id = {rows[0][0]}) TO STDOUT") as cp:
            assert len(b"".join(bytes(b) for b in cp).splitlines()) == 1  # one shard, relayed
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="ORDER BY"):
            with cur.copy("COPY (SELECT user_id FROM users ORDER BY user_id) TO STDOUT") as cp:
                list(cp)


@pytest.mark.parametrize("data, sqlstate", [
    (b"1\tok\nnot-a-number\tbad\n", "22P02"),  # the router reads the key
    (b"1\tok\n\n", "22P04"),  # a row without the key's field... (an empty line: one empty field)
    (b"5\tok\n\\N\tnull key\n", "22004"),
    (b"5\tok\n6\tok\n5\tdup\n", "23505"),  # a shard refuses: named, nothing kept anywhere
])
def test_bad_copy_data_gets_the_protocols_error_and_nothing_is_kept(router: ShardRouterServer, shards: Shards,
                                                                    data: bytes, sqlstate: str) -> None:
    shards.truncate()
    with psycopg.connect(router.dsn(), autocommit=True) as c:
        with pytest.raises(psycopg.Error) as info:
            with c.cursor().copy("COPY users (name, user_id) FROM STDIN" if sqlstate == "22P04"
                                 else "COPY users (user_id, name) FROM STDIN") as cp:
                cp.write(data)
        assert info.value.sqlstate == sqlstate, info.value
        if sqlstate == "23505":
            assert "shard s1" in str(info.value)
        assert c.execute("SELECT count(*) FROM users").fetchone() == (0,)  # the session goes on
    assert shards.all_rows() == []


def test_copy_into_a_table_in_no_group_reaches_every_shard(router: ShardRouterServer, shards: Shards) -> None:
    for conn in shards.conns.values():
        conn.execute("create table if not exists countries (code text primary key)")
    try:
        with psycopg.connect(router.dsn(), autocommit=True) as c, c.cursor() as cur:
            with cur.copy("COPY countries FROM STDIN") as cp:
                for code in ("fr", "de", "jp"):
                    cp.write_row((code,))
            with cur.copy("/* tierproxy:shard=s2 */ COPY countries FROM STDIN") as cp:
                cp.write_row(("it",))
        for name, conn in shards.conns.items():
            assert sorted(r[0] for r in conn.execute("select code from countries")) == \
                sorted(["de", "fr", "jp"] + (["it"] if name == "s2" else []))
    finally:
        for conn in shards.conns.values():
            conn.execute("drop table if exists countries")


def _copy_session(dsn: str) -> list[object]:
    """The same client code, direct and through a one-shard router: what it sees."""
    seen: list[object] = []
    with psycopg.connect(dsn, autocommit=True) as c, c.cursor() as cur:
        with cur.copy("COPY users (user_id, name) FROM STDIN") as cp:
            for r in _rows(40, 3):
                cp.write_row(r)
        seen.append(cur.rowcount)
        for bad in (b"x\ty\n", b"1\n", b"7\ta\n7\tb\n"):
            try:
                with cur.copy("COPY users (user_id, name) FROM STDIN") as cp:
                    cp.write(bad)
                seen.append(("ok", cur.rowcount))
            except psycopg.Error as exc:
                seen.append(exc.sqlstate)
        with cur.copy("COPY users TO STDOUT WITH (FORMAT csv)") as cp:
            seen.append(sorted(b"".join(bytes(b) for b in cp).splitlines()))
        seen.append(cur.rowcount)
        seen.append(c.execute("SELECT count(*) FROM users").fetchone())
    return seen


def test_one_shard_router_copies_as_the_shard_does(one_shard_router: ShardRouterServer, shards: Shards) -> None:
    shards.truncate()
    direct = _copy_session(shards.clusters[0].primary.dsn)
    shards.truncate()
    through = _copy_session(one_shard_router.dsn())
    assert through == direct
