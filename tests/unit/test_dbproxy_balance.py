"""dbproxy `routing.balance`: per-statement (default) and per-session replica choice.

With "session" a session's reads stay on the replica its first read chose while that replica is
usable (up, weight > 0, within the lag limits) and recent enough for the session's
read-your-writes constraint; otherwise the read chooses again (least outstanding per weight) and
the session stays on the new one. "statement" chooses at every read: equal loads rotate.
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

READ = Decision(Target.REPLICA, Reason.READ, detail="select")
WRITE = Decision(Target.PRIMARY, Reason.WRITE, detail="insert")


def rv(name: str, **kw: object) -> ReplicaView:
    base: dict[str, object] = {"lag_bytes": 0, "lag_seconds": 0.0, "replay_lsn": 1000}
    base.update(kw)
    return ReplicaView(name, **base)  # type: ignore[arg-type]


def targets(router: SessionRouter, views: object, n: int, **kw: object) -> list[str]:
    return [router.route(READ, 0.0, views, **kw).target for _ in range(n)]  # type: ignore[arg-type]


def test_statement_balance_rotates_between_equal_replicas() -> None:
    router = SessionRouter(rotation_seed=0)
    assert targets(router, (rv("r1"), rv("r2")), 4) == ["r1", "r2", "r1", "r2"]


@pytest.mark.parametrize("views", [(rv("r1"), rv("r2")), [rv("r1"), rv("r2")]], ids=["tuple", "list"])
def test_session_balance_stays_on_the_first_choice(views: object) -> None:
    router = SessionRouter(rotation_seed=1, balance="session")
    assert targets(router, views, 6) == ["r2"] * 6
    # Even when the other replica is less loaded now: the session keeps its connection.
    assert targets(router, views, 3, outstanding={"r1": 0, "r2": 5}) == ["r2"] * 3


def test_session_balance_first_choice_is_the_least_loaded() -> None:
    router = SessionRouter(rotation_seed=0, balance="session")
    assert targets(router, (rv("r1"), rv("r2")), 3, outstanding={"r1": 4, "r2": 1}) == ["r2"] * 3


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
    assert RoutingConfig().balance == "statement"
    router = SessionRouter.from_config(RoutingConfig(balance="session"), rotation_seed=0)
    assert targets(router, (rv("r1"), rv("r2")), 3) == ["r1"] * 3
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
    router = SessionRouter(rotation_seed=seed, balance="session")
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
