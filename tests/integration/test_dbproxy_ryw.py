"""Read-your-writes through `tierproxy dbproxy`, with both replicas applying WAL late on purpose
(recovery_min_apply_delay), so a read sent to a replica right after a write would miss it."""

from __future__ import annotations

import asyncpg
import pytest

from proxy.devstack.poll import PollTimeout, wait_until_async
from proxy.devstack.postgres import start_pg_cluster

DELAY_MS = 300


@pytest.fixture(scope="module")
def delayed(tmp_path_factory):
    # One cluster for the module: each test runs its own dbproxy over it and only reads and
    # updates the one row (every check compares a read with the value its own loop just wrote).
    with start_pg_cluster(2, log_dir=tmp_path_factory.mktemp("ryw"), name="ryw") as cluster:
        cluster.primary.psql("CREATE TABLE ryw (id int PRIMARY KEY, v int NOT NULL); INSERT INTO ryw VALUES (1, 0)")
        cluster.wait_for_replicas_caught_up()
        for replica in cluster.replicas:
            replica.set_apply_delay(DELAY_MS)
        yield cluster


async def _write_then_read(dsn: str, rounds: int) -> tuple[int, int]:
    """(stale reads, reads answered by a replica) over `rounds` UPDATE-then-SELECT pairs."""
    conn = await asyncpg.connect(dsn)
    stale = on_replica = 0
    try:
        for i in range(1, rounds + 1):
            await conn.execute("UPDATE ryw SET v = $1 WHERE id = 1", i)
            v, replica = await conn.fetchrow("SELECT v, pg_is_in_recovery() FROM ryw WHERE id = 1")
            stale += v != i
            on_replica += replica
    finally:
        await conn.close()
    return stale, on_replica


async def _eventually_read_on_a_replica(dsn: str, timeout: float = 15.0) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return await wait_until_async(lambda: conn.fetchval("SELECT pg_is_in_recovery()"), timeout,
                                      "a read answered by a replica")  # fmt: skip
    except PollTimeout:
        return False
    finally:
        await conn.close()


async def test_lsn_mode_a_read_after_a_write_sees_it_1000_times_in_a_row(delayed, dbproxy_factory):
    proxy = dbproxy_factory(delayed)
    stale, _ = await _write_then_read(proxy.dsn(), 1000)
    assert stale == 0
    # Reads that follow no write of their own still go to the replicas once they have replayed.
    assert await _eventually_read_on_a_replica(proxy.dsn())


async def test_primary_window_mode(delayed, dbproxy_factory):
    proxy = dbproxy_factory(delayed, extra='[routing]\nread_your_writes = "primary-window"\nprimary_window_ms = 2000\n')
    stale, on_replica = await _write_then_read(proxy.dsn(), 100)
    assert (stale, on_replica) == (0, 0)
    assert await _eventually_read_on_a_replica(proxy.dsn())


async def test_off_mode_does_read_stale_data_from_the_delayed_replicas(delayed, dbproxy_factory):
    # The control: without read-your-writes the same loop does see old values, which shows the
    # replicas really are behind in these tests.
    proxy = dbproxy_factory(delayed, extra='[routing]\nread_your_writes = "off"\n')
    stale, on_replica = await _write_then_read(proxy.dsn(), 30)
    assert on_replica > 0 and stale > 0
