"""Daemon-wide read consistency: which WAL position a read must see, across all client sessions.

Theory of operation
-------------------
Each session's `SessionRouter` reports every write commit it acknowledges to a client (the b"I"
ReadyForQuery that ends it) through `CommitClock.acknowledged`, which counts it, and counts it
again as a catalog change when it may have changed the catalogs (`Decision.writes_catalog`). The
count after a session's commit is its `commit_epoch`.

No LSN is asked per commit. When a read needs a bound, `pg_current_wal_insert_lsn()` is fetched
once on a connection of the proxy's own (`WalPosition`: never a client's server connection, whose
unnamed statement and portal a query of ours would destroy), at most one fetch in flight: every
read that needs it awaits the same one. A value fetched when the counts were (c, d) is at or past
the commit record of every commit counted in them (their ReadyForQuery came after the commit
record was inserted, and the count before it was forwarded), so it *covers* them
(`CommitEpochs.learned`).

What a read must see (`floor`), by `routing.read_your_writes`:

- every mode: a catalog read (`Decision.reads_catalog`) sees every acknowledged catalog change:
  its floor is the first LSN learned after their count last grew. (Not a read-only transaction's
  BEGIN: the catalog reads inside one see its replica's view, a documented limit.)
- "global": every read sees every acknowledged commit: its floor is an LSN covering every commit
  acknowledged before it is routed (a read that waited for a fetch while more commits were
  acknowledged goes to the primary rather than wait again);
- "lsn": the session's own commits, through `SessionRouter.needs_commit_lsn` (any LSN covering the
  session's `commit_epoch` will do).

A replica qualifies for a read only if its replay LSN (from the monitor) is at or past the floor;
when the floor is not known (the primary did not answer the fetch) it is `MAX_LSN`: the primary.
With no replicas configured, nothing is ever fetched.

`workers = N`: the counts are shared. The supervisor creates a file of N slots (`create_slots`, in
/dev/shm) before starting its workers; each worker claims one (`claim_slot`, found by its parent's
pid), writes its own counts there and reads the sums, so a read in one worker waits for commits
acknowledged by any of them. Each worker still fetches LSNs on its own connection.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import mmap
import os
import struct
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from .classify_types import Decision
from .router import MAX_LSN, SessionRouter, commit_lsn_from_insert, parse_lsn

__all__ = ["CommitClock", "CommitEpochs", "SharedSlots", "WalPosition", "claim_slot", "create_slots", "slots_path"]

log = logging.getLogger("tierproxy.dbproxy")


class CommitEpochs:
    """The bookkeeping, pure: acknowledged commits and catalog changes (counts), and the LSNs
    known to cover them. The counts are this process's own, or, after `share`, the sum over every
    worker's slot of a shared memory file (`SharedSlots`)."""

    __slots__ = ("_shared", "ddl_count", "ddl_lsn", "known_commits", "known_lsn", "own_commits", "own_ddls")

    def __init__(self) -> None:
        self.own_commits = 0  # commits this process acknowledged
        self.own_ddls = 0  # ... of which may have changed the catalogs
        self.known_commits = 0  # `known_lsn` covers every commit counted up to this
        self.known_lsn: int | None = None
        self.ddl_count = 0  # `ddl_lsn` covers every catalog change counted up to this
        self.ddl_lsn: int | None = None
        self._shared: SharedSlots | None = None

    def share(self, slots: SharedSlots) -> None:
        """Count every worker's commits from now on (this one's go to its own slot)."""
        self._shared = slots
        slots.write(self.own_commits, self.own_ddls)

    def acknowledged(self, ddl: bool) -> int:
        """A write commit was acknowledged to a client: the commit count with it."""
        self.own_commits += 1
        if ddl:
            self.own_ddls += 1
        if self._shared is None:
            return self.own_commits
        self._shared.write(self.own_commits, self.own_ddls)
        return self._shared.totals()[0]

    def totals(self) -> tuple[int, int]:
        """(commits, catalog changes) acknowledged so far."""
        if self._shared is None:
            return self.own_commits, self.own_ddls
        return self._shared.totals()

    def covered(self, commits: int, ddls: int = 0) -> bool:
        return self.known_commits >= commits and self.ddl_count >= ddls

    def learned(self, commits: int, ddls: int, lsn: int) -> None:
        """`lsn` was fetched when the counts were (`commits`, `ddls`): it covers all of them. The
        catalog changes' LSN is the first one learned after their count last grew (the lowest
        that covers them, so replicas qualify again as soon as possible)."""
        if commits >= self.known_commits and (self.known_lsn is None or lsn >= self.known_lsn):
            self.known_commits, self.known_lsn = commits, lsn
        if ddls > self.ddl_count:
            self.ddl_count, self.ddl_lsn = ddls, lsn


# Worker slots: (pid, commits, catalog changes), three unsigned 64-bit integers each. Each worker
# writes only its own slot, an aligned 8-byte store per count, and counts only grow, so readers
# need no lock (a count read a moment late only makes a read wait for one more fetch).
_SLOT = struct.Struct("<3Q")


class SharedSlots:
    """`workers = N`: the supervisor's file of worker slots, mapped by one worker."""

    def __init__(self, buf: mmap.mmap, slot: int, count: int) -> None:
        self._buf = buf
        self._offset = slot * _SLOT.size
        self._all = struct.Struct(f"<{3 * count}Q")
        self.slot = slot

    def write(self, commits: int, ddls: int) -> None:
        struct.pack_into("<2Q", self._buf, self._offset + 8, commits, ddls)

    def totals(self) -> tuple[int, int]:
        values = self._all.unpack_from(self._buf)
        return sum(values[1::3]), sum(values[2::3])

    def close(self) -> None:
        self._buf.close()


def slots_path(supervisor_pid: int) -> Path:
    """Where a supervisor keeps its workers' slots (a worker finds it by its parent's pid)."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return base / f"tierproxy-dbproxy-{supervisor_pid}.commits"


def create_slots(path: Path, count: int) -> None:
    """Supervisor, before starting its workers: `count` empty slots."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, bytes(_SLOT.size * count))
    finally:
        os.close(fd)


def claim_slot(path: Path, count: int) -> SharedSlots:
    """Worker: take the first free slot (its pid written there, under an exclusive lock)."""
    with open(path, "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            data = f.read(_SLOT.size * count)
            if len(data) != _SLOT.size * count:
                raise ValueError(f"{path}: {len(data)} bytes, expected {_SLOT.size * count}")
            pids = [_SLOT.unpack_from(data, i * _SLOT.size)[0] for i in range(count)]
            if 0 not in pids:
                raise ValueError(f"{path}: no free slot")
            slot = pids.index(0)
            f.seek(slot * _SLOT.size)
            f.write(struct.pack("<Q", os.getpid()))
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
        buf = mmap.mmap(f.fileno(), _SLOT.size * count)
    return SharedSlots(buf, slot, count)


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
        self._inflight_counts = (0, 0)
        self.fetches = 0  # LSN fetches made (for tests and metrics)

    def acknowledged(self, ddl: bool) -> int:
        return self.epochs.acknowledged(ddl)

    # -- for sessions, before routing a read (Target.REPLICA, outside a transaction) ------------

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
            return not e.covered(e.totals()[0])
        return d.reads_catalog and not e.covered(0, e.totals()[1])

    async def settle(self, router: SessionRouter, d: Decision) -> None:
        """Fetch what `owed` said is owed (coalesced with every other session's fetch)."""
        e = self.epochs
        if router.needs_commit_lsn and await self.covering(router.commit_epoch) and e.known_lsn is not None:
            router.on_commit_lsn(e.known_lsn)
        if self.global_mode:
            await self.covering(e.totals()[0])
        elif d.reads_catalog:
            await self.covering(0, e.totals()[1])

    def floor(self, d: Decision) -> int | None:
        """The WAL position a replica must have replayed to serve `d`; None: no constraint."""
        if self.source is None or not (self.global_mode or d.reads_catalog):
            return None
        e = self.epochs
        commits, ddls = e.totals()
        if self.global_mode:
            if not commits:
                return None
            return e.known_lsn if e.covered(commits) and e.known_lsn is not None else MAX_LSN
        if not ddls:
            return None
        return e.ddl_lsn if e.covered(0, ddls) and e.ddl_lsn is not None else MAX_LSN

    # -- the fetch ---------------------------------------------------------------------------------

    async def covering(self, commits: int, ddls: int = 0) -> bool:
        """Wait until an LSN covering `commits` commits and `ddls` catalog changes is known;
        False if the primary did not answer."""
        while not self.epochs.covered(commits, ddls):
            task = self._inflight
            if task is not None and (self._inflight_counts[0] < commits or self._inflight_counts[1] < ddls):
                # Started before those were acknowledged: it cannot cover them. One fetch at a
                # time on our connection, so wait for it to end, then start another.
                await asyncio.wait([task])
                continue
            if task is None:
                counts = self._inflight_counts = self.epochs.totals()
                task = self._inflight = asyncio.get_running_loop().create_task(self._fetch(counts))
            if not await asyncio.shield(task):
                return False
        return True

    async def _fetch(self, counts: tuple[int, int]) -> bool:
        assert self.source is not None
        self.fetches += 1
        try:
            lsn = await self.source.fetch()
        except Exception as exc:  # noqa: BLE001 - the primary's problem: reads stay on it
            log.warning("commit LSN fetch failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
            return False
        finally:
            self._inflight = None
        self.epochs.learned(counts[0], counts[1], lsn)
        return True

    def reconfigure(self, source: WalPosition | None, *, global_mode: bool) -> None:
        """A reloaded config: another primary or mode. The counts stay (sessions keep counting)."""
        if self.source is not None:
            self.source.close()
        self.source, self.global_mode = source, global_mode

    def close(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
        if self.source is not None:
            self.source.close()
