"""The session router (router.py's `SessionRouter`) and the replica choice (`choose_replica`):
the rules are router.py's docstring; this module is their code.

Per-session balancing (`balance = "session"`, the default): a session reads from one replica, the
one it is bound to, while that replica is usable and recent enough for the session's
read-your-writes constraint. Its first read, and any read that finds its replica no longer
qualifying, binds it with `choose_session_replica`: among the qualifying replicas the fewest
sessions bound per unit of weight, ties rotating by the count of bindings the daemon has made, so
sessions that start together split evenly (the outstanding queries of `choose_replica` are all 0
then, and would send them all to one replica). The counts are the daemon's `ReplicaSessions`,
shared by its sessions' routers: a router moves its own session's count when it binds, and gives
it back when the session is pinned (it reads from the primary from then on) or ends (`release`).
A router that leaves a replica tells the session (`on_move`), which gives back its connection to
it, so a session holds at most one replica connection.

This module is compiled (proxy/_native.py) and is also its own pure-Python twin. Compiled,
`SessionRouter` is an extension type (session_router.pxd): its state is C fields, `route` runs
the rules with the replica choice and the write bookkeeping as C calls (in `route_at`, a cpdef
method the compiled session calls in C, positionally, with the decision's target and detail it
has read already; `route` is its keyword entry for everyone else), and the relay's
`on_ready_for_query(status, failed=...)` per answer is a C method (a call into the interpreter
from compiled code cost ~3k instructions: docs/perf.md, "The router and books, compiled"): the
cpdef hook of its base, the relay's `RelayRouter`, so the relay calls it through the type's table
(docs/perf.md, "The relay's calls in C"). The
object fields are member descriptors, as a class's `__slots__` are (proxy/_members.pxd), so
interpreted reads of `transaction_backend`, `pinned` and `needs_commit_lsn` cost what the pure
twin's slots do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from proxy.pgfront.relay import RelayRouter

from .classify_types import Decision, Reason, Target
from .outstanding import Outstanding
from .route_types import MAX_LSN, PRIMARY, ReadYourWrites, ReplicaView, Route, RouteReason, lag_bytes

if TYPE_CHECKING:
    from .config import RoutingConfig

__all__ = ["COMPILED", "ReplicaSessions", "SessionRouter", "choose_replica", "choose_session_replica"]


def _probe() -> None:
    pass


# A compiled module's functions are Cython's, not Python's.
COMPILED = type(_probe).__name__ != "function"
_PRIMARY = PRIMARY

# -- replica choice ----------------------------------------------------------------------------


def _usable(r: ReplicaView, max_lag_bytes: int | None, max_lag_seconds: float | None) -> bool:
    # An unknown lag counts as too much when there is a limit: the monitor has not vouched for it.
    if not r.up or r.weight <= 0:
        return False
    if max_lag_bytes is not None and (r.lag_bytes is None or r.lag_bytes > max_lag_bytes):
        return False
    if max_lag_seconds is not None and (r.lag_seconds is None or r.lag_seconds > max_lag_seconds):
        return False
    return True


def choose_replica(
    replicas: Sequence[ReplicaView],
    *,
    max_lag_bytes: int | None = None,
    max_lag_seconds: float | None = None,
    min_lsn: int | None = None,
    rotation: int = 0,
    outstanding: Mapping[str, int] | None = None,
) -> ReplicaView | None:
    """The replica for a read, or None: go to the primary. See the module docstring.

    `outstanding`, when given, overrides the views' own counts (the daemon keeps one live mapping
    and reuses the views between monitor polls instead of rebuilding them per statement)."""
    usable = sorted((r for r in replicas if _usable(r, max_lag_bytes, max_lag_seconds)), key=_name)
    return _least_loaded(usable, min_lsn, rotation, outstanding)


def _least_loaded(
    replicas: Sequence[ReplicaView], min_lsn: int | None, rotation: int, outstanding: Mapping[str, int] | None
) -> ReplicaView | None:
    """`choose_replica` among usable `replicas` given in name order (so ties are in name order)."""
    best: list[ReplicaView] = []
    best_key = 0.0
    for r in replicas:
        if min_lsn is not None and (r.replay_lsn is None or r.replay_lsn < min_lsn):
            continue
        # Equal fractions of small integers divide to equal floats (division is correctly
        # rounded), so float keys tie exactly when the ratios do.
        load = r.outstanding if outstanding is None else outstanding.get(r.name, 0)
        key = load / r.weight
        if not best or key < best_key:
            best, best_key = [r], key
        elif key == best_key:
            best.append(r)
    if not best:
        return None
    return best[rotation % len(best)]


def _name(r: ReplicaView) -> str:
    return r.name


def choose_session_replica(
    replicas: Sequence[ReplicaView],
    sessions: Mapping[str, int],
    *,
    max_lag_bytes: int | None = None,
    max_lag_seconds: float | None = None,
    min_lsn: int | None = None,
    rotation: int = 0,
) -> ReplicaView | None:
    """The replica a session binds to (balance = "session"), or None: go to the primary. Among the
    usable replicas that have replayed `min_lsn`, the fewest `sessions` bound (replica name ->
    count; absent: 0) per unit of weight; ties go by `rotation` over the tied replicas in name
    order (the daemon passes its count of bindings made: successive sessions take turns)."""
    return choose_replica(replicas, max_lag_bytes=max_lag_bytes, max_lag_seconds=max_lag_seconds,
                          min_lsn=min_lsn, rotation=rotation, outstanding=sessions)  # fmt: skip


class ReplicaSessions:
    """The sessions bound to each replica under balance = "session": one per daemon (a worker
    process), shared by its sessions' routers, which move their own session's count with `move`.
    `counts`: replica name -> sessions bound (no entry: none); `bindings`: bindings made so far,
    the tie-break of the next one. Plain data, no I/O: the event loop runs one router at a time."""

    __slots__ = ("bindings", "counts")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.bindings = 0

    def move(self, old: str, new: str) -> None:
        """A session leaves replica `old` and binds to `new` ("": none)."""
        counts = self.counts
        if old:
            n = counts.get(old, 0) - 1
            if n > 0:
                counts[old] = n
            else:
                counts.pop(old, None)
        if new:
            counts[new] = counts.get(new, 0) + 1
            self.bindings += 1


# -- the session router ------------------------------------------------------------------------

# Enum members as module globals: `Target.PRIMARY` is an attribute lookup through EnumType's
# __getattr__ hook (~0.7k instructions each, several per statement: docs/perf.md); a global is one load.
_R_HINT = Reason.HINT
_R_PRIMARY_STATE = Reason.PRIMARY_STATE
_R_TRANSACTION_CONTROL = Reason.TRANSACTION_CONTROL
_RR_HINT = RouteReason.HINT
_RR_READ = RouteReason.READ
_RR_TRANSACTION = RouteReason.TRANSACTION
_T_PRIMARY = Target.PRIMARY
_T_REPLICA = Target.REPLICA

# Route(target, reason) without NamedTuple's __new__ (a Python function): `_new_route(Route, (target,
# reason))` makes the same tuple for half the cost; one is made per statement.
_new_route = tuple.__new__

# The routes to the primary, one per reason: a Route is immutable, so the same tuple serves every
# statement (made per statement, compiled, it cost a call of tuple.__new__ through its type's
# call, ~0.9k instructions). A read's route to a replica is kept per router (`_read_routes`).
_P_FALLBACK = Route(PRIMARY, RouteReason.FALLBACK)
_P_HINT = Route(PRIMARY, RouteReason.HINT)
_P_PINNED = Route(PRIMARY, RouteReason.PINNED)
_P_READ_YOUR_WRITES = Route(PRIMARY, RouteReason.READ_YOUR_WRITES)
_P_TRANSACTION = Route(PRIMARY, RouteReason.TRANSACTION)
_P_WRITE = Route(PRIMARY, RouteReason.WRITE)

_ROLLBACK_DETAILS = frozenset({"rollback", "rollback-and-chain"})
_MAX_TIES = 16  # `_least_loaded_here`'s array of tied replicas


def _is_write(d: Decision, detail: str) -> bool:
    # For a statement the classifier sends to the primary (the caller checks; `detail` is its
    # detail): conservative, whatever goes there may have written, except transaction control
    # (BEGIN, COMMIT, SAVEPOINT, ...), which writes nothing itself, and reads of the primary's own
    # state. COMMIT PREPARED is transaction control that commits, though.
    reason = d.reason
    if reason is _R_TRANSACTION_CONTROL:
        return detail == "finish-prepared"
    return reason is not _R_PRIMARY_STATE


def _with_lag(replicas: Sequence[ReplicaView], primary_lsn: int) -> Sequence[ReplicaView]:
    if all(r.lag_bytes is not None or r.replay_lsn is None for r in replicas):
        return replicas
    return [
        replace(r, lag_bytes=lag_bytes(primary_lsn, r.replay_lsn))
        if r.lag_bytes is None and r.replay_lsn is not None
        else r
        for r in replicas
    ]


class SessionRouter(RelayRouter):
    """Routes one client session's statements; see the module docstring for the rules."""

    __slots__ = (
        "_commit_epoch",
        "_commit_pending",
        "_last_commit_lsn",
        "_last_target",
        "_last_write_at",
        "_max_lag_bytes",
        "_max_lag_seconds",
        "_mode",
        "_on_commit",
        "_on_move",
        "_read_name",
        "_read_route",
        "_read_routes",
        "needs_commit_lsn",
        "pinned",
        "_rotation",
        "_sessions",
        "_sticky",
        "transaction_backend",
        "_txn_failed",
        "_uncommitted_ddl",
        "_uncommitted_write",
        "_usable_for",
        "_usable_names",
        "_usable_views",
        "_usable_weights",
        "_window",
        "_window_mode",
    )

    def __init__(
        self,
        *,
        read_your_writes: ReadYourWrites = "lsn",
        primary_window: float = 1.0,
        max_lag_bytes: int | None = None,
        max_lag_seconds: float | None = None,
        rotation_seed: int = 0,
        on_commit: Callable[[bool], int] | None = None,
        balance: str = "session",
        sessions: ReplicaSessions | None = None,
        on_move: Callable[[str], None] | None = None,
    ) -> None:
        if read_your_writes not in ("lsn", "primary-window", "global", "off"):
            raise ValueError(f"unknown read_your_writes mode {read_your_writes!r}")
        if balance not in ("statement", "session"):
            raise ValueError(f"unknown balance {balance!r}")
        self._mode = read_your_writes
        # Per statement while a commit is pending (mode lsn: until its LSN is learned, which a
        # session that reads only inside transactions never asks for), a flag, not a string compare.
        self._window_mode = read_your_writes == "primary-window"
        self._window = primary_window  # seconds
        self._max_lag_bytes = max_lag_bytes
        self._max_lag_seconds = max_lag_seconds
        self._rotation = rotation_seed
        # balance = "session": the replica this session is bound to, reads from while it qualifies
        # (its name; "" until the first read, and once pinned), so it holds one replica connection
        # instead of one per replica. None: balance = "statement", every read chooses.
        self._sticky: str | None = "" if balance == "session" else None
        # The daemon's count of sessions per replica (a private one when not given: the session
        # then balances against itself only), and who hears that the session left a replica.
        self._sessions = (sessions if sessions is not None else ReplicaSessions()) if balance == "session" else None
        self._on_move = on_move
        # Plain attributes, not properties, where the daemon reads them per statement (a property
        # call costs several attribute loads). Read only, outside this class.
        # The backend of the open transaction (PRIMARY or a replica name), or None; set from BEGIN
        # (or b"T"/b"E") until b"I".
        self.transaction_backend: str | None = None
        self._txn_failed = False  # b"E" seen: the open transaction will commit nothing
        self.pinned = False  # a statement with pins_session was seen: the primary from then on
        self._last_target: str | None = None
        # Read-your-writes state. A write routed but not yet ended by b"I" is uncommitted; after
        # the b"I" its commit is pending until the LSN (mode lsn) or the next route
        # (primary-window).
        self._uncommitted_write = False
        self._uncommitted_ddl = False  # one of the uncommitted writes may change the catalogs
        self._on_commit = on_commit
        self._commit_epoch = 0
        self._commit_pending = False
        # Mode lsn: a write has committed and the daemon owes `on_commit_lsn` (until then the
        # session's reads go to the primary). Ask the primary connection for
        # pg_current_wal_insert_lsn() and pass it through `commit_lsn_from_insert`. Always
        # `_mode == "lsn" and _commit_pending`.
        self.needs_commit_lsn = False
        self._last_commit_lsn: int | None = None
        self._last_write_at: float | None = None
        # The replicas within the lag limits, for the last views tuple seen: the daemon shares one
        # tuple between monitor polls, so this is worked out once per poll, not per statement.
        self._usable_for: tuple[ReplicaView, ...] | None = None
        self._usable_views: list[ReplicaView] = []
        self._usable_names: list[str] = []  # theirs, in the same order
        self._usable_weights: list[float] = []  # theirs, as floats (the load's divisor)
        self._read_routes: dict[str, Route] = {}  # replica name -> Route(name, READ), made once
        # The last read's replica and its route (of `_read_routes`): with balance = "session" a
        # session reads from one replica, whose route is then found by an identity test, not a
        # dict lookup per read (~0.1k instructions compiled, a `get` call interpreted).
        self._read_name: str | None = None
        self._read_route: Route | None = None

    @classmethod
    def from_config(cls, routing: RoutingConfig, *, rotation_seed: int = 0,
                    on_commit: Callable[[bool], int] | None = None, sessions: ReplicaSessions | None = None,
                    on_move: Callable[[str], None] | None = None) -> SessionRouter:  # fmt: skip
        return cls(
            on_commit=on_commit,
            sessions=sessions,
            on_move=on_move,
            read_your_writes=routing.read_your_writes,
            primary_window=routing.primary_window,
            max_lag_bytes=routing.max_lag_bytes,
            max_lag_seconds=routing.max_lag_seconds,
            rotation_seed=rotation_seed,
            balance=routing.balance,
        )

    # -- state, for SHOW CLIENTS and the daemon -----------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self.transaction_backend is not None

    @property
    def last_commit_lsn(self) -> int | None:
        return self._last_commit_lsn

    @property
    def replica(self) -> str | None:
        """balance = "session": the replica the session is bound to (None: none yet, pinned, or
        balance = "statement")."""
        return self._sticky or None

    @property
    def commit_epoch(self) -> int:
        """`on_commit`'s answer for the session's last write commit (0: none, or no `on_commit`)."""
        return self._commit_epoch

    # -- events -------------------------------------------------------------------------------

    def release(self) -> None:
        """The session ended: its replica's count goes back (`on_move` is not called: the session
        gives back all its connections itself). A read routed after this (a task of the session
        still running) binds nothing: it is balanced per statement, uncounted."""
        sticky = self._sticky
        if sticky:
            self._sessions.move(sticky, "")
        self._sticky = None

    def on_ready_for_query(self, status: bytes, failed: bool = False) -> None:
        """The server's transaction status after a statement: b"I" idle, b"T" in a transaction,
        b"E" in a failed transaction. ValueError for anything else (a codec bug). The relay's
        `RelayRouter` hook (compiled: a cpdef method the relay calls in C; `failed` positional
        or keyword).

        `failed`: the statement ended with an error. With b"I" that means its transaction
        (implicit, or the explicit one it tried to commit) rolled back: no write committed. The
        daemon must not say so for a multi-statement string, which may commit midway."""
        if status == b"I":
            if self._uncommitted_write and not self._txn_failed and not failed:
                if self._on_commit is not None:
                    self._commit_epoch = self._on_commit(self._uncommitted_ddl)
                if self._mode == "lsn" or self._mode == "primary-window":
                    self._commit_pending = True
                    self.needs_commit_lsn = self._mode == "lsn"
            self._uncommitted_write = self._uncommitted_ddl = False
            self._txn_failed = False
            self.transaction_backend = None
            return
        # Two compares, not `in _STATUSES` (compiled, a tuple's contains through the generic
        # protocol, ~0.27k instructions per statement inside a transaction: docs/perf.md).
        if status != b"T" and status != b"E":
            raise ValueError(f"unknown ReadyForQuery status {status!r}")
        if self.transaction_backend is None:
            self.transaction_backend = self._last_target or _PRIMARY
        # b"T" after b"E" is a ROLLBACK TO SAVEPOINT: earlier writes may still commit.
        self._txn_failed = status == b"E"

    def on_commit_lsn(self, lsn: int) -> None:
        """The session's writes so far are committed at or before WAL position `lsn`."""
        if not 0 <= lsn <= MAX_LSN:
            raise ValueError(f"LSN {lsn} out of range")
        if self._last_commit_lsn is None or lsn > self._last_commit_lsn:
            self._last_commit_lsn = lsn
        if self._mode == "lsn":
            self._commit_pending = self.needs_commit_lsn = False
            self._uncommitted_write = False

    # -- the decision -------------------------------------------------------------------------

    def route(
        self,
        decision: Decision,
        now: float,
        replicas: Sequence[ReplicaView],
        *,
        primary_lsn: int | None = None,
        outstanding: Mapping[str, int] | None = None,
        floor_lsn: int | None = None,
    ) -> Route:
        """Where `decision`'s statement runs. `now` is the daemon's monotonic clock in seconds;
        `primary_lsn`, when known, fills `lag_bytes` of replicas that have only a `replay_lsn`;
        `outstanding` (see `choose_replica`) overrides the views' in-flight counts; a read goes
        only to a replica that has replayed `floor_lsn` (see the module docstring)."""
        if primary_lsn is not None:
            replicas = _with_lag(replicas, primary_lsn)
        return self.route_at(decision, decision.target is _T_REPLICA, decision.detail, now, replicas,
                             outstanding, floor_lsn)  # fmt: skip

    def route_at(
        self,
        decision: Decision,
        replica: bool,
        detail: str,
        now: float,
        replicas: Sequence[ReplicaView],
        outstanding: Mapping[str, int] | None,
        floor_lsn: int | None,
    ) -> Route:
        """`route` with positional arguments and what the caller has read of `decision` already:
        `replica` (its target is Target.REPLICA) and its `detail`. The compiled session calls it
        in C (a cpdef method: session_router.pxd): a Python-level call with keywords, and generic
        reads of the frozen `Decision`'s fields, cost ~0.6k instructions each way (docs/perf.md).
        Compiled, `decision` is typed (classify_types.pxd's Decision): its fields are read in C,
        and `now` is a C double (the session's C clock: no float made per read; one is made only
        where a write's time is kept, `_last_write_at`)."""
        if self._commit_pending and self._window_mode:
            # The commit happened at or before now: starting the window here is on the safe side.
            self._commit_pending = False
            self._last_write_at = now
        d = decision
        # The rules in order (module docstring), in this one method: one call per statement.
        # `_is_write` and `_note_write` are inlined where a statement inside a transaction or a
        # write outside one passes (pgbench's tpcb-like script: every statement). Target has two
        # members: not `replica` is Target.PRIMARY.
        backend = self.transaction_backend
        if backend is not None:
            if d.pins_session:
                self.pinned = True
            # The primary's name is the one object (PRIMARY) wherever the router sets it: `is`
            # first, the string compare (a call, compiled) only for another object.
            on_primary = backend is _PRIMARY or backend == _PRIMARY
            if not replica and on_primary:
                reason = d.reason
                if reason is _R_TRANSACTION_CONTROL:
                    if detail == "finish-prepared":  # _is_write: COMMIT PREPARED commits one
                        self._note_write(now, d)
                elif reason is not _R_PRIMARY_STATE:
                    self._uncommitted_write = True  # _note_write
                    if d.writes_catalog:
                        self._uncommitted_ddl = True
                    self._last_write_at = now
            if d.ends_transaction and detail in _ROLLBACK_DETAILS:  # the flag (a C field) first
                self._uncommitted_write = self._uncommitted_ddl = False
            self._last_target = backend
            if on_primary:
                return _P_TRANSACTION
            return _new_route(Route, (backend, _RR_TRANSACTION))

        if self.pinned or d.pins_session:
            self.pinned = True
            if self._sticky:
                self._leave("")  # no replica reads from now on: its count and connection go back
            if d.begins_transaction:
                self.transaction_backend = _PRIMARY
            if not replica and _is_write(d, detail):
                self._note_write(now, d)
            self._last_target = _PRIMARY
            return _P_PINNED

        hinted = d.reason is _R_HINT
        if d.begins_transaction:
            route = _P_HINT if hinted else _P_TRANSACTION
            # The route's target kept beside it: a Route is a tuple subclass, whose [0] compiled
            # goes through the generic item protocol (~0.8k instructions per BEGIN).
            target = _PRIMARY
            if replica and d.read_only_transaction:
                picked = self._pick_read(now, replicas, outstanding, floor_lsn)
                if type(picked) is str:
                    route = _new_route(Route, (picked, _RR_HINT if hinted else _RR_TRANSACTION))
                    target = picked
                else:
                    route = picked  # a route to the primary
            elif not replica and _is_write(d, detail):
                self._note_write(now, d)  # "BEGIN; INSERT ..." in one string
            self.transaction_backend = self._last_target = target
            return route

        if not replica:
            self._last_target = _PRIMARY
            reason = d.reason
            if reason is _R_TRANSACTION_CONTROL:
                if detail == "finish-prepared":  # _is_write: COMMIT PREPARED commits one
                    self._note_write(now, d)
                return _P_TRANSACTION
            if reason is not _R_PRIMARY_STATE:  # _is_write, and _note_write inlined
                self._uncommitted_write = True
                if d.writes_catalog:
                    self._uncommitted_ddl = True
                self._last_write_at = now
            return _P_HINT if hinted else _P_WRITE

        name = self._pick_read(now, replicas, outstanding, floor_lsn)
        if type(name) is not str:  # the route to the primary
            self._last_target = _PRIMARY
            return name
        self._last_target = name
        if hinted:
            return _new_route(Route, (name, _RR_HINT))
        if name is self._read_name:
            return self._read_route
        routes = self._read_routes  # a dict (session_router.pxd): its get in C, not a method call
        route = routes.get(name)
        if route is None:
            route = routes[name] = _new_route(Route, (name, _RR_READ))
        self._read_name = name
        self._read_route = route
        return route

    def _note_write(self, now: float, d: Decision) -> None:
        self._uncommitted_write = True
        if d.writes_catalog:
            self._uncommitted_ddl = True
        self._last_write_at = now

    def _leave(self, new: str) -> None:
        """Bind the session to replica `new` ("": none) instead of its own, which the session
        hears through `on_move` (balance = "session" only)."""
        old = self._sticky
        self._sessions.move(old, new)
        self._sticky = new
        if old and self._on_move is not None:
            self._on_move(old)

    def _pick_read(
        self, now: float, replicas: Sequence[ReplicaView], outstanding: Mapping[str, int] | None,
        floor: int | None = None,
    ) -> str | Route:
        """The name of a replica for a read, or the route to the primary (its reason: why the
        primary must take it). One object, not a pair: the caller tells them apart by type (a
        name is a str, a Route a tuple), and compiled no tuple is made per read."""
        min_lsn = None
        if self._mode == "lsn":
            if self._uncommitted_write or self._commit_pending:
                return _P_READ_YOUR_WRITES
            min_lsn = self._last_commit_lsn
        elif self._mode == "global":
            if self._uncommitted_write:
                return _P_READ_YOUR_WRITES
        elif self._mode == "primary-window":
            if self._uncommitted_write or (
                self._last_write_at is not None and now - self._last_write_at < self._window
            ):
                return _P_READ_YOUR_WRITES
        if floor is not None and (min_lsn is None or floor > min_lsn):
            min_lsn = floor
        max_b, max_s = self._max_lag_bytes, self._max_lag_seconds
        sticky = self._sticky
        if sticky is not None:
            # balance = "session": the session's replica while it is usable and recent enough.
            if sticky:
                if type(replicas) is tuple:
                    # The daemon's shared views (see below): the bound replica is looked up among
                    # the usable ones worked out once per tuple, by name, instead of reading each
                    # view's name and the bound one's lag fields per read (compiled, generic
                    # attribute reads of a frozen dataclass: ~1k instructions, docs/perf.md).
                    if replicas is not self._usable_for:
                        self._usable_from(replicas, max_b, max_s)
                    names = self._usable_names
                    # Compiled, the names are compared by identity first (the bound name is a
                    # view's own str: session_router.pxd's _has_name), `in` only when none is it:
                    # a list's contains compares through PyObject_RichCompare (~0.13k a read).
                    if (_has_name(names, sticky) if COMPILED else sticky in names):  # noqa: F821
                        if min_lsn is None:
                            return sticky
                        lsn = self._usable_views[names.index(sticky)].replay_lsn
                        if lsn is not None and lsn >= min_lsn:
                            return sticky
                else:
                    for r in replicas:
                        if r.name == sticky:
                            if _usable(r, max_b, max_s) and (min_lsn is None or (r.replay_lsn is not None
                                                                                  and r.replay_lsn >= min_lsn)):  # fmt: skip
                                return sticky
                            break
            # Else bind it: the replica with the fewest sessions (see the module docstring).
            sessions = self._sessions
            choice = choose_session_replica(replicas, sessions.counts, max_lag_bytes=max_b, max_lag_seconds=max_s,
                                            min_lsn=min_lsn, rotation=sessions.bindings)  # fmt: skip
            if choice is not None:
                self._leave(choice.name)
                return choice.name
        elif type(replicas) is tuple:
            # Immutable views (the daemon shares one tuple between monitor polls): the usable
            # ones, in name order, are worked out once per tuple instead of per statement.
            if replicas is not self._usable_for:
                self._usable_from(replicas, max_b, max_s)
            usable = self._usable_views
            if not usable:
                name = None
            elif COMPILED and len(usable) <= _MAX_TIES:
                name = self._least_loaded_here(min_lsn, outstanding)
            else:
                choice = _least_loaded(usable, min_lsn, self._rotation, outstanding)
                name = choice.name if choice is not None else None
            if name is not None:
                self._rotation += 1
                return name
        else:
            choice = choose_replica(replicas, max_lag_bytes=max_b, max_lag_seconds=max_s, min_lsn=min_lsn,
                                    rotation=self._rotation, outstanding=outstanding)  # fmt: skip
            if choice is not None:
                self._rotation += 1
                return choice.name
        if min_lsn is not None and choose_replica(replicas, max_lag_bytes=max_b, max_lag_seconds=max_s) is not None:
            return _P_READ_YOUR_WRITES
        return _P_FALLBACK

    def _usable_from(self, replicas: tuple[ReplicaView, ...], max_b: int | None, max_s: float | None) -> None:
        """Work out the usable views of `replicas` (a tuple the daemon shares between monitor
        polls), in name order, with their names and weights beside them."""
        self._usable_views = _usable_sorted(replicas, max_b, max_s)
        self._usable_names = [r.name for r in self._usable_views]
        self._usable_weights = [float(r.weight) for r in self._usable_views]
        self._usable_for = replicas

    def _least_loaded_here(self, min_lsn: int | None, outstanding: Mapping[str, int] | None) -> str | None:
        """`_least_loaded` over `_usable_views` (the chosen one's name), compiled only (`_pick_read`): the names and
        weights kept beside the views, the loads divided as C doubles (the same correctly
        rounded quotient as Python's int / int for counts under 2**53), the tied replicas'
        indices in a C array (at most `_MAX_TIES` views) instead of a list per read."""
        views = self._usable_views
        names = self._usable_names
        weights = self._usable_weights
        n = len(views)
        ties = 0
        best_key = 0.0
        counts = outstanding if type(outstanding) is dict else None
        # The daemon's compiled books keep an Outstanding (outstanding.py): its counts read in C.
        slots = outstanding if type(outstanding) is Outstanding else None
        for i in range(n):
            if min_lsn is not None:
                lsn = views[i].replay_lsn
                if lsn is None or lsn < min_lsn:
                    continue
            if slots is not None:
                lf = slots.count_of(names[i])
            else:
                if counts is not None:
                    load = counts.get(names[i], 0)
                elif outstanding is None:
                    load = views[i].outstanding
                else:
                    load = outstanding.get(names[i], 0)
                lf = load
            wf = weights[i]
            key = lf / wf
            if ties == 0 or key < best_key:
                best_key = key
                tied[0] = i  # noqa: F821 - a C array (session_router.pxd): compiled only
                ties = 1
            elif key == best_key:
                tied[ties] = i  # noqa: F821
                ties += 1
        if ties == 0:
            return None
        rot = self._rotation
        k = rot % ties
        return names[tied[k]]  # noqa: F821


def _usable_sorted(replicas: Sequence[ReplicaView], max_b: int | None, max_s: float | None) -> list[ReplicaView]:
    """The usable replicas in name order (a function: as a generator inside `_pick_read`, the
    compiled method made its closure on every call)."""
    return sorted((r for r in replicas if _usable(r, max_b, max_s)), key=_name)


# Compiled: the object fields as member descriptors, which CPython specialises as it does slots
# (proxy/_members.pxd): interpreted code reads and writes them as fast as the pure twin's.
if COMPILED:
    as_members(SessionRouter, SessionRouter.__slots__)  # noqa: F821
