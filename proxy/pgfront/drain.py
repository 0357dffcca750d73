"""SIGTERM for a PostgreSQL front end's client sessions: let them finish, tell them, flush.

`drain_sessions` is the part of a daemon's drain that is about clients, whatever the daemon
routes: idle sessions (and those not logged in yet) get FATAL 57P01 at once; busy ones when
their statement and transaction end (nothing with a server in flight, `router.in_transaction`
false), or when `timeout` runs out; then up to `flush` seconds for each client to read what was
sent before its FATAL and close (`FrontendSession.close` lingers), and the rest are cut off.
The listener is closed by the daemon first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Set

from proxy.pgwire.errors import ADMIN_SHUTDOWN

from .session import FrontendSession

__all__ = ["CLOSE_FLUSH_SECONDS", "drain_sessions"]

CLOSE_FLUSH_SECONDS = 5.0  # SIGTERM: how long the drain waits for clients to take their FATAL
_SHUTDOWN = "terminating connection due to administrator command"


async def drain_sessions(sessions: Set[FrontendSession], closing: Set[FrontendSession], timeout: float,
                         flush: float = CLOSE_FLUSH_SECONDS) -> None:  # fmt: skip
    """`sessions` and `closing` are the daemon's live sets (sessions leave them as they end)."""
    deadline = time.monotonic() + timeout
    # Sessions end when their clients disconnect; idle ones are told to go right away.
    for s in list(sessions):
        if s.phase != "ready" or not s.cancel_targets() and not s.router.in_transaction:
            s.fatal(ADMIN_SHUTDOWN, _SHUTDOWN)
    while sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        for s in list(sessions):
            if s.phase == "ready" and not s.cancel_targets() and not s.router.in_transaction:
                s.fatal(ADMIN_SHUTDOWN, _SHUTDOWN)
    for s in list(sessions):
        s.fatal(ADMIN_SHUTDOWN, _SHUTDOWN)
    # Exiting now would drop what is still buffered for a client (the end of a large result
    # and the FATAL after it): wait until each has taken it and closed (`FrontendSession.close`).
    flush_deadline = time.monotonic() + flush
    while closing and time.monotonic() < flush_deadline:
        await asyncio.sleep(0.05)
    for s in list(closing):
        if s.transport is not None:
            s.transport.abort()
