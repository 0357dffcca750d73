"""Following Patroni in the daemon (`[topology] source = "patroni"`): hold, fence, re-point.

- `WriteGate`: open while a confirmed leader takes writes. Closed, it holds whoever needs the
  primary (a new write batch or transaction whose session has no live primary connection, a
  login) for at most `failover_hold_timeout` seconds each, at most `hold_queue_limit` of them;
  past the limit 53300 at once, past the timeout 57P03 (cannot_connect_now).
- `PatroniFollower`: runs a topology source (patroni_source.py) and acts on each view. When
  Patroni's leader is no longer the address writes go to, the gate closes and every server
  connection to the old primary is cut (`fence_old`: the sessions holding one end with FATAL
  57P01, as PostgreSQL ends sessions on a shut-down server); a leader is *confirmed* only when a
  connection of our own to it passes `topology.write_verdict` (Patroni names it, it is out of
  recovery, on the leader's timeline): then the daemon re-points (`repoint`) and the gate opens.
- A planned switchover announced by Patroni (etcd's `/failover` key naming the current leader,
  `topology.switchover_wait`): the follower pauses writes and drains the old primary before
  Patroni demotes it, as `POST /switchover` does (quiesce.py, the same code); a scheduled one at
  its time. The pause ends when the new leader is confirmed (the gate opens), when the key goes
  away without a switch, or after `failover_hold_timeout`.
- `FencedPools`: the server pools, with the gate in front of the primary and the fence behind
  each new primary connection: it asks the server `pg_is_in_recovery()` and its timeline before
  its first write, and a server that fails the verdict is closed and the gate shut again.

Decisions are topology.py's; this file moves bytes and events. No global state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg

from proxy.pgfront.pool import PoolKey, ServerPools
from proxy.pgfront.server import ServerConn, ServerError, error_fields
from proxy.pgwire.errors import CONNECTION_FAILURE

from .config import TopologyConfig
from .cluster_view import histogram_json, member_rows, source_health
from .failover_history import FailoverHistory
from .losswindow import LossWindowTracker
from .patroni_source import EtcdWatchSource, PatroniRestSource
from .quiesce import quiesce, resume_unless_switched
from .router import PRIMARY
from .topology import PendingSwitchover, Topology, WriteVerdict, switchover_wait, write_verdict

__all__ = ["FENCE_SQL", "HOLD_TIMEOUT_SQLSTATE", "FencedPools", "PatroniFollower", "WriteGate"]

log = logging.getLogger("tierproxy.dbproxy")

HOLD_TIMEOUT_SQLSTATE = "57P03"  # cannot_connect_now: no leader confirmed within the hold
HOLD_FULL_SQLSTATE = "53300"  # too_many_connections: the hold queue is full
FENCED_SQLSTATE = "57P01"  # admin_shutdown: the session's primary is no longer the leader
CONFIRM_RETRY = 0.1  # seconds between checks of a named leader that is not writable yet
MAX_FAILOVERS_KEPT = 10
# A primary connection that fails so (refused, reset; "the database system is shutting down" or
# "is starting up") during a failover: hold instead of passing the error on.
_UNREACHABLE = frozenset({CONNECTION_FAILURE, "57P01", "57P03"})
# The server's own word: in recovery, and (out of it) the timeline it writes WAL on.
FENCE_SQL = (
    "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN NULL ELSE "
    "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END"
)


def replica_specs(topology: Topology) -> list[tuple[str, str, int]]:
    """The members that serve reads: (name, "host:port", weight 1), the leader excluded."""
    out = []
    for m in topology.replicas:
        if m.serving and m.address is not None:
            out.append((m.name, f"{m.host}:{m.port}", 1))
    return out


class WriteGate:
    """Open: writes go on. Closed: `wait()` holds its caller until `open()` or the timeout."""

    def __init__(self, hold_timeout: float, queue_limit: int) -> None:
        self.hold_timeout = hold_timeout
        self.queue_limit = queue_limit
        self._open = asyncio.Event()
        self.reason = "no leader known yet"
        self.closed_at: float | None = time.monotonic()
        self.held_now = 0
        self.held_total = 0  # callers that had to wait
        self.timeouts = 0  # callers given 57P03
        self.refused = 0  # callers given 53300 (queue full)

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def close(self, reason: str) -> None:
        if self._open.is_set():
            self._open.clear()
            self.closed_at = time.monotonic()
        self.reason = reason

    def open(self) -> float:
        """Open; returns how long it was closed (seconds)."""
        held = time.monotonic() - self.closed_at if self.closed_at is not None else 0.0
        self.closed_at = None
        self._open.set()
        return held

    async def wait(self) -> None:
        if self._open.is_set():
            return
        if self.held_now >= self.queue_limit:
            self.refused += 1
            raise ServerError("hold queue full", error_fields("ERROR", HOLD_FULL_SQLSTATE,
                f"writes are held during a failover ({self.reason}) and the hold queue "
                f"({self.queue_limit}) is full"))  # fmt: skip
        self.held_now += 1
        self.held_total += 1
        try:
            await asyncio.wait_for(self._open.wait(), self.hold_timeout)
        except TimeoutError:
            self.timeouts += 1
            raise ServerError("no leader", error_fields("ERROR", HOLD_TIMEOUT_SQLSTATE,
                f"no Patroni leader confirmed within failover_hold_timeout ({self.hold_timeout:g}s): "
                f"{self.reason}; writes cannot run now"))  # fmt: skip
        finally:
            self.held_now -= 1


class PatroniFollower:
    """See the module docstring. `repoint(primary, replicas)` and `fence_old(address)` are the
    daemon's; `login()` gives (user, password) for the proxy's own fence connections."""

    def __init__(
        self,
        cfg: TopologyConfig,
        *,
        login: Callable[[], tuple[str, str | None]],
        connect_timeout: float,
        repoint: Callable[[str, list[tuple[str, str, int]]], None],
        fence_old: Callable[[tuple[str, int]], None],
        servers: Callable[[], Iterable[ServerConn]] = tuple,
    ) -> None:
        self.cfg = cfg
        self.login = login
        self.connect_timeout = connect_timeout
        self.repoint = repoint
        self.fence_old = fence_old
        self.servers = servers  # the daemon's server connections, drained by a planned switchover
        self.gate = WriteGate(cfg.failover_hold_timeout, cfg.hold_queue_limit)
        self.topology: Topology | None = None
        self.confirmed: tuple[str, int] | None = None  # where writes go
        self.confirmed_name: str | None = None
        self.history = FailoverHistory(MAX_FAILOVERS_KEPT)  # the last failovers, totals for /metrics
        # (held, errors) at the last confirmation: a failover's counts start there.
        self._since_confirmed: tuple[int, int] = (0, 0)
        self.sessions_cut = 0  # sessions ended (57P01, 08006) when their primary was lost
        self.source_errors = 0
        # Client sessions whose primary connection was lost, by what happened to them
        # (failover_session.LossAction: "move", "abort-later", "error-now").
        self.session_losses: dict[str, int] = {}
        self.session_errors: dict[str, int] = {}  # the errors sent to the sessions that went on, by SQLSTATE
        self.loss = LossWindowTracker()  # the daemon gives it the monitor's positions
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # wall clock
        self.last_view_at: float | None = None  # wall clock of the last view that changed
        self._confirming: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        # The planned switchover announced by Patroni that writes are paused for (None: none),
        # the task that paused them, the timer of a scheduled one; pauses so far (/status).
        self.planned: PendingSwitchover | None = None
        self._planned_task: asyncio.Task[None] | None = None
        self._planned_timer: asyncio.TimerHandle | None = None
        self.planned_quiesces = 0
        self.source: PatroniRestSource | EtcdWatchSource
        if cfg.patroni_urls:
            self.source = PatroniRestSource(cfg.patroni_urls, self._on_topology, on_error=self._on_error,
                                            interval=cfg.poll_interval, timeout=connect_timeout)  # fmt: skip
        else:
            assert cfg.scope is not None
            self.source = EtcdWatchSource(cfg.etcd_urls, cfg.scope, self._on_topology, on_error=self._on_error,
                                          namespace=cfg.namespace, timeout=connect_timeout)  # fmt: skip

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.source.run())

    async def wait_confirmed(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.gate._open.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        if self._planned_timer is not None:
            self._planned_timer.cancel()
        for task in (self._task, self._confirming, self._planned_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass

    # -- views ----------------------------------------------------------------------------------

    def _on_error(self, exc: Exception) -> None:
        # The last view is kept: an unreachable Patroni or etcd is not "no leader".
        self.source_errors += 1
        self.last_error = str(exc)[:300]
        self.last_error_at = time.time()
        log.warning("topology source error", extra={"error": self.last_error})

    def _on_topology(self, topology: Topology) -> None:
        self.topology = topology
        self.last_view_at = time.time()
        self.loss.observe(topology, self.confirmed_name)
        leader = topology.leader_member
        address = leader.address if leader is not None else None
        log.info("topology", extra={"leader": topology.leader, "version": topology.version,
                                    "members": [m.name for m in topology.members]})  # fmt: skip
        if self.confirmed is not None and address != self.confirmed:
            self._lose_leader(f"Patroni's leader is now {topology.leader or 'none'}")
        if self.confirmed is None:
            if address is not None:
                self._confirm_soon()
        else:
            self.repoint(f"{self.confirmed[0]}:{self.confirmed[1]}", replica_specs(topology))
        self._check_planned()

    def _check_planned(self) -> None:
        """Quiesce for a planned switchover of the current leader that is due (at once or, when
        scheduled, by a timer at its time); resume when Patroni's key no longer asks for one."""
        if self._planned_timer is not None:
            self._planned_timer.cancel()
            self._planned_timer = None
        topology = self.topology
        wait = switchover_wait(topology, time.time()) if topology is not None else None
        if wait is None:
            if self.planned is not None:
                # Gone: done (the new leader is confirmed or a failover is under way: resume does
                # nothing) or dropped by Patroni (writes go on to the old leader).
                log.warning("planned switchover no longer pending", extra={"leader": self.confirmed_name})
                self.planned = None
                self.resume()
            return
        if wait > 0:
            self._planned_timer = asyncio.get_running_loop().call_later(wait, self._check_planned)
            return
        assert topology is not None and topology.pending_switchover is not None
        if self.planned is not None or self.confirmed_name != topology.leader:
            return  # already paused for it, or the leader is not confirmed (writes are held anyway)
        self.planned = pending = topology.pending_switchover
        self.planned_quiesces += 1
        self._planned_task = asyncio.get_running_loop().create_task(self._quiesce_planned(topology.leader, pending))

    async def _quiesce_planned(self, leader: str, pending: PendingSwitchover) -> None:
        to = pending.candidate or "a replica Patroni picks"
        done, waited = await quiesce(self, self.servers, f"Patroni announced a switchover from {leader} to {to}")
        log.warning("planned switchover announced by Patroni: writes paused",
                    extra={**pending.to_json(), "drained": done, "drain_seconds": round(waited, 3)})  # fmt: skip
        await resume_unless_switched(self, leader)

    def _lose_leader(self, reason: str) -> None:
        """Writes may no longer go where they went: hold them and cut the old primary off."""
        old, old_name = self.confirmed, self.confirmed_name
        self.confirmed = self.confirmed_name = None
        self.gate.close(reason)
        self.loss.lost()
        # Counted from the last confirmation, not from now: a session that lost its primary
        # connection got its error (failover_session.py) before anything called this.
        held, errors = self._since_confirmed
        self.history.begin(time.time(), old_name, reason, held=held, errors=errors)
        log.warning("leader lost: holding writes", extra={"old": old_name, "reason": reason})
        if old is not None:
            self.fence_old(old)  # the sessions count themselves (failover_session.py)

    def pause(self, reason: str) -> None:
        """Hold new writes while the leader is still confirmed (a planned switchover: quiesce.py)."""
        if self.gate.is_open:
            self.gate.close(reason)
            log.warning("writes paused", extra={"reason": reason})

    def resume(self) -> None:
        """Undo `pause` (Patroni refused or scheduled the switchover), unless a failover began."""
        if self.confirmed is not None and not self.gate.is_open and not self.history.in_progress:
            self.gate.open()
            log.warning("writes resumed", extra={"leader": self.confirmed_name})

    def _errors(self) -> int:
        """Clients answered with an error instead of a result because of a failover so far."""
        return self.gate.timeouts + self.gate.refused + self.sessions_cut + sum(self.session_errors.values())

    def _confirm_soon(self) -> None:
        if self._confirming is None or self._confirming.done():
            self._confirming = asyncio.get_running_loop().create_task(self._confirm_loop())

    async def _confirm_loop(self) -> None:
        """Until the named leader passes the fence on a connection of our own (or no leader is
        named: the next view starts this again)."""
        while self.confirmed is None:
            topology = self.topology
            leader = topology.leader_member if topology is not None else None
            if topology is None or leader is None or leader.address is None:
                return
            host, port = leader.address
            verdict = await self._check_address(host, port)  # against the view of its answer's time
            latest = self.topology
            now_leader = latest.leader_member if latest is not None else None
            if verdict is WriteVerdict.OK and latest is not None and now_leader is not None \
                    and now_leader.address == (host, port):  # fmt: skip
                self._confirmed(latest, now_leader.name, (host, port))
                return
            await asyncio.sleep(CONFIRM_RETRY)

    def _confirmed(self, topology: Topology, name: str, address: tuple[str, int]) -> None:
        self.confirmed, self.confirmed_name = address, name
        self.repoint(f"{address[0]}:{address[1]}", replica_specs(topology))
        held = self.gate.open()
        window = self.loss.confirmed(name)
        self.loss.observe(topology, name)  # views may not change for a while: this one counts
        if window is not None and not window.synchronous:
            # Asynchronous replication: commits acknowledged on the old primary that the promoted
            # node had not replayed are lost; this is how much WAL that may be (losswindow.py).
            log.warning("failover: possible loss window", extra={"to": name, **window.to_json()})
        record = self.history.finish(name, held, held=self.gate.held_total, errors=self._errors(),
                                     loss_window=window.to_json() if window is not None else None)  # fmt: skip
        self._since_confirmed = (self.gate.held_total, self._errors())
        if record is not None:
            log.warning("leader confirmed: writes released", extra=record.to_json())
        else:
            log.info("leader confirmed", extra={"leader": name})

    async def _check_address(self, host: str, port: int) -> WriteVerdict | None:
        user, password = self.login()
        try:
            conn = await asyncpg.connect(
                host=host, port=port, user=user, password=password, database="postgres", ssl=False,
                timeout=self.connect_timeout, statement_cache_size=0,
                server_settings={"application_name": "tierproxy-fence"},
            )  # fmt: skip
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return None
        try:
            row = await asyncio.wait_for(conn.fetchrow(FENCE_SQL), self.connect_timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return None
        finally:
            conn.terminate()
        assert row is not None
        return self.verdict(host, port, bool(row[0]), row[1])

    def verdict(self, host: str, port: int, in_recovery: bool, timeline: int | None) -> WriteVerdict:
        if self.topology is None:
            return WriteVerdict.NO_LEADER
        return write_verdict(self.topology, host, port, in_recovery=in_recovery, timeline=timeline)

    def unreachable(self, reason: str) -> None:
        """A connection to the confirmed primary failed: hold writes until a leader is confirmed
        again (the confirm loop retries the one Patroni names, which may be the same)."""
        if self.confirmed is not None:
            self._lose_leader(reason)
            self._confirm_soon()

    async def check_conn(self, conn: ServerConn) -> WriteVerdict:
        """The fence on a new primary server connection, before it is handed out."""
        rows = await conn.simple_query(FENCE_SQL)
        in_recovery = rows[0][0] == "t"
        timeline = int(rows[0][1]) if rows[0][1] is not None else None
        verdict = self.verdict(conn.address[0], conn.address[1], in_recovery, timeline)
        if verdict is not WriteVerdict.OK and conn.address == self.confirmed:
            self._lose_leader(f"the primary {self.confirmed_name} failed the fence: {verdict.value}")
            self._confirm_soon()
        return verdict

    # -- reporting ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """/status -> topology (and SHOW CLUSTER, /metrics): cluster_view.py says what each field is."""
        t = self.topology
        return {
            "source": "patroni-rest" if self.cfg.patroni_urls else "etcd",
            "source_health": source_health(self.source_errors, self.last_error, self.last_error_at,
                                           self.last_view_at, getattr(self.source, "ok_at", None)),
            "leader": t.leader if t is not None else None,
            "confirmed": self.confirmed_name,
            "replicas": [m.name for m in t.replicas] if t is not None else [],
            "writes_held": not self.gate.is_open, "hold_reason": None if self.gate.is_open else self.gate.reason,
            "held_now": self.gate.held_now, "held_total": self.gate.held_total,
            "hold_timeouts": self.gate.timeouts, "hold_refused": self.gate.refused,
            "sessions_cut": self.sessions_cut,
            "failovers_total": self.history.total, "failovers": self.history.to_json(),
            "failover_in_progress": self.history.in_progress,
            "failover_held_total": self.history.held_total, "failover_errors_total": self.history.errors_total,
            "hold_seconds": histogram_json(self.history.hold),
            "source_errors": self.source_errors, "last_error": self.last_error,
            "session_losses": dict(self.session_losses), "session_errors": dict(self.session_errors),
            "last_loss_window": self.loss.last.to_json() if self.loss.last is not None else None,
            "members": member_rows(t),
            "synchronous_mode": t.synchronous_mode if t is not None else None,
            "sync_standbys": sorted(t.sync_standbys) if t is not None else [],
            "paused": t.paused if t is not None else False,
            "pending_switchover": t.pending_switchover.to_json() if t is not None and t.pending_switchover else None,
            "planned_quiesces": self.planned_quiesces,
        }  # fmt: skip


class _Fenced(Exception):
    """A new primary connection failed the fence: wait at the gate again."""


class FencedPools(ServerPools):
    """ServerPools with the follower's gate before the primary and its fence after each connect."""

    follower: PatroniFollower | None = None

    async def acquire(self, key: PoolKey) -> ServerConn:
        follower = self.follower
        if follower is None or key[0] != PRIMARY:
            return await super().acquire(key)
        deadline = time.monotonic() + follower.gate.hold_timeout
        while True:
            await follower.gate.wait()
            address = self.addresses.get(PRIMARY)
            try:
                return await super().acquire(key)
            except ServerError as exc:
                if exc.sqlstate not in _UNREACHABLE:
                    raise
                # The primary writes go to cannot be reached (Patroni is shutting it down for a
                # switchover, or it died and no view says so yet): hold, as for a missing leader,
                # until a leader passes the fence (it may be this one again, at once). An address
                # no longer confirmed (the leader was lost while we connected): hold as well.
                if address == follower.confirmed:
                    follower.unreachable(f"the primary {follower.confirmed_name} cannot be reached: {exc}")
                else:
                    await asyncio.sleep(CONFIRM_RETRY)
                if time.monotonic() >= deadline:
                    raise
            except _Fenced as exc:
                if time.monotonic() >= deadline:
                    raise ServerError("fenced", error_fields("ERROR", HOLD_TIMEOUT_SQLSTATE,
                                      f"no primary passed the write fence: {exc}")) from None  # fmt: skip

    async def _connect(self, key: PoolKey) -> ServerConn:
        conn = await super()._connect(key)
        follower = self.follower
        if follower is None or key[0] != PRIMARY:
            return conn
        try:
            verdict: WriteVerdict | str = await asyncio.wait_for(follower.check_conn(conn), self.connect_timeout)
        except (TimeoutError, ServerError) as exc:
            verdict = f"fence query failed: {exc}"
        if verdict is WriteVerdict.OK:
            return conn
        self.discard(conn)
        log.warning("fence: primary connection refused", extra={"address": conn.address, "verdict": str(verdict)})
        raise _Fenced(f"{conn.address[0]}:{conn.address[1]}: {verdict}")
