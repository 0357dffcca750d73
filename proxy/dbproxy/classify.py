"""Statement classifier: which backend, primary or replica, may run a SQL string, and why.

Theory of operation
-------------------
`classify(sql)` is a pure function: PostgreSQL's own parser (pglast, i.e. libpg_query) turns the
text into a parse tree, and each top-level statement gets a `Decision` from the table of rules in
classify_rules.py (node type -> rule); node types not in the table are writes. The rules look at
facts gathered in one walk over the statement's tree: calls to listed functions (anywhere:
subqueries, CTEs, DEFAULTs, FROM), data-modifying statements nested in a query (writing CTEs),
FOR UPDATE/SHARE clauses, SELECT INTO, temporary relations. This module adds what concerns the
whole string: hints, multi-statement strings, errors, and the cache. No I/O, no global mutable
state; `ClassifierCache` is an object its caller owns.

Modules: classify_types (Target, Reason, Decision, DETAILS), classify_functions (the function
lists and their policy), classify_rules (per-statement rules), this one (the entry points).

What goes where (the routing table of issue 5):

- REPLICA / READ: SELECT, VALUES, TABLE, SHOW, read-only CTEs, EXPLAIN without ANALYZE (nothing is
  executed), EXPLAIN ANALYZE of a read, COPY (table or read query) TO STDOUT, DECLARE CURSOR for a
  read, FETCH/MOVE.
- PRIMARY / WRITE: INSERT/UPDATE/DELETE/MERGE, writing CTEs at any depth, SELECT INTO, CREATE TABLE
  AS, COPY FROM, COPY TO a server file or program, NOTIFY, CALL, DO, and every other utility
  statement (DDL, GRANT, VACUUM, ANALYZE, CLUSTER, REFRESH, COMMENT, TRUNCATE, ...): an unknown
  statement is a write.
- PRIMARY / LOCKING: SELECT ... FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE (at any depth), LOCK.
- PRIMARY / VOLATILE_FUNCTION: a call to a function in `write_functions` (see classify_functions:
  side effects or the primary's state matter, volatility alone does not).
- PRIMARY / PRIMARY_STATE ("primary-state"): reads of what a standby does not share or reports
  about itself (pg_prepared_xacts, pg_stat_replication, pg_stat_activity, pg_locks,
  pg_backend_pid(), ...: classify_functions.PRIMARY_STATE_*). Not writes for read-your-writes.
- Flags for read consistency across sessions (causal.py): `reads_catalog` on a read that touches
  pg_catalog/information_schema (or an unqualified pg_* relation), casts to reg* types or calls an
  introspection function (pg_catalog.*, pg_get_*, to_reg*, *_is_visible, has_*_privilege, ...);
  `writes_catalog` on DDL and every utility statement but TRUNCATE/VACUUM/CLUSTER/REINDEX/
  REFRESH/CHECKPOINT/LOAD, on CREATE TABLE AS, SELECT INTO, DO, CALL, COMMIT/ROLLBACK PREPARED
  and unparseable text.
- PRIMARY / SESSION, pins_session: SET (not SET LOCAL, not SET TRANSACTION), SET SESSION
  CHARACTERISTICS, SQL PREPARE, LISTEN, CREATE TEMP TABLE/VIEW/SEQUENCE (and `pg_temp.` names),
  SELECT INTO TEMP, DECLARE ... WITH HOLD, session advisory locks, set_config unless its is_local
  argument is the constant true (transaction-local set_config changes nothing: a plain read).
- PRIMARY / SESSION, no pin: EXECUTE (its statement lives where PREPARE pinned the session).
- REPLICA / SESSION, no pin ("session-reset"): RESET, SET x TO DEFAULT, DISCARD, DEALLOCATE,
  UNLISTEN, CLOSE, pg_advisory_unlock*. They only undo session state: in a pinned session the caller
  sends them to the primary with everything else; in an unpinned one there is nothing to undo.
- TRANSACTION_CONTROL: BEGIN/START (PRIMARY, or REPLICA when READ ONLY and not SERIALIZABLE: a hot
  standby refuses serializable transactions), SET TRANSACTION (REPLICA for READ ONLY, else PRIMARY),
  COMMIT/ROLLBACK/END/ABORT/PREPARE TRANSACTION (ends_transaction), SAVEPOINT/RELEASE/ROLLBACK TO,
  SET LOCAL, SET CONSTRAINTS, COMMIT/ROLLBACK PREPARED (PRIMARY). Those that only act inside the
  current transaction have target PRIMARY, the answer for when no transaction is open (they are
  then no-ops or errors anywhere); inside a transaction the caller keeps every statement on the
  transaction's backend whatever the target says.
- EMPTY (REPLICA): nothing but whitespace, comments and semicolons; PostgreSQL answers
  EmptyQueryResponse.
- UNPARSEABLE (PRIMARY): a parse error, a NUL byte, text that is not encodable, a tree nested
  too deep for Python's json decoder (~450 levels of operators); never raised.

Multi-statement strings (one simple Query, which PostgreSQL runs as one implicit transaction) go
to the primary if any statement does, else to a replica. The statements that only act inside the
current transaction (COMMIT, SAVEPOINT, SET LOCAL, ...) do not vote. The reason is the one reason
shared by the voters on the winning side (`SELECT 1; INSERT ...` is WRITE), or MULTI_STATEMENT when
they disagree. pins_session if any statement pins; the transaction flags follow the statements in
order (`BEGIN; INSERT ...` leaves a transaction open: begins_transaction).

Hints: leading comments (block or `--`, any number, before the first token) may hold
`tierproxy:primary` or `tierproxy:replica`, case-insensitive, whitespace-tolerant. `primary` always
wins (reason HINT, the other flags kept). `replica` is obeyed only when the statement could run on a
replica anyway (reason HINT) or could not be parsed (the application knows better than our parser,
and a replica refuses a write with 25006, so a wrong hint fails loudly). A replica hint on anything
the classifier sends to the primary is ignored (detail "replica-hint-ignored"): a hint must not turn
a write, a lock or a session change into an error or a lost pin.

`detail` comes from the fixed vocabulary `DETAILS`, or is "stmt:" + a parse-node type name for the
catch-all writes: bounded, safe as a metrics label, never user text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from pglast.parser import ParseError, parse_sql_json

from .classify_cache import DEFAULT_CACHE_SIZE, MAX_CACHED_SQL_LENGTH, ClassifierCache
from .classify_functions import DEFAULT_WRITE_FUNCTIONS
from .classify_key import literal_key, literal_key_bytes
from .classify_rules import Part, classify_statement
from .classify_types import DETAILS, Decision, Reason, Target

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_WRITE_FUNCTIONS",
    "DETAILS",
    "MAX_CACHED_SQL_LENGTH",
    "ClassifierCache",
    "Decision",
    "Reason",
    "Target",
    "classify",
    "leading_comments",
    "literal_key",
    "literal_key_bytes",
]


def classify(sql: str, *, write_functions: frozenset[str] = DEFAULT_WRITE_FUNCTIONS) -> Decision:
    """Classify one Query text or Parse message text ($1 placeholders are fine). Never raises."""
    try:
        decision = _classify_text(sql, write_functions)
    except (ParseError, ValueError):
        # ParseError: syntax errors and libpg_query's own limits ("memory exhausted" on deep
        # nesting). ValueError: text with lone surrogates, which UTF-8 cannot encode.
        decision = _UNPARSEABLE
    except RecursionError:
        # json.loads recurses: about 450 nested operators (`1 + 1 + ... + 1`) exceed Python's
        # default limit. Raising the limit would be global state; such text goes to the primary.
        decision = _TOO_DEEP
    except Exception:  # noqa: BLE001
        # Our bug, not the client's: fail safe to the primary with a detail metrics can count.
        decision = _CLASSIFIER_ERROR
    hint = _leading_hint(sql)
    return decision if hint is None else _apply_hint(hint, decision)


# Text we cannot read may be DDL (syntax newer than our parser): it counts as a catalog change.
_UNPARSEABLE = Decision(Target.PRIMARY, Reason.UNPARSEABLE, detail="parse-error", writes_catalog=True)
_TOO_DEEP = Decision(Target.PRIMARY, Reason.UNPARSEABLE, detail="too-deep", writes_catalog=True)
_CLASSIFIER_ERROR = Decision(Target.PRIMARY, Reason.UNPARSEABLE, detail="classifier-error", writes_catalog=True)
_EMPTY = Decision(Target.REPLICA, Reason.EMPTY, detail="empty")


def _classify_text(sql: str, write_functions: frozenset[str]) -> Decision:
    if "\x00" in sql:
        # libpg_query stops at NUL: "SELECT 1\0; DROP TABLE t" would parse as a plain SELECT.
        return Decision(Target.PRIMARY, Reason.UNPARSEABLE, detail="nul-byte", writes_catalog=True)
    stmts = json.loads(parse_sql_json(sql)).get("stmts", ())
    parts = [classify_statement(raw["stmt"], write_functions) for raw in stmts if raw.get("stmt")]
    if not parts:
        return _EMPTY
    if len(parts) == 1:
        return parts[0][0]
    return _combine(parts)


# -- hints -------------------------------------------------------------------------------------

_HINT_BODY = re.compile(r"\s*tierproxy\s*:\s*(primary|replica)\s*", re.IGNORECASE)
_SPACE = " \t\n\r\f\v"


def leading_comments(sql: str) -> Iterator[str]:
    """The text of each comment before the first token, in order (without its `--` or `/* */`):
    where the routing hint (`tierproxy:primary`) and the query cache's (`tierproxy:cache ttl=N`,
    qcache_policy.cache_hint) are read. An unterminated block comment ends the walk."""
    if sql[:1] not in _LEADING:
        # Nothing but a comment or whitespace can come before one: most statements, and every
        # `classify` asks, so no generator is made for them.
        return iter(())
    return _leading_comments(sql)


_LEADING = "-/" + _SPACE


def _leading_comments(sql: str) -> Iterator[str]:
    i, n = 0, len(sql)
    while True:
        while i < n and sql[i] in _SPACE:
            i += 1
        if sql.startswith("--", i):
            # PostgreSQL's scanner ends a `--` comment at a newline or a carriage return
            # (`--[^\n\r]*`): text after a lone \r is SQL, not part of the comment.
            end = sql.find("\n", i)
            end = n if end < 0 else end
            cr = sql.find("\r", i, end)
            if cr >= 0:
                end = cr
            yield sql[i + 2 : end]
            i = end
        elif sql.startswith("/*", i):
            # PostgreSQL block comments nest: /* a /* b */ c */ is one comment.
            depth, j = 1, i + 2
            while depth:
                close = sql.find("*/", j)
                if close < 0:
                    return
                opening = sql.find("/*", j, close)
                if opening >= 0:
                    depth, j = depth + 1, opening + 2
                else:
                    depth, j = depth - 1, close + 2
            yield sql[i + 2 : j - 2]
            i = j
        else:
            return


def _leading_hint(sql: str) -> str | None:
    """The first `tierproxy:<target>` among the comments before the first token, lower-case."""
    for body in leading_comments(sql):
        match = _HINT_BODY.fullmatch(body)
        if match:
            return match.group(1).lower()
    return None


def _apply_hint(hint: str, decision: Decision) -> Decision:
    if hint == "primary":
        return _replace(decision, Target.PRIMARY, Reason.HINT, "hint-primary")
    if decision.target is Target.REPLICA or decision.reason is Reason.UNPARSEABLE:
        return _replace(decision, Target.REPLICA, Reason.HINT, "hint-replica")
    return _replace(decision, decision.target, decision.reason, "replica-hint-ignored")


def _replace(d: Decision, target: Target, reason: Reason, detail: str) -> Decision:
    return Decision(
        target, reason, d.begins_transaction, d.read_only_transaction, d.ends_transaction,
        d.pins_session, detail, d.reads_catalog, d.writes_catalog,
    )  # fmt: skip


# -- multi-statement strings -------------------------------------------------------------------


def _combine(parts: list[Part]) -> Decision:
    # "BEGIN; SET TRANSACTION READ ONLY; ..." opens a read-only transaction, like BEGIN READ ONLY.
    for i in range(len(parts) - 1):
        (d, votes), (after, _) = parts[i], parts[i + 1]
        if d.detail == "begin" and after.detail == "set-transaction-read-only":
            parts = [*parts[:i], (_replace_ro(d), votes), *parts[i + 1 :]]
    voters = [d for d, votes in parts if votes] or [d for d, _ in parts]
    to_primary = [d for d in voters if d.target is Target.PRIMARY]
    target = Target.PRIMARY if to_primary else Target.REPLICA
    reasons = {d.reason for d in (to_primary or voters)}
    reason = reasons.pop() if len(reasons) == 1 else Reason.MULTI_STATEMENT
    # Transaction flags in statement order: "COMMIT; BEGIN" ends the client's transaction and
    # leaves a new one open; "BEGIN; ...; COMMIT" begins and ends nothing seen from outside.
    opened = read_only = ended = False
    for d, _ in parts:
        if d.ends_transaction:
            ended = ended or not opened
            opened = read_only = False
        if d.begins_transaction:
            opened, read_only = True, d.read_only_transaction
        elif d.read_only_transaction:
            read_only = True
    return Decision(
        target, reason, begins_transaction=opened, read_only_transaction=read_only,
        ends_transaction=ended, pins_session=any(d.pins_session for d, _ in parts),
        detail="multi-statement", reads_catalog=any(d.reads_catalog for d, _ in parts),
        writes_catalog=any(d.writes_catalog for d, _ in parts),
    )  # fmt: skip


def _replace_ro(d: Decision) -> Decision:
    return Decision(Target.REPLICA, d.reason, begins_transaction=True, read_only_transaction=True,
                    ends_transaction=d.ends_transaction, pins_session=d.pins_session,
                    detail="begin-read-only", writes_catalog=d.writes_catalog)  # fmt: skip


# -- cache -------------------------------------------------------------------------------------

# ClassifierCache, DEFAULT_CACHE_SIZE and MAX_CACHED_SQL_LENGTH live in classify_cache.py (compiled:
# proxy/_native.py), imported above and re-exported from here.
