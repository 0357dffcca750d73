"""Requests the balancer refuses itself (400/408/413/414/431/501/505): counted, logged, answered
in their turn.

`RejectMixin` is `ClientConn`'s error path for what the client sent:

* Pipelining: the parser hands over the requests that arrived intact before the bad bytes
  (`ProtocolError.events`). They are dispatched like any others and the error waits behind them
  in the backlog, so the client gets every earlier response in order, then the error, then the
  close (as from nginx). The connection stops reading: nothing after the bad bytes is parsed.
* Logging: each refusal is counted (`client_errors_total{status}`) and logged with its status,
  reason and client address, like nginx's error log, through `RejectLog`, which bounds the
  lines per second and reports how many it left out, so a flood of bad requests cannot flood
  the log.

Only the error path runs here; nothing is added to a normal exchange.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from proxy.http1 import ProtocolError

if TYPE_CHECKING:
    from proxy.lb.client import ClientConn

__all__ = ["RejectLog", "RejectMixin"]

log = logging.getLogger("tierproxy.lb")

# Reading is paused for this reason once the parser has failed (ClientConn's _P_* bits).
_P_FAILED = 64


class RejectLog:
    """At most `per_second` "request rejected" lines a second (per process); the refusals left
    out are counted and reported in one line when the second is over (`flush`, from the sweeper,
    or the next refusal)."""

    def __init__(self, per_second: int = 20, logger: logging.Logger = log) -> None:
        self.per_second = per_second
        self.logger = logger
        self.second = 0
        self.logged = 0
        self.suppressed = 0

    def note(self, now: float, status: int, reason: str, client: bytes) -> None:
        second = int(now)
        if second != self.second:
            self.flush(now)
            self.second = second
            self.logged = 0
        if self.logged >= self.per_second:
            self.suppressed += 1
            return
        self.logged += 1
        self.logger.info(
            "request rejected",
            extra={"status": status, "reason": reason, "client": client.decode("ascii", "replace")},
        )

    def flush(self, now: float) -> None:
        """Report the refusals left out in a second that is over."""
        if self.suppressed and int(now) != self.second:
            self.logger.info(
                "request rejected: more not logged",
                extra={"suppressed": self.suppressed, "limit_per_second": self.per_second},
            )
            self.suppressed = 0


class RejectMixin:
    __slots__ = ()  # ClientConn's state is ClientCore's (lb/clientcore.py)

    def _rejected(self: ClientConn, status: int, reason: str) -> None:
        """Count and log a refusal (the caller answers it)."""
        fe = self.fe
        fe.client_errors[status] = fe.client_errors.get(status, 0) + 1
        # The loop's clock, not the coarse `fe.now`: a second of the limit is a real second.
        fe.reject_log.note(fe.loop.time(), status, reason, self.client_ip)

    def _bad_request(self: ClientConn, exc: ProtocolError) -> None:
        """The parser failed: answer the requests before the bad bytes first, then the error."""
        backlog = self.backlog
        if backlog and type(backlog[-1]) is ProtocolError:
            return  # already failed and waiting its turn: a dead parser says so again
        self._rejected(exc.status_hint, str(exc))
        for ev in exc.events:
            if self.closed:
                return
            self._on_event(ev)
        exc.events = []
        if self.closed:
            return
        if backlog or (self.req is not None and self.req_done):
            # An earlier request is still being answered: the error waits behind it. Nothing
            # after the bad bytes can be parsed, so stop reading.
            backlog.append(exc)
            self._pause(_P_FAILED)
            return
        self._protocol_error(exc)
