"""The replica monitor (proxy/dbproxy/monitor.py) against real clusters: roles, lag, a killed,
restarted, frozen and promoted replica. Polls are driven with poll_once() in bounded condition
loops, never timed sleeps."""

from __future__ import annotations

import pytest

from proxy.dbproxy.monitor import ReplicaMonitor, usable_for_reads
from proxy.devstack.poll import PollTimeout, wait_until_async
from proxy.devstack.postgres import start_pg_cluster

POLL_TIMEOUT = 60.0  # seconds for any condition (a poll takes at most the monitor's timeout)


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    with start_pg_cluster(2, log_dir=tmp_path_factory.mktemp("monitor"), name="monitor") as cluster:
        yield cluster


@pytest.fixture
def healthy(shared_cluster):
    # The lag and the kill/freeze tests each put back what they changed (no apply delay, the
    # killed replica restarted, the frozen one resumed): both replicas have replayed everything.
    shared_cluster.wait_for_replicas_caught_up(timeout=30)
    return shared_cluster


def make_monitor(cluster, changes=None):
    replicas = [(f"replica{i + 1}", r.address, i + 1) for i, r in enumerate(cluster.replicas)]
    on_change = None if changes is None else (lambda name, st: changes.append((name, st.up)))
    return ReplicaMonitor(cluster.primary.address, replicas, user=cluster.user,
                          password=cluster.password, interval=0.2, timeout=0.5,
                          on_change=on_change)  # fmt: skip


async def poll_until(monitor, condition, what):
    async def polled() -> bool:
        await monitor.poll_once()
        return condition()

    try:
        await wait_until_async(polled, POLL_TIMEOUT, what)
    except PollTimeout:
        raise AssertionError(f"never: {what}; statuses: {[s.to_json() for s in monitor.statuses()]}") from None


def view(monitor, name):
    return next(v for v in monitor.views({}) if v.name == name)


async def test_healthy_cluster_then_apply_delay_lag(healthy):
    cluster = healthy
    changes = []
    mon = make_monitor(cluster, changes)
    assert not mon.ready
    await mon.start()
    try:
        assert mon.ready and await mon.wait_ready(1.0)
        assert [s.name for s in mon.statuses()] == ["primary", "replica1", "replica2"]
        assert mon.primary_up and mon.primary_lsn is not None
        p = mon.status("primary")
        assert p.up and p.in_recovery is False and p.role_ok
        assert "/" in p.to_json()["lsn"]
        for name in ("replica1", "replica2"):
            st = mon.status(name)
            assert st.up and st.in_recovery is True and st.role_ok
            assert st.lag_bytes is not None and st.lag_bytes < 1024 * 1024
            assert st.lag_seconds is not None
            assert usable_for_reads(st, 16 * 1024 * 1024, 10.0)
            assert "/" in st.to_json()["replay_lsn"]
        assert [(v.name, v.weight, v.up) for v in mon.views({"replica1": 3})] == [
            ("replica1", 1, True), ("replica2", 2, True)]
        assert view(mon, "replica1").outstanding == 0
        assert mon.views({"replica1": 3})[0].outstanding == 3
        assert sorted(changes) == [("primary", True), ("replica1", True), ("replica2", True)]

        # A replica applying WAL late: lag in bytes, and lag in seconds that grows.
        r1 = cluster.replicas[0]
        cluster.primary.psql("create table mon_lag(x int); insert into mon_lag values (1)")
        r1.wait_replayed(cluster.primary.current_lsn())
        r1.set_apply_delay(3_000)
        cluster.primary.psql("insert into mon_lag values (2)")
        await poll_until(mon, lambda: (mon.status("replica1").lag_bytes or 0) > 0
                         and (mon.status("replica1").lag_seconds or 0) > 0, "replica1 lags")
        first = mon.status("replica1").lag_seconds
        assert not usable_for_reads(mon.status("replica1"), 0, 10.0)
        await poll_until(mon, lambda: (mon.status("replica1").lag_seconds or 0) > first,
                         "replica1 lag_seconds grows")
        r1.set_apply_delay(0)
        r1.wait_replayed(cluster.primary.current_lsn())
        await poll_until(mon, lambda: mon.status("replica1").lag_seconds == 0
                         and mon.status("replica1").lag_bytes == 0, "replica1 caught up")
        assert mon.status("replica2").up
    finally:
        await mon.stop()


async def test_killed_restarted_and_frozen_replica(healthy):
    cluster = healthy
    changes = []
    mon = make_monitor(cluster, changes)
    await mon.start()
    try:
        r1, r2 = cluster.replicas
        r1.kill()
        await poll_until(mon, lambda: not mon.status("replica1").up, "replica1 down")
        st = mon.status("replica1")
        assert st.last_error and st.failures >= 1 and st.lag_bytes is None
        assert not view(mon, "replica1").up and view(mon, "replica2").up
        assert not usable_for_reads(st, 1 << 40, 1e9)
        assert ("replica1", False) in changes
        assert mon.status("replica2").up and mon.primary_up

        r1.start()
        await poll_until(mon, lambda: mon.status("replica1").up, "replica1 up again")
        assert view(mon, "replica1").up and mon.status("replica1").failures == 0
        assert changes[-1] == ("replica1", True)

        r2.pause()
        try:
            await poll_until(mon, lambda: not mon.status("replica2").up, "replica2 down (frozen)")
            failures = mon.status("replica2").failures
            # Polling goes on for the others while the frozen one times out.
            before = mon.status("primary").polled_at
            await mon.poll_once()
            assert mon.status("primary").polled_at > before
            assert mon.status("primary").up and mon.status("replica1").up
            assert mon.status("replica2").failures > failures
            assert not view(mon, "replica2").up
        finally:
            r2.resume()
        await poll_until(mon, lambda: mon.status("replica2").up, "replica2 back after SIGCONT")
    finally:
        await mon.stop()


async def test_promoted_replica_gets_no_reads_and_reload_keeps_state(pg_cluster_factory):
    cluster = pg_cluster_factory(replicas=2)
    mon = make_monitor(cluster)
    await mon.start()
    try:
        r1, r2 = cluster.replicas
        r2.promote()
        await poll_until(mon, lambda: mon.status("replica2").in_recovery is False, "promotion seen")
        st = mon.status("replica2")
        assert st.up and not st.role_ok
        assert not usable_for_reads(st, 1 << 40, 1e9)
        assert not view(mon, "replica2").up and view(mon, "replica1").up

        # SIGHUP reload: replica1 unchanged keeps its state; replica2 dropped; a new name is
        # unpolled (not ready) until the next poll.
        polled = mon.status("replica1").polled_at
        mon.replace_backends(cluster.primary.address, [("replica1", r1.address, 5),
                                                       ("r3", r2.address, 1)],
                             user=cluster.user, password=cluster.password,
                             interval=0.2, timeout=0.5)  # fmt: skip
        assert mon.status("replica1").polled_at == polled and mon.status("replica1").weight == 5
        assert not mon.ready and not view(mon, "r3").up
        await mon.wait_ready(5.0)
        assert mon.ready and mon.status("r3").polled_at is not None
    finally:
        await mon.stop()
