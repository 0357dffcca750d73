"""proxy/devstack/patroni.py against real etcd, Patroni and PostgreSQL 15.

Roles are asserted through the servers themselves (pg_is_in_recovery, synchronous_standby_names),
not only through Patroni's REST answers; waits poll with a deadline.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from proxy.devstack.patroni import (
    PatroniCluster,
    etcd_binary,
    patroni_binary,
    reap_orphans,
    start_patroni_cluster,
)
from proxy.devstack.poll import wait_until, wait_until_async
from proxy.devstack.ports import PortLock

pytestmark = pytest.mark.skipif(
    etcd_binary() is None or patroni_binary() is None, reason="patroni and etcd-server are not installed"
)


@pytest.fixture(scope="module")
def patroni(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PatroniCluster]:
    cluster = start_patroni_cluster(3, log_dir=tmp_path_factory.mktemp("patroni"))
    try:
        yield cluster
    finally:
        cluster.close()


async def _query(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_one_leader_writable_and_replicas_stream_its_writes(patroni: PatroniCluster) -> None:
    leader = patroni.leader()
    assert await _query(leader.dsn(), "select pg_is_in_recovery()") is False
    table = f"t_{uuid.uuid4().hex[:10]}"
    await _query(leader.dsn(), f"create table {table} as select 42 as v")
    replicas = patroni.replicas()
    assert len(replicas) == 2
    for replica in replicas:
        assert await _query(replica.dsn(), "select pg_is_in_recovery()") is True

    async def replicated() -> bool:
        return all([await _query(r.dsn(), f"select count(*) from pg_class where relname = '{table}'") == 1
                    for r in replicas])  # fmt: skip

    await wait_until_async(replicated, 30, f"{table} on every replica")
    # Settings the tests rely on reach every node through Patroni's dynamic config.
    assert await _query(leader.dsn(), "show max_prepared_transactions") == "10"


async def test_switchover_to_a_named_replica(patroni: PatroniCluster) -> None:
    old = patroni.wait_leader()
    target = patroni.replicas()[0].name
    assert patroni.switchover(to=target) == target
    assert await _query(patroni.node(target).dsn(), "select pg_is_in_recovery()") is False
    patroni.wait_healthy(60)
    # The old leader rejoined as a replica.
    assert await _query(patroni.node(old).dsn(), "select pg_is_in_recovery()") is True


async def test_killing_the_leader_postmaster_fails_over(patroni: PatroniCluster) -> None:
    old, new = patroni.kill_leader_postmaster()
    assert new != old
    assert await _query(patroni.node(new).dsn(), "select pg_is_in_recovery()") is False
    patroni.wait_healthy(60)
    assert await _query(patroni.node(old).dsn(), "select pg_is_in_recovery()") is True


async def test_synchronous_mode_toggle(patroni: PatroniCluster) -> None:
    patroni.set_synchronous_mode(True)
    leader = patroni.leader()
    sync = [m["name"] for m in patroni.cluster()["members"] if m["role"] == "sync_standby"]
    assert len(sync) == 1
    names = await _query(leader.dsn(), "show synchronous_standby_names")
    assert sync[0] in str(names)
    patroni.set_synchronous_mode(False)

    async def no_sync_names() -> bool:
        return await _query(leader.dsn(), "show synchronous_standby_names") == ""

    await wait_until_async(no_sync_names, 30, "synchronous_standby_names cleared")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_close_leaves_no_process_and_frees_every_port(tmp_path: Path) -> None:
    cluster = start_patroni_cluster(1, log_dir=tmp_path, scope="teardown")
    node = cluster.nodes[0]
    assert cluster.etcd is not None and node.process is not None
    pids = [cluster.etcd.process.pid, node.process.pid, node.postmaster_pid()]
    assert all(pid is not None and _alive(pid) for pid in pids)
    ports = [cluster.etcd.port, cluster.etcd.peer_lock.port, node.port, node.api_port]
    cluster.close()
    wait_until(lambda: not any(_alive(p) for p in pids if p is not None), 10, "every process gone")
    for port in ports:
        PortLock(port).release()  # raises PortUnavailable if still locked or listened on
    assert not cluster.base_dir.exists()


def test_reap_orphans_kills_a_postmaster_whose_patroni_died(tmp_path: Path) -> None:
    # Patroni SIGKILLed alone (as when the test runner is SIGKILLed): its postgres lives on, in a
    # session of its own, until the next cluster start reaps it.
    cluster = start_patroni_cluster(1, log_dir=tmp_path, scope="orphan")
    try:
        node = cluster.nodes[0]
        postmaster = node.postmaster_pid()
        assert node.process is not None and postmaster is not None
        node.process.kill()
        assert _alive(postmaster)
        assert postmaster in reap_orphans()
        wait_until(lambda: not _alive(postmaster), 10, "the orphan postmaster gone")
    finally:
        cluster.close()
