"""A planned switchover without errors for clients outside a transaction: pause, drain, switch.

When the operator asks the proxy for a switchover (`POST /switchover`, patroni_admin.py), the
proxy first *pauses* writes (as pgbouncer's PAUSE does) and only then asks Patroni:

1. `PatroniFollower.pause()` closes the write gate (failover.py). From then on a session outside a
   transaction whose next batch needs the primary waits at the gate before it is sent (`holds`,
   called by session.py's dispatch), even on the primary connection it already has: nothing new
   starts on the old primary.
2. `drain(...)` waits, up to `DRAIN_TIMEOUT`, until no primary server connection has a statement
   in flight or a transaction open (sessions inside a transaction go on until they end it: their
   next batch outside it waits like the others).
3. Patroni switches over: the old primary stops; every session is then idle between transactions,
   so it moves (failover_session.py) without an error, and the held batches run on the new primary
   once it is confirmed (the gate opens as for any failover). When Patroni refuses, or only
   schedules the switchover, `PatroniFollower.resume()` opens the gate again.

`quiesce(...)` is steps 1 and 2; `resume_unless_switched(...)` bounds the pause afterwards.

A switchover asked of Patroni directly (`patronictl switchover`, Patroni's own REST API) is
announced in etcd's `/failover` key before the leader demotes itself: the follower, watching etcd,
runs the same `quiesce` when that key names the current leader (failover.py, `_check_planned`;
a scheduled one at its time), and resumes when the key goes away without a switch. Patroni does
not wait for the proxy there: a statement still running when the old primary stops gets its error.
The REST-poll source sees only scheduled switchovers (docs/dbproxy.md). A statement still running
when the drain times out gets what failover_session.py gives it (08006 outside a transaction).
With `workers = N` the admin API runs in the supervisor, which holds no client: no pause there;
each worker's follower watches etcd and pauses its own clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from proxy.pgfront.server import ServerConn, ServerError

from .classify_types import Decision, Target
from .router import PRIMARY

if TYPE_CHECKING:
    from .failover import PatroniFollower
    from .session import ClientSession

__all__ = ["DRAIN_TIMEOUT", "busy_primary", "drain", "holds", "quiesce", "resume_unless_switched", "through_gate"]

DRAIN_TIMEOUT = 5.0  # seconds the proxy waits for statements and transactions on the old primary
DRAIN_POLL = 0.02


def holds(session: ClientSession, decision: Decision) -> bool:
    """Must this batch wait at the closed gate although the session has a primary connection?
    Only outside a transaction (one in progress goes on to its end) and only for a batch that
    goes to the primary (a write, a transaction, or any statement of a pinned session)."""
    follower = session.d.follower
    if follower is None or follower.gate.is_open or session.router.in_transaction:
        return False
    conn = session.servers.get(PRIMARY)
    if conn is None or conn.closed:
        return False  # a new primary connection waits at the gate anyway (FencedPools.acquire)
    return decision.target is Target.PRIMARY or decision.begins_transaction or session.router.pinned


async def through_gate(session: ClientSession, batch: list[tuple[Any, Any]], decision: Decision) -> None:
    """Wait for the gate, then route and send `batch` as usual (on the new primary by then)."""
    follower = session.d.follower
    assert follower is not None
    try:
        await follower.gate.wait()
    except ServerError as exc:
        session._fail_batch(batch, exc)
        return
    if session.phase != "closed":
        await session._route_async(batch, decision, None)


def busy_primary(conns: Iterable[ServerConn]) -> list[ServerConn]:
    """The primary server connections with a statement in flight or a transaction open."""
    return [c for c in conns if c.backend == PRIMARY and not c.closed and (c.busy or c.status != b"I")]


async def drain(conns: Any, timeout: float = DRAIN_TIMEOUT) -> tuple[bool, float]:
    """Until `busy_primary(conns())` is empty or `timeout`: (drained, seconds waited)."""
    started = time.monotonic()
    while busy_primary(conns()):
        if time.monotonic() - started >= timeout:
            return False, time.monotonic() - started
        await asyncio.sleep(DRAIN_POLL)
    return True, time.monotonic() - started


async def quiesce(follower: PatroniFollower, conns: Any, reason: str,
                  timeout: float = DRAIN_TIMEOUT) -> tuple[bool, float]:  # fmt: skip
    """Pause writes (the gate closes for new batches) and drain the primary: (drained, seconds)."""
    follower.pause(reason)
    return await drain(conns, timeout)


async def resume_unless_switched(follower: PatroniFollower, old: str) -> None:
    """After a quiesce: the follower sees the new leader within a view or two and opens the gate
    once it is confirmed. Should it not (no switch came), writes must not stay paused: resume
    after the hold timeout."""
    deadline = time.monotonic() + follower.gate.hold_timeout
    while time.monotonic() < deadline:
        if follower.gate.is_open or follower.history.in_progress or follower.confirmed_name != old:
            return
        await asyncio.sleep(0.1)
    follower.resume()
