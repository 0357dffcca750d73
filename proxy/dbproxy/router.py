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

Where it lives: the vocabulary (`PRIMARY`, `RouteReason`, `Route`, `ReplicaView`) in
route_types.py, the replica choice and `SessionRouter` in session_router.py, which is compiled
(proxy/_native.py: an extension type whose methods the session and the relay call in C-level
calls; docs/perf.md, "The router and books, compiled"); this module holds the LSN text forms and
re-exports the rest, so it stays the one place to import the router from.
"""

from __future__ import annotations

import re

from .route_types import MAX_LSN, PRIMARY, ReadYourWrites, ReplicaView, Route, RouteReason, lag_bytes
from .session_router import SessionRouter, choose_replica

__all__ = [
    "MAX_LSN",
    "PRIMARY",
    "ReadYourWrites",
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

# -- LSNs --------------------------------------------------------------------------------------

# pg_lsn's text form is "%X/%X": the high and low 32 bits in hex, 1-8 digits each
# (src/backend/utils/adt/pg_lsn.c, pg_lsn_in_internal).
_LSN_RE = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\Z")


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
