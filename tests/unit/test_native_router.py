"""The session router (proxy/dbproxy/session_router.py), compiled against its pure-Python twin:
the same events in the same order must give the same routes, the same errors, the same commit
callbacks and leave the same state.

Hypothesis builds a session's life as a sequence of events: `route` with any classifier decision
(every target, reason, flag and the details the rules look at), clock, replica views (shared
tuples, reused between statements as the daemon reuses the monitor's, and lists), primary LSN,
outstanding counts and floor LSN; the server's ReadyForQuery statuses (valid and not) with and
without `failed`; commit LSNs (in range and not). Each twin's router is made with the same
settings (every read-your-writes mode, an unknown one, lag limits); after every event both
routers' fields, their properties and the `on_commit` calls must match. `choose_replica` gets the
same direct comparison. Skipped where the module is not compiled (the pure pass)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.dbproxy.classify_types import Decision, Reason, Target
from proxy.dbproxy.route_types import ReplicaView
from tests.unit.test_native_differential import _twins

_FIELDS = (
    "_commit_epoch", "_commit_pending", "_last_commit_lsn", "_last_target", "_last_write_at",
    "_max_lag_bytes", "_max_lag_seconds", "_mode", "needs_commit_lsn", "pinned", "_rotation",
    "transaction_backend", "_txn_failed", "_uncommitted_ddl", "_uncommitted_write", "_usable_for",
    "_usable_views", "_usable_names", "_usable_weights", "_read_routes", "_sticky", "_window", "_window_mode",
)  # fmt: skip

_DETAILS = ["select", "insert", "begin", "begin-read-only", "commit", "rollback", "rollback-and-chain",
            "commit-and-chain", "finish-prepared", "set", "primary-state", "multi-statement", "hint-replica", ""]  # fmt: skip

_any_decision = st.builds(
    Decision,
    target=st.sampled_from(list(Target)),
    reason=st.sampled_from(list(Reason)),
    begins_transaction=st.booleans(),
    read_only_transaction=st.booleans(),
    ends_transaction=st.booleans(),
    pins_session=st.booleans(),
    detail=st.sampled_from(_DETAILS),
    reads_catalog=st.booleans(),
    writes_catalog=st.booleans(),
)
P, R = Target.PRIMARY, Target.REPLICA
# What sessions mostly send (a pin or an open transaction changes everything after it, so random
# decisions alone seldom reach the replica choice).
_COMMON = [
    *[Decision(R, Reason.READ, detail="select")] * 8,
    Decision(R, Reason.READ, detail="select", reads_catalog=True),
    Decision(R, Reason.HINT, detail="hint-replica"),
    Decision(P, Reason.WRITE, detail="insert"),
    Decision(P, Reason.WRITE, detail="create-table-as", writes_catalog=True),
    Decision(P, Reason.TRANSACTION_CONTROL, begins_transaction=True, detail="begin"),
    Decision(R, Reason.TRANSACTION_CONTROL, begins_transaction=True, read_only_transaction=True,
             detail="begin-read-only"),
    Decision(P, Reason.TRANSACTION_CONTROL, ends_transaction=True, detail="commit"),
    Decision(P, Reason.TRANSACTION_CONTROL, ends_transaction=True, detail="rollback"),
    Decision(P, Reason.TRANSACTION_CONTROL, detail="finish-prepared"),
    Decision(P, Reason.PRIMARY_STATE, detail="primary-state"),
]  # fmt: skip
decisions = st.sampled_from(_COMMON) | st.sampled_from(_COMMON) | st.sampled_from(_COMMON) | _any_decision
_LSNS = st.none() | st.integers(0, 2000)
views = st.builds(
    ReplicaView,
    name=st.sampled_from(["r1", "r2", "r3", "r4"]),
    weight=st.sampled_from([1, 1, 1, 2, 3, 0]),
    up=st.just(True) | st.just(True) | st.booleans(),
    lag_bytes=st.none() | st.integers(0, 300),
    lag_seconds=st.none() | st.none() | st.floats(0, 10),
    replay_lsn=_LSNS,
    outstanding=st.integers(0, 3),
)
view_sets = st.lists(views, min_size=1, max_size=4, unique_by=lambda v: v.name).map(tuple) | st.just(())
outstanding = st.none() | st.dictionaries(st.sampled_from(["r1", "r2", "r3", "r4"]), st.integers(0, 2))

_routes = st.tuples(st.just("route"), decisions, st.integers(0, 5) | st.floats(0, 5), st.integers(0, 3), st.booleans(),
                    st.none() | st.integers(0, 2000), outstanding, st.none() | st.none() | _LSNS)  # fmt: skip
_ready = st.tuples(st.just("ready"), st.sampled_from([b"I", b"T", b"E", b"I", b"X", b"", b"TE", "T", bytearray(b"T"),
                                                      bytearray(b"E"), memoryview(b"T"), None, 84]),
                   st.none() | st.booleans())  # fmt: skip
_lsn = st.tuples(st.just("lsn"), st.integers(-1, 2500) | st.just(2**64))
# The open transaction's backend set from outside to a name equal to the primary's but another
# object (the router compares it by identity first), or to a replica's.
_backend = st.tuples(st.just("backend"), st.sampled_from(["pri", "r1"]))
events = st.integers(0, 19).flatmap(lambda k: _routes if k < 12 else _ready if k < 18 else _lsn if k < 19 else _backend)
settings_ = st.fixed_dictionaries({
    "read_your_writes": st.sampled_from(["lsn", "primary-window", "global", "off", "off", "global", "bogus"]),
    "primary_window": st.sampled_from([0.0, 1.0, 2.5]),
    "max_lag_bytes": st.none() | st.none() | st.integers(0, 200),
    "max_lag_seconds": st.none() | st.none() | st.floats(0, 5),
    "rotation_seed": st.integers(0, 7),
    "balance": st.sampled_from(["statement", "statement", "session", "bogus"]),
})  # fmt: skip


def _outcome(fn, *args, **kwargs):
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        return ("raised", type(exc).__name__, str(exc))


def _state(r) -> tuple:
    return tuple(getattr(r, f) for f in _FIELDS) + (r.in_transaction, r.last_commit_lsn, r.commit_epoch)


class _Clock:
    """`on_commit`: records each call, answers the next epoch."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def __call__(self, ddl: bool) -> int:
        self.calls.append(ddl)
        return len(self.calls)


@settings(max_examples=300, deadline=None)
@given(settings_, st.lists(view_sets, min_size=1, max_size=3), st.lists(events, min_size=5, max_size=40), st.booleans())
def test_session_router_twins_agree(kw, view_pool, evs, with_clock):
    compiled, pure = _twins("proxy.dbproxy.session_router")
    clocks = (_Clock(), _Clock())
    made = [_outcome(mod.SessionRouter, on_commit=clock if with_clock else None, **kw)
            for mod, clock in zip((compiled, pure), clocks)]  # fmt: skip
    assert [m[0] for m in made] == [m[0] for m in made[::-1]]
    if made[0][0] == "raised":
        assert made[0] == made[1]
        return
    routers = (made[0][1], made[1][1])
    assert type(routers[0]).__module__ != type(routers[1]).__module__
    for ev in evs:
        if ev[0] == "route":
            _, d, now, which, as_list, primary_lsn, out, floor = ev
            v = view_pool[which % len(view_pool)]
            got = [_outcome(r.route, d, now, list(v) if as_list else v, primary_lsn=primary_lsn,
                            outstanding=out, floor_lsn=floor) for r in routers]  # fmt: skip
        elif ev[0] == "ready":
            _, status, failed = ev
            if failed is None:
                got = [_outcome(r.on_ready_for_query, status) for r in routers]
            else:
                got = [_outcome(r.on_ready_for_query, status, failed=failed) for r in routers]
        elif ev[0] == "backend":
            for r in routers:
                r.transaction_backend = "".join((ev[1], "mary")) if ev[1] == "pri" else ev[1]
            got = [None, None]
        else:
            got = [_outcome(r.on_commit_lsn, ev[1]) for r in routers]
        assert got[0] == got[1], ev
        assert _state(routers[0]) == _state(routers[1]), ev
        assert clocks[0].calls == clocks[1].calls


@settings(max_examples=300, deadline=None)
@given(view_sets, st.none() | st.integers(0, 200), st.none() | st.floats(0, 5), _LSNS, st.integers(0, 9), outstanding)
def test_choose_replica_twins_agree(v, max_b, max_s, min_lsn, rotation, out):
    compiled, pure = _twins("proxy.dbproxy.session_router")
    got = [_outcome(mod.choose_replica, v, max_lag_bytes=max_b, max_lag_seconds=max_s, min_lsn=min_lsn,
                    rotation=rotation, outstanding=out) for mod in (compiled, pure)]  # fmt: skip
    assert got[0] == got[1]


def test_the_compiled_router_is_the_one_imported():
    """The daemon's import path (router.py) gives the compiled class where the module is built."""
    compiled, _ = _twins("proxy.dbproxy.session_router")
    from proxy.dbproxy import router

    assert router.SessionRouter is compiled.SessionRouter
    assert compiled.COMPILED


def test_a_transaction_on_an_equal_primary_name_counts_its_writes():
    """The open transaction's backend compared with the primary's name by value, not only by
    identity (the router tests `is` first): a write in it is uncommitted, and its commit is
    reported; a rollback's flag ends it without a commit."""
    compiled, pure = _twins("proxy.dbproxy.session_router")
    for mod in (compiled, pure):
        clock = _Clock()
        r = mod.SessionRouter(on_commit=clock)
        r.transaction_backend = b"primary".decode()  # equal to PRIMARY, another object
        route = r.route(Decision(P, Reason.WRITE, detail="insert"), 1.0, ())
        assert (route[0], route[1].value) == ("primary", "transaction"), mod.__name__
        assert r._uncommitted_write and r._last_write_at == 1.0, mod.__name__
        r.on_ready_for_query(b"I")
        assert clock.calls == [False] and r.needs_commit_lsn, mod.__name__
        r.on_ready_for_query(bytearray(b"T"))
        assert r.transaction_backend == "primary"
        r.route(Decision(P, Reason.WRITE, detail="insert"), 2.0, ())
        r.route(Decision(P, Reason.TRANSACTION_CONTROL, ends_transaction=True, detail="rollback"), 3.0, ())
        r.on_ready_for_query(b"I")
        assert clock.calls == [False], mod.__name__
        for bad in (b"X", "T", None, b"TT"):
            try:
                r.on_ready_for_query(bad)
            except ValueError as exc:
                assert "unknown ReadyForQuery status" in str(exc)
            else:
                raise AssertionError((mod.__name__, bad))


def test_the_bound_replica_is_found_among_equal_names():
    """balance = "session": after a monitor poll whose views name the replicas with equal strs that are other
    objects, the session stays on its replica (the compiled router compares the names by identity first, then by
    value): no move, no other binding, in both twins."""
    compiled, pure = _twins("proxy.dbproxy.session_router")
    read = Decision(R, Reason.READ, detail="select")
    for mod in (compiled, pure):
        moves: list[str] = []
        sessions = mod.ReplicaSessions()
        r = mod.SessionRouter(balance="session", sessions=sessions, on_move=moves.append)
        first = (ReplicaView(name="".join(("r", "1"))), ReplicaView(name="".join(("r", "2"))))
        bound = r.route(read, 0.0, first)[0]
        polled = tuple(ReplicaView(name="".join(tuple(v.name))) for v in first)
        assert all(a.name == b.name and a.name is not b.name for a, b in zip(first, polled))
        for now in (1.0, 2.0):
            assert r.route(read, now, polled)[0] == bound, mod.__name__
        assert moves == [] and sessions.counts == {bound: 1}, mod.__name__


def test_each_read_gets_its_replicas_route():
    """balance = "statement": reads alternating between two replicas each get the route of the replica chosen
    (the router keeps the last read's route beside its name), the same Route object per replica, in both twins."""
    compiled, pure = _twins("proxy.dbproxy.session_router")
    read = Decision(R, Reason.READ, detail="select")
    views = (ReplicaView(name="r1"), ReplicaView(name="r2"))
    for mod in (compiled, pure):
        r = mod.SessionRouter(balance="statement")
        seen = {}
        for now in range(6):
            route = r.route(read, float(now), views, outstanding={})
            assert route[0] == r._last_target and route[1].value == "read", mod.__name__
            assert seen.setdefault(route[0], route) is route, mod.__name__
        assert sorted(seen) == ["r1", "r2"], mod.__name__
