"""Routing decisions for the PostgreSQL proxy: which backend runs a client's next statement.

Theory of operation
-------------------
The classifier (classify.py) says where a statement *may* run (`Decision`). This module adds what
depends on state: the client session's transaction and pinning, its read-your-writes constraint and
the replicas' health, lag and load. Everything here is pure: the daemon passes the clock (`now`) and
an immutable snapshot of the replicas (`ReplicaView`s built from the monitor and the pools) and acts
on the `Route` it gets back. One `SessionRouter` per client session; no I/O, no global state.

Rules of `SessionRouter.route`, in order:

1. Inside a transaction everything goes to the backend chosen when it began (reason "transaction"),
   whatever the statement: a transaction cannot move. A write inside a READ ONLY transaction on a
   replica therefore goes to that replica, which refuses it with SQLSTATE 25006, the same error the
   primary gives in a read-only transaction.
2. A pinned session (a statement with `pins_session` was seen) goes to the primary from then on
   (reason "pinned"); that statement too. A pin inside a replica transaction takes effect when the
   transaction ends (the state it set lives on that replica's connection and is lost: a documented
   limit of pinning, which we chose over replaying session state).
3. A statement that begins a transaction: a READ ONLY one on a qualifying replica (see 5), else the
   primary ("transaction"). The backend is remembered until the server says the transaction is over.
4. Anything else the classifier sends to the primary: the primary ("write", or "hint").
5. A read: a qualifying replica ("read", or "hint"), chosen by `choose_replica`; when the session's
   read-your-writes constraint rules out every replica that is otherwise usable, the primary
   ("read_your_writes"); when no replica is usable at all, the primary ("fallback").

The server's ReadyForQuery status is the truth about transactions: `on_ready_for_query(b"I")` ends
one (explicit, implicit, committed or failed), b"T"/b"E" say one is open. A b"T" or b"E" when the
router thinks none is open (a transaction it did not see begin) adopts the last statement's backend.
Contract: the daemon reports the ReadyForQuery that answers the *latest* statement routed; when it
pipelines, earlier ones must not be reported (a stale b"I" would end a transaction begun since).

Read-your-writes, per session:

- "lsn": a write (any statement sent to the primary that is not transaction control) makes the
  session's reads go to the primary until the daemon reports the commit LSN with `on_commit_lsn`
  (`needs_commit_lsn` says when it is owed: after the b"I" that ends a transaction with writes).
  From then on reads go only to replicas with `replay_lsn` >= that LSN, or to the primary.
  A transaction that failed (b"E") and ended committed nothing and owes no LSN.
- "primary-window": reads go to the primary until `primary_window` seconds after the session's last
  write committed (measured from the first statement routed after the commit, which is no earlier).
- "global": the session's own writes impose nothing here; the daemon passes `floor_lsn`, an LSN
  covering every commit the proxy acknowledged to any client (causal.py), for every read.
- "off": no constraint; a read right after a write may not see it.

Whatever the mode, `route(..., floor_lsn=...)` adds a floor to the replay LSN a replica needs for a
read (the daemon's: catalog reads must see every acknowledged DDL). Every write commit is reported
to `on_commit(writes_catalog)` when given (the daemon's `CommitClock.acknowledged`), whose answer,
the commit's epoch, is `commit_epoch`. COMMIT PREPARED counts as a write: it commits one.

Replica choice (`choose_replica`): replicas that are up, within both lag limits and (for
read-your-writes) replayed past `min_lsn`; among them the least `outstanding / weight`. Ties go by
rotation over the tied replicas in name order, starting at `rotation`: the session router passes a
counter seeded per session and advanced on every pick, so idle replicas share a session's reads and
the sessions start on different replicas. Weights therefore act under load (overlapping queries);
at zero load reads rotate evenly. Deterministic: the same inputs give the same replica.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, NamedTuple

from .classify_types import Decision, Reason, Target

if TYPE_CHECKING:
    from .config import RoutingConfig

__all__ = [
    "PRIMARY",
    "ReplicaView",
    "Route",
    "RouteReason",
    "SessionRouter",
    "choose_replica",
    "commit_lsn_from_insert",
    "format_lsn",
    "lag_bytes",
    "parse_lsn",
]

PRIMARY = "primary"  # Route.target for the primary; config refuses a replica of that name

ReadYourWrites = Literal["lsn", "primary-window", "global", "off"]


class RouteReason(enum.Enum):
    """Why a statement went where it did: a fixed vocabulary, safe as a metrics label."""

    READ = "read"
    WRITE = "write"
    TRANSACTION = "transaction"
    HINT = "hint"
    FALLBACK = "fallback"
    PINNED = "pinned"
    READ_YOUR_WRITES = "read_your_writes"

    # Members are singletons compared by identity: hash them the same way, in C, instead of
    # Enum's hash of the name in Python (routes are counted per statement, keyed by reason).
    __hash__ = object.__hash__


class Route(NamedTuple):
    """Where one statement runs. A named tuple: one is made per statement, and a frozen
    dataclass costs several times as much to build."""

    target: str  # PRIMARY or a replica's name
    reason: RouteReason

    @property
    def to_primary(self) -> bool:
        return self.target == PRIMARY


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica as the router sees it at one instant. None means unknown (not measured yet)."""

    name: str
    weight: int = 1
    up: bool = True
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    replay_lsn: int | None = None
    outstanding: int = 0  # queries in flight on this replica


# -- LSNs --------------------------------------------------------------------------------------

# pg_lsn's text form is "%X/%X": the high and low 32 bits in hex, 1-8 digits each
# (src/backend/utils/adt/pg_lsn.c, pg_lsn_in_internal).
_LSN_RE = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\Z")
MAX_LSN = (1 << 64) - 1


def parse_lsn(text: str) -> int:
    """``"16/B374D848"`` -> the 64-bit WAL position; ValueError if it is not a pg_lsn."""
    m = _LSN_RE.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a pg_lsn ('XXXXXXXX/XXXXXXXX')")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(lsn: int) -> str:
    """The 64-bit WAL position as PostgreSQL prints it: ``"16/B374D848"``."""
    if not 0 <= lsn <= MAX_LSN:
        raise ValueError(f"LSN {lsn} out of range")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


# WAL geometry of a default build (XLOG_BLCKSZ, wal_segment_size) and the page header sizes.
_WAL_PAGE = 8192
_WAL_SEGMENT = 16 * 1024 * 1024
_SHORT_PAGE_HEADER = 24
_LONG_PAGE_HEADER = 40


def commit_lsn_from_insert(insert_lsn: int) -> int:
    """The LSN a replica must have replayed to see every commit made before
    `pg_current_wal_insert_lsn()` returned `insert_lsn`.

    The insert LSN, not `pg_current_wal_lsn()`: with synchronous_commit = off a commit returns
    before its WAL is written, so the write position can be short of the commit record. At a page
    boundary the insert LSN points past the next page's header, while a replica's replay LSN stops
    at the boundary; without the correction a replica would look behind until the next write.
    (Other wal_segment_size settings only make that rare case wait for the next write.)
    """
    if insert_lsn % _WAL_SEGMENT == _LONG_PAGE_HEADER:
        return insert_lsn - _LONG_PAGE_HEADER
    if insert_lsn % _WAL_PAGE == _SHORT_PAGE_HEADER:
        return insert_lsn - _SHORT_PAGE_HEADER
    return insert_lsn


def lag_bytes(primary_lsn: int, replay_lsn: int) -> int:
    """WAL bytes the replica has yet to replay. Never negative: the primary's LSN is sampled
    at another instant than the replica's, so a replica can look ahead of a stale sample."""
    return max(0, primary_lsn - replay_lsn)


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


# -- the session router ------------------------------------------------------------------------

# Enum members as module globals: `Target.PRIMARY` is an attribute lookup through EnumType's
# __getattr__ hook (~0.7k instructions each, several per statement: docs/perf.md); a global is one load.
_R_HINT = Reason.HINT
_R_PRIMARY_STATE = Reason.PRIMARY_STATE
_R_TRANSACTION_CONTROL = Reason.TRANSACTION_CONTROL
_RR_FALLBACK = RouteReason.FALLBACK
_RR_HINT = RouteReason.HINT
_RR_PINNED = RouteReason.PINNED
_RR_READ = RouteReason.READ
_RR_READ_YOUR_WRITES = RouteReason.READ_YOUR_WRITES
_RR_TRANSACTION = RouteReason.TRANSACTION
_RR_WRITE = RouteReason.WRITE
_T_PRIMARY = Target.PRIMARY
_T_REPLICA = Target.REPLICA

# Route(target, reason) without NamedTuple's __new__ (a Python function): `_new_route(Route, (target,
# reason))` makes the same tuple for half the cost; one is made per statement.
_new_route = tuple.__new__

_ROLLBACK_DETAILS = frozenset({"rollback", "rollback-and-chain"})
_STATUSES = (b"I", b"T", b"E")


def _is_write(d: Decision) -> bool:
    # Conservative: whatever the classifier sends to the primary may have written, except
    # transaction control (BEGIN, COMMIT, SAVEPOINT, ...), which writes nothing itself, and reads
    # of the primary's own state. COMMIT PREPARED is transaction control that commits, though.
    if d.target is not _T_PRIMARY:
        return False
    reason = d.reason
    if reason is _R_TRANSACTION_CONTROL:
        return d.detail == "finish-prepared"
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


class SessionRouter:
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
        "needs_commit_lsn",
        "pinned",
        "_rotation",
        "_sticky",
        "transaction_backend",
        "_txn_failed",
        "_uncommitted_ddl",
        "_uncommitted_write",
        "_usable_for",
        "_usable_views",
        "_window",
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
        balance: str = "statement",
    ) -> None:
        if read_your_writes not in ("lsn", "primary-window", "global", "off"):
            raise ValueError(f"unknown read_your_writes mode {read_your_writes!r}")
        if balance not in ("statement", "session"):
            raise ValueError(f"unknown balance {balance!r}")
        self._mode = read_your_writes
        self._window = primary_window  # seconds
        self._max_lag_bytes = max_lag_bytes
        self._max_lag_seconds = max_lag_seconds
        self._rotation = rotation_seed
        # balance = "session": the replica this session reads from while it qualifies (its name;
        # "" until the first read), so it holds one replica connection instead of one per replica.
        # None: balance = "statement", every read chooses.
        self._sticky: str | None = "" if balance == "session" else None
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

    @classmethod
    def from_config(cls, routing: RoutingConfig, *, rotation_seed: int = 0,
                    on_commit: Callable[[bool], int] | None = None) -> SessionRouter:  # fmt: skip
        return cls(
            on_commit=on_commit,
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
    def commit_epoch(self) -> int:
        """`on_commit`'s answer for the session's last write commit (0: none, or no `on_commit`)."""
        return self._commit_epoch

    # -- events -------------------------------------------------------------------------------

    def on_ready_for_query(self, status: bytes, *, failed: bool = False) -> None:
        """The server's transaction status after a statement: b"I" idle, b"T" in a transaction,
        b"E" in a failed transaction. ValueError for anything else (a codec bug).

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
        if status not in _STATUSES:
            raise ValueError(f"unknown ReadyForQuery status {status!r}")
        if self.transaction_backend is None:
            self.transaction_backend = self._last_target or PRIMARY
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
        if self._commit_pending and self._mode == "primary-window":
            # The commit happened at or before now: starting the window here is on the safe side.
            self._commit_pending = False
            self._last_write_at = now
        d = decision
        # The rules in order (module docstring), in this one method: one call per statement.
        # `_is_write` and `_note_write` are inlined where a statement inside a transaction or a
        # write outside one passes (pgbench's tpcb-like script: every statement).
        backend = self.transaction_backend
        if backend is not None:
            if d.pins_session:
                self.pinned = True
            if backend == PRIMARY and d.target is _T_PRIMARY:
                reason = d.reason
                if reason is _R_TRANSACTION_CONTROL:
                    if d.detail == "finish-prepared":  # _is_write: COMMIT PREPARED commits one
                        self._note_write(now, d)
                elif reason is not _R_PRIMARY_STATE:
                    self._uncommitted_write = True  # _note_write
                    if d.writes_catalog:
                        self._uncommitted_ddl = True
                    self._last_write_at = now
            if d.ends_transaction and d.detail in _ROLLBACK_DETAILS:
                self._uncommitted_write = self._uncommitted_ddl = False
            self._last_target = backend
            return _new_route(Route, (backend, _RR_TRANSACTION))

        if self.pinned or d.pins_session:
            self.pinned = True
            if d.begins_transaction:
                self.transaction_backend = PRIMARY
            if _is_write(d):
                self._note_write(now, d)
            self._last_target = PRIMARY
            return _new_route(Route, (PRIMARY, _RR_PINNED))

        hinted = d.reason is _R_HINT
        if d.begins_transaction:
            route = _new_route(Route, (PRIMARY, _RR_HINT if hinted else _RR_TRANSACTION))
            if d.target is _T_REPLICA and d.read_only_transaction:
                replica, why = self._pick_read(now, replicas, outstanding, floor_lsn)
                if replica is not None:
                    route = _new_route(Route, (replica.name, route.reason))
                else:
                    route = _new_route(Route, (PRIMARY, why))
            elif _is_write(d):
                self._note_write(now, d)  # "BEGIN; INSERT ..." in one string
            self.transaction_backend = self._last_target = route[0]
            return route

        if d.target is _T_PRIMARY:
            self._last_target = PRIMARY
            reason = d.reason
            if reason is _R_TRANSACTION_CONTROL:
                if d.detail == "finish-prepared":  # _is_write: COMMIT PREPARED commits one
                    self._note_write(now, d)
                return _new_route(Route, (PRIMARY, _RR_TRANSACTION))
            if reason is not _R_PRIMARY_STATE:  # _is_write, and _note_write inlined
                self._uncommitted_write = True
                if d.writes_catalog:
                    self._uncommitted_ddl = True
                self._last_write_at = now
            return _new_route(Route, (PRIMARY, _RR_HINT if hinted else _RR_WRITE))

        replica, why = self._pick_read(now, replicas, outstanding, floor_lsn)
        if replica is None:
            self._last_target = PRIMARY
            return _new_route(Route, (PRIMARY, why))
        self._last_target = name = replica.name
        return _new_route(Route, (name, _RR_HINT if hinted else _RR_READ))

    def _note_write(self, now: float, d: Decision) -> None:
        self._uncommitted_write = True
        if d.writes_catalog:
            self._uncommitted_ddl = True
        self._last_write_at = now

    def _pick_read(
        self, now: float, replicas: Sequence[ReplicaView], outstanding: Mapping[str, int] | None,
        floor: int | None = None,
    ) -> tuple[ReplicaView | None, RouteReason]:
        """A replica for a read, or (None, why the primary must take it)."""
        min_lsn = None
        if self._mode == "lsn":
            if self._uncommitted_write or self._commit_pending:
                return None, _RR_READ_YOUR_WRITES
            min_lsn = self._last_commit_lsn
        elif self._mode == "global":
            if self._uncommitted_write:
                return None, _RR_READ_YOUR_WRITES
        elif self._mode == "primary-window":
            if self._uncommitted_write or (
                self._last_write_at is not None and now - self._last_write_at < self._window
            ):
                return None, _RR_READ_YOUR_WRITES
        if floor is not None and (min_lsn is None or floor > min_lsn):
            min_lsn = floor
        max_b, max_s = self._max_lag_bytes, self._max_lag_seconds
        sticky = self._sticky
        if sticky:
            # balance = "session": the session's replica while it is usable and recent enough.
            for r in replicas:
                if r.name == sticky:
                    if _usable(r, max_b, max_s) and (min_lsn is None or (r.replay_lsn is not None
                                                                          and r.replay_lsn >= min_lsn)):  # fmt: skip
                        return r, _RR_READ
                    break
        if type(replicas) is tuple:
            # Immutable views (the daemon shares one tuple between monitor polls): the usable
            # ones, in name order, are worked out once per tuple instead of per statement.
            if replicas is not self._usable_for:
                self._usable_views = sorted((r for r in replicas if _usable(r, max_b, max_s)), key=_name)
                self._usable_for = replicas
            usable = self._usable_views
            choice = _least_loaded(usable, min_lsn, self._rotation, outstanding) if usable else None
        else:
            choice = choose_replica(replicas, max_lag_bytes=max_b, max_lag_seconds=max_s, min_lsn=min_lsn,
                                    rotation=self._rotation, outstanding=outstanding)  # fmt: skip
        if choice is not None:
            self._rotation += 1
            if sticky is not None:
                self._sticky = choice.name
            return choice, _RR_READ
        if min_lsn is not None and choose_replica(replicas, max_lag_bytes=max_b, max_lag_seconds=max_s) is not None:
            return None, _RR_READ_YOUR_WRITES
        return None, _RR_FALLBACK
