"""The classifier's vocabulary: Target, Reason, Decision, and the fixed set of `detail` labels.

This module is compiled (proxy/_native.py) and is also its own pure-Python twin. Compiled,
`Decision` is an extension type (classify_types.pxd: Cython's dataclass, its fields read-only C
fields), so the session and its router, which cimport it, read a decision's fields in C (a
generic attribute read of the frozen dataclass cost ~0.15k instructions each, several per
statement: docs/perf.md); Python sees the same class: keyword constructor with defaults,
equality, hash, repr, `dataclasses.fields` and `replace`, and no field can be set (an
AttributeError: the pure twin's FrozenInstanceError is one). Pure, it is the frozen dataclass.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["DETAILS", "Decision", "Reason", "Target"]


class Target(enum.Enum):
    PRIMARY = "primary"
    REPLICA = "replica"


class Reason(enum.Enum):
    READ = "read"
    WRITE = "write"
    TRANSACTION_CONTROL = "transaction_control"
    SESSION = "session"  # touches session state; pins_session says whether it must pin
    HINT = "hint"
    UNPARSEABLE = "unparseable"
    VOLATILE_FUNCTION = "volatile_function"
    LOCKING = "locking"
    MULTI_STATEMENT = "multi_statement"
    EMPTY = "empty"
    # A read of state that only the primary has, or that a standby reports differently
    # (pg_prepared_xacts, pg_stat_replication, pg_backend_pid(), ...): primary, but not a write.
    PRIMARY_STATE = "primary_state"


# Not slots=True: Cython's dataclass (the compiled twin) takes no `slots`; an extension type has
# no __dict__ anyway, and the pure twin's fields are read as fast from its instance dict.
@dataclass(frozen=True)
class Decision:
    """Where a SQL string may run. A COMMIT/ROLLBACK ... AND CHAIN both ends and begins.

    `reads_catalog`: a read that looks at the system catalogs (pg_catalog, information_schema,
    regclass-style casts, introspection functions): it must see every DDL the proxy acknowledged.
    `writes_catalog`: a statement that may change them (DDL, DO, CALL, COMMIT PREPARED, ...)."""

    target: Target
    reason: Reason
    begins_transaction: bool = False
    read_only_transaction: bool = False
    ends_transaction: bool = False
    pins_session: bool = False
    detail: str = ""
    reads_catalog: bool = False
    writes_catalog: bool = False


DETAILS: frozenset[str] = frozenset(
    {
        # reads
        "select", "show", "explain", "copy-to", "declare-cursor", "fetch",
        # writes
        "insert", "update", "delete", "merge", "writing-cte", "select-into", "create-table-as",
        "copy-from", "copy-to-server-file", "notify", "call", "do",
        "for-update-share", "lock", "write-function",
        # session
        "set", "set-session-characteristics", "prepare", "execute-prepared", "listen",
        "temp-object", "cursor-with-hold", "advisory-lock", "set-config", "session-reset",
        # transactions
        "begin", "begin-serializable", "begin-read-only", "begin-serializable-read-only", "set-transaction",
        "set-transaction-read-only", "commit", "rollback", "commit-and-chain",
        "rollback-and-chain", "savepoint", "prepare-transaction", "finish-prepared", "set-local",
        "set-constraints", "primary-state",
        # whole-string outcomes
        "empty", "parse-error", "nul-byte", "too-deep", "classifier-error", "multi-statement",
        "hint-primary", "hint-replica", "replica-hint-ignored",
        "large-statement",  # over large.py's LARGE_SQL_BYTES: not parsed, sent to the primary
    }
)  # fmt: skip
