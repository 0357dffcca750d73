"""The shared PostgreSQL front end (proxy/pgfront) on its own, without the dbproxy (issue 14).

A front end with no routing at all is built here from pgfront's parts only: a `FrontendSession`
subclass that passes every message of a logged-in client to the one server it logged in through,
and a small `FrontendServices`. Real clients then use it against the real primary: asyncpg logs
in by SCRAM (the proxy's own `ClientAuth`), runs a prepared statement with parameters, gets its
server's real pid as its BackendKeyData, and cancels a pg_sleep with a CancelRequest that goes
through `CancelKeys`; a wrong password gets 28P01; psql on the virtual database `tierproxy` gets the
console framework's answer. This is what `tierproxy shard` will build its sessions on.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import Any

import asyncpg
import pytest

from proxy.devstack.poll import wait_until_async
from proxy.pgfront.cancel import CancelKeys
from proxy.pgfront.clientauth import Credentials
from proxy.pgfront.config import AuthConfig, UserConfig
from proxy.pgfront.console import run_console
from proxy.pgfront.login_limits import LoginLimiter
from proxy.pgfront.pool import ServerPools
from proxy.pgfront.server import ServerConn, ServerError, SyncGroup, send_cancel
from proxy.pgfront.session import FrontendSession
from proxy.pgwire.errors import PgProtocolError

SERVER = "only"
PSQL = shutil.which("psql")


class _Counters:
    auth_failures = 0
    login_failures = 0
    logins_throttled = 0


class _Txn:
    in_transaction = False

    def on_ready_for_query(self, status: bytes, *, failed: bool = False) -> None:
        self.in_transaction = status != b"I"


class _Services:
    """FrontendServices for one server, every session logging in to it as the cluster's user."""

    def __init__(self, pg_cluster: Any) -> None:
        primary = pg_cluster.primary
        self.max_message_length = 1 << 20
        self.sessions: set[Any] = set()
        self.closing: set[Any] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.tls_context = None
        self.creds = Credentials(AuthConfig(users={"app": UserConfig(password="app-secret")}))
        self.login_limiter = LoginLimiter(20)
        self.metrics = _Counters()
        self.pools = ServerPools(addresses={SERVER: (primary.host, primary.port)},
                                 login=lambda _user: (pg_cluster.user, pg_cluster.password),
                                 max_per_backend=10, idle_timeout=60, connect_timeout=10,
                                 wait_timeout=10)  # fmt: skip
        self.keys = CancelKeys()
        self.client_login_timeout = 10.0
        self.tls_required = False
        self.failed_login_delay = 0.0
        self.console_is_local = True
        self.cancels = 0

    def cancel(self, pid: int, secret: int) -> None:
        session = self.keys.get(pid, secret)
        if session is not None:
            for conn in session.cancel_targets():
                self.cancels += 1
                self._spawn(send_cancel(conn.address, conn.pid, conn.secret))

    def console_params(self, user: str) -> dict[str, str]:
        return {"server_version": "15.0 (pgfront test)", "client_encoding": "UTF8"}

    def login_candidates(self) -> list[str]:
        return [SERVER]

    def register_cancel_key(self, session: Any, key: tuple[int, int] | None = None) -> tuple[int, int]:
        return self.keys.register(session, key)

    def console(self, sql: str) -> bytes:
        snapshot = {"sessions": len(self.sessions)}
        return run_console(sql, snapshot, {"SESSIONS": lambda s: (("sessions",), [(s["sessions"],)])})

    async def console_async(self, sql: str) -> bytes:
        return self.console(sql)

    def finished(self, conn: ServerConn) -> None:
        pass

    def restart_query_timer(self, conn: ServerConn) -> None:
        pass

    def session_ended(self, session: Any) -> None:
        self.sessions.discard(session)
        self.keys.forget(session, session.key)

    def release_server(self, conn: ServerConn) -> None:
        if conn.busy:
            self.pools.discard(conn)
        else:
            self._spawn(self.pools.release(conn))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class PassThrough(FrontendSession):
    """No decisions: once logged in, every client message goes to the login's server as it is."""

    product = "pgfront test"

    def __init__(self, services: _Services) -> None:
        super().__init__(services)
        self.router = _Txn()

    def data_received(self, data: bytes) -> None:
        if self.phase == "closed":
            return
        try:
            self.inbox.extend(self.framer.feed(data))
        except PgProtocolError as exc:
            self.fatal(exc.sqlstate, exc.message)
            return
        self._pump()

    def _pump(self) -> None:
        try:
            while self.inbox and not self.waiting and self.phase != "closed":
                msg = self.inbox.popleft()
                if self.phase == "startup":
                    self._startup_message(msg)
                elif self.phase == "auth":
                    self._auth_message(msg)
                elif self.admin:
                    self._admin_message(msg)
                elif msg.type == b"X":
                    self.close()
                else:
                    conn = self.servers[SERVER]
                    if msg.type in (b"S", b"Q"):
                        conn.groups.append(conn.open_group or SyncGroup())  # answered by a ReadyForQuery
                        conn.open_group = None
                    conn.write(msg.raw)
        except PgProtocolError as exc:
            self.fatal(exc.sqlstate, exc.message)

    def on_server_lost(self, conn: ServerConn) -> None:
        self.servers.pop(conn.backend, None)
        self.d.release_server(conn)
        if self.phase != "closed":
            self.end_with_server_error(conn)


@pytest.fixture
async def front(pg_cluster):
    services = _Services(pg_cluster)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: PassThrough(services), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield services, port
    finally:
        server.close()
        for s in list(services.sessions):
            s.close()
        services.pools.close_all()
        await server.wait_closed()


async def test_asyncpg_logs_in_by_scram_queries_and_gets_its_servers_pid(front):
    services, port = front
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="app", password="app-secret",
                                 database="postgres", ssl=False)  # fmt: skip
    try:
        assert await conn.fetchval("SELECT $1::int + $2::int", 40, 2) == 42
        assert await conn.fetch("SELECT g FROM generate_series(1, 3) g") == [(1,), (2,), (3,)]
        # BackendKeyData is the server's own: its pid is the backend's real one.
        assert await conn.fetchval("SELECT pg_backend_pid()") == conn.get_server_pid()
        async with conn.transaction():
            assert await conn.fetchval("SELECT 1") == 1
        # A CancelRequest (asyncpg sends one on timeout) reaches the server through CancelKeys.
        with pytest.raises(asyncio.TimeoutError):
            await conn.fetchval("SELECT pg_sleep(30)", timeout=0.5)
        # The next statement runs once the cancelled one has ended: the cancel went through us.
        assert await conn.fetchval("SELECT 'still here'") == "still here"
        assert services.cancels == 1
    finally:
        await conn.close()


async def test_a_wrong_password_gets_28P01(front):
    _, port = front
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(host="127.0.0.1", port=port, user="app", password="wrong",
                              database="postgres", ssl=False)  # fmt: skip


async def test_the_console_framework_answers_on_the_virtual_database(front):
    _, port = front
    assert PSQL is not None, "psql is needed (Debian package postgresql-client)"
    env = {**os.environ, "PGPASSWORD": "app-secret", "PGSSLMODE": "disable", "PGCONNECT_TIMEOUT": "10"}
    proc = await asyncio.create_subprocess_exec(
        PSQL, "-h", "127.0.0.1", "-p", str(port), "-U", "app", "-d", "tierproxy", "-X", "-At",
        "-c", "SHOW SESSIONS", "-c", "SHOW NOTHING",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert out.decode().split() == ["1"], err
    assert "unknown admin command: SHOW NOTHING" in err.decode() and "SHOW SESSIONS" in err.decode()


async def test_a_server_lost_before_its_session_takes_it_is_not_used(pg_cluster):
    """A server connection can die after its login and before the session's task resumes with
    it (a replica killed while clients connect: the loss is handled while no session is attached,
    so none hears of it). `_attach` must not hand such a connection on: a statement written to it
    is never answered, and the client waits for ever (seen in CI: pgbench hung in
    test_dbproxy_failover). The window is made here by the real server ending the connection
    (pg_terminate_backend) between the pool's login and the session's turn."""
    services = _Services(pg_cluster)
    login = services.pools.acquire

    async def acquire_then_lose(key: Any) -> ServerConn:
        conn = await login(key)
        killer = await asyncpg.connect(pg_cluster.primary.dsn, ssl=False)
        try:
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", conn.pid)
        finally:
            await killer.close()

        async def lost() -> bool:
            return conn.closed

        await wait_until_async(lost, 10, "the terminated server connection's loss")
        return conn

    services.pools.acquire = acquire_then_lose  # type: ignore[method-assign]
    session = PassThrough(services)
    session.user, session.database, session.options = "app", "postgres", ()
    try:
        with pytest.raises(ServerError):
            await session._attach(SERVER)
        assert SERVER not in session.servers
        assert services.pools.count(SERVER) == 0  # released: the pool does not count it any more
        # The next attach opens a live connection that answers.
        services.pools.acquire = login  # type: ignore[method-assign]
        conn = await session._attach(SERVER)
        assert not conn.closed and session.servers[SERVER] is conn
    finally:
        session.close()
        services.pools.close_all()
