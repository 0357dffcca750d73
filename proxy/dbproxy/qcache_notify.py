"""The query cache hears about writes that bypass the proxy: PostgreSQL LISTEN/NOTIFY (issue 20).

With `[cache.listen]`, every dbproxy process that holds a cache keeps one connection per listed
database to the primary (the monitor's login) and LISTENs on `channel`. A trigger installed on
the tables (docs/dbproxy.md shows it) sends `NOTIFY channel, 'table'` on every write, from any
client: psql, cron jobs, another application, a migration. Each notification invalidates the
tables its payload names (`notify_tables`: names separated by commas or spaces, folded as
PostgreSQL folds them; an empty payload or `*` drops everything), as a write through the proxy
does.

PostgreSQL delivers a notification when the writing transaction commits, so an entry may still
be served between that commit and the notification's arrival (milliseconds on a healthy link);
an answer still being filled when it arrives is not stored. While the connection is down (the
primary restarting, a failover, a network cut) notifications are lost: on every (re)connection
the whole cache is dropped, and the TTL still bounds everything. Reconnection retries with a
growing delay (0.5 s doubling to 5 s) to the primary the daemon currently knows.

`notify_tables` is pure; `NotifyListener` only moves notifications into `QueryCache.invalidate`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import asyncpg

from proxy.core.config import parse_hostport

from .qcache_rules import fold_table_name

if TYPE_CHECKING:
    from .daemon import DbProxyDaemon

__all__ = ["NotifyListener", "notify_tables", "start_notify_listener"]

log = logging.getLogger("tierproxy.dbproxy")
RETRY_FIRST, RETRY_MAX = 0.5, 5.0  # seconds between reconnection attempts


def notify_tables(payload: str) -> frozenset[str] | None:
    """The tables a notification's payload names; None: everything (empty, `*`, or a name that
    is not a table name: better drop too much than keep a stale entry)."""
    names = set()
    for part in payload.replace(",", " ").split():
        if part == "*":
            return None
        folded = fold_table_name(part)
        if folded is None:
            return None
        names.add(folded)
    return frozenset(names) if names else None


class NotifyListener:
    """One LISTEN connection per database in `[cache.listen] databases`, kept up."""

    def __init__(self, daemon: DbProxyDaemon, channel: str, databases: list[str]) -> None:
        self.d = daemon
        self.channel = channel
        self.databases = databases
        self.tasks: list[asyncio.Task[None]] = []
        self.connected: dict[str, bool] = dict.fromkeys(databases, False)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._keep(db)) for db in self.databases]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        cache = self.d.qcache
        if cache is not None:
            cache.notifications += 1
            cache.invalidate_external(notify_tables(payload))

    def _connected(self, database: str, up: bool) -> None:
        cache = self.d.qcache
        if up and cache is not None:
            cache.invalidate_external(None)
            cache.listen_connects += 1
        self.connected[database] = up
        if cache is not None:
            cache.listening = sum(self.connected.values())

    async def _keep(self, database: str) -> None:
        delay = RETRY_FIRST
        while True:
            lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            conn = None
            try:
                host, port = parse_hostport(self.d.primary_address)
                user, password = self.d._monitor_login()
                conn = await asyncpg.connect(host=host, port=port, user=user, password=password,
                                             database=database, timeout=self.d.cfg.timeouts.server_connect,
                                             statement_cache_size=0)  # fmt: skip
                conn.add_termination_listener(lambda _c: lost.done() or lost.set_result(None))
                await conn.add_listener(self.channel, self._on_notify)
                # Listening now: anything written before may have been missed.
                self._connected(database, True)
                delay = RETRY_FIRST
                log.info("cache: listening for notifications", extra={"database": database, "channel": self.channel})
                await lost
                log.warning("cache: notification connection lost", extra={"database": database})
            except asyncio.CancelledError:
                if conn is not None:
                    conn.terminate()
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, ValueError) as exc:
                log.warning("cache: cannot listen for notifications", extra={"database": database, "error": str(exc)})
            self._connected(database, False)
            if conn is not None:
                conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)


def start_notify_listener(daemon: DbProxyDaemon) -> NotifyListener | None:
    """Start listening if this process holds a cache and `[cache.listen]` is set."""
    cfg = daemon.cfg.cache.listen
    if daemon.qcache is None or cfg is None:
        return None
    listener = NotifyListener(daemon, cfg.channel, list(cfg.databases))
    listener.start()
    return listener
