"""dbproxy routing: replica choice, per-session routing scenarios, a state machine, LSN text."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from proxy.dbproxy.classify_types import Decision, Reason, Target
from proxy.dbproxy.router import (
    PRIMARY,
    ReplicaView,
    Route,
    RouteReason,
    SessionRouter,
    choose_replica,
    format_lsn,
    lag_bytes,
    parse_lsn,
)

P, R = Target.PRIMARY, Target.REPLICA
READ = Decision(R, Reason.READ, detail="select")
WRITE = Decision(P, Reason.WRITE, detail="insert")
NEXTVAL = Decision(P, Reason.VOLATILE_FUNCTION, detail="write-function")
BEGIN = Decision(P, Reason.TRANSACTION_CONTROL, begins_transaction=True, detail="begin")
BEGIN_RO = Decision(
    R, Reason.TRANSACTION_CONTROL, begins_transaction=True, read_only_transaction=True,
    detail="begin-read-only",
)  # fmt: skip
COMMIT = Decision(P, Reason.TRANSACTION_CONTROL, ends_transaction=True, detail="commit")
ROLLBACK = Decision(P, Reason.TRANSACTION_CONTROL, ends_transaction=True, detail="rollback")
SET = Decision(P, Reason.SESSION, pins_session=True, detail="set")
RESET = Decision(R, Reason.SESSION, detail="session-reset")
HINT_REPLICA = Decision(R, Reason.HINT, detail="hint-replica")
HINT_PRIMARY = Decision(P, Reason.HINT, detail="hint-primary")
EMPTY = Decision(R, Reason.EMPTY, detail="empty")


def rv(name: str, **kw: object) -> ReplicaView:
    base: dict[str, object] = {"lag_bytes": 0, "lag_seconds": 0.0, "replay_lsn": 1000}
    base.update(kw)
    return ReplicaView(name, **base)  # type: ignore[arg-type]


# -- choose_replica ----------------------------------------------------------------------------

LIMITS = {"max_lag_bytes": 1000, "max_lag_seconds": 5.0}

CHOOSE_CASES = [
    ("no replicas", [], {}, None),
    ("one healthy", [rv("a")], {}, "a"),
    ("down is skipped", [rv("a", up=False), rv("b")], {}, "b"),
    ("all down", [rv("a", up=False), rv("b", up=False)], {}, None),
    ("lag bytes over", [rv("a", lag_bytes=1001), rv("b", lag_bytes=1000)], {}, "b"),
    ("lag seconds over", [rv("a", lag_seconds=5.5), rv("b", lag_seconds=4.0)], {}, "b"),
    ("unknown lag with a limit", [rv("a", lag_bytes=None), rv("b")], {}, "b"),
    ("all lagging", [rv("a", lag_bytes=10**9), rv("b", lag_seconds=60.0)], {}, None),
    ("least outstanding", [rv("a", outstanding=3), rv("b", outstanding=1)], {}, "b"),
    ("per weight", [rv("a", outstanding=2, weight=1), rv("b", outstanding=5, weight=3)], {}, "b"),
    ("weight loses when loaded",
     [rv("a", outstanding=1), rv("b", outstanding=7, weight=3)], {}, "a"),
    ("tie by name, rotation 0", [rv("b"), rv("a")], {}, "a"),
    ("tie by name, rotation 1", [rv("b"), rv("a")], {"rotation": 1}, "b"),
    ("tie rotation wraps", [rv("b"), rv("a")], {"rotation": 2}, "a"),
    ("ties only among the least", [rv("a", outstanding=1), rv("b"), rv("c")], {"rotation": 1}, "c"),
    ("min_lsn filters", [rv("a", replay_lsn=99), rv("b", replay_lsn=100)], {"min_lsn": 100}, "b"),
    ("min_lsn none caught up", [rv("a", replay_lsn=99)], {"min_lsn": 100}, None),
    ("min_lsn unknown replay", [rv("a", replay_lsn=None)], {"min_lsn": 1}, None),
    ("no limits: unknown lag ok",
     [rv("a", lag_bytes=None, lag_seconds=None)], {"nolimits": 1}, "a"),
]


@pytest.mark.parametrize(("replicas", "kw", "want"), [c[1:] for c in CHOOSE_CASES],
                         ids=[c[0] for c in CHOOSE_CASES])
def test_choose_replica(replicas: list[ReplicaView], kw: dict, want: str | None) -> None:
    kw = dict(kw)
    limits = {} if kw.pop("nolimits", None) else LIMITS
    got = choose_replica(replicas, **limits, **kw)
    assert (got.name if got else None) == want


def test_rotation_spreads_idle_reads() -> None:
    router = SessionRouter(balance="statement", read_your_writes="off")
    replicas = [rv("a"), rv("b"), rv("c")]
    assert [router.route(READ, 0.0, replicas).target for _ in range(6)] == list("abcabc")


# -- SessionRouter scenarios -------------------------------------------------------------------

REPLICAS = [rv("r1", replay_lsn=500), rv("r2", replay_lsn=500)]


def test_plain_read_and_write() -> None:
    router = SessionRouter(balance="statement", read_your_writes="off")
    assert router.route(READ, 0.0, REPLICAS) == Route("r1", RouteReason.READ)
    assert router.route(WRITE, 0.0, REPLICAS) == Route(PRIMARY, RouteReason.WRITE)
    assert router.route(NEXTVAL, 0.0, REPLICAS) == Route(PRIMARY, RouteReason.WRITE)
    assert router.route(EMPTY, 0.0, REPLICAS).target == "r2"


def test_hints_are_obeyed() -> None:
    router = SessionRouter(read_your_writes="off")
    assert router.route(HINT_PRIMARY, 0.0, REPLICAS) == Route(PRIMARY, RouteReason.HINT)
    assert router.route(HINT_REPLICA, 0.0, REPLICAS) == Route("r1", RouteReason.HINT)


def test_transaction_stays_on_the_primary() -> None:
    router = SessionRouter()
    assert router.route(BEGIN, 0.0, REPLICAS) == Route(PRIMARY, RouteReason.TRANSACTION)
    router.on_ready_for_query(b"T")
    for d in (READ, WRITE, READ, COMMIT):
        assert router.route(d, 0.0, REPLICAS) == Route(PRIMARY, RouteReason.TRANSACTION)
        assert router.in_transaction
    router.on_ready_for_query(b"I")
    assert not router.in_transaction
    assert router.needs_commit_lsn


def test_read_only_transaction_goes_to_a_replica_and_stays() -> None:
    router = SessionRouter(balance="statement")
    first = router.route(BEGIN_RO, 0.0, REPLICAS)
    assert first == Route("r1", RouteReason.TRANSACTION)
    router.on_ready_for_query(b"T")
    # The replica stays the transaction's backend even when another one looks better now.
    busy = [rv("r1", outstanding=50), rv("r2")]
    for d in (READ, READ, COMMIT):
        assert router.route(d, 0.0, busy).target == "r1"
    router.on_ready_for_query(b"I")
    assert not router.needs_commit_lsn
    assert router.route(READ, 0.0, busy).target == "r2"


def test_read_only_transaction_without_replicas_falls_back() -> None:
    router = SessionRouter()
    assert router.route(BEGIN_RO, 0.0, []) == Route(PRIMARY, RouteReason.FALLBACK)
    assert router.route(READ, 0.0, REPLICAS).target == PRIMARY


def test_set_pins_the_session_forever() -> None:
    router = SessionRouter(read_your_writes="off")
    assert router.route(SET, 0.0, REPLICAS) == Route(PRIMARY, RouteReason.PINNED)
    router.on_ready_for_query(b"I")
    for d in (READ, RESET, HINT_REPLICA, BEGIN_RO):
        assert router.route(d, 0.0, REPLICAS) == Route(PRIMARY, RouteReason.PINNED)
    for d in (READ, COMMIT):  # inside the (pinned) transaction
        assert router.route(d, 0.0, REPLICAS) == Route(PRIMARY, RouteReason.TRANSACTION)
    router.on_ready_for_query(b"I")
    assert router.pinned
    assert router.route(READ, 100.0, REPLICAS).target == PRIMARY


def test_ryw_lsn_read_after_write_waits_for_a_caught_up_replica() -> None:
    router = SessionRouter(read_your_writes="lsn")
    assert router.route(WRITE, 0.0, REPLICAS).target == PRIMARY
    # Pipelined read before the write's ReadyForQuery: the primary.
    assert router.route(READ, 0.0, REPLICAS) == Route(PRIMARY, RouteReason.READ_YOUR_WRITES)
    router.on_ready_for_query(b"I")
    assert router.needs_commit_lsn
    assert router.route(READ, 0.0, REPLICAS) == Route(PRIMARY, RouteReason.READ_YOUR_WRITES)
    router.on_commit_lsn(parse_lsn("0/3E8"))  # 1000
    assert not router.needs_commit_lsn
    behind = [rv("r1", replay_lsn=999), rv("r2", replay_lsn=500)]
    assert router.route(READ, 0.0, behind) == Route(PRIMARY, RouteReason.READ_YOUR_WRITES)
    caught_up = [rv("r1", replay_lsn=999), rv("r2", replay_lsn=1000)]
    assert router.route(READ, 0.0, caught_up) == Route("r2", RouteReason.READ)
    # A down replica is a fallback, not a read-your-writes case.
    down = [rv("r2", replay_lsn=2000, up=False)]
    assert router.route(READ, 0.0, down) == Route(PRIMARY, RouteReason.FALLBACK)


def test_ryw_lsn_uses_primary_lsn_for_missing_lag() -> None:
    router = SessionRouter(max_lag_bytes=100)
    views = [rv("r1", lag_bytes=None, replay_lsn=1000), rv("r2", lag_bytes=None, replay_lsn=800)]
    assert router.route(READ, 0.0, views) == Route(PRIMARY, RouteReason.FALLBACK)
    assert router.route(READ, 0.0, views, primary_lsn=1050).target == "r1"


def test_ryw_lsn_failed_transaction_owes_nothing() -> None:
    router = SessionRouter()
    router.route(BEGIN, 0.0, REPLICAS)
    router.route(WRITE, 0.0, REPLICAS)
    router.on_ready_for_query(b"E")
    router.route(COMMIT, 0.0, REPLICAS)
    router.on_ready_for_query(b"I")
    assert not router.needs_commit_lsn
    assert router.route(READ, 0.0, REPLICAS).target == "r1"


def test_ryw_lsn_explicit_rollback_owes_nothing() -> None:
    router = SessionRouter()
    router.route(BEGIN, 0.0, REPLICAS)
    router.route(WRITE, 0.0, REPLICAS)
    router.on_ready_for_query(b"T")
    router.route(ROLLBACK, 0.0, REPLICAS)
    router.on_ready_for_query(b"I")
    assert not router.needs_commit_lsn


def test_ryw_primary_window_with_injected_clock() -> None:
    router = SessionRouter(read_your_writes="primary-window", primary_window=1.0)
    clock = 100.0
    router.route(WRITE, clock, REPLICAS)
    router.on_ready_for_query(b"I")
    assert not router.needs_commit_lsn
    clock += 0.2  # first statement after the commit starts the window
    assert router.route(READ, clock, REPLICAS) == Route(PRIMARY, RouteReason.READ_YOUR_WRITES)
    clock += 0.9
    assert router.route(READ, clock, REPLICAS).target == PRIMARY
    clock += 0.2
    assert router.route(READ, clock, REPLICAS) == Route("r1", RouteReason.READ)


def test_ryw_off_reads_right_after_a_write() -> None:
    router = SessionRouter(balance="statement", read_your_writes="off")
    router.route(WRITE, 0.0, REPLICAS)
    assert router.route(READ, 0.0, REPLICAS) == Route("r1", RouteReason.READ)
    router.on_ready_for_query(b"I")
    assert not router.needs_commit_lsn
    assert router.route(READ, 0.0, REPLICAS).target == "r2"


def test_all_replicas_down_falls_back() -> None:
    router = SessionRouter(read_your_writes="off")
    down = [rv("r1", up=False), rv("r2", up=False)]
    assert router.route(READ, 0.0, down) == Route(PRIMARY, RouteReason.FALLBACK)
    assert router.route(HINT_REPLICA, 0.0, down) == Route(PRIMARY, RouteReason.FALLBACK)


def test_failed_transaction_stays_until_idle() -> None:
    router = SessionRouter()
    assert router.route(BEGIN_RO, 0.0, REPLICAS).target == "r1"
    router.on_ready_for_query(b"T")
    router.route(READ, 0.0, REPLICAS)
    router.on_ready_for_query(b"E")
    for d in (READ, WRITE, COMMIT):  # COMMIT of a failed transaction is answered by ROLLBACK
        assert router.route(d, 0.0, REPLICAS) == Route("r1", RouteReason.TRANSACTION)
        router.on_ready_for_query(b"E")
    assert router.transaction_backend == "r1"
    router.route(ROLLBACK, 0.0, REPLICAS)
    router.on_ready_for_query(b"I")
    assert not router.in_transaction


def test_server_reported_transaction_is_adopted() -> None:
    router = SessionRouter(read_your_writes="off")
    assert router.route(READ, 0.0, REPLICAS).target == "r1"
    router.on_ready_for_query(b"T")  # a transaction the classifier did not see begin
    assert router.route(READ, 0.0, REPLICAS) == Route("r1", RouteReason.TRANSACTION)


def test_bad_inputs() -> None:
    router = SessionRouter()
    with pytest.raises(ValueError):
        router.on_ready_for_query(b"X")
    with pytest.raises(ValueError):
        router.on_commit_lsn(-1)
    with pytest.raises(ValueError):
        SessionRouter(read_your_writes="sometimes")  # type: ignore[arg-type]


# -- LSN text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ("0/0", 0), ("16/B374D848", (0x16 << 32) | 0xB374D848), ("0/3e8", 1000),
    ("FFFFFFFF/FFFFFFFF", (1 << 64) - 1),
])  # fmt: skip
def test_parse_lsn(text: str, value: int) -> None:
    assert parse_lsn(text) == value


@pytest.mark.parametrize(
    "bad", ["", "0", "/0", "0/", "1/2/3", "123456789/0", "0/G", " 0/0", "0/0\n", "-1/0"]
)
def test_parse_lsn_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_lsn(bad)


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_lsn_round_trip(lsn: int) -> None:
    text = format_lsn(lsn)
    assert parse_lsn(text) == lsn
    assert text == text.upper()


def test_format_lsn_and_lag() -> None:
    assert format_lsn((0x16 << 32) | 0xB374D848) == "16/B374D848"
    with pytest.raises(ValueError):
        format_lsn(1 << 64)
    assert lag_bytes(1000, 400) == 600
    assert lag_bytes(400, 1000) == 0


# -- state machine -----------------------------------------------------------------------------

DECISIONS = [READ, WRITE, NEXTVAL, BEGIN, BEGIN_RO, COMMIT, ROLLBACK, SET, RESET, HINT_REPLICA,
             HINT_PRIMARY, EMPTY,
             Decision(P, Reason.TRANSACTION_CONTROL, ends_transaction=True, begins_transaction=True,
                      detail="commit-and-chain")]
NAMES = ("a", "b", "c")

replica_views = st.builds(
    ReplicaView,
    name=st.sampled_from(NAMES),
    weight=st.integers(1, 3),
    up=st.booleans(),
    lag_bytes=st.none() | st.integers(0, 2000),
    lag_seconds=st.none() | st.floats(0, 20),
    replay_lsn=st.none() | st.integers(0, 3000),
    outstanding=st.integers(0, 5),
)


class SessionMachine(RuleBasedStateMachine):
    """Drives one SessionRouter with an independent model of what must hold."""

    @initialize(mode=st.sampled_from(["lsn", "primary-window", "off"]))
    def setup(self, mode: str) -> None:
        self.mode = mode
        self.router = SessionRouter(
            read_your_writes=mode,  # type: ignore[arg-type]
            primary_window=0.5,
            max_lag_bytes=1000,
            max_lag_seconds=10.0,
        )
        self.now = 0.0
        self.replicas: list[ReplicaView] = []
        self.txn: str | None = None  # the model's open transaction backend
        self.pinned = False
        self.last_target: str | None = None
        self.commit_lsn: int | None = None
        self.uncommitted = False  # a write routed on the primary in the current transaction
        self.failed = False  # b"E" seen in the current transaction
        self.pending = False  # a write committed; its LSN not reported yet

    @rule(views=st.lists(replica_views, max_size=3, unique_by=lambda r: r.name))
    def set_replicas(self, views: list[ReplicaView]) -> None:
        self.replicas = views

    @rule(dt=st.floats(0, 1))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule(d=st.sampled_from(DECISIONS))
    def route(self, d: Decision) -> None:
        route = self.router.route(d, self.now, self.replicas)
        by_name = {r.name: r for r in self.replicas}
        # An open transaction keeps its replica even after it left the view (it is the daemon's
        # connection that fails then, with an ErrorResponse).
        assert route.target in (PRIMARY, self.txn) or route.target in by_name
        if self.txn is not None:
            assert route.target == self.txn, "a transaction moved"
        elif self.pinned:
            assert route.target == PRIMARY, "a pinned session left the primary"
        if d.target is Target.PRIMARY and self.txn is None:
            assert route.target == PRIMARY, "a write went to a replica"
        if route.target != PRIMARY and self.txn is None:
            replica = by_name[route.target]
            assert replica.up
            if self.mode == "lsn":
                assert not (self.uncommitted or self.pending), "read before its write's LSN"
                if self.commit_lsn is not None:
                    assert replica.replay_lsn is not None and replica.replay_lsn >= self.commit_lsn
        if d.pins_session:
            self.pinned = True
        if self.txn is None and d.begins_transaction:
            self.txn = route.target
        if route.target == PRIMARY and d.target is Target.PRIMARY:
            self.uncommitted = self.uncommitted or d.reason is not Reason.TRANSACTION_CONTROL
        if self.txn is not None and d.ends_transaction and d.detail.startswith("rollback"):
            self.uncommitted = False
        self.last_target = route.target

    @rule(status=st.sampled_from([b"I", b"T", b"E"]))
    def ready(self, status: bytes) -> None:
        self.router.on_ready_for_query(status)
        if status == b"I":
            self.txn = None
            if self.uncommitted and not self.failed and self.mode != "off":
                self.pending = True
            self.uncommitted = self.failed = False
            return
        if self.txn is None:
            self.txn = self.last_target or PRIMARY
        self.failed = status == b"E"

    @rule(delta=st.integers(0, 1500))
    def commit_lsn_reported(self, delta: int) -> None:
        lsn = (self.commit_lsn or 0) + delta
        self.router.on_commit_lsn(lsn)
        self.commit_lsn = lsn
        if self.mode == "lsn":
            self.uncommitted = self.pending = False

    @invariant()
    def model_agrees(self) -> None:
        if not hasattr(self, "router"):
            return
        assert self.router.transaction_backend == self.txn
        if self.pinned:
            assert self.router.pinned
        if self.mode == "lsn":
            assert self.router.needs_commit_lsn == self.pending


SessionMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestSessionMachine = SessionMachine.TestCase


def test_a_write_that_failed_outside_a_transaction_owes_no_commit_lsn():
    r = SessionRouter(read_your_writes="lsn")
    replicas = [rv("a")]
    assert r.route(WRITE, 0.0, replicas).target == PRIMARY
    r.on_ready_for_query(b"I", failed=True)  # e.g. a unique violation: nothing committed
    assert not r.needs_commit_lsn
    assert r.route(READ, 0.1, replicas).target == "a"
    # the same write succeeding does owe one, and reads wait for it on the primary
    r.route(WRITE, 0.2, replicas)
    r.on_ready_for_query(b"I")
    assert r.needs_commit_lsn
    assert r.route(READ, 0.3, replicas) == Route(PRIMARY, RouteReason.READ_YOUR_WRITES)


def test_commit_lsn_from_insert_steps_back_over_a_page_header():
    from proxy.dbproxy.router import commit_lsn_from_insert

    assert commit_lsn_from_insert(parse_lsn("0/3000028")) == parse_lsn("0/3000000")  # segment start
    assert commit_lsn_from_insert(parse_lsn("0/3002018")) == parse_lsn("0/3002000")  # page start
    assert commit_lsn_from_insert(parse_lsn("0/3002019")) == parse_lsn("0/3002019")
    assert commit_lsn_from_insert(parse_lsn("0/3000050")) == parse_lsn("0/3000050")


def test_outstanding_mapping_overrides_the_views_counts():
    views = [rv("a", outstanding=0, weight=1), rv("b", outstanding=0, weight=2)]
    # The views say both idle; the live counts say "a" is busier per unit of weight.
    assert choose_replica(views, outstanding={"a": 2, "b": 3}).name == "b"
    assert choose_replica(views, outstanding={"a": 1, "b": 4}).name == "a"
    r = SessionRouter(balance="statement", read_your_writes="off")
    assert r.route(READ, 0.0, views, outstanding={"a": 5}).target == "b"
