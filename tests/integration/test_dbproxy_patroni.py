"""`tierproxy dbproxy` following a real Patroni cluster (issue 16): writes survive the primary's death.

A real etcd, three Patroni nodes of PostgreSQL 15 (proxy/devstack/patroni.py),
and the dbproxy as a subprocess with `[topology] source = "patroni"`. A writer keeps a ledger:
each INSERT goes through the proxy's one address and returns the port of the server that ran it;
an id is *acknowledged* when the INSERT returned. After a switchover and after a SIGKILL of the
leader's postmaster:

- every acknowledged id is in the table on the new leader (the switchover, in synchronous mode:
  nothing acknowledged is lost; the node kill runs asynchronous, see its test), and no id is
  there that was never sent;
- writes resume through the same proxy address, without a proxy restart, on the new leader;
- no write ran on a node that was not the leader: the ports that ran the acknowledged writes are
  the old leader's, then the new leader's, never back (the fence).

The write pause (the longest gap between two acknowledgements) is logged, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from proxy.devstack.dbproxy import DbProxyServer
from proxy.devstack.patroni import HOST, PatroniCluster, etcd_binary, patroni_binary, start_patroni_cluster
from proxy.devstack.poll import wait_until_async
from proxy.devstack.ports import allocate_port
from proxy.devstack.process import ManagedProcess, python_child_env

pytestmark = [
    pytest.mark.skipif(etcd_binary() is None or patroni_binary() is None,
                       reason="patroni and etcd-server are not installed"),
    pytest.mark.timeout(300),  # the cluster's start is counted in the first test
]  # fmt: skip
log = logging.getLogger(__name__)
DEADLINE = 90.0  # seconds for anything to happen on the loaded 2-core machine
PASSWORD = "app-secret"
WRITE_TIMEOUT = 20.0  # seconds one INSERT may take before the writer gives up on its connection


class PatroniDbProxy(DbProxyServer):
    """A dbproxy subprocess whose primary and replicas come from Patroni (`topology` TOML lines)."""

    def __init__(self, cluster: PatroniCluster, *, log_dir: Path, topology: list[str], name: str,
                 extra: str = "") -> None:  # fmt: skip
        self.host = HOST
        self.port_lock = allocate_port(HOST)
        self.admin_lock = allocate_port(HOST)
        self.users = {"app": PASSWORD}
        self.config_path = Path(log_dir) / f"{name}.toml"
        lines = [
            f'listen = "{HOST}:{self.port}"', f'admin = {{ address = "{HOST}:{self.admin_port}" }}',
            "[topology]", 'source = "patroni"', *topology, "failover_hold_timeout = 60",
            "[auth]", 'method = "scram-sha-256"', "[auth.users.app]", f'password = "{PASSWORD}"',
            "[backend_auth]", 'mode = "service"', f'user = "{cluster.superuser}"',
            f"password = {json.dumps(cluster.password)}",
            "[monitor]", "interval = 0.5", "timeout = 0.5",
        ]  # fmt: skip
        self.config_path.write_text("\n".join(lines) + "\n" + extra)  # extra: more tables
        argv = [sys.executable, "-m", "proxy.cli", "dbproxy", "--config", str(self.config_path), "--json-logs"]
        self.process = ManagedProcess(argv, name=name, log_dir=log_dir, env=python_child_env())


@pytest.fixture(scope="module")
def patroni(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PatroniCluster]:
    cluster = start_patroni_cluster(3, log_dir=tmp_path_factory.mktemp("patroni-dbproxy"), scope="dbpx")
    try:
        yield cluster
    finally:
        cluster.close()


def start_proxy(cluster: PatroniCluster, log_dir: Path, topology: list[str], name: str) -> PatroniDbProxy:
    proxy = PatroniDbProxy(cluster, log_dir=log_dir, topology=topology, name=name)
    try:
        return proxy.wait_ready(DEADLINE)  # type: ignore[return-value]
    except BaseException:
        proxy.close()
        raise


@pytest.fixture
def proxy(request: pytest.FixtureRequest, patroni: PatroniCluster, tmp_path: Path) -> Iterator[PatroniDbProxy]:
    if request.param == "rest":
        urls = ", ".join(json.dumps(n.api_url) for n in patroni.nodes)
        topology = [f"patroni_urls = [{urls}]", "poll_interval = 0.2"]
    else:
        assert patroni.etcd is not None
        topology = [f'etcd_urls = ["http://{HOST}:{patroni.etcd.port}"]', f'scope = "{patroni.scope}"']
    server = start_proxy(patroni, tmp_path, topology, f"dbproxy-{request.param}")
    try:
        yield server
    finally:
        server.close()


class Writer:
    """One client writing through the proxy, reconnecting after errors; the ledger."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.acked: list[tuple[int, int, float]] = []  # (id, server port, monotonic time)
        self.sent: set[int] = set()
        self.errors: list[str] = []
        self.stop = asyncio.Event()
        self._next = 1

    async def run(self) -> None:
        conn: asyncpg.Connection | None = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = await asyncpg.connect(self.dsn, timeout=DEADLINE)
                i, self._next = self._next, self._next + 1
                self.sent.add(i)
                # A bound per write, so a write that never gets an answer is an error, not a hang.
                port = await conn.fetchval("INSERT INTO ledger VALUES ($1) RETURNING inet_server_port()", i,
                                           timeout=WRITE_TIMEOUT)  # fmt: skip
                self.acked.append((i, port, time.monotonic()))
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    asyncpg.exceptions.InternalClientError) as exc:  # fmt: skip
                # InternalClientError: asyncpg's own race when a server's FATAL arrives between
                # two statements (its state is still "consuming an error" when the next one
                # starts), as with a direct connection to a server that shuts down.
                self.errors.append(f"{type(exc).__name__}: {getattr(exc, 'sqlstate', '')} {exc}")
                if conn is not None:
                    conn.terminate()
                    conn = None
        if conn is not None:
            await conn.close()

    def acked_after(self, t: float) -> int:
        return sum(1 for _, _, at in self.acked if at > t)

    def longest_pause(self) -> float:
        times = [at for _, _, at in self.acked]
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)


@pytest.fixture
async def ledger(patroni: PatroniCluster, proxy: PatroniDbProxy) -> AsyncIterator[Writer]:
    # An earlier test's old leader may still be rejoining (pg_rewind): all three must stream.
    await asyncio.to_thread(patroni.wait_healthy, DEADLINE, len(patroni.nodes))
    conn = await asyncpg.connect(proxy.dsn(), timeout=DEADLINE)
    try:
        await conn.execute("DROP TABLE IF EXISTS ledger; CREATE TABLE ledger (id int PRIMARY KEY)")
    finally:
        await conn.close()
    yield Writer(proxy.dsn())


async def under_writes(writer: Writer, action: Any) -> tuple[str, str]:
    """Run `action` (blocking: it returns (old leader, new leader)) while `writer` writes; stop
    once writes were acknowledged after it."""
    task = asyncio.create_task(writer.run())
    try:
        async def before() -> bool | None:
            return len(writer.acked) >= 20 or None

        await wait_until_async(before, DEADLINE, "20 writes before the event")
        old, new = await asyncio.to_thread(action)
        done = time.monotonic()

        async def after() -> bool | None:
            return writer.acked_after(done) >= 20 or None

        await wait_until_async(after, DEADLINE, "20 writes after the new leader was writable")
    finally:
        writer.stop.set()
        await asyncio.wait_for(task, DEADLINE)
    return old, new


async def check_ledger(patroni: PatroniCluster, proxy: PatroniDbProxy, writer: Writer, old: str, new: str,
                       *, synchronous: bool = True) -> None:  # fmt: skip
    old_port, new_port = patroni.node(old).port, patroni.node(new).port
    conn = await asyncpg.connect(patroni.node(new).dsn(), timeout=DEADLINE)
    try:
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is False
        in_table = {r["id"] for r in await conn.fetch("SELECT id FROM ledger")}
    finally:
        await conn.close()
    acked = [i for i, _, _ in writer.acked]
    missing = sorted(set(acked) - in_table)
    if synchronous:
        assert not missing, f"acknowledged writes lost: {missing[:20]}"
    else:
        log.info("asynchronous mode: %d acknowledged writes lost in the failover: %s", len(missing), missing[:20])
    assert in_table <= writer.sent, f"rows never sent: {sorted(in_table - writer.sent)[:20]}"
    ports = [p for i, p, _ in writer.acked if i not in missing]
    first_new = ports.index(new_port)
    assert set(ports[:first_new]) == {old_port}, f"before the switch: {sorted(set(ports[:first_new]))}"
    assert set(ports[first_new:]) == {new_port}, f"a write ran on {set(ports[first_new:]) - {new_port}} after the switch"
    topology = proxy.status()["topology"]
    assert topology["confirmed"] == new and topology["failovers_total"] >= 1
    assert proxy.process.running  # the same proxy process throughout
    log.info("failover %s -> %s: %d acked, %d errors %s, longest write pause %.2fs, proxy saw %s",
             old, new, len(acked), len(writer.errors), writer.errors[:5], writer.longest_pause(),
             topology["failovers"][-1])  # fmt: skip
    print(f"\n{old} -> {new}: longest write pause {writer.longest_pause():.2f}s, errors {writer.errors}, "
          f"proxy: {topology['failovers'][-1]}")  # noqa: T201 - the figures the issue asks to see


@pytest.mark.parametrize("proxy", ["rest"], indirect=True)
async def test_switchover_under_writes_loses_nothing(patroni: PatroniCluster, proxy: PatroniDbProxy,
                                                     ledger: Writer) -> None:  # fmt: skip
    await asyncio.to_thread(patroni.set_synchronous_mode, True)  # the zero-loss claim needs it

    def switchover() -> tuple[str, str]:
        old = patroni.wait_leader()
        return old, patroni.switchover()

    old, new = await under_writes(ledger, switchover)
    await check_ledger(patroni, proxy, ledger, old, new)


@pytest.mark.parametrize("proxy", ["etcd"], indirect=True)
async def test_leader_node_killed_writes_held_then_resume(patroni: PatroniCluster, proxy: PatroniDbProxy,
                                                                ledger: Writer) -> None:  # fmt: skip
    """Patroni and postgres of the leader SIGKILLed together (a dead machine): no leader until
    the leader key's ttl expires; writes are held meanwhile, then resume on the promoted node."""
    # Patroni 3.0.2 (Debian) with synchronous_mode on did not promote after this kill in our
    # runs ("not the healthiest node" on both replicas): this one runs asynchronous, where an
    # acknowledged write may be lost (the loss window), so the ledger is checked for what
    # must hold in every mode and the loss is logged.
    # (Turning it back on after the killed node rejoins loops in Patroni 3.0.2: "Synchronous
    # replication key updated by someone else"; a test that needs it must run first.)
    await asyncio.to_thread(patroni.set_synchronous_mode, False)
    old, new = await under_writes(ledger, patroni.kill_leader_node)
    await check_ledger(patroni, proxy, ledger, old, new, synchronous=False)
    await asyncio.to_thread(patroni.restart_node, old, DEADLINE)  # back as a replica


class _AnyPort:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, int)


ANY_PORT = _AnyPort()


@pytest.mark.parametrize("proxy", ["etcd"], indirect=True)
async def test_psycopg_sessions_across_a_kill(patroni: PatroniCluster, proxy: PatroniDbProxy) -> None:
    """The promises of test_dbproxy_patroni_faults.py with psycopg 3 (the other driver family): an
    idle connection with a server-side prepared statement (prepare=True) and a SET works at once
    on the new primary after kill -9 of the leader's postmaster; a transaction left open gets
    psycopg's SerializationFailure (40001) once, then the connection goes on (autocommit off:
    psycopg's own BEGIN starts the next transaction). On this module's cluster: it needs no
    particular history, only a healthy cluster to start from."""
    import psycopg

    # An earlier test's old leader may still be rejoining (pg_rewind): all three must stream.
    await asyncio.to_thread(patroni.wait_healthy, DEADLINE, len(patroni.nodes))
    dsn = proxy.dsn()
    idle = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    txn = await psycopg.AsyncConnection.connect(dsn)
    query = "SELECT %s::int + 1, inet_server_port(), current_setting('application_name')"
    try:
        await idle.execute("SET application_name = 'psycopg-idle'")
        assert await (await idle.execute(query, (1,), prepare=True)).fetchone() == (2, ANY_PORT, "psycopg-idle")
        await txn.execute("DROP TABLE IF EXISTS marks; CREATE TABLE marks (i int)")
        await txn.commit()
        # This module's cluster replicates asynchronously: a new leader that had not replayed the
        # table yet would lose it with the old one (as it may). Every replica has it before the kill.
        for node in patroni.replicas():
            async def replayed(node=node) -> bool:  # type: ignore[no-untyped-def]
                return await asyncio.to_thread(node.psql, "SELECT to_regclass('marks') IS NOT NULL") == "t"

            await wait_until_async(replayed, DEADLINE, f"the marks table replayed on {node.name}")
        await txn.execute("INSERT INTO marks VALUES (1)")  # a transaction open on the old primary
        old, new = await asyncio.to_thread(patroni.kill_leader_postmaster)
        port = patroni.node(new).port
        assert await (await idle.execute(query, (1,), prepare=True)).fetchone() == (2, port, "psycopg-idle")
        with pytest.raises(psycopg.errors.SerializationFailure):
            await txn.execute("INSERT INTO marks VALUES (2)")
        await txn.rollback()
        await txn.execute("INSERT INTO marks VALUES (3)")
        await txn.commit()
        assert [r[0] for r in await (await idle.execute("SELECT i FROM marks ORDER BY i")).fetchall()] == [3]
        topology = proxy.status()["topology"]
        print(f"\npsycopg, kill -9 {old} -> {new}: proxy failovers {topology['failovers']}, "
              f"session losses {topology.get('session_losses')}")  # noqa: T201 - the figures the issue asks to see
    finally:
        await idle.close()
        await txn.close()
