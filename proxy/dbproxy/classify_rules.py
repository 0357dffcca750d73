"""Per-statement rules: one parse-tree statement -> (Decision, votes in a multi-statement string).

`classify_statement` looks the statement's node type up in `_STATEMENT_RULES`; a type not in the
table is a write. The rules read facts gathered in one iterative walk over the statement's tree
(`_Facts`). The tree is pglast's JSON form, `{"NodeType": {fields}}`: about six times faster to
get than pglast's Python node objects, and this module only needs to look, not to deparse.
The routing policy itself is described in classify.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .classify_functions import (
    CATALOG_FUNCTIONS,
    CATALOG_TYPES,
    PRIMARY_STATE_FUNCTIONS,
    PRIMARY_STATE_RELATIONS,
    SESSION_PIN_FUNCTIONS,
    SESSION_RESET_FUNCTIONS,
)
from .classify_types import Decision, Reason, Target

__all__ = ["Part", "classify_statement"]

# A statement's Decision, and whether it votes on the target of a multi-statement string (the
# statements that only act inside the current transaction, such as COMMIT or SET LOCAL, do not).
Part = tuple[Decision, bool]


# -- facts from one walk over a statement's tree -----------------------------------------------

_DML_NODES = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})


class _Facts:
    __slots__ = ("catalog", "into", "locking", "nested_write", "pin_call", "primary_state", "reset_call",
                 "write_call")  # fmt: skip

    def __init__(self) -> None:
        self.pin_call = ""  # the detail of the first pinning call: "advisory-lock"/"set-config"
        self.write_call = self.reset_call = False
        self.nested_write = self.locking = False
        self.catalog = False  # reads the system catalogs (see Decision.reads_catalog)
        self.primary_state = False  # reads state only the primary has (PRIMARY_STATE_*)
        self.into: dict[str, Any] | None = None  # SELECT INTO's IntoClause


def _gather(node: Any, write_functions: frozenset[str]) -> _Facts:
    """One iterative walk (deep expressions must not hit Python's recursion limit)."""
    facts = _Facts()
    stack = [node]
    while stack:
        item = stack.pop()
        if type(item) is list:
            stack.extend(item)
            continue
        if type(item) is not dict:
            continue
        for key, value in item.items():
            if key == "FuncCall":
                _note_call(value, write_functions, facts)
            elif key in _DML_NODES:
                facts.nested_write = True
            elif key == "SelectStmt":
                if value.get("lockingClause"):
                    facts.locking = True
                if "intoClause" in value:
                    facts.into = value["intoClause"]
            elif key == "RangeVar":
                _note_relation(value, facts)
            elif key == "TypeCast":
                names = (value.get("typeName") or {}).get("names", ())
                if names and names[-1].get("String", {}).get("sval", "").lower() in CATALOG_TYPES:
                    facts.catalog = True
            if type(value) is dict or type(value) is list:
                stack.append(value)
    return facts


def _note_call(call: dict[str, Any], write_functions: frozenset[str], facts: _Facts) -> None:
    names = [part.get("String", {}).get("sval", "").lower() for part in call.get("funcname", ())]
    bare = names[-1] if names else ""
    if bare in write_functions or ".".join(names) in write_functions:
        facts.write_call = True
    if bare in PRIMARY_STATE_FUNCTIONS:
        facts.primary_state = True
    elif _is_catalog_function(names, bare):
        facts.catalog = True
    if bare in SESSION_PIN_FUNCTIONS:
        facts.pin_call = facts.pin_call or "advisory-lock"
    elif bare == "set_config":
        # set_config(name, value, is_local): only a constant `true` keeps it transaction-local.
        args = call.get("args", ())
        is_local = len(args) == 3 and args[2].get("A_Const", {}).get("boolval", {}).get("boolval")
        if is_local is not True:
            facts.pin_call = facts.pin_call or "set-config"
    elif bare in SESSION_RESET_FUNCTIONS:
        facts.reset_call = True


def _is_catalog_function(names: list[str], bare: str) -> bool:
    return (
        bare in CATALOG_FUNCTIONS
        or (len(names) > 1 and names[-2] == "pg_catalog")
        or bare.startswith(("pg_get_", "to_reg"))
        or bare.endswith("_is_visible")
        or (bare.startswith("has_") and bare.endswith("_privilege"))
    )


def _note_relation(rangevar: dict[str, Any], facts: _Facts) -> None:
    # Unqualified pg_* names resolve to pg_catalog, which is searched first unless the
    # search_path names it later: a user table called pg_something is taken as a catalog too
    # (the safe side: it only narrows which replicas may answer).
    name = rangevar.get("relname", "").lower()
    if name in PRIMARY_STATE_RELATIONS or name.startswith("pg_stat_progress_"):
        facts.primary_state = True
    elif name.startswith("pg_") or rangevar.get("schemaname", "").lower() in _CATALOG_SCHEMAS:
        facts.catalog = True


_CATALOG_SCHEMAS = frozenset({"pg_catalog", "information_schema"})


def _is_temp(rangevar: dict[str, Any] | None) -> bool:
    if not rangevar:
        return False
    return rangevar.get("relpersistence") == "t" or rangevar.get("schemaname", "").startswith(
        "pg_temp"
    )


# -- per-statement rules -----------------------------------------------------------------------

_Rule = Callable[[dict[str, Any], frozenset[str]], Part]


def _d(target: Target, reason: Reason, detail: str, **flags: bool) -> Decision:
    return Decision(target, reason, detail=detail, **flags)


_P, _R = Target.PRIMARY, Target.REPLICA


def _query_decision(node: dict[str, Any], wf: frozenset[str], read_detail: str) -> Decision:
    """A statement that runs a query: a read unless its tree says otherwise, strongest first."""
    facts = _gather(node, wf)
    into = facts.into
    if facts.pin_call:
        return _d(_P, Reason.SESSION, facts.pin_call, pins_session=True)
    if into is not None and _is_temp(into.get("rel")):
        return _d(_P, Reason.SESSION, "temp-object", pins_session=True)
    if into is not None:
        return _d(_P, Reason.WRITE, "select-into", writes_catalog=True)
    if facts.nested_write:
        return _d(_P, Reason.WRITE, "writing-cte")
    if facts.locking:
        return _d(_P, Reason.LOCKING, "for-update-share")
    if facts.write_call:
        return _d(_P, Reason.VOLATILE_FUNCTION, "write-function")
    if facts.primary_state:
        return _d(_P, Reason.PRIMARY_STATE, "primary-state")
    if facts.reset_call:
        return _d(_R, Reason.SESSION, "session-reset", reads_catalog=facts.catalog)
    return _d(_R, Reason.READ, read_detail, reads_catalog=facts.catalog)


def _select(node: dict[str, Any], wf: frozenset[str]) -> Part:
    return _query_decision(node, wf, "select"), True


def _dml(detail: str) -> _Rule:
    # CALL runs a procedure, which may run DDL: it counts as a catalog change.
    ddl = detail == "call"

    def rule(node: dict[str, Any], wf: frozenset[str]) -> Part:
        pins = _gather(node, wf).pin_call
        return _d(_P, Reason.WRITE, detail, pins_session=bool(pins), writes_catalog=ddl), True

    return rule


def _fixed(decision: Decision, votes: bool = True) -> _Rule:
    return lambda node, wf: (decision, votes)


def _explain(node: dict[str, Any], wf: frozenset[str]) -> Part:
    body = node["ExplainStmt"]
    query = body.get("query", {})
    analyze = any(
        opt.get("DefElem", {}).get("defname") == "analyze" and _truthy(opt["DefElem"].get("arg"))
        for opt in body.get("options", ())
    )
    if analyze or "ExecuteStmt" in query:
        # EXPLAIN ANALYZE runs the statement; EXPLAIN EXECUTE needs the prepared statement.
        return classify_statement(query, wf)
    return _d(_R, Reason.READ, "explain"), True


def _truthy(arg: dict[str, Any] | None) -> bool:
    """A DefElem boolean as PostgreSQL's defGetBoolean reads it; anything unclear is true."""
    if arg is None:
        return True
    if "String" in arg:
        return arg["String"].get("sval", "").lower() not in ("false", "off", "no", "0", "f", "n")
    if "Integer" in arg:
        return arg["Integer"].get("ival", 0) != 0
    if "Boolean" in arg:
        return bool(arg["Boolean"].get("boolval", False))
    return True


def _copy(node: dict[str, Any], wf: frozenset[str]) -> Part:
    body = node["CopyStmt"]
    if body.get("is_from"):
        return _d(_P, Reason.WRITE, "copy-from"), True
    if body.get("filename") or body.get("is_program"):
        # Writes a file, or runs a program, on the server: a side effect the user means for
        # the primary, not for whichever replica is least loaded.
        return _d(_P, Reason.WRITE, "copy-to-server-file"), True
    return _query_decision(node, wf, "copy-to"), True


def _declare(node: dict[str, Any], wf: frozenset[str]) -> Part:
    cursor_opt_hold = 0x0020  # parsenodes.h CURSOR_OPT_HOLD
    if node["DeclareCursorStmt"].get("options", 0) & cursor_opt_hold:
        return _d(_P, Reason.SESSION, "cursor-with-hold", pins_session=True), True
    return _query_decision(node, wf, "declare-cursor"), True


def _temp_capable(field: str, *path: str) -> _Rule:
    """CREATE [TEMP] TABLE/VIEW/SEQUENCE/TABLE AS: a temporary relation pins the session."""

    def rule(node: dict[str, Any], wf: frozenset[str]) -> Part:
        (body,) = node.values()
        rel = body.get(field) or {}
        for step in path:
            rel = rel.get(step) or {}
        if _is_temp(rel):
            return _d(_P, Reason.SESSION, "temp-object", pins_session=True), True
        detail = "create-table-as" if "CreateTableAsStmt" in node else f"stmt:{next(iter(node))}"
        return _d(_P, Reason.WRITE, detail, pins_session=bool(_gather(node, wf).pin_call),
                  writes_catalog=True), True  # fmt: skip

    return rule


def _variable_set(node: dict[str, Any], wf: frozenset[str]) -> Part:
    body = node["VariableSetStmt"]
    kind, name = body.get("kind"), body.get("name")
    if kind == "VAR_SET_MULTI" and name == "TRANSACTION":
        options = _transaction_options(body.get("args", ()))
        if options.get("transaction_read_only") and options.get("transaction_isolation") != (
            "serializable"
        ):
            return _d(_R, Reason.TRANSACTION_CONTROL, "set-transaction-read-only",
                      read_only_transaction=True), False  # fmt: skip
        return _d(_P, Reason.TRANSACTION_CONTROL, "set-transaction"), True
    if kind == "VAR_SET_MULTI" and name == "SESSION CHARACTERISTICS":
        return _d(_P, Reason.SESSION, "set-session-characteristics", pins_session=True), True
    if kind in ("VAR_RESET", "VAR_RESET_ALL", "VAR_SET_DEFAULT") and not body.get("is_local"):
        return _d(_R, Reason.SESSION, "session-reset"), True
    if body.get("is_local"):
        return _d(_P, Reason.TRANSACTION_CONTROL, "set-local"), False
    return _d(_P, Reason.SESSION, "set", pins_session=True), True


def _transaction_options(options: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """transaction_read_only -> bool, transaction_isolation -> str; the last one wins."""
    found: dict[str, Any] = {}
    for option in options:
        elem = option.get("DefElem", {})
        const = (elem.get("arg") or {}).get("A_Const", {})
        if elem.get("defname") == "transaction_read_only":
            found["transaction_read_only"] = const.get("ival", {}).get("ival", 0) == 1
        elif elem.get("defname") == "transaction_isolation":
            found["transaction_isolation"] = const.get("sval", {}).get("sval", "")
    return found


def _transaction(node: dict[str, Any], wf: frozenset[str]) -> Part:
    body = node["TransactionStmt"]
    kind = body.get("kind")
    tc = Reason.TRANSACTION_CONTROL
    if kind in ("TRANS_STMT_BEGIN", "TRANS_STMT_START"):
        options = _transaction_options(body.get("options", ()))
        if not options.get("transaction_read_only"):
            # "begin-serializable": a later SET TRANSACTION READ ONLY cannot send it to a standby.
            detail = "begin-serializable" if options.get("transaction_isolation") == "serializable" else "begin"
            return _d(_P, tc, detail, begins_transaction=True), True
        if options.get("transaction_isolation") == "serializable":
            # "cannot use serializable mode in a hot standby" (SQLSTATE 0A000).
            return _d(_P, tc, "begin-serializable-read-only", begins_transaction=True,
                      read_only_transaction=True), True  # fmt: skip
        return _d(_R, tc, "begin-read-only", begins_transaction=True,
                  read_only_transaction=True), True  # fmt: skip
    if kind in ("TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK"):
        word = "commit" if kind == "TRANS_STMT_COMMIT" else "rollback"
        if body.get("chain"):
            return _d(_P, tc, f"{word}-and-chain", ends_transaction=True,
                      begins_transaction=True), False  # fmt: skip
        return _d(_P, tc, word, ends_transaction=True), False
    if kind == "TRANS_STMT_PREPARE":
        return _d(_P, tc, "prepare-transaction", ends_transaction=True), False
    if kind in ("TRANS_STMT_COMMIT_PREPARED", "TRANS_STMT_ROLLBACK_PREPARED"):
        # Runs outside any transaction block and finishes a two-phase commit on the primary. The
        # router counts COMMIT PREPARED as a write (read-your-writes); what the prepared
        # transaction did is unknown here, so it may have changed the catalogs.
        return _d(_P, tc, "finish-prepared", writes_catalog=True), True
    return _d(_P, tc, "savepoint"), False


_SESSION_RESET = _d(_R, Reason.SESSION, "session-reset")

_STATEMENT_RULES: dict[str, _Rule] = {
    "SelectStmt": _select,
    "VariableShowStmt": _fixed(_d(_R, Reason.READ, "show")),
    "ExplainStmt": _explain,
    "CopyStmt": _copy,
    "DeclareCursorStmt": _declare,
    "FetchStmt": _fixed(_d(_R, Reason.READ, "fetch")),
    "InsertStmt": _dml("insert"),
    "UpdateStmt": _dml("update"),
    "DeleteStmt": _dml("delete"),
    "MergeStmt": _dml("merge"),
    "CallStmt": _dml("call"),
    "DoStmt": _fixed(_d(_P, Reason.WRITE, "do", writes_catalog=True)),
    "NotifyStmt": _fixed(_d(_P, Reason.WRITE, "notify")),
    "LockStmt": _fixed(_d(_P, Reason.LOCKING, "lock")),
    "CreateStmt": _temp_capable("relation"),
    "ViewStmt": _temp_capable("view"),
    "CreateSeqStmt": _temp_capable("sequence"),
    "CreateTableAsStmt": _temp_capable("into", "rel"),
    "VariableSetStmt": _variable_set,
    "TransactionStmt": _transaction,
    "ConstraintsSetStmt": _fixed(_d(_P, Reason.TRANSACTION_CONTROL, "set-constraints"), False),
    "PrepareStmt": _fixed(_d(_P, Reason.SESSION, "prepare", pins_session=True)),
    "ExecuteStmt": _fixed(_d(_P, Reason.SESSION, "execute-prepared")),
    "ListenStmt": _fixed(_d(_P, Reason.SESSION, "listen", pins_session=True)),
    "UnlistenStmt": _fixed(_SESSION_RESET),
    "DeallocateStmt": _fixed(_SESSION_RESET),
    "DiscardStmt": _fixed(_SESSION_RESET),
    "ClosePortalStmt": _fixed(_SESSION_RESET),
}


def classify_statement(node: dict[str, Any], wf: frozenset[str]) -> Part:
    kind = next(iter(node))
    rule = _STATEMENT_RULES.get(kind)
    if rule is not None:
        return rule(node, wf)
    # DDL, GRANT, VACUUM, ANALYZE, CLUSTER, REFRESH, COMMENT, TRUNCATE, CHECKPOINT, ...
    return _d(_P, Reason.WRITE, f"stmt:{kind}", pins_session=bool(_gather(node, wf).pin_call),
              writes_catalog=kind not in _DATA_ONLY), True  # fmt: skip


# Utility statements that change data or storage but no definition a catalog read would show.
_DATA_ONLY = frozenset({
    "TruncateStmt", "VacuumStmt", "CheckPointStmt", "ClusterStmt", "ReindexStmt", "RefreshMatViewStmt",
    "LoadStmt",
})  # fmt: skip
