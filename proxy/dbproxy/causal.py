"""Daemon-wide read consistency: which WAL position a read must see, across all client sessions.

Theory of operation
-------------------
Each session's `SessionRouter` reports every write commit it acknowledges to a client (the b"I"
ReadyForQuery that ends it) through `CommitClock.acknowledged`, which numbers it: the *epoch*
counts acknowledged commits in this process, and `ddl_epoch` is the epoch of the newest one that
may have changed the catalogs (`Decision.writes_catalog`).

No LSN is asked per commit. When a read needs a bound, `pg_current_wal_insert_lsn()` is fetched
once on a connection of the proxy's own (`WalPosition`: never a client's server connection, whose
unnamed statement and portal a query of ours would destroy), at most one fetch in flight: every
read that needs it awaits the same one. A value fetched after the epoch was `e` is at or past the
commit record of every commit numbered up to `e` (their ReadyForQuery came after the commit record
was inserted), so it *covers* them (`CommitEpochs.learned`).

What a read must see (`floor`), by `routing.read_your_writes`:

- every mode: a catalog read (`Decision.reads_catalog`) sees every acknowledged DDL: its floor is
  the first LSN learned that covers `ddl_epoch`. (Not a read-only transaction's BEGIN: the
  catalog reads inside one see its replica's view, a documented limit.);
- "global": every read sees every acknowledged commit: its floor is an LSN covering the epoch the
  read found when it arrived;
- "lsn": the session's own commits, through `SessionRouter.needs_commit_lsn` (any LSN covering the
  session's `commit_epoch` will do).

A replica qualifies for a read only if its replay LSN (from the monitor) is at or past the floor;
when the floor is not known (the primary did not answer the fetch) it is `MAX_LSN`: the primary.
With no replicas configured, nothing is ever fetched. With `workers = N` each worker process
numbers and covers only the commits it acknowledged itself (docs/dbproxy.md says so).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .classify_types import Decision
from .router import MAX_LSN, SessionRouter, commit_lsn_from_insert, parse_lsn

__all__ = ["CommitClock", "CommitEpochs", "WalPosition"]

log = logging.getLogger("tierproxy.dbproxy")


class CommitEpochs:
    """The bookkeeping, pure: acknowledged commits and the LSNs known to cover them."""

    __slots__ = ("ddl_epoch", "ddl_lsn", "epoch", "known_epoch", "known_lsn")

    def __init__(self) -> None:
        self.epoch = 0  # commits acknowledged so far
        self.ddl_epoch = 0  # the epoch of the newest acknowledged catalog change (0: none)
        self.known_epoch = 0  # `known_lsn` covers every commit numbered up to this
        self.known_lsn: int | None = None
        self.ddl_lsn: int | None = None  # the first LSN learned that covers `ddl_epoch`

    def acknowledged(self, ddl: bool) -> int:
        """A write commit was acknowledged to a client; its epoch."""
        self.epoch += 1
        if ddl:
            self.ddl_epoch = self.epoch
            self.ddl_lsn = None
        return self.epoch

    def covered(self, epoch: int) -> bool:
        return self.known_epoch >= epoch

    def learned(self, epoch: int, lsn: int) -> None:
        """`lsn` was fetched when the count was `epoch`: it covers every commit up to there."""
        if epoch >= self.known_epoch and (self.known_lsn is None or lsn >= self.known_lsn):
            self.known_epoch, self.known_lsn = epoch, lsn
        if self.ddl_epoch and self.ddl_lsn is None and epoch >= self.ddl_epoch:
            self.ddl_lsn = lsn


class WalPosition:
    """The primary's WAL insert position, asked on one asyncpg connection of the proxy's own."""

    def __init__(self, connect: Callable[[], Awaitable[object]], timeout: float) -> None:
        self._connect = connect  # -> an asyncpg.Connection
        self._conn: object | None = None
        self.timeout = timeout

    async def fetch(self) -> int:
        """The commit LSN bound now (see router.commit_lsn_from_insert); raises on failure."""

        async def run() -> int:
            conn = self._conn
            if conn is None or conn.is_closed():  # type: ignore[attr-defined]
                conn = self._conn = await self._connect()
            text = await conn.fetchval("SELECT pg_current_wal_insert_lsn()::text")  # type: ignore[attr-defined]
            return commit_lsn_from_insert(parse_lsn(text or ""))

        try:
            return await asyncio.wait_for(run(), self.timeout)
        except BaseException:
            self.close()  # a timed-out query leaves the connection busy: start afresh
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # type: ignore[attr-defined]


class CommitClock:
    """`CommitEpochs` plus the coalesced fetch; what sessions ask before routing a read."""

    def __init__(self, source: WalPosition | None, *, global_mode: bool) -> None:
        self.epochs = CommitEpochs()
        self.source = source  # None: no replicas, so no read ever needs a bound
        self.global_mode = global_mode
        self._inflight: asyncio.Task[bool] | None = None
        self._inflight_epoch = 0
        self.fetches = 0  # LSN fetches made (for tests and metrics)

    def acknowledged(self, ddl: bool) -> int:
        return self.epochs.acknowledged(ddl)

    # -- for sessions, before routing a read (Target.REPLICA, outside a transaction) ------------

    def _catalog(self, d: Decision) -> bool:
        return d.reads_catalog and self.epochs.ddl_epoch > 0

    def owed(self, router: SessionRouter, d: Decision) -> bool:
        """True: an LSN must be fetched (`settle`) before `d` can be routed. Settles the session's
        own read-your-writes LSN at once when a fetch made since its commit already covers it."""
        # The common case first, cheaply: a plain read in a mode without a global bound.
        if self.source is None or not (self.global_mode or d.reads_catalog or router.needs_commit_lsn):
            return False
        if router.in_transaction or router.pinned:
            return False  # the read goes where the transaction or the pin says
        e = self.epochs
        if router.needs_commit_lsn:
            if not e.covered(router.commit_epoch) or e.known_lsn is None:
                return True
            router.on_commit_lsn(e.known_lsn)
        if self.global_mode:
            return not e.covered(e.epoch)
        return self._catalog(d) and e.ddl_lsn is None

    async def settle(self, router: SessionRouter, d: Decision) -> None:
        """Fetch what `owed` said is owed (coalesced with every other session's fetch)."""
        e = self.epochs
        if router.needs_commit_lsn and await self.covering(router.commit_epoch) and e.known_lsn is not None:
            router.on_commit_lsn(e.known_lsn)
        if self.global_mode:
            await self.covering(e.epoch)
        elif self._catalog(d):
            await self.covering(e.ddl_epoch)

    def floor(self, d: Decision) -> int | None:
        """The WAL position a replica must have replayed to serve `d`; None: no constraint."""
        if self.source is None:
            return None
        e = self.epochs
        if self.global_mode and e.epoch:
            return e.known_lsn if e.covered(e.epoch) and e.known_lsn is not None else MAX_LSN
        if self._catalog(d):
            return e.ddl_lsn if e.ddl_lsn is not None else MAX_LSN
        return None

    # -- the fetch ---------------------------------------------------------------------------------

    async def covering(self, epoch: int) -> bool:
        """Wait until an LSN covering commit `epoch` is known; False if the primary did not answer."""
        while not self.epochs.covered(epoch):
            task = self._inflight
            if task is not None and self._inflight_epoch < epoch:
                # Started before that commit was acknowledged: it cannot cover it. One fetch at a
                # time on our connection, so wait for it to end, then start another.
                await asyncio.wait([task])
                continue
            if task is None:
                self._inflight_epoch = self.epochs.epoch
                task = self._inflight = asyncio.get_running_loop().create_task(self._fetch(self.epochs.epoch))
            if not await asyncio.shield(task):
                return False
        return True

    async def _fetch(self, epoch: int) -> bool:
        assert self.source is not None
        self.fetches += 1
        try:
            lsn = await self.source.fetch()
        except Exception as exc:  # noqa: BLE001 - the primary's problem: reads stay on it
            log.warning("commit LSN fetch failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
            return False
        finally:
            self._inflight = None
        self.epochs.learned(epoch, lsn)
        return True

    def reconfigure(self, source: WalPosition | None, *, global_mode: bool) -> None:
        """A reloaded config: another primary or mode. The epochs stay (sessions keep counting)."""
        if self.source is not None:
            self.source.close()
        self.source, self.global_mode = source, global_mode

    def close(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
        if self.source is not None:
            self.source.close()
