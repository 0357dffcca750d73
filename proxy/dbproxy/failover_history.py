"""The dbproxy's memory of failovers: a bounded history and the totals /metrics exports (pure).

A failover, as the proxy sees it, starts when writes may no longer go where they went (Patroni names
another leader or none, or the primary stops answering: failover.py `_lose_leader`) and ends when a
leader passes the write fence (`_confirmed`). `FailoverHistory.begin` and `finish` bracket it with
the counters read at both ends, so a record says:

- `at` (wall clock, seconds since the epoch) and `when` (the same, ISO 8601 UTC) of the loss;
- `from` and `to`: the member names (None when unknown, e.g. before the first confirmation);
- `reason`: why writes stopped;
- `hold_seconds`: how long writes were held (closed gate to open gate);
- `held`: the writes, transactions and logins that waited at the gate meanwhile;
- `errors`: what clients got instead of an answer meanwhile (57P03 after the hold timeout, 53300
  over the queue limit, the errors failover_session.py sends sessions that lost their primary
  connection, and the sessions it ends);
- `loss_window`: losswindow.py's estimate of the WAL not replayed on the promoted node (None
  when unknown).

The caller passes the counters at the last confirmation to `begin` (failover.py): a session's
error comes when its connection to the dying primary breaks, before the proxy declares the leader
lost, and still belongs to this failover.

Only the last `maxlen` records are kept (the deque drops the oldest); the totals (`total`,
`held_total`, `errors_total`, the hold-time histogram) cover every failover since the start. No
clock is read here: the caller passes the times, which is what makes this unit-testable.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from proxy.core.metrics import Histogram

__all__ = ["HOLD_BUCKETS", "FailoverHistory", "FailoverRecord"]

# Seconds: a planned switchover holds for about a second, a dead node for Patroni's ttl (10-30 s),
# a cluster without a leader up to failover_hold_timeout.
HOLD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
DEFAULT_KEPT = 10


@dataclass(frozen=True, slots=True)
class FailoverRecord:
    at: float
    from_: str | None
    to: str | None
    reason: str
    hold_seconds: float
    held: int
    errors: int
    loss_window: dict[str, Any] | None = None  # losswindow.py's LossWindow.to_json(), when known

    def to_json(self) -> dict[str, Any]:
        return {
            "at": round(self.at, 3),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)),
            "from": self.from_, "to": self.to, "reason": self.reason,
            "hold_seconds": round(self.hold_seconds, 3), "held": self.held, "errors": self.errors,
            "loss_window": self.loss_window,
        }  # fmt: skip


@dataclass(slots=True)
class _Pending:
    at: float
    from_: str | None
    reason: str
    held_before: int
    errors_before: int


class FailoverHistory:
    """See the module docstring."""

    def __init__(self, maxlen: int = DEFAULT_KEPT) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self.records: deque[FailoverRecord] = deque(maxlen=maxlen)
        self.pending: _Pending | None = None
        self.total = 0
        self.held_total = 0
        self.errors_total = 0
        self.hold = Histogram(HOLD_BUCKETS)

    @property
    def in_progress(self) -> bool:
        return self.pending is not None

    def begin(self, at: float, from_: str | None, reason: str, *, held: int, errors: int) -> bool:
        """Writes stopped at `at`; `held` and `errors` are the gate's running totals now. A second
        `begin` before `finish` (the leader lost again while none was confirmed) keeps the first:
        one failover, from the first loss to the next confirmation. True if this one started it."""
        if self.pending is not None:
            return False
        self.pending = _Pending(at, from_, reason, held, errors)
        return True

    def finish(self, to: str, hold_seconds: float, *, held: int, errors: int,
               loss_window: dict[str, Any] | None = None) -> FailoverRecord | None:  # fmt: skip
        """A leader was confirmed after `hold_seconds` of hold; `held` and `errors` are the gate's
        running totals now. None if no failover was in progress (the first confirmation at start)."""
        p, self.pending = self.pending, None
        if p is None:
            return None
        record = FailoverRecord(at=p.at, from_=p.from_, to=to, reason=p.reason, hold_seconds=max(0.0, hold_seconds),
                                held=max(0, held - p.held_before), errors=max(0, errors - p.errors_before),
                                loss_window=loss_window)  # fmt: skip
        self.records.append(record)
        self.total += 1
        self.held_total += record.held
        self.errors_total += record.errors
        self.hold.observe(record.hold_seconds)
        return record

    def to_json(self) -> list[dict[str, Any]]:
        """The kept records, oldest first."""
        return [r.to_json() for r in self.records]

    @property
    def last(self) -> FailoverRecord | None:
        return self.records[-1] if self.records else None
