"""proxy/dbproxy/losswindow.py: the possible loss window of a failover (WAL bytes the promoted node
had not replayed), from Patroni's last view and the replica monitor's last positions."""

from __future__ import annotations

from proxy.dbproxy.losswindow import LossWindowTracker, loss_window, loss_window_metrics
from proxy.dbproxy.topology import Member, Topology


def view(leader: str, lags: dict[str, int | None], *, sync: frozenset[str] = frozenset(),
         mode: bool | None = None) -> Topology:  # fmt: skip
    members = [Member(leader, "leader", "running", "127.0.0.1", 5000, timeline=1)]
    for i, (name, lag) in enumerate(sorted(lags.items()), 1):
        role = "sync_standby" if name in sync else "replica"
        members.append(Member(name, role, "running", "127.0.0.1", 5000 + i, timeline=1, lag=lag))
    members.sort(key=lambda m: m.name)
    return Topology(tuple(members), leader=leader, sync_standbys=sync, synchronous_mode=mode)


def test_promoted_from_the_synchronous_standby_loses_nothing() -> None:
    before = view("a", {"b": 9000, "c": 10}, sync=frozenset({"b"}), mode=True)
    w = loss_window(before, "b", primary_lsn=100_000, promoted_lsn=1)
    assert (w.bytes, w.synchronous) == (0, True)


def test_asynchronous_takes_the_larger_of_patroni_and_the_monitor() -> None:
    before = view("a", {"b": 4000, "c": 10})
    w = loss_window(before, "b", primary_lsn=10_000, promoted_lsn=9_000)
    assert (w.bytes, w.synchronous, w.patroni_lag, w.monitor_lag) == (4000, False, 4000, 1000)
    w = loss_window(before, "b", primary_lsn=10_000, promoted_lsn=1_000)
    assert w.bytes == 9000
    # a sync standby that is not the promoted one vouches for nothing
    before = view("a", {"b": 4000, "c": 10}, sync=frozenset({"c"}), mode=True)
    assert loss_window(before, "b", primary_lsn=None, promoted_lsn=None).bytes == 4000


def test_unknown_when_nothing_was_reported() -> None:
    w = loss_window(None, "b", primary_lsn=None, promoted_lsn=5)
    assert w.bytes is None and not w.synchronous
    assert loss_window(view("a", {"b": None}), "b", primary_lsn=5, promoted_lsn=None).bytes is None
    # a replica ahead of the last primary report: no negative window
    assert loss_window(view("a", {"b": None}), "b", primary_lsn=5, promoted_lsn=50).bytes == 0


def test_tracker_freezes_the_inputs_at_the_loss() -> None:
    positions = {"primary": 1000, "b": 400}
    tracker = LossWindowTracker(lambda: (positions["primary"], {"b": positions["b"]}))
    tracker.observe(view("a", {"b": 700}), "a")
    assert tracker.confirmed("a") is None  # no loss since the last confirmation
    tracker.observe(view("a", {"b": 700}), "a")
    positions["primary"] = None  # type: ignore[assignment]  # the dead primary polls as nothing
    tracker.lost()
    positions["b"] = 2000  # promoted and writing since: not the window
    tracker.observe(view("b", {"a": None}), None)  # the new leader's views do not count
    tracker.lost()  # a second loss in the same failover keeps the first inputs
    w = tracker.confirmed("b")
    assert w is not None and (w.bytes, w.patroni_lag, w.monitor_lag) == (700, 700, 600)
    assert tracker.last is w
    (metric,) = loss_window_metrics(tracker)
    assert metric.name == "tierproxy_dbproxy_failover_loss_window_bytes" and metric.samples[0].value == 700


def test_the_same_leader_confirmed_again_loses_nothing() -> None:
    tracker = LossWindowTracker(lambda: (1000, {"b": 10}))
    tracker.observe(view("a", {"b": 990}), "a")
    tracker.lost()
    w = tracker.confirmed("a")
    assert w is not None and w.bytes == 0
    assert list(loss_window_metrics(LossWindowTracker())) == []
