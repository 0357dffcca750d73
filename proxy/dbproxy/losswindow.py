"""The possible loss window of a failover: bytes of WAL the old primary had that the promoted
node had not replayed at the switch (what asynchronous replication may lose).

- `loss_window(before, promoted, primary_lsn=..., promoted_lsn=...)` is the decision, pure:
  - the promoted node was the old leader's synchronous standby in a view with Patroni's
    `synchronous_mode` on: every acknowledged commit is on it, window 0, `synchronous` True;
  - else the larger of two estimates, each from the last reports before the loss: Patroni's lag of
    the promoted member (leader xlog_location minus the member's, from the last view that named
    the old leader; members report every loop_wait), and the replica monitor's (the old primary's
    last polled `pg_current_wal_lsn()` minus the promoted node's last polled replay position;
    every `monitor.interval`). Both are lower bounds of the truth by up to their report period of
    writes: a commit after the last report is not in either. None when neither is known.
- `LossWindowTracker` keeps those inputs while a leader is confirmed (`observe`, fed by the
  follower with each view and the monitor's positions), freezes them when the leader is lost
  (`lost`) and gives the window when the next one is confirmed (`confirmed`); `last` is the last
  failover's, for /status and the `failover_loss_window_bytes` metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from .topology import Topology

__all__ = ["LossWindow", "LossWindowTracker", "Positions", "loss_window", "loss_window_metrics"]

# (the primary's last WAL position, {replica member name: its last replayed position})
Positions = tuple[int | None, Mapping[str, int | None]]


@dataclass(frozen=True, slots=True)
class LossWindow:
    bytes: int | None  # None: unknown
    synchronous: bool  # promoted from the old leader's synchronous standby: nothing acknowledged lost
    patroni_lag: int | None = None
    monitor_lag: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"loss_window_bytes": self.bytes, "synchronous": self.synchronous,
                "patroni_lag": self.patroni_lag, "monitor_lag": self.monitor_lag}  # fmt: skip


def loss_window(before: Topology | None, promoted: str, *, primary_lsn: int | None,
                promoted_lsn: int | None) -> LossWindow:  # fmt: skip
    """See the module docstring. `before`: the last view that named the old leader."""
    if before is not None and before.synchronous_mode and promoted in before.sync_standbys:
        return LossWindow(0, True)
    patroni = None
    if before is not None:
        for m in before.members:
            if m.name == promoted and m.lag is not None:
                patroni = max(0, m.lag)
    monitor = max(0, primary_lsn - promoted_lsn) if primary_lsn is not None and promoted_lsn is not None else None
    known = [v for v in (patroni, monitor) if v is not None]
    return LossWindow(max(known) if known else None, False, patroni, monitor)


class LossWindowTracker:
    """See the module docstring. `positions()` reads the replica monitor (the daemon's)."""

    def __init__(self, positions: Callable[[], Positions] | None = None) -> None:
        self.positions = positions
        self.before: Topology | None = None  # the last view naming the confirmed leader
        self.primary_lsn: int | None = None
        self.replica_lsn: dict[str, int] = {}
        self._frozen: tuple[Topology | None, int | None, dict[str, int]] | None = None
        self.last: LossWindow | None = None

    def _sample(self) -> None:
        if self.positions is None:
            return
        primary, replicas = self.positions()
        if primary is not None:  # the last value seen: a dead primary polls as None
            self.primary_lsn = primary
        for name, lsn in replicas.items():
            if lsn is not None:
                self.replica_lsn[name] = lsn

    def observe(self, topology: Topology, confirmed_name: str | None) -> None:
        """A view arrived while `confirmed_name` (or nobody) takes the writes."""
        if confirmed_name is not None and topology.leader == confirmed_name:
            self.before = topology
            self._sample()

    def lost(self) -> None:
        """The leader was lost: the inputs as they stood (the first loss of a failover counts;
        the monitor's positions are its last polls, kept when a server stops answering)."""
        if self._frozen is None:
            self._sample()
            self._frozen = (self.before, self.primary_lsn, dict(self.replica_lsn))

    def confirmed(self, promoted: str) -> LossWindow | None:
        """A leader was confirmed; the window if a leader was lost since the last confirmation."""
        frozen, self._frozen = self._frozen, None
        self.before, self.primary_lsn, self.replica_lsn = None, None, {}
        if frozen is None:
            return None
        before, primary, replicas = frozen
        if before is not None and before.leader == promoted:
            self.last = LossWindow(0, False, 0, 0)  # the same leader again (restarted in place)
        else:
            self.last = loss_window(before, promoted, primary_lsn=primary, promoted_lsn=replicas.get(promoted))
        return self.last


def loss_window_metrics(tracker: LossWindowTracker | None) -> Iterable[Metric]:
    if tracker is None or tracker.last is None or tracker.last.bytes is None:
        return []
    return [GaugeMetricFamily("tierproxy_dbproxy_failover_loss_window_bytes",
                              "Possible loss window of the last failover: WAL bytes of the old primary not replayed "
                              "on the promoted node at the switch, from the last reports (0 when promoted from the "
                              "synchronous standby)", value=tracker.last.bytes)]  # fmt: skip
