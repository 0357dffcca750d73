"""dbproxy `routing.balance`: per-session (default) and per-statement replica choice.

With "session" a session's reads stay on the replica its first read bound it to while that replica
is usable (up, weight > 0, within the lag limits) and recent enough for the session's
read-your-writes constraint; otherwise the read binds it again and the session stays on the new
one. A binding goes to the fewest sessions bound per weight (the daemon's `ReplicaSessions`,
shared by its sessions' routers; ties rotate across sessions), and the router gives its count
back, and tells the session to give back its connection, when it leaves a replica or ends.
"statement" chooses at every read by outstanding queries: equal loads rotate.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.dbproxy.classify_types import Decision, Reason, Target
from proxy.dbproxy.config import RoutingConfig
from proxy.dbproxy.router import (
    PRIMARY,
    ReplicaView,
    Route,
    RouteReason,
    SessionRouter,
    parse_lsn,
)
from proxy.dbproxy.session_router import ReplicaSessions, choose_session_replica

READ = Decision(Target.REPLICA, Reason.READ, detail="select")
WRITE = Decision(Target.PRIMARY, Reason.WRITE, detail="insert")
SET = Decision(Target.PRIMARY, Reason.WRITE, detail="set", pins_session=True)


def rv(name: str, **kw: object) -> ReplicaView:
    base: dict[str, object] = {"lag_bytes": 0, "lag_seconds": 0.0, "replay_lsn": 1000}
    base.update(kw)
    return ReplicaView(name, **base)  # type: ignore[arg-type]


def targets(router: SessionRouter, views: object, n: int, **kw: object) -> list[str]:
    return [router.route(READ, 0.0, views, **kw).target for _ in range(n)]  # type: ignore[arg-type]


def test_statement_balance_rotates_between_equal_replicas() -> None:
    router = SessionRouter(rotation_seed=0, balance="statement")
    assert targets(router, (rv("r1"), rv("r2")), 4) == ["r1", "r2", "r1", "r2"]


@pytest.mark.parametrize("views", [(rv("r1"), rv("r2")), [rv("r1"), rv("r2")]], ids=["tuple", "list"])
def test_session_balance_stays_on_the_first_choice(views: object) -> None:
    sessions = ReplicaSessions()
    sessions.counts["r1"] = 1  # another session is bound to r1
    router = SessionRouter(rotation_seed=0, balance="session", sessions=sessions)
    assert targets(router, views, 6) == ["r2"] * 6
    # Even when the other replica is less loaded now: the session keeps its connection.
    assert targets(router, views, 3, outstanding={"r1": 0, "r2": 5}) == ["r2"] * 3
    assert sessions.counts == {"r1": 1, "r2": 1}


def test_session_balance_first_choice_has_the_fewest_sessions_not_the_fewest_queries() -> None:
    sessions = ReplicaSessions()
    sessions.counts.update({"r1": 4, "r2": 1})
    router = SessionRouter(rotation_seed=0, balance="session", sessions=sessions)
    assert targets(router, (rv("r1"), rv("r2")), 3, outstanding={"r1": 0, "r2": 9}) == ["r2"] * 3
    assert sessions.counts == {"r1": 4, "r2": 2}


def test_sessions_that_start_together_split_evenly() -> None:
    """16 sessions whose first reads come with no query outstanding anywhere (pgbench's clients
    connecting at once), whatever their per-session rotation seeds: 8 on each replica."""
    sessions = ReplicaSessions()
    routers = [SessionRouter(rotation_seed=7, balance="session", sessions=sessions) for _ in range(16)]
    views = (rv("r1"), rv("r2"))
    first = [r.route(READ, 0.0, views, outstanding={}).target for r in routers]
    assert sorted(first) == ["r1"] * 8 + ["r2"] * 8
    assert sessions.counts == {"r1": 8, "r2": 8}
    # Weights count: 2:1 gets 2 sessions for 1.
    sessions = ReplicaSessions()
    views = (rv("r1", weight=2), rv("r2"))
    got = [SessionRouter(balance="session", sessions=sessions).route(READ, 0.0, views).target for _ in range(9)]
    assert got.count("r1") == 6 and got.count("r2") == 3


def test_a_session_that_moves_or_ends_gives_its_count_and_connection_back() -> None:
    sessions = ReplicaSessions()
    left: list[str] = []
    router = SessionRouter(balance="session", sessions=sessions, on_move=left.append)
    other = SessionRouter(balance="session", sessions=sessions)
    assert router.route(READ, 0.0, (rv("r1"), rv("r2"))).target == "r1"
    assert other.route(READ, 0.0, (rv("r1"), rv("r2"))).target == "r2"
    assert router.replica == "r1" and left == []
    # Its replica goes down: it moves to r2, and tells the session to let go of r1.
    assert router.route(READ, 0.0, (rv("r1", up=False), rv("r2"))).target == "r2"
    assert sessions.counts == {"r2": 2} and left == ["r1"]
    # Pinned: reads go to the primary for good, so r2 is given back too.
    assert router.route(SET, 0.0, (rv("r1"), rv("r2"))).target == PRIMARY
    assert router.replica is None and sessions.counts == {"r2": 1} and left == ["r1", "r2"]
    # The other one ends: its count goes back (the session gives back its connections itself).
    other.release()
    other.release()
    assert sessions.counts == {} and left == ["r1", "r2"]
    # A read routed after the end (a task of the session still running) binds nothing.
    assert other.route(READ, 0.0, (rv("r1"), rv("r2"))).target in ("r1", "r2")
    assert sessions.counts == {} and other.replica is None


def test_a_session_that_falls_back_to_the_primary_keeps_its_replica() -> None:
    sessions = ReplicaSessions()
    left: list[str] = []
    router = SessionRouter(balance="session", sessions=sessions, on_move=left.append)
    assert router.route(READ, 0.0, (rv("r1"), rv("r2"))).target == "r1"
    # Nothing usable: the primary, and the binding is kept (no replica to move to).
    assert router.route(READ, 0.0, (rv("r1", up=False), rv("r2", up=False))).target == PRIMARY
    assert sessions.counts == {"r1": 1} and left == [] and router.replica == "r1"


@pytest.mark.parametrize(
    "gone",
    [{"up": False}, {"weight": 0}, {"lag_bytes": 10**9}, {"lag_seconds": 99.0}, {"lag_bytes": None}],
    ids=["down", "weight 0", "lag bytes", "lag seconds", "lag unknown"],
)
def test_session_balance_moves_when_its_replica_stops_qualifying_and_stays_moved(gone: dict) -> None:
    router = SessionRouter(rotation_seed=0, balance="session", max_lag_bytes=1000, max_lag_seconds=5.0)
    assert targets(router, (rv("r1"), rv("r2")), 2) == ["r1", "r1"]
    assert targets(router, (rv("r1", **gone), rv("r2")), 2) == ["r2", "r2"]
    # r1 back: the session stays where it moved.
    assert targets(router, (rv("r1"), rv("r2")), 2) == ["r2", "r2"]


def test_session_balance_moves_when_it_is_missing_from_the_views() -> None:
    router = SessionRouter(rotation_seed=0, balance="session")
    assert targets(router, (rv("r1"), rv("r2")), 1) == ["r1"]
    assert targets(router, (rv("r2"),), 2) == ["r2", "r2"]  # r1 avoided (a lost connection)


def test_session_balance_respects_read_your_writes() -> None:
    router = SessionRouter(rotation_seed=0, balance="session", read_your_writes="lsn")
    assert targets(router, (rv("r1"), rv("r2")), 1) == ["r1"]
    assert router.route(WRITE, 0.0, (rv("r1"), rv("r2"))).target == PRIMARY
    router.on_ready_for_query(b"I")
    router.on_commit_lsn(parse_lsn("0/7D0"))  # 2000
    behind = (rv("r1", replay_lsn=1500), rv("r2", replay_lsn=2000))
    assert router.route(READ, 0.0, behind) == Route("r2", RouteReason.READ)
    # Neither caught up: the primary, and the session's replica is unchanged by it.
    both_behind = (rv("r1", replay_lsn=1500), rv("r2", replay_lsn=1900))
    assert router.route(READ, 0.0, both_behind) == Route(PRIMARY, RouteReason.READ_YOUR_WRITES)
    assert targets(router, (rv("r1", replay_lsn=3000), rv("r2", replay_lsn=3000)), 2) == ["r2", "r2"]


def test_session_balance_comes_from_the_config() -> None:
    assert RoutingConfig().balance == "session"
    router = SessionRouter.from_config(RoutingConfig(), rotation_seed=0)
    assert targets(router, (rv("r1"), rv("r2")), 3) == ["r1"] * 3
    router = SessionRouter.from_config(RoutingConfig(balance="statement"), rotation_seed=0)
    assert targets(router, (rv("r1"), rv("r2")), 3) == ["r1", "r2", "r1"]
    with pytest.raises(ValueError):
        RoutingConfig(balance="query")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SessionRouter(balance="query")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.booleans(), st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=30
    ),
    st.integers(0, 7),
)
def test_session_balance_reads_only_usable_replicas_and_moves_only_when_it_must(steps, seed) -> None:
    """Whatever the replicas do, a session read goes to a usable replica (the primary only when
    none is), and changes replica only when its own one stopped being usable."""
    router = SessionRouter(rotation_seed=seed, balance="session", sessions=ReplicaSessions())
    current = None
    for up1, up2, o1, o2 in steps:
        views = (rv("r1", up=up1), rv("r2", up=up2))
        target = router.route(READ, 0.0, views, outstanding={"r1": o1, "r2": o2}).target
        usable = {v.name for v in views if v.up}
        if not usable:
            assert target == PRIMARY
            continue
        assert target in usable
        if current is not None and current in usable:
            assert target == current
        current = target


# -- the binding choice, as a pure function, and its counts over many sessions ------------------

NAMES = ("r1", "r2", "r3", "r4")
replica_sets = st.lists(
    st.builds(lambda name, weight, up, lag: rv(name, weight=weight, up=up, lag_bytes=lag),
              st.sampled_from(NAMES), st.integers(0, 4), st.booleans(), st.sampled_from([0, 10, 10**6])),
    max_size=4, unique_by=lambda r: r.name,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(replica_sets, st.dictionaries(st.sampled_from(NAMES), st.integers(0, 50)), st.integers(0, 100),
       st.sampled_from([None, 500, 1000, 2000]))  # fmt: skip
def test_choose_session_replica_takes_a_usable_one_with_the_fewest_sessions_per_weight(views, counts, turn, min_lsn):
    max_lag = 1000
    got = choose_session_replica(views, counts, max_lag_bytes=max_lag, min_lsn=min_lsn, rotation=turn)
    qualifying = [v for v in views if v.up and v.weight > 0 and v.lag_bytes <= max_lag
                  and (min_lsn is None or v.replay_lsn >= min_lsn)]  # fmt: skip
    if not qualifying:
        assert got is None
        return
    assert got in qualifying
    # Least loaded: no qualifying replica has fewer sessions per unit of weight (compared as
    # integers, a*d < c*b, so no division is involved).
    for v in qualifying:
        assert counts.get(v.name, 0) * got.weight >= counts.get(got.name, 0) * v.weight, (v, got)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.integers(1, 60))
def test_sessions_arriving_stay_balanced_within_one_per_weight_unit(weights, n):
    """Sessions binding one after another: after each, every replica's count exceeds its share
    relative to any other by less than one session (c_i / w_i <= c_j / w_j + 1 / w_i)."""
    sessions = ReplicaSessions()
    views = tuple(rv(f"r{i}", weight=w) for i, w in enumerate(weights))
    for _ in range(n):
        SessionRouter(balance="session", sessions=sessions).route(READ, 0.0, views)
        c = {v.name: sessions.counts.get(v.name, 0) for v in views}
        for a in views:
            for b in views:
                assert c[a.name] * b.weight <= c[b.name] * a.weight + b.weight, (c, weights)
    assert sum(sessions.counts.values()) == n


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["start", "read", "end", "toggle"]), st.integers(0, 15)), max_size=80))
def test_the_counts_are_the_sessions_bound_whatever_happens(ops):
    """Sessions start, read, end; replicas go down and come back: the shared counts are always the
    number of live routers bound to each replica, each read goes to a usable replica (or the
    primary when none is), and a binding is made to a usable replica with the fewest sessions."""
    sessions = ReplicaSessions()
    up = {"r1": True, "r2": True, "r3": True}
    live: list[SessionRouter] = []
    for op, k in ops:
        views = tuple(rv(name, up=u) for name, u in sorted(up.items()))
        if op == "start":
            live.append(SessionRouter(balance="session", sessions=sessions))
        elif op == "toggle":
            name = sorted(up)[k % 3]
            up[name] = not up[name]
        elif live and op == "end":
            live.pop(k % len(live)).release()
        elif live:
            router = live[k % len(live)]
            before = dict(sessions.counts)
            was = router.replica
            target = router.route(READ, 0.0, views).target
            usable = [n for n, u in up.items() if u]
            if not usable:
                assert target == PRIMARY
            else:
                assert target in usable and router.replica == target
                if target != was:
                    fewest = min(before.get(n, 0) for n in usable)
                    assert before.get(target, 0) == fewest, (before, target, usable)
        bound: dict[str, int] = {}
        for r in live:
            if r.replica is not None:
                bound[r.replica] = bound.get(r.replica, 0) + 1
        assert sessions.counts == bound
