"""A client's identity through `tierproxy dbproxy`: the BackendKeyData it gets is its own primary
server connection's real pid and secret (issue 12, items 4 and 5).

Checked end to end with real pids, each against what PostgreSQL itself reports or does direct:
pg_backend_pid() and pg_stat_activity on the primary, the pid in a NOTIFY, pg_terminate_backend
from another client (the victim's session ends with the server's FATAL 57P01), idle_session_timeout
(57P05), and CancelRequests that stop a pg_sleep on a replica and on the primary (57014).
"""

from __future__ import annotations

import asyncio
import select
import threading
import uuid

import asyncpg
import psycopg
import pytest

from proxy.devstack.poll import wait_until


def _name() -> str:
    return f"ident_{uuid.uuid4().hex[:10]}"


def _primary_pids_of(pg_cluster, application_name: str) -> list[int]:
    with psycopg.connect(pg_cluster.primary.dsn, autocommit=True) as admin:
        rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                             (application_name,)).fetchall()  # fmt: skip
    return [r[0] for r in rows]


async def test_asyncpg_and_psycopg_get_their_primary_backends_real_pid(pg_cluster, dbproxy):
    app = _name()
    conn = await asyncpg.connect(dbproxy.dsn(), server_settings={"application_name": app})
    try:
        pid = conn.get_server_pid()
        assert await conn.fetchval("/* tierproxy:primary */ SELECT pg_backend_pid()") == pid
        # Tools that watch a session by pid see it: the primary knows that pid, under our name.
        assert _primary_pids_of(pg_cluster, app) == [pid]
    finally:
        await conn.close()
    app = _name()
    with psycopg.connect(dbproxy.dsn(), autocommit=True, application_name=app) as pconn:
        pid = pconn.info.backend_pid
        assert pconn.execute("/* tierproxy:primary */ SELECT pg_backend_pid()").fetchone() == (pid,)
        assert _primary_pids_of(pg_cluster, app) == [pid]


def test_a_notification_carries_the_notifiers_pid_as_its_client_knows_it(dbproxy):
    with psycopg.connect(dbproxy.dsn(), autocommit=True) as listener, \
            psycopg.connect(dbproxy.dsn(), autocommit=True) as sender:  # fmt: skip
        listener.execute("LISTEN ident_chan")
        sender.execute("NOTIFY ident_chan, 'who'")
        got = [(n.channel, n.payload, n.pid) for n in listener.notifies(timeout=10, stop_after=1)]
        assert got == [("ident_chan", "who", sender.info.backend_pid)]
        assert sender.info.backend_pid != listener.info.backend_pid


def _terminated_by_another_client(dsn: str) -> tuple[type, str | None, str]:
    victim = psycopg.connect(dsn, autocommit=True)
    try:
        victim.execute("SELECT 1")
        with psycopg.connect(dsn, autocommit=True) as killer:
            # With a timeout the call returns once the backend has exited (PostgreSQL 14+), so its
            # FATAL is already sent when the victim speaks: without it, the victim's next query
            # could race the signal and the two runs see different ends.
            assert killer.execute("SELECT pg_terminate_backend(%s, 10000)", (victim.info.backend_pid,)).fetchone() == (True,)
        caught: list[psycopg.Error] = []

        def ended() -> bool:
            try:
                victim.execute("SELECT 1")
            except psycopg.Error as exc:
                caught.append(exc)
            return bool(caught)

        wait_until(ended, 10, "the victim's session to end")
        return type(caught[0]), caught[0].sqlstate, str(caught[0]).splitlines()[0]
    finally:
        victim.close()


def test_pg_terminate_backend_of_a_clients_pid_ends_that_session_as_direct(pg_cluster, dbproxy):
    direct = _terminated_by_another_client(pg_cluster.primary.dsn)
    assert direct[1] == "57P01", direct
    assert _terminated_by_another_client(dbproxy.dsn()) == direct


def _idle_session_timeout_error(dsn: str) -> tuple[type, str | None, str]:
    conn = psycopg.connect(dsn, autocommit=True)
    try:
        conn.execute("SET idle_session_timeout = '300ms'")
        # Idle now: wait (deadline 20 s) until the server's FATAL makes the socket readable.
        readable, _, _ = select.select([conn.fileno()], [], [], 20)
        assert readable, "no FATAL within 20 s of idle_session_timeout = 300ms"
        with pytest.raises(psycopg.Error) as exc:
            conn.execute("SELECT 1")
        return type(exc.value), exc.value.sqlstate, str(exc.value).splitlines()[0]
    finally:
        conn.close()


def test_idle_session_timeout_on_the_clients_server_ends_its_session_as_direct(pg_cluster, dbproxy):
    direct = _idle_session_timeout_error(pg_cluster.primary.dsn)
    assert direct[1] == "57P05", direct
    assert _idle_session_timeout_error(dbproxy.dsn()) == direct


@pytest.mark.parametrize("where", ["replica", "primary"])
def test_cancel_stops_a_statement_on_a_replica_and_on_the_primary(pg_cluster, dbproxy, where):
    hint = "/* tierproxy:primary */ " if where == "primary" else ""
    with psycopg.connect(dbproxy.dsn(), autocommit=True) as conn:
        ports = {r.port for r in pg_cluster.replicas} if where == "replica" else {pg_cluster.primary.port}
        assert conn.execute(f"{hint}SELECT inet_server_port()").fetchone()[0] in ports
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled) as exc:
                conn.execute(f"{hint}SELECT pg_sleep(60)")
        finally:
            timer.join()
        assert exc.value.sqlstate == "57014"
        assert conn.execute(f"{hint}SELECT 'after'").fetchone() == ("after",)


async def test_asyncpg_timeouts_cancel_on_a_replica_and_on_the_primary(dbproxy):
    conn = await asyncpg.connect(dbproxy.dsn())
    try:
        for hint in ("", "/* tierproxy:primary */ "):
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetchval(f"{hint}SELECT pg_sleep(60)", timeout=0.5)
            # The statement was cancelled, not left running: the session answers at once.
            assert await asyncio.wait_for(conn.fetchval(f"{hint}SELECT 'next'"), 10) == "next"
    finally:
        await conn.close()


async def test_with_workers_cancels_reach_the_primary_and_pids_stay_real(pg_cluster, dbproxy_factory):
    # Each CancelRequest lands on whichever worker the kernel picks; one that did not issue the
    # key passes it on through the supervisor. Six sessions make both cases all but certain.
    proxy = dbproxy_factory(pg_cluster, workers=2)
    conns = [await asyncpg.connect(proxy.dsn()) for _ in range(6)]
    try:
        for conn in conns:
            pid = conn.get_server_pid()
            assert await conn.fetchval("/* tierproxy:primary */ SELECT pg_backend_pid()") == pid
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetchval("/* tierproxy:primary */ SELECT pg_sleep(60)", timeout=0.5)
            assert await asyncio.wait_for(conn.fetchval("/* tierproxy:primary */ SELECT 'next'"), 10) == "next"
        assert len({c.get_server_pid() for c in conns}) == len(conns)
    finally:
        for conn in conns:
            await conn.close()


async def test_a_login_through_a_replica_gets_that_servers_key(pg_cluster_factory, dbproxy_factory):
    cluster = pg_cluster_factory(replicas=1)
    proxy = dbproxy_factory(cluster)
    cluster.primary.stop()
    app = _name()
    # The primary refuses: the login goes to the replica, and the key is that connection's.
    conn = await asyncpg.connect(proxy.dsn(), server_settings={"application_name": app})
    try:
        assert await conn.fetchval("SELECT inet_server_port()") == cluster.replicas[0].port
        with psycopg.connect(cluster.replicas[0].dsn, autocommit=True) as admin:
            pids = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)).fetchall()
        assert pids == [(conn.get_server_pid(),)]
        with pytest.raises(asyncio.TimeoutError):
            await conn.fetchval("SELECT pg_sleep(60)", timeout=0.5)
        assert await asyncio.wait_for(conn.fetchval("SELECT 'next'"), 10) == "next"
    finally:
        await conn.close()
