"""Server connection pools: idle connections per (backend, user, database, startup options).

Session pooling: a client session takes a connection to a backend the first time a statement is
routed there and keeps it until the session ends; then, with `reuse` "discard", the connection is
reset (DISCARD ALL, which also drops the prepared statements the proxy made there) and kept idle
for the next session with the same key, for at most `idle_timeout` seconds. DISCARD ALL does not
make a new backend: its pid, backend_start, session statistics and temp namespace stay. With
`reuse` "fresh" the connection is closed instead, so every session gets a new server backend (one
server login per client session and backend).

`max_per_backend` bounds the connections (idle, in use and connecting) to one backend over all
keys. A session that needs one above the bound waits for a release (`wait_timeout`); when the
backend's connections are all idle under other keys, the oldest idle one is closed to make room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from proxy.pgwire.errors import TOO_MANY_CONNECTIONS

from .server import ServerConn, ServerError, error_fields, open_server

__all__ = ["PoolKey", "ServerPools", "add_pool_rows"]

log = logging.getLogger("tierproxy.pgfront")

# (backend, user, database, sorted startup options other than user/database)
PoolKey = tuple[str, str, str, tuple[tuple[str, str], ...]]
RESET_QUERY = "DISCARD ALL"


class ServerPools:
    def __init__(
        self,
        *,
        addresses: Mapping[str, tuple[str, int]],
        login: Callable[[str], tuple[str, str | None]],
        max_per_backend: int,
        idle_timeout: float,
        connect_timeout: float,
        wait_timeout: float,
        reuse: str = "discard",
    ) -> None:
        self.addresses = dict(addresses)  # backend name -> (host, port)
        self._login = login  # client user -> (server user, server password)
        self.max_per_backend = max_per_backend
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.wait_timeout = wait_timeout
        self.reuse = reuse  # "discard" | "fresh" (module docstring)
        self.idle: dict[PoolKey, deque[ServerConn]] = {}
        self.active: set[ServerConn] = set()
        self.connecting: dict[str, int] = {}
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}
        self._down: dict[str, asyncio.Future[None]] = {}  # resolved by abandon_connects
        self.connects = 0  # counters for metrics
        self.connect_failures = 0
        self.closed = False

    # -- counts ---------------------------------------------------------------------------------

    def count(self, backend: str) -> int:
        idle = sum(len(q) for k, q in self.idle.items() if k[0] == backend)
        in_use = sum(1 for c in self.active if c.backend == backend)
        return idle + in_use + self.connecting.get(backend, 0)

    def waiting(self, backend: str) -> int:
        return len(self._waiters.get(backend, ()))

    # -- acquire / release --------------------------------------------------------------------

    async def acquire(self, key: PoolKey) -> ServerConn:
        """An idle connection for `key`, or a new one. ServerError when the backend cannot be
        reached or stays full for `wait_timeout`."""
        backend = key[0]
        if backend not in self.addresses:
            raise ServerError(f"unknown backend {backend}")
        deadline = time.monotonic() + self.wait_timeout
        while True:
            conn = self._take_idle(key)
            if conn is not None:
                return conn
            if self.count(backend) < self.max_per_backend or self._evict_idle(backend):
                return await self._connect(key)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerError(
                    f"no server connection to {backend} within {self.wait_timeout}s",
                    error_fields("ERROR", TOO_MANY_CONNECTIONS,
                                 f"server connection pool for {backend} is full"),
                )
            fut = asyncio.get_running_loop().create_future()
            waiters = self._waiters.setdefault(backend, deque())
            waiters.append(fut)
            try:
                await asyncio.wait_for(fut, left)
            except TimeoutError:
                pass
            finally:
                if fut in waiters:
                    waiters.remove(fut)

    def _take_idle(self, key: PoolKey) -> ServerConn | None:
        q = self.idle.get(key)
        while q:
            conn = q.pop()  # most recently used first: warm caches, and old ones age out
            if not conn.closed:
                self.active.add(conn)
                return conn
        return None

    def _evict_idle(self, backend: str) -> bool:
        oldest: tuple[float, PoolKey] | None = None
        for k, q in self.idle.items():
            if k[0] == backend and q and (oldest is None or q[0].last_used < oldest[0]):
                oldest = (q[0].last_used, k)
        if oldest is None:
            return False
        self.idle[oldest[1]].popleft().close()
        return True

    async def _connect(self, key: PoolKey) -> ServerConn:
        backend, user, database, options = key
        server_user, password = self._login(user)
        self.connecting[backend] = self.connecting.get(backend, 0) + 1
        try:
            task = asyncio.get_running_loop().create_task(open_server(
                backend, self.addresses[backend], key, user=server_user, password=password,
                database=database, options=dict(options), timeout=self.connect_timeout,
            ))  # fmt: skip
            try:
                await asyncio.wait((task, self._down_signal(backend)), return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                task.cancel()
                raise
            if not task.done():  # a hung server's login would take all of connect_timeout
                task.cancel()
                raise ServerError(f"server {backend} was marked down while connecting")
            conn = task.result()
        except ServerError:
            self.connect_failures += 1
            raise
        finally:
            self.connecting[backend] -= 1
            self._wake(backend)
        self.connects += 1
        if self.closed:
            conn.close()
            raise ServerError("the proxy is shutting down")
        self.active.add(conn)
        return conn

    def _down_signal(self, backend: str) -> asyncio.Future[None]:
        fut = self._down.get(backend)
        if fut is None or fut.done():
            fut = self._down[backend] = asyncio.get_running_loop().create_future()
        return fut

    def abandon_connects(self, backend: str) -> None:
        """`backend` was marked down: connections being opened to it fail now (ServerError)."""
        fut = self._down.pop(backend, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _wake(self, backend: str) -> None:
        waiters = self._waiters.get(backend)
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def discard(self, conn: ServerConn) -> None:
        """Close a connection that must not be reused."""
        self.active.discard(conn)
        conn.set_attached(None)
        if conn.busy:
            conn.abort()
        else:
            conn.close()
        self._wake(conn.backend)

    async def release(self, conn: ServerConn) -> None:
        """Reset a connection a session is done with and keep it idle, or close it."""
        self.active.discard(conn)
        conn.set_attached(None)
        if self.reuse == "fresh" and not conn.closed:
            conn.close()
        if conn.closed or conn.busy or conn.status != b"I" or self.closed or conn.fatal:
            if not conn.closed:
                conn.abort()
            self._wake(conn.backend)
            return
        self.active.add(conn)  # still counted while the reset runs
        try:
            await asyncio.wait_for(conn.simple_query(RESET_QUERY), self.connect_timeout)
        except (TimeoutError, ServerError):
            self.active.discard(conn)
            conn.abort()
            self._wake(conn.backend)
            return
        self.active.discard(conn)
        conn.prepared.clear()
        if conn.closed:
            self._wake(conn.backend)
            return
        conn.last_used = time.monotonic()
        self.idle.setdefault(conn.key, deque()).append(conn)  # type: ignore[arg-type]
        self._wake(conn.backend)

    # -- housekeeping --------------------------------------------------------------------------

    def sweep(self, now: float) -> int:
        """Close idle connections unused for `idle_timeout` (and dead ones); return how many."""
        closed = 0
        for key in list(self.idle):
            q = self.idle[key]
            keep = deque(c for c in q if not c.closed and now - c.last_used < self.idle_timeout)
            for c in q:
                if c not in keep:
                    c.close()
                    closed += 1
            if keep:
                self.idle[key] = keep
            else:
                del self.idle[key]
        return closed

    def close_backend(self, backend: str) -> None:
        """Close the idle connections of a backend that went down (in-use ones fail by themselves)."""
        for key in [k for k in self.idle if k[0] == backend]:
            for c in self.idle.pop(key):
                c.abort()

    def close_idle_database(self, database: str) -> int:
        """Close every idle connection to `database` (on any backend), so that DROP DATABASE
        and ALTER DATABASE ... RENAME do not find the proxy's own backends in it (the dbproxy's
        dbadmin.py)."""
        closed = 0
        for key in [k for k in self.idle if k[2] == database]:
            for c in self.idle.pop(key):
                c.close()
                closed += 1
        return closed

    def close_all(self) -> None:
        self.closed = True
        for q in self.idle.values():
            for c in q:
                c.close()
        self.idle.clear()
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def snapshot(self) -> list[dict[str, Any]]:
        """One row per key (SHOW POOLS): connections by state."""
        rows: dict[PoolKey, dict[str, Any]] = {}

        def row(key: PoolKey) -> dict[str, Any]:
            if key not in rows:
                rows[key] = {"backend": key[0], "user": key[1], "database": key[2],
                             "options": dict(key[3]), "active": 0, "idle": 0}  # fmt: skip
            return rows[key]

        for key, q in self.idle.items():
            row(key)["idle"] += sum(1 for c in q if not c.closed)
        for c in self.active:
            row(c.key)["active"] += 1  # type: ignore[arg-type]
        return [rows[k] for k in sorted(rows)]

    def servers(self) -> list[ServerConn]:
        out = list(self.active)
        for q in self.idle.values():
            out.extend(q)
        return out


def add_pool_rows(pools: dict[tuple[Any, ...], dict[str, Any]], rows: Iterable[dict[str, Any]]) -> None:
    """`ServerPools.snapshot` rows of one worker process into `pools` (with `workers = N`): rows
    of the same pool (backend, user, database, options) in several workers add up."""
    for row in rows:
        key = (row["backend"], row["user"], row["database"], tuple(sorted(row["options"].items())))
        if key in pools:
            for field in ("active", "idle", "clients", "waiting"):
                pools[key][field] = pools[key].get(field, 0) + row.get(field, 0)
        else:
            pools[key] = dict(row)
