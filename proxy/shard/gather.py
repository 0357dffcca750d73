"""Scatter/gather: what each shard runs for a multi-shard SELECT, and merging the rows (pure).

Theory of operation
-------------------
`plan_gather(sql)` looks at a SELECT that goes to several shards (keyless, or an IN list
spanning shards) and returns a `GatherPlan` (the statement every shard runs, and how to merge)
or a `Refuse` (0A000, naming why) when the answer could not be merged correctly:

* Plain rows: each shard runs the statement; with ORDER BY the merged rows are sorted by the
  same keys (ASC/DESC, NULLS FIRST/LAST with PostgreSQL's defaults: NULLs are larger than any
  value); with LIMIT/OFFSET each shard runs ``LIMIT limit + offset`` and no OFFSET, and the
  OFFSET/LIMIT are applied after the merge. A sort key that is not an output column is added as
  a hidden trailing column and removed after the merge.
* Aggregates, with or without GROUP BY: COUNT (summed), SUM (summed exactly: integers, numeric
  in Decimal; float sums in float8, so their last digits may differ from one server's sum, as the
  order of additions differs), MIN/MAX (compared by type), AVG (each shard runs SUM and COUNT,
  recombined and printed as numeric_div prints it). Groups from the shards with equal GROUP BY
  values are combined; ORDER BY and LIMIT/OFFSET then apply to the combined rows (the shards
  return every group). HAVING is applied to the combined groups: comparisons of aggregates,
  GROUP BY columns and constants with AND/OR/NOT (three-valued), its aggregates fetched hidden.
* Refused: DISTINCT, DISTINCT ON, window functions, other HAVING conditions, GROUPING SETS/
  ROLLUP/CUBE, UNION/INTERSECT/EXCEPT, FETCH ... WITH TIES, aggregates other than the five above
  (and any aggregate with DISTINCT or WITHIN GROUP), expressions over aggregates, subqueries
  with aggregates/GROUP BY/DISTINCT/LIMIT/window functions, ORDER BY ... USING. Ordering text
  (or MIN/MAX of text) needs the "C" collation (``COLLATE "C"`` in the statement, or
  ``merge(..., c_collation=True)`` when the shards' databases use a code-point collation),
  because the gatherer orders text by code point. Joins of shards of different groups are
  refused earlier, by keys.analyze.

`merge(plan, columns, shard_rows, params)` takes the shards' RowDescription columns (name, type
OID) and text rows and returns the client's columns and rows, or a `Refuse`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any, Literal

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

from .keys import Param, Refuse, walk_nodes
from .values import (
    FLOAT4,
    FLOAT8,
    INT2,
    INT4,
    INT8,
    NUMERIC,
    TEXT_OIDS,
    Unorderable,
    float_text,
    group_key,
    numeric_avg_text,
    parse_numeric,
    sort_key,
)

__all__ = ["GatherPlan", "Merged", "SortKey", "Target", "merge", "merge_command_tags", "plan_gather", "window"]

NOT_SUPPORTED = "0A000"

# Built-in aggregates: any of these in a scatter query makes it an aggregate query. User-defined
# aggregates cannot be told from functions by their name and are not detected (docs/shard.md).
_AGGREGATES = frozenset("""
    count sum min max avg array_agg string_agg json_agg jsonb_agg json_object_agg
    jsonb_object_agg xmlagg bool_and bool_or every bit_and bit_or bit_xor stddev stddev_pop
    stddev_samp variance var_pop var_samp corr covar_pop covar_samp regr_avgx regr_avgy
    regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy mode
    percentile_cont percentile_disc rank dense_rank percent_rank cume_dist range_agg
    range_intersect_agg any_value json_agg_strict json_objectagg json_arrayagg
""".split())
_MERGEABLE = frozenset({"count", "sum", "min", "max", "avg"})
_C_COLLATIONS = frozenset({"c", "posix"})
_COMPARISONS = {"=": lambda c: c == 0, "<>": lambda c: c != 0, "!=": lambda c: c != 0,
                "<": lambda c: c < 0, "<=": lambda c: c <= 0, ">": lambda c: c > 0,
                ">=": lambda c: c >= 0}


@dataclass(frozen=True)
class SortKey:
    column: int  # position in the shard row
    descending: bool
    nulls_first: bool
    c_collation: bool  # COLLATE "C" in the statement


@dataclass(frozen=True)
class Target:
    kind: Literal["group", "count", "sum", "min", "max", "avg"]
    column: int  # position in the shard row (avg: its SUM)
    count_column: int | None = None  # avg: its hidden COUNT
    name: str = ""  # output column name of an avg


@dataclass(frozen=True)
class GatherPlan:
    sql: str  # the statement each shard runs
    hidden: int  # trailing columns of the shard rows the client does not see
    sort: tuple[SortKey, ...]
    limit: int | Param | None
    offset: int | Param | None
    aggregate: bool
    targets: tuple[Target, ...] = ()  # aggregate: every column of the shard row but hidden ones
    group_cols: tuple[int, ...] = ()
    having: Any = None  # HAVING as a tree of ("and"|"or", [..]), ("not", x), ("cmp", op, l, r)


@dataclass(frozen=True)
class Merged:
    columns: tuple[tuple[str, int], ...]  # (name, type OID)
    rows: list[tuple[str | None, ...]]

    @property
    def tag(self) -> str:
        return f"SELECT {len(self.rows)}"


def _refuse(why: str) -> Refuse:
    return Refuse(NOT_SUPPORTED, f"cannot merge across shards: {why}")


def _text(node: Any) -> str:
    return RawStream()(node)


def _fname(fc: ast.FuncCall) -> str:
    return fc.funcname[-1].sval.lower()


def _is_agg(node: Any) -> bool:
    return isinstance(node, ast.FuncCall) and node.over is None and (
        _fname(node) in _AGGREGATES or bool(node.agg_star or node.agg_distinct or node.agg_order
                                            or node.agg_filter or node.agg_within_group))


def _check_subqueries(stmt: ast.SelectStmt) -> Refuse | None:
    for node in walk_nodes(stmt):
        if isinstance(node, ast.FuncCall) and node.over is not None:
            return _refuse(f"window function {_fname(node)}() (its frame spans the shards)")
        if isinstance(node, ast.SelectStmt) and node is not stmt:
            if node.groupClause or node.distinctClause or node.limitCount is not None \
                    or node.limitOffset is not None or int(node.op) != 0 or node.havingClause \
                    or any(_is_agg(n) for n in walk_nodes(node)):
                return _refuse("a subquery with aggregates, GROUP BY, DISTINCT, LIMIT or a set "
                               "operation (each shard would compute it on its own rows)")
    return None


def _limit_value(node: Any, what: str) -> int | Param | None | Refuse:
    if node is None:
        return None
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if isinstance(node, ast.A_Const):
        if node.isnull:
            return None  # LIMIT ALL / LIMIT NULL
        if isinstance(node.val, ast.Integer) and node.val.ival >= 0:
            return node.val.ival
    if isinstance(node, ast.ParamRef):
        return Param(node.number)
    return _refuse(f"{what} must be a non-negative constant or a parameter")


def _limit_node(limit: int | Param, offset: int | Param | None) -> Any:
    def term(v: int | Param) -> Any:
        if isinstance(v, Param):
            return ast.TypeCast(arg=ast.ParamRef(number=v.number),
                                typeName=ast.TypeName(names=(ast.String(sval="int8"),), typemod=-1))
        return ast.A_Const(isnull=False, val=ast.Integer(ival=v))

    if offset is None or offset == 0:
        return term(limit)
    if isinstance(limit, int) and isinstance(offset, int):
        return term(limit + offset)
    return ast.A_Expr(kind=0, name=(ast.String(sval="+"),), lexpr=term(limit), rexpr=term(offset))


def plan_gather(sql: str) -> GatherPlan | Refuse:
    """How to run `sql` (one SELECT) on several shards and merge the answers."""
    try:
        raw = parse_sql(sql)
    except ParseError as exc:
        return Refuse("42601", str(exc))
    if len(raw) != 1 or not isinstance(raw[0].stmt, ast.SelectStmt):
        return _refuse("only a single SELECT can be gathered")
    stmt = copy.deepcopy(raw[0].stmt)
    if int(stmt.op) != 0:
        return _refuse("UNION, INTERSECT and EXCEPT")
    if stmt.valuesLists:
        return _refuse("VALUES lists")
    if stmt.distinctClause:
        return _refuse("DISTINCT (the same row may come from several shards)")
    if stmt.intoClause is not None:
        return _refuse("SELECT INTO")
    if int(stmt.limitOption) == 2:
        return _refuse("FETCH ... WITH TIES")
    bad = _check_subqueries(stmt)
    if bad is not None:
        return bad
    limit = _limit_value(stmt.limitCount, "LIMIT")
    offset = _limit_value(stmt.limitOffset, "OFFSET")
    if isinstance(limit, Refuse):
        return limit
    if isinstance(offset, Refuse):
        return offset
    targets = list(stmt.targetList or ())
    aggregate = bool(stmt.groupClause) or any(
        _is_agg(n) for n in walk_nodes(list(targets) + [s.node for s in stmt.sortClause or ()]))
    if aggregate:
        return _plan_aggregate(stmt, targets, limit, offset)
    return _plan_rows(stmt, targets, limit, offset)


def _strip_collate(node: Any) -> tuple[Any, bool]:
    if isinstance(node, ast.CollateClause):
        name = node.collname[-1].sval.lower() if node.collname else ""
        return node.arg, name in _C_COLLATIONS
    return node, False


def _find_target(node: Any, targets: list[ast.ResTarget]) -> int | None:
    """The output position ORDER BY / GROUP BY `node` names, or None (then it is added hidden)."""
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer):
        return node.val.ival - 1
    star_seen = False
    want = _text(node)
    for i, t in enumerate(targets):
        if isinstance(t.val, ast.ColumnRef) and isinstance(t.val.fields[-1], ast.A_Star):
            star_seen = True
            continue
        named = isinstance(node, ast.ColumnRef) and len(node.fields) == 1 and \
            isinstance(node.fields[0], ast.String) and t.name is not None and \
            node.fields[0].sval.lower() == t.name.lower()
        if named or _text(t.val) == want:
            return None if star_seen else i
    return None


def _sort_keys(stmt: ast.SelectStmt, targets: list[ast.ResTarget],
               add_hidden: Any) -> tuple[SortKey, ...] | Refuse:
    keys = []
    for sb in stmt.sortClause or ():
        direction = int(sb.sortby_dir)
        if direction == 3:
            return _refuse("ORDER BY ... USING")
        node, c_coll = _strip_collate(sb.node)
        pos = _find_target(node, targets)
        if pos is not None and not 0 <= pos < len(targets):
            return _refuse(f"ORDER BY position {pos + 1} is not in the select list")
        if pos is None:
            pos = add_hidden(copy.deepcopy(sb.node))
            if isinstance(pos, Refuse):
                return pos
        desc = direction == 2
        nulls = int(sb.sortby_nulls)
        nulls_first = desc if nulls == 0 else nulls == 1
        keys.append(SortKey(pos, desc, nulls_first, c_coll))
    return tuple(keys)


def _plan_rows(stmt: ast.SelectStmt, targets: list[ast.ResTarget], limit: Any,
               offset: Any) -> GatherPlan | Refuse:
    hidden: list[ast.ResTarget] = []

    def add_hidden(node: Any) -> int:
        hidden.append(ast.ResTarget(val=node))
        return ~(len(hidden) - 1)  # a marker: hidden column i, placed once their number is known

    sort = _sort_keys(stmt, targets, add_hidden)
    if isinstance(sort, Refuse):
        return sort
    # Hidden columns are the last ones of the row, whatever a * expands to: count from the end.
    n = len(hidden)
    sort = tuple(k if k.column >= 0 else replace(k, column=-(n - ~k.column)) for k in sort)
    stmt.targetList = tuple(targets + hidden)
    if limit is not None:
        stmt.limitCount = _limit_node(limit, offset)
    stmt.limitOffset = None  # OFFSET applies after the merge
    return GatherPlan(_text(stmt), n, sort, limit, offset, aggregate=False)


def _plan_aggregate(stmt: ast.SelectStmt, targets: list[ast.ResTarget], limit: Any,
                    offset: Any) -> GatherPlan | Refuse:
    if any(isinstance(g, ast.GroupingSet) for g in stmt.groupClause or ()):
        return _refuse("GROUPING SETS, ROLLUP and CUBE")
    width = len(targets)
    hidden: list[ast.ResTarget] = []
    plan_targets: list[Target] = []
    shard_targets: list[ast.ResTarget] = []
    group_texts: dict[str, int] = {}
    group_cols: list[int] = []

    def hidden_col(node: Any) -> int:
        hidden.append(ast.ResTarget(val=node))
        return width + len(hidden) - 1

    group_nodes = []
    for g in stmt.groupClause or ():
        pos = _find_target(g, targets)
        if pos is not None and not 0 <= pos < width:
            return _refuse(f"GROUP BY position {pos + 1} is not in the select list")
        node = targets[pos].val if pos is not None else g
        if any(_is_agg(n) for n in walk_nodes(node)):
            return _refuse("GROUP BY on an aggregate")
        group_nodes.append((pos, node))
    for pos, node in group_nodes:
        if pos is None:
            pos = hidden_col(copy.deepcopy(node))
        group_texts[_text(node)] = pos
        group_cols.append(pos)

    def classify(node: Any) -> str | Refuse:
        """The combining kind of a select-list or ORDER BY expression."""
        text = _text(node)
        if text in group_texts:
            return "group"
        if not isinstance(node, ast.FuncCall) or not _is_agg(node):
            if any(_is_agg(n) for n in walk_nodes(node)):
                return _refuse(f"an expression over aggregates ({text}); select the aggregate itself")
            return _refuse(f"{text} is neither in GROUP BY nor an aggregate")
        fname = _fname(node)
        if fname not in _MERGEABLE:
            return _refuse(f"aggregate {fname}() (only count, sum, min, max and avg combine)")
        if node.agg_distinct:
            return _refuse(f"{fname}(DISTINCT ...) (the same value may be on several shards)")
        if node.agg_within_group or node.agg_order:
            return _refuse(f"{fname}() with an ordered input")
        return fname

    def as_sum_and_count(node: ast.FuncCall) -> tuple[ast.FuncCall, ast.FuncCall]:
        total, count = copy.deepcopy(node), copy.deepcopy(node)
        total.funcname = (ast.String(sval="sum"),)
        count.funcname = (ast.String(sval="count"),)
        return total, count

    for i, t in enumerate(targets):
        if isinstance(t.val, ast.ColumnRef) and isinstance(t.val.fields[-1], ast.A_Star):
            return _refuse("* with aggregates")
        kind = classify(t.val)
        if isinstance(kind, Refuse):
            return kind
        new = copy.deepcopy(t)
        if kind == "avg":
            total, count = as_sum_and_count(t.val)
            new.val, new.name = total, t.name or "avg"
            plan_targets.append(Target("avg", i, hidden_col(count), t.name or "avg"))
        else:
            plan_targets.append(Target(kind, i))  # type: ignore[arg-type]
        shard_targets.append(new)

    def add_sort_hidden(node: Any) -> int | Refuse:
        inner, _ = _strip_collate(node)
        if _text(inner) in group_texts:
            return group_texts[_text(inner)]
        kind = classify(inner)
        if isinstance(kind, Refuse):
            return kind
        if kind == "avg":
            total, count = as_sum_and_count(inner)
            pos = hidden_col(total)
            plan_targets.append(Target("avg", pos, hidden_col(count), "avg"))
        else:
            pos = hidden_col(copy.deepcopy(inner))
            plan_targets.append(Target(kind, pos))  # type: ignore[arg-type]
        return pos

    sort = _sort_keys(stmt, targets, add_sort_hidden)
    if isinstance(sort, Refuse):
        return sort
    having = None
    if stmt.havingClause is not None:
        # Each shard's HAVING would see only its part of a group: the condition is applied to
        # the combined groups instead, its aggregates fetched as (hidden) columns.
        def operand(node: Any) -> tuple | Refuse:
            while isinstance(node, ast.TypeCast) and isinstance(node.arg, ast.A_Const):
                node = node.arg
            if isinstance(node, ast.A_Const):
                if node.isnull:
                    return ("const", None)
                v = node.val
                raw = str(v.ival) if isinstance(v, ast.Integer) else getattr(v, "fval", None) \
                    if isinstance(v, ast.Float) else getattr(v, "sval", None)
                return ("const", raw, isinstance(v, ast.Integer | ast.Float))
            pos = _find_target(node, targets) if not isinstance(node, ast.A_Const) else None
            if pos is None:
                pos = add_sort_hidden(node)
            return pos if isinstance(pos, Refuse) else ("col", pos)

        def condition(node: Any) -> tuple | Refuse:
            if isinstance(node, ast.BoolExpr):
                parts = [condition(a) for a in node.args]
                bad = next((p for p in parts if isinstance(p, Refuse)), None)
                if bad is not None:
                    return bad
                op = int(node.boolop)
                return ("not", parts[0]) if op == 2 else ("and" if op == 0 else "or", parts)
            if isinstance(node, ast.A_Expr) and int(node.kind) == 0 and node.name and \
                    isinstance(node.name[-1], ast.String) and node.name[-1].sval in _COMPARISONS:
                left, right = operand(node.lexpr), operand(node.rexpr)
                if isinstance(left, Refuse):
                    return left
                if isinstance(right, Refuse):
                    return right
                return ("cmp", node.name[-1].sval, left, right)
            return _refuse(f"HAVING {_text(node)} (only comparisons of aggregates, GROUP BY "
                           "columns and constants, with AND/OR/NOT, are applied after combining)")

        having = condition(stmt.havingClause)
        if isinstance(having, Refuse):
            return having
        stmt.havingClause = None
    for pos in group_cols:
        if pos >= width:
            plan_targets.append(Target("group", pos))
    stmt.targetList = tuple(shard_targets + hidden)
    stmt.sortClause = None
    stmt.limitCount = None
    stmt.limitOffset = None
    stmt.limitOption = 0
    return GatherPlan(_text(stmt), len(hidden), sort, limit, offset, aggregate=True,
                      targets=tuple(plan_targets), group_cols=tuple(group_cols), having=having)


# --- merging ------------------------------------------------------------------------------------


class _MergeError(Exception):
    pass


def _resolve_limit(v: int | Param | None, params: Sequence[Any] | None, what: str) -> int | None:
    if isinstance(v, Param):
        if params is None or not 1 <= v.number <= len(params):
            raise _MergeError(f"there is no parameter ${v.number} for {what}")
        raw = params[v.number - 1]
        if raw is None:
            return None
        try:
            v = int(raw)
        except (TypeError, ValueError):
            raise _MergeError(f"{what} parameter {raw!r} is not an integer") from None
        if v < 0:
            raise _MergeError(f"{what} must not be negative")
    return v


def window(plan: GatherPlan, params: Sequence[Any] | None) -> tuple[int, int | None] | Refuse:
    """The (OFFSET, LIMIT) the merged rows get, with bound values for `$n`."""
    try:
        return _resolve_limit(plan.offset, params, "OFFSET") or 0, _resolve_limit(plan.limit, params, "LIMIT")
    except _MergeError as exc:
        return _refuse(str(exc))


def _sort(rows: list[list[str | None]], keys: Sequence[SortKey], oids: Sequence[int],
          c_collation: bool) -> None:
    for k in reversed(keys):  # stable sorts, last key first
        oid = oids[k.column]
        if oid in TEXT_OIDS and not (k.c_collation or c_collation):
            raise _MergeError("ORDER BY on text across shards needs the \"C\" collation "
                              "(write COLLATE \"C\"; the gatherer orders text by code point)")
        null = (2,) if k.descending == k.nulls_first else (0,)
        col = k.column

        def key(row: list[str | None], col: int = col, oid: int = oid, null: tuple = null) -> tuple:
            v = row[col]
            return null if v is None else (1, sort_key(oid, v))

        rows.sort(key=key, reverse=k.descending)


def _combine(kind: str, oid: int, values: list[str | None], c_collation: bool) -> str | None:
    present = [v for v in values if v is not None]
    if kind == "count":
        return str(sum(int(v) for v in present))
    if not present:
        return None
    if kind == "sum":
        if oid in (INT2, INT4, INT8):
            return str(sum(int(v) for v in present))
        if oid == NUMERIC:
            with localcontext() as ctx:
                ctx.prec = 2200
                ctx.traps[InvalidOperation] = False
                total = sum((parse_numeric(v) for v in present), Decimal(0))
            return "NaN" if total.is_nan() else format(total, "f") if total.is_finite() else (
                "Infinity" if total > 0 else "-Infinity")
        if oid in (FLOAT4, FLOAT8):
            return float_text(sum(_to_float(v) for v in present), oid)
        raise _MergeError(f"SUM of type oid {oid}")
    if oid in TEXT_OIDS and not c_collation:
        raise _MergeError(f"{kind.upper()} of text across shards needs the \"C\" collation")
    pick = min if kind == "min" else max
    return pick(present, key=lambda v: sort_key(oid, v))


def _to_float(text: str) -> float:
    low = text.lower()
    return float(low.replace("infinity", "inf")) if "inf" in low or low == "nan" else float(text)


def merge(
    plan: GatherPlan,
    columns: Sequence[tuple[str, int]],
    shard_rows: Sequence[Sequence[Sequence[str | None]]],
    *,
    params: Sequence[Any] | None = None,
    c_collation: bool = False,
) -> Merged | Refuse:
    """Merge the shards' rows (text values; `columns` from a shard's RowDescription)."""
    try:
        return _merge(plan, columns, shard_rows, params, c_collation)
    except (_MergeError, Unorderable) as exc:
        return _refuse(str(exc))


def _merge(plan: GatherPlan, columns: Sequence[tuple[str, int]],
           shard_rows: Sequence[Sequence[Sequence[str | None]]], params: Sequence[Any] | None,
           c_collation: bool) -> Merged:
    limit = _resolve_limit(plan.limit, params, "LIMIT")
    offset = _resolve_limit(plan.offset, params, "OFFSET") or 0
    oids = [oid for _, oid in columns]
    names = [name for name, _ in columns]
    rows = [list(r) for rs in shard_rows for r in rs]
    if plan.aggregate:
        rows = _combine_groups(plan, oids, names, rows, c_collation)
        if plan.having is not None:
            rows = [r for r in rows if _holds(plan.having, r, oids, c_collation) is True]
    _sort(rows, plan.sort, oids, c_collation)
    rows = rows[offset:] if limit is None else rows[offset : offset + limit]
    width = len(columns) - plan.hidden
    return Merged(tuple(zip(names[:width], oids[:width], strict=True)),
                  [tuple(r[:width]) for r in rows])


def _combine_groups(plan: GatherPlan, oids: list[int], names: list[str],
                    rows: list[list[str | None]], c_collation: bool) -> list[list[str | None]]:
    # Output types: AVG's SUM column becomes numeric (sum of integers or numeric) or float8.
    for t in plan.targets:
        if t.kind == "avg":
            sum_oid = oids[t.column]
            if sum_oid in (INT8, NUMERIC):
                oids[t.column] = NUMERIC
            elif sum_oid == FLOAT8:
                oids[t.column] = FLOAT8
            else:
                raise _MergeError(f"AVG over type oid {sum_oid} (write avg(x::float8) or avg(x::numeric))")
            names[t.column] = t.name
    groups: dict[tuple, list[list[str | None]]] = {}
    for row in rows:
        gk = tuple(group_key(oids[c], row[c]) for c in plan.group_cols)
        groups.setdefault(gk, []).append(row)
    out = []
    for members in groups.values():
        combined = list(members[0])
        for t in plan.targets:
            col = [m[t.column] for m in members]
            if t.kind == "group":
                continue
            if t.kind != "avg":
                combined[t.column] = _combine(t.kind, oids[t.column], col, c_collation)
                continue
            assert t.count_column is not None
            count = sum(int(m[t.count_column] or 0) for m in members)
            present = [v for v in col if v is not None]
            if count == 0 or not present:
                combined[t.column] = None
            elif oids[t.column] == FLOAT8:
                combined[t.column] = float_text(sum(_to_float(v) for v in present) / count)
            else:
                with localcontext() as ctx:
                    ctx.prec = 2200
                    ctx.traps[InvalidOperation] = False
                    total = sum((parse_numeric(v) for v in present), Decimal(0))
                combined[t.column] = numeric_avg_text(total, count)
        out.append(combined)
    return out


def _having_value(oid: int, text: str, c_collation: bool) -> Any:
    if oid in TEXT_OIDS and not c_collation:
        raise _MergeError("HAVING comparing text across shards needs the \"C\" collation")
    if oid in (INT2, INT4, INT8, NUMERIC):
        d = parse_numeric(text)
        if d.is_nan():
            raise _MergeError("HAVING on a NaN numeric")
        return d
    if oid in (FLOAT4, FLOAT8):
        return _to_float(text)
    return sort_key(oid, text)


def _holds(cond: tuple, row: list[str | None], oids: list[int], c_collation: bool) -> bool | None:
    """SQL three-valued truth of a HAVING tree on a combined row."""
    kind = cond[0]
    if kind == "not":
        v = _holds(cond[1], row, oids, c_collation)
        return None if v is None else not v
    if kind in ("and", "or"):
        vals = [_holds(c, row, oids, c_collation) for c in cond[1]]
        if kind == "and":
            return False if False in vals else (None if None in vals else True)
        return True if True in vals else (None if None in vals else False)
    _, op, left, right = cond
    oid = next((oids[o[1]] for o in (left, right) if o[0] == "col"), 25)

    def value(o: tuple) -> Any:
        if o[0] == "col":
            text = row[o[1]]
            return None if text is None else _having_value(oids[o[1]], text, c_collation)
        if o[1] is None:
            return None
        if o[2]:  # a numeric literal
            return Decimal(o[1])
        return _having_value(oid, o[1], c_collation)

    a, b = value(left), value(right)
    if a is None or b is None:
        return None
    return _COMPARISONS[op]((a > b) - (a < b))


def merge_command_tags(tags: Sequence[str]) -> str:
    """One CommandComplete tag for the shards' tags: row counts summed (INSERT 0 n, UPDATE n...)."""
    if not tags:
        raise ValueError("no command tags to merge")
    first = tags[0].split()
    counted = {"INSERT", "UPDATE", "DELETE", "SELECT", "COPY", "MERGE", "MOVE", "FETCH"}
    if first and first[0] in counted and first[-1].isdigit():
        total = sum(int(t.split()[-1]) for t in tags)
        return " ".join(first[:-1] + [str(total)])
    return tags[0]
