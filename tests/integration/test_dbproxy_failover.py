"""Replicas killed and frozen under load, behind `tierproxy dbproxy`.

The load is pgbench -S through the proxy plus a client loop of our own that records, for every
statement, whether it succeeded and which server answered: that loop carries the assertions.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time

import asyncpg
import pytest

from proxy.devstack.poll import wait_until_async

CLIENTS = 6


@pytest.fixture
def cluster(pg_cluster_factory):
    c = pg_cluster_factory(replicas=2)
    env = {**os.environ, **c.client_env()}
    pgbench = shutil.which("pgbench") or str(c.bindir / "pgbench")
    subprocess.run([pgbench, "-i", "-s", "1", "-q", "-h", c.primary.host, "-p", str(c.primary.port),
                    "-U", c.user, "postgres"], check=True, env=env, capture_output=True, timeout=120)  # fmt: skip
    c.wait_for_replicas_caught_up()
    return c


def _start_pgbench(cluster, proxy, seconds: int) -> subprocess.Popen[str]:
    pgbench = shutil.which("pgbench") or str(cluster.bindir / "pgbench")
    env = {**os.environ, "PGPASSWORD": "app-secret", "PGSSLMODE": "disable"}
    return subprocess.Popen(
        [pgbench, "-S", "-M", "extended", "-c", "4", "-j", "1", "-T", str(seconds), "-h", "127.0.0.1",
         "-p", str(proxy.port), "-U", "app", "postgres"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


class Load:
    """CLIENTS asyncpg sessions reading in a loop; each statement's outcome is recorded."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.log: list[list[tuple[float, str, int | None]]] = [[] for _ in range(CLIENTS)]
        self.stop = asyncio.Event()

    async def client(self, i: int) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not self.stop.is_set():
                try:
                    port = await conn.fetchval(
                        "SELECT inet_server_port() FROM pgbench_accounts WHERE aid = $1", 1 + i)
                    self.log[i].append((time.monotonic(), "ok", port))
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                    self.log[i].append((time.monotonic(), type(exc).__name__, None))
                    if conn.is_closed():
                        conn = await asyncpg.connect(self.dsn)
        finally:
            await conn.close()

    async def run_until(self, event: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self.client(i)) for i in range(CLIENTS)]
        await event.wait()
        self.stop.set()
        await asyncio.gather(*tasks)


async def _wait_status(proxy, predicate, timeout: float = 15.0) -> dict:
    async def matched() -> dict | None:
        status = await asyncio.to_thread(proxy.status)
        return status if predicate({b["name"]: b for b in status["backends"]}) else None

    return await wait_until_async(matched, timeout, "the proxy's status")


async def _each_client_logged(load: Load, n: int, since: float = 0.0) -> None:
    async def enough() -> bool:
        return all(sum(1 for e in log if e[0] >= since) >= n for log in load.log)

    await wait_until_async(enough, 30, f"{n} statements from every client")


async def test_a_killed_replica_moves_its_reads_and_both_killed_fall_back_to_the_primary(cluster, dbproxy_factory):
    proxy = dbproxy_factory(cluster)
    primary, (r1, r2) = cluster.primary.port, cluster.replicas
    bench = _start_pgbench(cluster, proxy, seconds=6)
    load = Load(proxy.dsn())
    done = asyncio.Event()
    runner = asyncio.create_task(load.run_until(done))
    await _each_client_logged(load, 20)  # the load runs on both replicas
    killed_at = time.monotonic()
    await asyncio.to_thread(r1.kill)
    await _wait_status(proxy, lambda b: not b["replica1"]["up"])
    await _each_client_logged(load, 20, since=time.monotonic())  # and goes on after the monitor saw it
    done.set()
    await runner
    for i, entries in enumerate(load.log):
        before = [e for e in entries if e[0] < killed_at]
        after = [e for e in entries if e[0] >= killed_at]
        assert before and after, f"client {i} made no progress"
        # The statement in flight at the kill may fail (the proxy retries unanswered reads, so
        # usually none does); after that, every statement succeeds, on the surviving replica once
        # the monitor has seen the death.
        # At most the statement in flight at the kill fails (killed_at is taken just before the
        # kill, so that is not necessarily the first entry after it); nothing fails later.
        failed = [e for e in after if e[1] != "ok"]
        assert len(failed) <= 1, f"client {i}: {failed}"
        assert {e[2] for e in after[-5:]} == {r2.port}, f"client {i} still reads elsewhere: {after[-5:]}"
    out, _ = bench.communicate(timeout=60)
    assert "number of transactions actually processed" in out, out

    # Both replicas gone: reads go to the primary, nothing fails.
    await asyncio.to_thread(r2.kill)
    await _wait_status(proxy, lambda b: not b["replica2"]["up"])
    conn = await asyncpg.connect(proxy.dsn())
    try:
        ports = {await conn.fetchval("SELECT inet_server_port()") for _ in range(20)}
        assert ports == {primary}
    finally:
        await conn.close()


async def test_a_frozen_replica_is_marked_down_and_new_reads_avoid_it(cluster, dbproxy_factory):
    proxy = dbproxy_factory(cluster, extra='[routing]\nbalance = "statement"\n')  # a session reads from both
    r1, r2 = cluster.replicas
    conn = await asyncpg.connect(proxy.dsn())
    try:
        seen = {await conn.fetchval("SELECT inet_server_port()") for _ in range(10)}
        assert seen == {r1.port, r2.port}
        await asyncio.to_thread(r1.pause)
        try:
            await _wait_status(proxy, lambda b: not b["replica1"]["up"] and not b["replica1"]["usable"])
            # The same session (which holds a connection to the frozen replica) and a new one
            # both read from the other replica now; nothing hangs.
            other = await asyncpg.connect(proxy.dsn())
            try:
                for c in (conn, other):
                    ports = {await asyncio.wait_for(c.fetchval("SELECT inet_server_port()"), 10) for _ in range(10)}
                    assert ports == {r2.port}
            finally:
                await other.close()
        finally:
            await asyncio.to_thread(r1.resume)
        await _wait_status(proxy, lambda b: b["replica1"]["usable"])
        seen = {await conn.fetchval("SELECT inet_server_port()") for _ in range(10)}
        assert seen == {r1.port, r2.port}
    finally:
        await conn.close()
