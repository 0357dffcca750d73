"""The replica monitor: each server's role, WAL position and lag, polled with asyncpg.

Every `interval` seconds one query per server, on a persistent connection of its own (asyncpg,
logged in like the pools), all servers concurrently, each within `timeout`:

    pg_is_in_recovery(), the server's LSN (the primary's current LSN, a replica's replay LSN), a
    replica's receive LSN, and its replay delay in seconds: 0 when everything received has been
    replayed, else now() - pg_last_xact_replay_timestamp().

A failed or slow poll marks the server down and drops its connection (the next poll reconnects).
Lag in bytes is the primary's LSN minus the replica's replay LSN, both from the same round of
polls (clamped at 0). A replica is given to the router as `up` only if its last poll succeeded and
it is in recovery: a replica that was promoted (not in recovery) has its own timeline and must not
serve reads; a "primary" found in recovery is flagged (`role_ok` false) for /status and logs.

No global state; `on_change(name, status)` tells the daemon when a server goes up or down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from proxy.core.config import parse_hostport

from .books import MonitorViews
from .router import PRIMARY, ReplicaView, format_lsn, parse_lsn

__all__ = ["BackendStatus", "ReplicaMonitor", "usable_for_reads"]

log = logging.getLogger("tierproxy.dbproxy")

POLL_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text
           AS lsn,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       CASE WHEN NOT pg_is_in_recovery() THEN 0
            WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
            ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)
       END::float8 AS lag_seconds
"""


@dataclass
class BackendStatus:
    name: str
    role_expected: str  # "primary" | "replica"
    address: str
    weight: int = 1
    up: bool = False
    in_recovery: bool | None = None
    lsn: int | None = None  # primary: current LSN; replica: replay LSN
    receive_lsn: int | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    last_error: str | None = None
    polled_at: float | None = None  # monotonic
    failures: int = 0  # consecutive failed polls

    @property
    def role_ok(self) -> bool:
        """The server is what the config says: a replica in recovery, a primary not."""
        if self.in_recovery is None:
            return False
        return self.in_recovery == (self.role_expected == "replica")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "role": self.role_expected, "address": self.address, "up": self.up,
            "in_recovery": self.in_recovery, "role_ok": self.role_ok if self.up else None,
            "replay_lsn" if self.role_expected == "replica" else "lsn":
                format_lsn(self.lsn) if self.lsn is not None else None,
            "lag_bytes": self.lag_bytes, "lag_seconds": self.lag_seconds,
            "last_error": self.last_error, "failures": self.failures,
        }  # fmt: skip


def usable_for_reads(status: BackendStatus, max_lag_bytes: int, max_lag_seconds: float) -> bool:
    """A replica the router may pick: up, in recovery, lag known and within both limits."""
    return (
        status.role_expected == "replica" and status.up and status.in_recovery is True
        and status.lag_bytes is not None and status.lag_bytes <= max_lag_bytes
        and status.lag_seconds is not None and status.lag_seconds <= max_lag_seconds
    )  # fmt: skip


class ReplicaMonitor(MonitorViews):
    """The polls and their results. `_views` (MonitorViews's, books.py) is the shared tuple
    `views()` returns, None until it is built again after a poll or a reload: the compiled
    session reads it in C per read and calls `views()` only when it is None."""

    def __init__(
        self,
        primary_address: str,
        replicas: Sequence[tuple[str, str, int]],
        *,
        user: str,
        password: str | None,
        database: str = "postgres",
        interval: float = 1.0,
        timeout: float = 1.0,
        on_change: Callable[[str, BackendStatus], None] | None = None,
    ) -> None:
        self._statuses: dict[str, BackendStatus] = {}
        self._conns: dict[str, asyncpg.Connection] = {}
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        # One poll at a time: a poll_once() called while the loop's is running would share a
        # connection with it (asyncpg refuses: "another operation is in progress") and mark the
        # server down.
        self._poll_lock = asyncio.Lock()
        self.primary_lsn: int | None = None
        self._views: tuple[ReplicaView, ...] | None = None  # cache of views(), reset by each poll
        self.replace_backends(primary_address, replicas, user=user, password=password,
                              database=database, interval=interval, timeout=timeout)  # fmt: skip

    # -- configuration ------------------------------------------------------------------------

    def replace_backends(
        self,
        primary_address: str,
        replicas: Sequence[tuple[str, str, int]],
        *,
        user: str,
        password: str | None,
        database: str = "postgres",
        interval: float = 1.0,
        timeout: float = 1.0,
    ) -> None:
        """Apply a (re)loaded config: unchanged servers keep their state and connection."""
        self.user, self.password, self.database = user, password, database
        self.interval, self.timeout = interval, timeout
        wanted = {PRIMARY: ("primary", primary_address, 1)}
        for name, address, weight in replicas:
            wanted[name] = ("replica", address, weight)
        for name in list(self._statuses):
            st = self._statuses[name]
            spec = wanted.get(name)
            if spec is None or spec[:2] != (st.role_expected, st.address):
                del self._statuses[name]
                self._drop(name)
        for name, (role, address, weight) in wanted.items():
            if name in self._statuses:
                self._statuses[name].weight = weight
            else:
                self._statuses[name] = BackendStatus(name, role, address, weight)
        if any(st.polled_at is None for st in self._statuses.values()):
            self._ready.clear()
        self._views = None

    # -- state ----------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Every server has been polled at least once (successfully or not)."""
        return all(st.polled_at is not None for st in self._statuses.values())

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def primary_up(self) -> bool:
        return self._statuses[PRIMARY].up

    def status(self, name: str) -> BackendStatus:
        return self._statuses[name]

    def statuses(self) -> list[BackendStatus]:
        """The primary first, then the replicas in config order."""
        return list(self._statuses.values())

    def views(self, outstanding: Mapping[str, int] | None = None) -> tuple[ReplicaView, ...]:
        """The replicas as the router sees them (see the module docstring for `up`). Without
        `outstanding` the views are built once per poll and shared: give the router the live
        counts with `route(..., outstanding=...)` instead."""
        if outstanding is None:
            if self._views is None:
                self._views = self._build_views({})
            return self._views
        return self._build_views(outstanding)

    def _build_views(self, outstanding: Mapping[str, int]) -> tuple[ReplicaView, ...]:
        return tuple(
            ReplicaView(st.name, st.weight, st.up and st.in_recovery is True, st.lag_bytes,
                        st.lag_seconds, st.lsn, outstanding.get(st.name, 0))
            for st in self._statuses.values() if st.role_expected == "replica"
        )  # fmt: skip

    # -- polling --------------------------------------------------------------------------------

    async def start(self) -> None:
        """First poll now (so the daemon starts with a view), then every `interval`."""
        await self.poll_once()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for name in list(self._conns):
            self._drop(name)

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.poll_once()
            except Exception:  # a bug here must not stop the monitoring for good
                log.exception("replica monitor poll failed")
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def poll_once(self) -> None:
        async with self._poll_lock:
            await self._poll_all()

    async def _poll_all(self) -> None:
        statuses = list(self._statuses.values())
        results = await asyncio.gather(*(self._poll(st) for st in statuses), return_exceptions=True)
        now = time.monotonic()
        for st, result in zip(statuses, results):
            was_up = st.up
            st.polled_at = now
            if isinstance(result, BaseException):
                st.up = False
                st.failures += 1
                st.last_error = f"{type(result).__name__}: {result}"[:300]
                st.lag_bytes = st.lag_seconds = None
                self._drop(st.name)
            else:
                st.up = True
                st.failures = 0
                st.last_error = None
                st.in_recovery = bool(result["in_recovery"])
                st.lsn = _lsn(result["lsn"])
                st.receive_lsn = _lsn(result["receive_lsn"])
                st.lag_seconds = max(0.0, float(result["lag_seconds"] or 0.0))
            if st.up != was_up and self._on_change is not None:
                self._on_change(st.name, st)
        primary = self._statuses.get(PRIMARY)
        self.primary_lsn = primary.lsn if primary is not None and primary.up else None
        for st in statuses:
            if st.role_expected != "replica" or not st.up:
                continue
            if self.primary_lsn is not None and st.lsn is not None:
                st.lag_bytes = max(0, self.primary_lsn - st.lsn)
            elif st.lsn is not None and st.receive_lsn is not None:
                # Primary unreachable: what the replica received but has not replayed is a lower
                # bound, better than no number.
                st.lag_bytes = max(0, st.receive_lsn - st.lsn)
            else:
                st.lag_bytes = None
        self._views = None
        if self.ready:
            self._ready.set()

    async def _poll(self, st: BackendStatus) -> Mapping[str, Any]:
        async def run() -> Mapping[str, Any]:
            conn = self._conns.get(st.name)
            if conn is None or conn.is_closed():
                host, port = parse_hostport(st.address)
                conn = await asyncpg.connect(
                    host=host, port=port, user=self.user, password=self.password,
                    database=self.database, ssl=False, timeout=self.timeout,
                    statement_cache_size=0, server_settings={"application_name": "tierproxy-monitor"},
                )  # fmt: skip
                self._conns[st.name] = conn
            row = await conn.fetchrow(POLL_SQL)
            assert row is not None
            return row

        return await asyncio.wait_for(run(), self.timeout)

    def _drop(self, name: str) -> None:
        conn = self._conns.pop(name, None)
        if conn is not None:
            conn.terminate()


def _lsn(text: str | None) -> int | None:
    return parse_lsn(text) if text else None
