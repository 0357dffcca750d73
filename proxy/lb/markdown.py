"""Requests waiting on a backend that goes down: re-sent elsewhere or answered 502 at once.

A backend that hangs (SIGSTOP, a deadlocked app) accepts connections and reads requests but never
answers. Without help, every request already sent to it waits for `timeouts.backend_response`
(30 s) although the health check (or outlier detection) marks the backend down within seconds.
With a pool's `on_marked_down = "redispatch"` (the default; HAProxy's `on-marked-down
shutdown-sessions` with `option redispatch`), the moment a backend goes down each request waiting
on it that has had no response byte yet is

* re-sent at once to another backend when that is safe: an idempotent method (or
  `retry_non_idempotent`, or nothing sent yet) and a body still held in the retry buffer;
* answered 502 at once otherwise (a POST the backend may be acting on: never sent twice).

Responses already streaming to their clients are left alone (their bytes keep moving or the
`backend_response` stall timeout cuts them). `on_marked_down = "keep"` leaves waiting requests to
their timeouts, as nginx does.

Cost: nothing per request. The frontend finds the waiting exchanges by scanning its client
connections once, when a backend goes down (`Frontend.backend_marked_down`), so the hot path keeps
no per-backend list of requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.lb.client import ClientConn
    from proxy.lb.pool import Backend

__all__ = ["FAILED", "NOTHING", "REDISPATCHED", "MarkedDownMixin"]

# What `on_backend_marked_down` did with a connection's exchange.
NOTHING = 0  # not waiting on that backend (no exchange, or its response has started)
REDISPATCHED = 1  # re-sent to another backend (or answered as a retry with no backend left would be)
FAILED = 2  # answered 502: not safe to send again


class MarkedDownMixin:
    __slots__ = ()  # ClientConn's state is ClientCore's (lb/clientcore.py)

    def on_backend_marked_down(self: ClientConn, backend: Backend) -> int:
        """`backend` went down: if this connection's exchange waits on it with no response byte
        yet, move it to another backend when safe, else answer 502. Returns what was done."""
        if self.closed or self.backend is not backend or self.req is None or self.resp is not None:
            return NOTHING
        pool = self.pool
        assert pool is not None
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        if self.up is not None:
            up, self.up = self.up, None
            up.abort()  # a frozen backend's late answer must never reach this client
        self._release_backend()
        if self.retry_buf is not None and (self.idempotent or not self.sent):
            self.attempts += 1
            pool.retries_total += 1
            self.exclude = self.exclude + (backend,)
            self._replay(None)
            return REDISPATCHED
        self._error(502, b"bad gateway: backend marked down while handling the request\n")
        return FAILED
