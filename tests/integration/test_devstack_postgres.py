"""proxy.devstack.postgres against real PostgreSQL: roles, streaming, apply delay, failures, auth.

State is asserted through the servers themselves (pg_is_in_recovery, LSN functions,
pg_stat_replication); waits go by LSN or by polling a condition, never by sleeping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from proxy.devstack.poll import wait_until
from proxy.devstack.postgres import (
    DevstackError,
    PgCluster,
    find_pg_bindir,
    format_lsn,
    parse_lsn,
    start_pg_cluster,
    wal_end_of,
)

REPO = Path(__file__).resolve().parents[2]


def _table() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


async def _insert_and_lsn(conn: asyncpg.Connection, table: str, value: int) -> int:
    """Insert on the primary (autocommit), then the end of all WAL inserted so far."""
    await conn.execute(f"insert into {table} values ($1)", value)
    return wal_end_of(parse_lsn(await conn.fetchval("select pg_current_wal_insert_lsn()::text")))


def _streaming_names(cluster: PgCluster) -> set[str]:
    assert cluster.primary is not None
    out = cluster.primary.psql("select application_name from pg_stat_replication where state = 'streaming'")
    return set(out.split()) if out else set()


# -- pure helpers ---------------------------------------------------------------------------


def test_lsn_text_round_trips_and_page_headers_are_skipped() -> None:
    assert parse_lsn("16/B374D848") == 0x16_B374D848
    assert format_lsn(0x16_B374D848) == "16/B374D848"
    assert wal_end_of(0x0_01000028) == 0x0_01000000  # segment start: long page header
    assert wal_end_of(0x0_00002018) == 0x0_00002000  # page start: short page header
    assert wal_end_of(0x0_00002020) == 0x0_00002020  # mid-page: unchanged


def test_find_pg_bindir_finds_the_server_and_explains_a_bad_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (find_pg_bindir() / "postgres").exists()
    monkeypatch.setenv("TIERPROXY_PG_BINDIR", "/nonexistent")
    with pytest.raises(DevstackError, match="no postgres binary"):
        find_pg_bindir()


# -- the shared cluster ---------------------------------------------------------------------


async def test_primary_writes_and_replicas_are_read_only_standbys(pg_cluster: PgCluster) -> None:
    assert pg_cluster.primary is not None and len(pg_cluster.replicas) == 2
    assert _streaming_names(pg_cluster) == {"replica1", "replica2"}
    table = _table()
    primary = await asyncpg.connect(pg_cluster.primary.dsn)
    try:
        assert await primary.fetchval("select pg_is_in_recovery()") is False
        await primary.execute(f"create table {table} (x int)")
        await primary.execute(f"insert into {table} values (1)")
    finally:
        await primary.close()
    pg_cluster.wait_for_replicas_caught_up()
    for replica in pg_cluster.replicas:
        assert replica.dsn == f"postgresql://postgres:secret@127.0.0.1:{replica.port}/postgres"
        conn = await asyncpg.connect(replica.dsn)
        try:
            assert await conn.fetchval("select pg_is_in_recovery()") is True
            assert await conn.fetchval("show transaction_read_only") == "on"
            with pytest.raises(asyncpg.PostgresError) as info:
                await conn.execute(f"insert into {table} values (2)")
            assert info.value.sqlstate == "25006"  # read_only_sql_transaction
        finally:
            await conn.close()


async def test_a_row_committed_on_the_primary_is_visible_on_both_replicas(pg_cluster: PgCluster) -> None:
    assert pg_cluster.primary is not None
    table = _table()
    value = int(uuid.uuid4().int % 1_000_000)
    primary = await asyncpg.connect(pg_cluster.primary.dsn)
    try:
        await primary.execute(f"create table {table} (x int)")
        lsn = await _insert_and_lsn(primary, table, value)
    finally:
        await primary.close()
    for replica in pg_cluster.replicas:
        await replica.wait_replayed_async(lsn, timeout=10)
        assert (replica.replay_lsn() or 0) >= lsn
        conn = await asyncpg.connect(replica.dsn)
        try:
            assert await conn.fetchval(f"select array_agg(x) from {table}") == [value]
        finally:
            await conn.close()


async def test_scram_refuses_a_wrong_password(pg_cluster: PgCluster) -> None:
    assert pg_cluster.primary is not None
    stored = pg_cluster.primary.psql("select left(rolpassword, 14) from pg_authid where rolname = 'postgres'")
    assert stored == "SCRAM-SHA-256$"
    rules = pg_cluster.primary.psql("select distinct auth_method from pg_hba_file_rules where type = 'host'")
    assert rules == "scram-sha-256"
    for server in pg_cluster.servers:
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(server.dsn_for(password="wrong"))
        conn = await asyncpg.connect(server.dsn)
        await conn.close()


# -- a primary and one replica shared by the tests that leave them as they found them ---------


@pytest.fixture(scope="module")
def shared_pair(tmp_path_factory: pytest.TempPathFactory):
    with start_pg_cluster(1, log_dir=tmp_path_factory.mktemp("pair"), name="pair") as cluster:
        yield cluster


@pytest.fixture
def pair(shared_pair: PgCluster) -> PgCluster:
    # The apply-delay, fast-stop and pause tests each restore what they changed (no delay, the
    # primary running, nothing frozen): before each, the replica streams and has replayed all.
    wait_until(lambda: _streaming_names(shared_pair) == {"replica1"}, 15, "the replica streams")
    shared_pair.wait_for_replicas_caught_up()
    return shared_pair


# -- clusters owned by one test -------------------------------------------------------------


async def test_a_replica_with_an_apply_delay_lags_then_catches_up(pair: PgCluster) -> None:
    delay_ms = 2000  # a whole number of seconds: SHOW would print it as '2s'
    cluster = pair
    primary, replica = cluster.primary, cluster.replicas[0]
    table = _table()
    primary.psql(f"create table {table} (x int)")
    cluster.wait_for_replicas_caught_up()
    replica.set_apply_delay(delay_ms)

    conn = await asyncpg.connect(primary.dsn)
    try:
        lsn = await _insert_and_lsn(conn, table, 7)
        committed = time.monotonic()
    finally:
        await conn.close()
    # The commit record has arrived on the replica but is held back from replay.
    wait_until(lambda: (replica.receive_lsn() or 0) >= lsn, 5, "replica received the commit")
    assert (replica.replay_lsn() or 0) < lsn
    assert replica.psql(f"select count(*) from {table}") == "0"
    assert time.monotonic() - committed < delay_ms / 1000, "too slow to observe the lag"

    replica.wait_replayed(lsn, timeout=delay_ms / 1000 + 10)
    assert time.monotonic() - committed >= 0.9 * delay_ms / 1000
    assert replica.psql(f"select x from {table}") == "7"

    replica.set_apply_delay(0)
    conn = await asyncpg.connect(primary.dsn)
    try:
        lsn = await _insert_and_lsn(conn, table, 8)
    finally:
        await conn.close()
    replica.wait_replayed(lsn, timeout=5)
    assert replica.psql(f"select count(*) from {table}") == "2"


async def test_killing_a_replica_leaves_the_primary_and_the_other_replica_working(pg_cluster_factory) -> None:
    cluster = pg_cluster_factory(replicas=2)
    primary, victim, survivor = cluster.primary, cluster.replicas[0], cluster.replicas[1]
    table = _table()
    primary.psql(f"create table {table} (x int)")

    victim.kill()
    assert not victim.running
    wait_until(lambda: _streaming_names(cluster) == {"replica2"}, 15, "primary notices the dead walreceiver")
    primary.psql(f"insert into {table} values (1)")
    assert cluster.following_replicas() == [survivor]
    lsn = cluster.wait_for_replicas_caught_up()
    assert survivor.psql(f"select x from {table}") == "1"
    with pytest.raises(OSError):
        await asyncpg.connect(victim.dsn, timeout=2)

    # A crashed replica restarts from its data dir, resumes streaming from its slot and catches up.
    victim.start()
    victim.wait_replayed(lsn)
    assert victim.psql(f"select x from {table}") == "1"
    assert _streaming_names(cluster) == {"replica1", "replica2"}


async def test_a_fast_stopped_primary_restarts_and_replicas_reconnect(pair: PgCluster) -> None:
    cluster = pair
    primary, replica = cluster.primary, cluster.replicas[0]
    table = _table()
    primary.psql(f"create table {table} (x int); insert into {table} values (1)")
    assert primary.stop("fast") == 0
    with pytest.raises(OSError):
        await asyncpg.connect(primary.dsn, timeout=2)
    primary.start()
    primary.psql(f"insert into {table} values (2)")
    wait_until(lambda: _streaming_names(cluster) == {"replica1"}, 15, "replica reconnects")
    cluster.wait_for_replicas_caught_up()
    assert replica.psql(f"select count(*) from {table}") == "2"


async def test_promote_turns_a_replica_into_a_writable_primary(pg_cluster_factory) -> None:
    cluster = pg_cluster_factory(replicas=1)
    replica = cluster.replicas[0]
    table = _table()
    cluster.primary.psql(f"create table {table} (x int); insert into {table} values (1)")
    cluster.wait_for_replicas_caught_up()
    assert replica.is_in_recovery()

    replica.promote()
    assert replica.role == "primary" and not replica.is_in_recovery()
    conn = await asyncpg.connect(replica.dsn)
    try:
        await conn.execute(f"insert into {table} values (2)")
        assert await conn.fetchval(f"select sum(x) from {table}") == 3
    finally:
        await conn.close()
    assert cluster.following_replicas() == []
    with pytest.raises(DevstackError, match="needs a replica"):
        replica.set_apply_delay(10)


async def test_pause_freezes_open_sessions_until_resume(pair: PgCluster) -> None:
    cluster = pair
    conn = await asyncpg.connect(cluster.primary.dsn)
    try:
        cluster.primary.pause()
        try:
            query = asyncio.ensure_future(conn.fetchval("select 42"))
            done, _ = await asyncio.wait({query}, timeout=0.3)
            assert not done, "a paused backend answered"
        finally:
            cluster.primary.resume()
        assert await asyncio.wait_for(query, 5) == 42
    finally:
        await conn.close()


def test_servers_die_with_a_sigkilled_parent() -> None:
    script = textwrap.dedent(
        """
        import sys
        from proxy.devstack.postgres import start_pg_cluster
        cluster = start_pg_cluster(1, name="orphan")
        print(cluster.base_dir, *(s.process.pid for s in cluster.servers), flush=True)
        sys.stdin.read()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    base_dir, pids = None, []
    try:
        base_dir, *pid_texts = child.stdout.readline().split() or [None]
        pids = [int(pid) for pid in pid_texts]
        assert len(pids) == 2, "child did not start a cluster"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        wait_until(lambda: not any(_alive(pid) for pid in pids), 10, "postmasters of a killed parent exit")
    finally:
        if child.poll() is None:
            child.kill()
        for pid in pids:
            if _alive(pid):  # the test failed: do not leave its servers behind
                os.kill(pid, signal.SIGQUIT)
        if base_dir is not None:
            shutil.rmtree(base_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # an unreaped zombie has exited
