"""What the dbproxy and the shard router share as PostgreSQL front ends: a base class.

`FrontDaemon` holds the parts of `proxy.pgfront.session.FrontendServices` that read the daemon's
config the same way in both (login timeout, TLS required, failed-login delay), the cancel keys
sessions register and forget, the background tasks sessions start, the idle-pool sweep, and the
front half of the drain (control channel, listener, sessions, tasks, pooled server connections).
Each daemon sets the attributes below in its `__init__`; what it routes stays in its own class.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .cancel import CancelKeys
from .drain import drain_sessions
from .pool import ServerPools

__all__ = ["SWEEP_INTERVAL", "FrontDaemon"]

SWEEP_INTERVAL = 5.0  # seconds between idle-pool sweeps


class FrontDaemon:
    cfg: Any  # the daemon's config: timeouts.client_login, timeouts.drain, tls, auth
    metrics: Any  # has `clients_total`
    sessions: set[Any]
    closing: set[Any]
    tasks: set[asyncio.Task[Any]]
    pools: ServerPools
    server: asyncio.base_events.Server | None
    control: Any  # the worker's ControlChannel, or None
    _cancel_keys: CancelKeys
    _sweeper: asyncio.Task[None] | None

    @property
    def client_login_timeout(self) -> float:
        return self.cfg.timeouts.client_login

    @property
    def tls_required(self) -> bool:
        return self.cfg.tls is not None and self.cfg.tls.mode == "require"

    @property
    def failed_login_delay(self) -> float:
        return self.cfg.auth.failed_login_delay_ms / 1000.0

    def register_cancel_key(self, session: Any, key: tuple[int, int] | None = None) -> tuple[int, int]:
        """The session's BackendKeyData: `key` (its server's own) if given and free, else one of
        ours. A CancelRequest with it cancels whatever that session's servers are running."""
        self.metrics.clients_total += 1
        return self._cancel_keys.register(session, key)

    def session_ended(self, session: Any) -> None:
        self.sessions.discard(session)
        self._cancel_keys.forget(session, session.key)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.pools.sweep(time.monotonic())

    async def _drain_front(self) -> None:
        """Stop taking clients, drain the sessions (drain.py), wait briefly for background
        tasks, close every pooled server connection."""
        if self.control is not None:
            self.control.close()
        if self.server is not None:
            self.server.close()
        await drain_sessions(self.sessions, self.closing, self.cfg.timeouts.drain)
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=2.0)
        self.pools.close_all()
        for conn in self.pools.servers():
            conn.close()
