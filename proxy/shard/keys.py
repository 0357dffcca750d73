"""Shard key extraction with pglast, and the routing plan of a statement (pure values).

Theory of operation
-------------------
`analyze(sql, groups)` parses a statement once (the result can be cached per prepared statement)
and finds what decides its shard, in this order:

1. a leading comment ``/* tierproxy:shard=NAME */``: the statement goes to that shard (operators);
2. a leading comment ``/* tierproxy:shard_key=42 */`` (text keys may be quoted: ``='acme'``);
3. the statement's own key: ``WHERE key = const``, ``key = $n`` (a `Param`, resolved at Bind
   with the bound values), ``key IN (...)``, ``key = a OR key = b`` (in AND, any one conjunct that
   pins the key is enough, as every row must satisfy it), ``key = ANY(ARRAY[...])``; INSERT ... VALUES (each row's key, one or
   many rows); UPDATE/DELETE by key;
4. the session's key from ``SET tierproxy.shard_key = ...`` (passed to `plan`), which applies to
   statements that have no key of their own;
5. otherwise the statement is keyless: scatter to every shard (`All`), or refused when
   `scatter = "deny"`.

The group of a statement is the table group of the sharded tables it names (tables in no group are
taken to be on every shard). Tables of two groups in one statement are refused (0A000), and so
is a join of sharded tables that is not on the key (their rows need not be on one shard).

`plan(analysis, maps, params, session_key)` turns an analysis into a `Plan`: `One` shard,
`Some` shards (each with its statement text: an INSERT whose rows belong to several shards is
split into one INSERT per shard by deparsing the rows of each), `All` (scatter), `SetKey` (the
session's key changes; answered by the router), `Session` (transaction control and session
statements, the session layer's business) or `Refuse` (SQLSTATE and a message naming why).
Merging rows of `Some`/`All` SELECTs is proxy.shard.gather's job.
"""

from __future__ import annotations

import copy
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

from .catalog import catalog_only
from .maps import Key, KeyTypeError, ShardMap, check_key

__all__ = [
    "All",
    "Analysis",
    "GroupSpec",
    "One",
    "Param",
    "Plan",
    "Refuse",
    "Session",
    "SetKey",
    "TRANSACTION_KINDS",
    "Some",
    "analyze",
    "decode_param",
    "plan",
    "plan_sql",
    "stmt_tables",
    "walk_nodes",
]

FEATURE_NOT_SUPPORTED = "0A000"
SYNTAX_ERROR = "42601"
INVALID_TEXT = "22P02"
NULL_NOT_ALLOWED = "22004"
UNDEFINED_OBJECT = "42704"
UNDEFINED_PARAMETER = "42P02"

SHARD_KEY_SETTING = "tierproxy.shard_key"


@dataclass(frozen=True)
class GroupSpec:
    """What key extraction needs of a table group."""

    name: str
    tables: frozenset[str]  # lower-case, as configured (bare or schema.name)
    key: str  # the key column, lower-case
    key_type: Literal["integer", "text"] = "integer"


@dataclass(frozen=True)
class Param:
    """``$number`` in the statement: the key is the bound value of that parameter (1-based)."""

    number: int


KeyRef = Key | Param | None  # None: SQL NULL (matches no row)


@dataclass(frozen=True)
class One:
    shard: str
    sql: str
    reason: str
    any_shard: bool = False  # no table named: any shard answers (in a transaction: its shard)


@dataclass(frozen=True)
class Some:
    parts: tuple[tuple[str, str], ...]  # (shard, statement text for it), shard order of the map
    reason: str


@dataclass(frozen=True)
class All:
    sql: str
    reason: str
    ddl: bool = False  # DDL goes to every shard whatever `scatter` says


@dataclass(frozen=True)
class SetKey:
    key: Key | None  # None: RESET / SET ... TO DEFAULT


@dataclass(frozen=True)
class Session:
    # "begin", "commit", "rollback", "savepoint", ... (TRANSACTION_KINDS), or "set", "show",
    # "discard", "prepare", ...: the session layer decides
    kind: str
    sql: str = field(default="", compare=False)


@dataclass(frozen=True)
class Refuse:
    sqlstate: str
    message: str


Plan = One | Some | All | SetKey | Session | Refuse


@dataclass(frozen=True)
class Analysis:
    """One statement's routing facts, computed once; `plan` adds maps and bound values."""

    sql: str
    kind: Literal["keyed", "insert", "keyless", "no_table", "ddl", "set_key", "session",
                  "shard_hint", "error"]
    group: str | None = None
    keys: tuple[KeyRef, ...] = ()  # "keyed": the rows it touches have these keys
    row_keys: tuple[KeyRef, ...] = ()  # "insert": each VALUES row's key, in order
    shard: str | None = None  # "shard_hint"
    error: Refuse | None = None
    _stmt: Any = field(default=None, compare=False, repr=False)  # the InsertStmt, for splitting
    key_range: tuple[Key | None, Key | None] | None = None  # "keyless": lo <= key <= hi bounds


# --- leading comments ---------------------------------------------------------------------------

_HINT = re.compile(r"\A\s*/\*\s*tierproxy:(shard|shard_key)\s*=\s*('(?:[^']|'')*'|[^\s*]+)\s*\*/")


def _hint(sql: str) -> tuple[str, str] | None:
    m = _HINT.match(sql)
    if m is None:
        return None
    value = m.group(2)
    if value.startswith("'"):
        value = value[1:-1].replace("''", "'")
    return m.group(1), value


# --- tree helpers -------------------------------------------------------------------------------


def walk_nodes(node: Any) -> Iterator[ast.Node]:
    """Every pglast node in `node` (a node, list or tuple), depth first."""
    if isinstance(node, ast.Node):
        yield node
        for attr in node:
            yield from walk_nodes(getattr(node, attr))
    elif isinstance(node, list | tuple):
        for item in node:
            yield from walk_nodes(item)


def _table_name(rv: ast.RangeVar) -> str:
    return f"{rv.schemaname}.{rv.relname}".lower() if rv.schemaname else rv.relname.lower()


def stmt_tables(stmt: Any) -> list[ast.RangeVar]:
    """Every table the statement names (CTE names excluded)."""
    ctes = {n.ctename.lower() for n in walk_nodes(stmt) if isinstance(n, ast.CommonTableExpr)}
    return [n for n in walk_nodes(stmt) if isinstance(n, ast.RangeVar)
            and not (n.schemaname is None and n.relname.lower() in ctes)]


def _group_of(table: str, groups: Sequence[GroupSpec]) -> GroupSpec | None:
    # "users" in SQL matches a configured "app.users" and "public.users" matches "users": which
    # schema a bare name means depends on search_path, and routing by the key is the safe side.
    bare = table.rpartition(".")[2]
    for g in groups:
        for t in g.tables:
            if t == table or (("." not in t or "." not in table) and t.rpartition(".")[2] == bare):
                return g
    return None


def _is_key_column(node: Any, key: str) -> bool:
    if not isinstance(node, ast.ColumnRef):
        return False
    last = node.fields[-1]
    return isinstance(last, ast.String) and last.sval.lower() == key


def _qualifier(node: ast.ColumnRef) -> str | None:
    if len(node.fields) >= 2 and isinstance(node.fields[-2], ast.String):
        return node.fields[-2].sval.lower()
    return None


class _NotAKey(Exception):
    """The expression is not a constant or parameter we can read a key from."""


def _const_key(node: Any, key_type: str) -> KeyRef:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if isinstance(node, ast.ParamRef):
        return Param(node.number)
    if not isinstance(node, ast.A_Const):
        raise _NotAKey
    if node.isnull:
        return None
    val = node.val
    if isinstance(val, ast.Integer):
        raw: str = str(val.ival)
    elif isinstance(val, ast.Float):
        raw = val.fval
    elif isinstance(val, ast.String):
        raw = val.sval
    else:
        raise _NotAKey
    return _convert(raw, key_type)


def _convert(raw: str, key_type: str) -> Key:
    if key_type == "text":
        return raw
    text = raw.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise KeyTypeError(f"invalid input syntax for shard key of type integer: {raw!r}")
    return check_key(int(text))


def _where_keys(node: Any, key: str, key_type: str,
                aliases: frozenset[str]) -> tuple[KeyRef, ...] | None:
    """The keys a WHERE clause pins, or None when it does not pin the key.

    A qualified column counts only when it names a sharded table of the statement (``p.user_id``
    of a table in no group is not the key)."""
    if node is None:
        return None

    def is_key(n: Any) -> bool:
        if not _is_key_column(n, key):
            return False
        q = _qualifier(n)
        return q is None or q in aliases

    if isinstance(node, ast.BoolExpr):
        op = int(node.boolop)
        if op == 0:  # AND: the first conjunct that pins the key is enough
            for arg in node.args:
                found = _where_keys(arg, key, key_type, aliases)
                if found is not None:
                    return found
            return None
        if op == 1:  # OR: every disjunct must pin the key
            out: list[KeyRef] = []
            for arg in node.args:
                found = _where_keys(arg, key, key_type, aliases)
                if found is None:
                    return None
                out.extend(found)
            return tuple(out)
        return None
    if isinstance(node, ast.A_Expr):
        name = node.name[-1].sval if node.name and isinstance(node.name[-1], ast.String) else ""
        if name != "=":
            return None
        kind = int(node.kind)
        try:
            if kind == 0:  # AEXPR_OP
                if is_key(node.lexpr):
                    return (_const_key(node.rexpr, key_type),)
                if is_key(node.rexpr):
                    return (_const_key(node.lexpr, key_type),)
            elif kind == 6 and is_key(node.lexpr):  # AEXPR_IN
                return tuple(_const_key(item, key_type) for item in node.rexpr)
            elif kind == 1 and is_key(node.lexpr):  # AEXPR_OP_ANY: key = ANY(ARRAY[...])
                arr = node.rexpr
                while isinstance(arr, ast.TypeCast):
                    arr = arr.arg
                if isinstance(arr, ast.A_ArrayExpr):
                    return tuple(_const_key(item, key_type) for item in arr.elements or ())
        except _NotAKey:
            return None
    return None


_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _where_range(node: Any, key: str, key_type: str,
                 aliases: frozenset[str]) -> tuple[Key | None, Key | None] | None:
    """Constant bounds on the key from ``<``, ``<=``, ``>``, ``>=`` and BETWEEN in the WHERE
    clause's AND (strict bounds taken as inclusive: a shard too many is harmless), or None."""
    def is_key(n: Any) -> bool:
        return _is_key_column(n, key) and (_qualifier(n) is None or _qualifier(n) in aliases)

    def const(n: Any) -> Key | None:
        try:
            k = _const_key(n, key_type)
        except (_NotAKey, KeyTypeError):
            return None
        return k if isinstance(k, int | str) else None

    lo: Key | None = None
    hi: Key | None = None
    conjuncts = node.args if isinstance(node, ast.BoolExpr) and int(node.boolop) == 0 else [node]
    for c in conjuncts:
        if not isinstance(c, ast.A_Expr) or not c.name or not isinstance(c.name[-1], ast.String):
            continue
        op, kind = c.name[-1].sval, int(c.kind)
        if kind == 10 and is_key(c.lexpr):  # AEXPR_BETWEEN
            a, b = const(c.rexpr[0]), const(c.rexpr[1])
            if a is not None and b is not None:
                lo = a if lo is None or lo < a else lo  # type: ignore[operator]
                hi = b if hi is None or b < hi else hi  # type: ignore[operator]
            continue
        if kind != 0 or op not in _FLIP:
            continue
        if is_key(c.lexpr):
            value = const(c.rexpr)
        elif is_key(c.rexpr):
            value, op = const(c.lexpr), _FLIP[op]
        else:
            continue
        if value is None:
            continue
        if op in (">", ">="):
            lo = value if lo is None or lo < value else lo  # type: ignore[operator]
        else:
            hi = value if hi is None or value < hi else hi  # type: ignore[operator]
    return None if lo is None and hi is None else (lo, hi)


def _colocated(stmt: Any, grouped: list[ast.RangeVar], key: str) -> bool:
    """Whether every sharded table in the statement is joined to the others on the key."""
    if len(grouped) <= 1:
        return True
    names = [(rv.alias.aliasname if rv.alias else rv.relname).lower() for rv in grouped]
    parent = {n: n for n in names}

    def find(x: str) -> str:
        while parent[x] != x:
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        if a in parent and b in parent:
            parent[find(a)] = find(b)

    for node in walk_nodes(stmt):
        if isinstance(node, ast.A_Expr) and int(node.kind) == 0 and node.name \
                and isinstance(node.name[-1], ast.String) and node.name[-1].sval == "=":
            if _is_key_column(node.lexpr, key) and _is_key_column(node.rexpr, key):
                a, b = _qualifier(node.lexpr), _qualifier(node.rexpr)
                if a and b:
                    union(a, b)
        elif isinstance(node, ast.JoinExpr) and node.usingClause:
            using = {s.sval.lower() for s in node.usingClause if isinstance(s, ast.String)}
            if key in using:
                left = [n for n in walk_nodes(node.larg) if isinstance(n, ast.RangeVar)]
                right = [n for n in walk_nodes(node.rarg) if isinstance(n, ast.RangeVar)]
                for lrv in left:
                    for rrv in right:
                        union((lrv.alias.aliasname if lrv.alias else lrv.relname).lower(),
                              (rrv.alias.aliasname if rrv.alias else rrv.relname).lower())
        elif isinstance(node, ast.SubLink) and int(node.subLinkType) == 2 \
                and _is_key_column(node.testexpr, key) and isinstance(node.subselect, ast.SelectStmt) \
                and len(node.subselect.targetList or ()) == 1 \
                and _is_key_column(node.subselect.targetList[0].val, key):
            # key IN (SELECT key FROM other ...): a semi-join on the key, co-located.
            target = node.subselect.targetList[0].val
            inner_rvs = [n for n in node.subselect.fromClause or () if isinstance(n, ast.RangeVar)]
            inner = _qualifier(target) or (
                (inner_rvs[0].alias.aliasname if inner_rvs[0].alias else inner_rvs[0].relname).lower()
                if len(inner_rvs) == 1 else None)
            outer = _qualifier(node.testexpr)
            if outer is None and len(names) == 2 and inner in names:
                outer = names[1] if names[0] == inner else names[0]
            if inner and outer:
                union(inner, outer)
    return len({find(n) for n in names}) == 1


# --- analysis -----------------------------------------------------------------------------------

_DDL = (ast.CreateStmt, ast.AlterTableStmt, ast.DropStmt, ast.IndexStmt, ast.CreateSeqStmt,
        ast.AlterSeqStmt, ast.ViewStmt, ast.CreateFunctionStmt, ast.CreateSchemaStmt,
        ast.RenameStmt, ast.CommentStmt, ast.GrantStmt, ast.TruncateStmt, ast.CreateTableAsStmt,
        ast.CreateExtensionStmt, ast.CompositeTypeStmt, ast.CreateEnumStmt, ast.DefineStmt,
        ast.CreateTrigStmt, ast.AlterObjectSchemaStmt, ast.AlterOwnerStmt)
# pglast's TransactionStmtKind, in order.
TRANSACTION_KINDS = ("begin", "start", "commit", "rollback", "savepoint", "release", "rollback_to",
                     "prepare_transaction", "commit_prepared", "rollback_prepared")
_SESSION = {
    ast.VariableSetStmt: "set", ast.VariableShowStmt: "show",
    ast.DiscardStmt: "discard", ast.PrepareStmt: "prepare", ast.DeallocateStmt: "deallocate",
    ast.ListenStmt: "listen", ast.UnlistenStmt: "unlisten",
    # EXECUTE runs a statement PREPAREd earlier: the session routes it by that statement.
    ast.ExecuteStmt: "execute",
}
_WRITES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)


def _refuse(sql: str, sqlstate: str, message: str) -> Analysis:
    return Analysis(sql, "error", error=Refuse(sqlstate, message))


def analyze(sql: str, groups: Sequence[GroupSpec], shard_names: Sequence[str] = ()) -> Analysis:
    """Routing facts of one statement (see the module docstring)."""
    hint = _hint(sql)
    if hint is not None and hint[0] == "shard":
        if shard_names and hint[1] not in shard_names:
            return _refuse(sql, UNDEFINED_OBJECT, f"no shard named {hint[1]!r}")
        return Analysis(sql, "shard_hint", shard=hint[1])
    try:
        raw = parse_sql(sql)
    except ParseError as exc:
        return _refuse(sql, SYNTAX_ERROR, str(exc))
    if len(raw) != 1:
        return _refuse(sql, FEATURE_NOT_SUPPORTED, "analyze takes one statement; use plan_sql")
    stmt = raw[0].stmt
    try:
        return _analyze_stmt(sql, stmt, groups, hint)
    except KeyTypeError as exc:
        return _refuse(sql, INVALID_TEXT, str(exc))


def _analyze_stmt(sql: str, stmt: Any, groups: Sequence[GroupSpec],
                  hint: tuple[str, str] | None) -> Analysis:
    if isinstance(stmt, ast.VariableSetStmt) and (stmt.name or "").lower() == SHARD_KEY_SETTING:
        if stmt.args and len(stmt.args) == 1:
            # The group is not known here: the value is kept as written and converted per group.
            val = stmt.args[0]
            if isinstance(val, ast.A_Const) and not val.isnull:
                v = val.val
                raw = str(v.ival) if isinstance(v, ast.Integer) else (
                    v.fval if isinstance(v, ast.Float) else getattr(v, "sval", None))
                if raw is not None:
                    return Analysis(sql, "set_key", keys=(raw,))
            return _refuse(sql, INVALID_TEXT, f"{SHARD_KEY_SETTING} takes one constant")
        return Analysis(sql, "set_key", keys=())
    if isinstance(stmt, ast.TransactionStmt):
        return Analysis(sql, "session", shard=TRANSACTION_KINDS[int(stmt.kind)])
    if isinstance(stmt, ast.ExplainStmt):
        # EXPLAIN (ANALYZE runs the statement) goes where its statement goes; a multi-row INSERT
        # cannot be split under it.
        inner = stmt.query
        if isinstance(inner, ast.InsertStmt) and isinstance(inner.selectStmt, ast.SelectStmt) \
                and len(inner.selectStmt.valuesLists or ()) > 1:
            return _refuse(sql, FEATURE_NOT_SUPPORTED, "EXPLAIN of a multi-row INSERT")
        return _analyze_stmt(sql, inner, groups, hint)
    for cls, kind in _SESSION.items():
        if isinstance(stmt, cls):
            return Analysis(sql, "session", shard=kind)
    if isinstance(stmt, _DDL):
        return Analysis(sql, "ddl")
    tables = stmt_tables(stmt)
    if not tables or catalog_only(tables):  # catalog.py: every shard answers alike
        if hint is not None:  # shard_key comment: the group is resolved by plan
            return Analysis(sql, "keyed", keys=(hint[1],))
        return Analysis(sql, "no_table")
    by_group: dict[str, list[ast.RangeVar]] = {}
    specs: dict[str, GroupSpec] = {}
    for rv in tables:
        g = _group_of(_table_name(rv), groups)
        if g is not None:
            by_group.setdefault(g.name, []).append(rv)
            specs[g.name] = g
    if len(by_group) > 1:
        names = " and ".join(sorted(by_group))
        return _refuse(sql, FEATURE_NOT_SUPPORTED,
                       f"the statement names tables of table groups {names}, which are sharded apart")
    if not by_group:
        if hint is not None:
            return Analysis(sql, "keyed", keys=(hint[1],))
        return Analysis(sql, "keyless")
    (gname, grouped), = by_group.items()
    spec = specs[gname]
    grouped_ids = {id(rv) for rv in grouped}
    for node in walk_nodes(stmt):
        if node is not stmt and isinstance(node, _WRITES) and id(node.relation) in grouped_ids:
            return _refuse(sql, FEATURE_NOT_SUPPORTED,
                           f"a data-modifying WITH on sharded table {_table_name(node.relation)} "
                           "(its rows need not be on the statement's shard; send it on its own)")
    if isinstance(stmt, ast.MergeStmt):
        return _refuse(sql, FEATURE_NOT_SUPPORTED,
                       "MERGE into a sharded table (its source rows are not routed one by one)")
    if isinstance(stmt, ast.CopyStmt) and stmt.is_from:
        return _refuse(sql, FEATURE_NOT_SUPPORTED,
                       "COPY FROM into a sharded table (its rows are not routed one by one; use "
                       "INSERT, or COPY on each shard with /* tierproxy:shard=NAME */)")
    if not _colocated(stmt, grouped, spec.key):
        return _refuse(sql, FEATURE_NOT_SUPPORTED,
                       f"a join of sharded tables of group {gname} not on the shard key "
                       f"{spec.key} (their rows are on different shards)")
    if hint is not None:  # shard_key comment
        return Analysis(sql, "keyed", group=gname, keys=(_convert(hint[1], spec.key_type),))
    if isinstance(stmt, ast.InsertStmt):
        return _analyze_insert(sql, stmt, spec)
    if isinstance(stmt, ast.UpdateStmt):
        for target in stmt.targetList or ():
            if (target.name or "").lower() == spec.key:
                return _refuse(sql, FEATURE_NOT_SUPPORTED,
                               f"UPDATE of the shard key column {spec.key} (the row would "
                               "have to move to another shard)")
    where = getattr(stmt, "whereClause", None)
    if isinstance(stmt, ast.SelectStmt) and int(stmt.op) != 0:
        where = None  # UNION and friends: each branch would need its own key; scatter
    aliases = frozenset((rv.alias.aliasname if rv.alias else rv.relname).lower() for rv in grouped) \
        | frozenset(rv.relname.lower() for rv in grouped)
    found = _where_keys(where, spec.key, spec.key_type, aliases)
    if found is None:
        bounds = _where_range(where, spec.key, spec.key_type, aliases)
        return Analysis(sql, "keyless", group=gname, key_range=bounds)
    return Analysis(sql, "keyed", group=gname, keys=found)


def _analyze_insert(sql: str, stmt: ast.InsertStmt, spec: GroupSpec) -> Analysis:
    if not stmt.cols:
        return _refuse(sql, FEATURE_NOT_SUPPORTED,
                       f"an INSERT into a sharded table must name its columns (the shard key "
                       f"{spec.key} must be found)")
    names = [c.name.lower() for c in stmt.cols]
    if spec.key not in names:
        return _refuse(sql, FEATURE_NOT_SUPPORTED,
                       f"an INSERT into a sharded table must give the shard key {spec.key}")
    sel = stmt.selectStmt
    if not isinstance(sel, ast.SelectStmt) or not sel.valuesLists:
        return _refuse(sql, FEATURE_NOT_SUPPORTED,
                       "INSERT ... SELECT into a sharded table (rows cannot be routed one by one)")
    pos = names.index(spec.key)
    keys: list[KeyRef] = []
    for i, row in enumerate(sel.valuesLists):
        try:
            k = _const_key(row[pos], spec.key_type)
        except _NotAKey:
            return _refuse(sql, FEATURE_NOT_SUPPORTED,
                           f"row {i + 1}: the shard key {spec.key} must be a constant or a parameter")
        keys.append(k)
    return Analysis(sql, "insert", group=spec.name, row_keys=tuple(keys), _stmt=stmt)


# --- parameters ---------------------------------------------------------------------------------

_INT_OIDS = {20: 8, 23: 4, 21: 2}  # int8, int4, int2: binary sizes
_TEXT_OIDS = {25, 1043, 1042, 19, 0, 705}  # text, varchar, bpchar, name, unspecified, unknown


def decode_param(value: bytes | None, fmt: int, type_oid: int, key_type: str) -> Key | None:
    """A bound parameter's value as a key: text or binary format int2/int4/int8 or text."""
    if value is None:
        return None
    if fmt == 0:
        try:
            return _convert(value.decode("utf-8"), key_type)
        except UnicodeDecodeError:
            raise KeyTypeError("shard key parameter is not valid UTF-8") from None
    if fmt != 1:
        raise KeyTypeError(f"unknown parameter format code {fmt}")
    size = _INT_OIDS.get(type_oid)
    if size is None and type_oid == 0 and key_type == "integer" and len(value) in (2, 4, 8):
        size = len(value)
    if size is not None:
        if len(value) != size:
            raise KeyTypeError(f"binary integer parameter of {len(value)} bytes, expected {size}")
        n = {8: ">q", 4: ">i", 2: ">h"}[size]
        num = struct.unpack(n, value)[0]
        return num if key_type == "integer" else str(num)
    if type_oid in _TEXT_OIDS:
        try:
            return _convert(value.decode("utf-8"), key_type)
        except UnicodeDecodeError:
            raise KeyTypeError("shard key parameter is not valid UTF-8") from None
    raise KeyTypeError(f"a binary shard key parameter of type oid {type_oid} is not supported")


# --- planning -----------------------------------------------------------------------------------


def _resolve(ref: KeyRef, params: Sequence[Key | None] | None) -> Key | None:
    if isinstance(ref, Param):
        if params is None or not 1 <= ref.number <= len(params):
            raise LookupError(f"there is no parameter ${ref.number}")
        return params[ref.number - 1]
    return ref


def plan(
    analysis: Analysis,
    maps: Mapping[str, ShardMap],
    specs: Mapping[str, GroupSpec],
    *,
    params: Sequence[Key | None] | None = None,
    session_key: str | None = None,
    scatter: Literal["allow", "deny"] = "allow",
    all_shards: Sequence[str] = (),
) -> Plan:
    """Where `analysis`'s statement runs, given the bound parameter values (already decoded with
    `decode_param`, in order) and the session's `SET tierproxy.shard_key` value (as written)."""
    a = analysis
    if a.kind == "error":
        assert a.error is not None
        return a.error
    if a.kind == "shard_hint":
        assert a.shard is not None
        return One(a.shard, a.sql, "tierproxy:shard comment")
    if a.kind == "set_key":
        return SetKey(str(a.keys[0]) if a.keys else None)
    if a.kind == "session":
        return Session(a.shard or "", a.sql)
    if a.kind == "ddl":
        return All(a.sql, "DDL goes to every shard", ddl=True)
    group = a.group
    if group is None and (session_key is not None or a.kind == "keyed") and len(maps) == 1:
        group = next(iter(maps))
    if a.kind == "keyed" and group is None:
        return Refuse(FEATURE_NOT_SUPPORTED,
                      "a tierproxy:shard_key comment on a statement that names no sharded table "
                      "needs exactly one table group (use tierproxy:shard=NAME)")
    try:
        if a.kind == "insert":
            return _plan_insert(a, maps[group or ""], params)
        if a.kind == "keyed":
            if a.group is None:  # the comment's key, as written: convert for the group
                a = Analysis(a.sql, "keyed", group, (_convert(str(a.keys[0]), specs[group or ""].key_type),))
                return _plan_keys(a, maps[group or ""], params, "tierproxy:shard_key comment")
            return _plan_keys(a, maps[group or ""], params, "shard key in the statement")
        if session_key is not None and group is not None:
            key = _convert(session_key, specs[group].key_type)
            return One(maps[group].shard_for(key), a.sql, f"{SHARD_KEY_SETTING} of the session")
    except KeyTypeError as exc:
        return Refuse(INVALID_TEXT, str(exc))
    except LookupError as exc:
        return Refuse(UNDEFINED_PARAMETER, str(exc))
    if a.kind == "keyless" and a.key_range is not None and group is not None:
        between = getattr(maps[group], "shards_between", None)
        shards = between(*a.key_range) if between is not None else None
        if shards is not None and len(shards) == 1:
            return One(shards[0], a.sql, "key range within one shard's range")
        if shards is not None and 1 < len(shards) < len(maps[group].shards):
            return Some(tuple((sh, a.sql) for sh in shards), "key range over some shards' ranges")
        if shards == ():
            return One(maps[group].shards[0], a.sql, "an empty key range: any shard answers")
    if a.kind == "no_table":
        shard = all_shards[0] if all_shards else next(iter(maps.values())).shards[0]
        return One(shard, a.sql, "the statement names no table", any_shard=True)
    if scatter == "deny":
        return Refuse(FEATURE_NOT_SUPPORTED,
                      "the statement has no shard key and scatter is \"deny\" (give the key "
                      f"in WHERE, {SHARD_KEY_SETTING} or a /* tierproxy:shard_key=... */ comment)")
    return All(a.sql, "no shard key")


def _plan_keys(a: Analysis, m: ShardMap, params: Sequence[Key | None] | None, why: str) -> Plan:
    shards: list[str] = []
    for ref in a.keys:
        key = _resolve(ref, params)
        if key is None:
            continue  # key = NULL matches no row
        shard = m.shard_for(key)
        if shard not in shards:
            shards.append(shard)
    if not shards:
        return One(m.shards[0], a.sql, "the key is NULL: no row matches, any shard answers")
    if len(shards) == 1:
        return One(shards[0], a.sql, why)
    order = {s: i for i, s in enumerate(m.shards)}
    shards.sort(key=lambda s: order.get(s, len(order)))
    return Some(tuple((s, a.sql) for s in shards), f"{why}: keys on {len(shards)} shards")


def _plan_insert(a: Analysis, m: ShardMap, params: Sequence[Key | None] | None) -> Plan:
    rows: dict[str, list[int]] = {}
    for i, ref in enumerate(a.row_keys):
        key = _resolve(ref, params)
        if key is None:
            return Refuse(NULL_NOT_ALLOWED, f"row {i + 1}: the shard key is NULL")
        rows.setdefault(m.shard_for(key), []).append(i)
    if len(rows) == 1:
        (shard,) = rows
        return One(shard, a.sql, "INSERT rows of one shard")
    if any(isinstance(n, ast.ParamRef) for n in walk_nodes(a._stmt)):
        return Refuse(FEATURE_NOT_SUPPORTED,
                      "a multi-row INSERT with parameters whose rows belong to different shards "
                      "(send one INSERT per shard, or inline the values)")
    order = {s: i for i, s in enumerate(m.shards)}
    parts = []
    for shard in sorted(rows, key=lambda s: order.get(s, len(order))):
        stmt = copy.deepcopy(a._stmt)
        stmt.selectStmt.valuesLists = tuple(stmt.selectStmt.valuesLists[i] for i in rows[shard])
        parts.append((shard, RawStream()(stmt)))
    return Some(tuple(parts), f"INSERT rows split over {len(parts)} shards")


def plan_sql(
    sql: str,
    groups: Sequence[GroupSpec],
    maps: Mapping[str, ShardMap],
    **kwargs: Any,
) -> Plan:
    """Plan a simple-protocol query string, which may hold several statements: they must all
    run on one shard (or all be session statements), else 0A000."""
    try:
        raw = parse_sql(sql)
    except ParseError as exc:
        return Refuse(SYNTAX_ERROR, str(exc))
    specs = {g.name: g for g in groups}
    shard_names = kwargs.get("all_shards", ())
    if len(raw) <= 1:
        return plan(analyze(sql, groups, shard_names), maps, specs, **kwargs)
    plans = []
    encoded = sql.encode("utf-8")  # pglast's locations are byte offsets
    for i, r in enumerate(raw):
        start = r.stmt_location
        end = start + r.stmt_len if r.stmt_len else len(encoded)
        text = encoded[start:end].decode("utf-8")
        if i == 0 and _hint(sql) is not None:
            text = sql[: _HINT.match(sql).end()] + " " + text  # type: ignore[union-attr]
        plans.append(plan(analyze(text, groups, shard_names), maps, specs, **kwargs))
    for p in plans:
        if isinstance(p, Refuse):
            return p
    # Statements naming no table (any shard) and session statements go along with the others.
    flexible = [p for p in plans if isinstance(p, One) and p.any_shard]
    singles = {p.shard for p in plans if isinstance(p, One) and not p.any_shard}
    scatters = [p for p in plans if isinstance(p, All)]
    others = [p for p in plans if not isinstance(p, One | Session | All)]
    if not others and not scatters and len(singles) <= 1:
        if singles:
            return One(singles.pop(), sql, "every statement on one shard")
        if flexible:
            return One(flexible[0].shard, sql, "no statement names a table", any_shard=True)
        return Session("multi", sql)
    if not others and not singles and scatters:
        return All(sql, "every statement goes to every shard", ddl=all(p.ddl for p in scatters))
    return Refuse(FEATURE_NOT_SUPPORTED,
                  "a query string whose statements need different shards (send them one by one)")
