"""Statement shapes: a statement's text with its literals cut out, and analyses reused per shape.

Why: a simple-protocol client inlines its keys (``... WHERE user_id = 4711``), so every statement
has new text and an analysis cached by exact text (router.py) misses: pglast parses again (about
0.2 ms of Python objects per statement, most of the router's CPU per statement). Statements that
differ only in literal values have one *shape*; the shape is analysed once, with its literals as
parameters (``$1``, ``$2``, ...: the way the extended protocol's ``key = $n`` is planned, keys.py),
and each statement is planned from that analysis with its own literal values.

Theory of operation
-------------------
`lex(sql)` is a small lexer (pure, no parsing) that finds the literals PostgreSQL's own lexer would
find, as the parser sees them with ``standard_conforming_strings = on`` (pglast's view, which is
what keys.py analyses):

* numbers: ``42``, ``1.5``, ``1e3``, ``.5``; a ``-`` just after ``=``, ``(``, ``,``, ``<``, ``>``
  is taken into the number (the grammar folds ``-5`` into one constant);
* plain strings ``'it''s'``, without a backslash (with ``standard_conforming_strings = off`` a
  backslash would change where the string ends: such text gets no shape).

These become ``$1, $2, ...`` in the shape text; their values are kept in order, as keys.py would
read them from the parse tree. Everything else stays in the shape as written: comments (so
``/* tierproxy:shard=s1 */`` and ``/* tierproxy:shard_key=42 */`` stay part of the shape: another
hint is another shape), quoted identifiers, ``E''``/``B''``/``X''``/``N''`` strings, dollar quotes.
No shape (None) for what the lexer does not handle exactly: ``$n`` parameters (the extended
protocol's statements repeat their text; the exact cache has them), ``U&`` strings, string
continuation over a newline, numbers with junk after them (``0x1F``, ``1_000``), unterminated
quotes and comments. An ``IN`` list of another length is another shape (one analysis per length:
lists of one application come in few lengths).

`template(sql, found, full, ...)` decides once per shape whether its analysis may be reused. The
shape's analysis must be what keys.analyze would give for every statement of that shape, which
holds when (checked on the first statement, with a full analysis `full` of it at hand):

1. the shape parses to the statement's tree with each placeholder where the statement has that
   literal (locations aside): the lexer and the grammar agree, the same for every statement of
   the shape, as the parser sees the same tokens;
2. keys.analyze reads literal values only as shard keys (keys.py: ``_const_key`` and the range
   bounds of ``_where_range``). A placeholder compared with the key column (``=``, ``IN``,
   ``ANY``, ``<``, ``BETWEEN``, or a VALUES item of the key column) must be one of the analysis's
   keys (then its value is converted per statement, with keys.py's own `_convert`, errors
   included, in the order keys.py converts them); if one is not (a range, or a key in an ``OR``
   that does not pin the key), the values could change the analysis: no template;
3. the shape's analysis, given the first statement's values, equals `full` (a last check).

A template's analysis of an INSERT has no statement tree (``_stmt``): when its rows belong to
several shards, the router analyses the statement in full to split it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql
from pglast.parser import ParseError

from .keys import (
    INVALID_TEXT,
    Analysis,
    GroupSpec,
    Param,
    Refuse,
    _convert,
    analyze,
    walk_nodes,
)
from .maps import KeyTypeError

__all__ = ["Found", "Template", "instantiate", "lex", "template"]

MAX_SHAPED_SQL_LENGTH = 16_384  # longer texts are not shaped (as the dbproxy's cache)
_INT4_MAX = 2**31 - 1

# One alternation, searched from left to right; what lies between matches (names, keywords,
# operators, punctuation, whitespace) stays in the shape as written. Names are not matched, so
# the search skips them in C (most of a statement): a number must not follow a name's character
# or a "." (``t1``, ``a.5``: part of a name, or kept as written), checked by a look-behind after
# its first character so that the search still jumps from one candidate character to the next;
# a quote or "$" right after a name's character is looked at by `lex`.
_TOKEN = re.compile(
    r"(?P<num>(?:[0-9](?<![A-Za-z0-9_$.\x80-\U0010FFFF][0-9])[0-9]*(?:\.[0-9]*)?"
    r"|\.(?<![A-Za-z0-9_$.\x80-\U0010FFFF]\.)[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<str>')|(?P<qid>\")|(?P<line>--[^\n\r]*)|(?P<block>/\*)|(?P<dollar>\$)"
)
_NAME_CHAR = re.compile(r"[A-Za-z0-9_$\x80-\U0010FFFF]")
# Where a token may start: one character class, which the regex engine scans for in a tight loop
# (the alternation above, searched, is tried at every position: twice the instructions).
_CANDIDATE = re.compile(r"[0-9.'\"\-/$]")
_NUM_JUNK = re.compile(r"[A-Za-z0-9_.$\x80-\U0010FFFF]")
_PLAIN = re.compile(r"'[^'\\]*(?:''[^'\\]*)*'")
_ESTRING = re.compile(r"'(?:[^'\\]|\\.|'')*'", re.DOTALL)
_BITS = re.compile(r"'[^']*'")
_QIDENT = re.compile(r'"[^"]*(?:""[^"]*)*"')
_BLOCK_EDGE = re.compile(r"/\*|\*/")
_DOLLAR = re.compile(r"\$(?:[A-Za-z_\x80-\U0010FFFF][A-Za-z0-9_\x80-\U0010FFFF]*)?\$")
# A string followed by whitespace holding a newline (and "--" comments) and another quote is
# continued by that string (PostgreSQL's quotecontinue): not shaped.
_CONTINUED = re.compile(r"[ \t\f]*(?:--[^\n\r]*)?[\n\r](?:[ \t\n\r\f]+|--[^\n\r]*)*'")
_SPACE = " \t\n\r\f"


@dataclass(frozen=True, slots=True)
class Found:
    """A statement's shape: `key` (the cache key: shape text and each literal's class), `text`
    (the statement with ``$1, $2, ...`` for its literals) and the literals' `values`, as keys.py
    reads them from the parse tree (``str(ival)`` of an integer, the text of a float, a string's
    value)."""

    key: str
    text: str
    values: tuple[str, ...]


def _number_value(digits: str, negative: bool) -> str:
    # As the parser makes the constant: an integer that fits int4 is an Integer (str(ival) drops
    # leading zeros); anything else a Float kept as written; "-" folded in (doNegate).
    if digits.isdigit() and int(digits) <= _INT4_MAX:
        return str(-int(digits) if negative else int(digits))
    return "-" + digits if negative else digits


def lex(sql: str) -> Found | None:
    """The shape of `sql`, or None when the lexer cannot be sure (see the module docstring)."""
    if len(sql) > MAX_SHAPED_SQL_LENGTH:
        return None
    parts: list[str] = []
    values: list[str] = []
    classes: list[str] = []
    done = 0  # sql[:done] is in parts
    pos = 0  # where the next token may start
    floor = 0  # the end of the last token: what lies from there to the next is plain text
    candidate = _CANDIDATE.search
    token = _TOKEN.match
    name_char = _NAME_CHAR.match
    while (c := candidate(sql, pos)) is not None:
        m = token(sql, c.start())
        if m is None:
            pos = c.end()  # "-", "/", "." alone, or a digit inside a name
            continue
        kind = m.lastgroup
        start = m.start()
        if kind == "num":
            end = m.end()
            if end < len(sql) and _NUM_JUNK.match(sql, end):
                return None
            negative = False
            j = start - 1
            while j >= floor and sql[j] in _SPACE:
                j -= 1
            if j >= floor and sql[j] == "-":
                k = j - 1
                while k >= floor and sql[k] in _SPACE:
                    k -= 1
                if k >= floor and sql[k] in "=(,<>":
                    negative, start = True, j
            parts.append(sql[done:start])
            values.append(_number_value(m.group(), negative))
            classes.append("m" if negative else "n")
            parts.append(f"${len(values)}")
            done = pos = floor = end
        elif kind == "str":
            before = sql[start - 1] if start > 0 else " "
            if before == "&" or before.isdigit():
                return None  # U&'...' (and its UESCAPE); a name or a number before it ("1''")
            # A name's character right before the quote glues a prefix to it, unless that
            # character ends the previous token (the closing "$" of a dollar quote: $$$$'a').
            glued = start - 1 >= floor and name_char(before) is not None
            # A one-letter name glued to the quote is a prefix: E'' (backslash escapes), B''/X''
            # (no '' inside: they end at the next quote), N'' (as a plain string).
            prefix = before if glued and (start < 2 or name_char(sql, start - 2) is None) else ""
            if prefix in ("e", "E"):
                s = _ESTRING.match(sql, start)
            elif prefix in ("b", "B", "x", "X"):
                s = _BITS.match(sql, start)
            else:
                s = _PLAIN.match(sql, start)
            if s is None:
                return None  # a backslash (see the docstring) or no closing quote
            end = s.end()
            if _CONTINUED.match(sql, end) or (end < len(sql) and name_char(sql, end)):
                return None  # continued, or a name glued after it ("$1x" is no placeholder)
            if not glued:
                parts.append(sql[done:start])
                values.append(s.group()[1:-1].replace("''", "'"))
                classes.append("s")
                parts.append(f"${len(values)}")
                done = end
            # else E'', B'', X'', N'' or a type name glued to its string: stays as written
            pos = floor = end
        elif kind == "qid":
            if start > 0 and sql[start - 1] == "&":
                return None
            q = _QIDENT.match(sql, start)
            if q is None:
                return None
            pos = floor = q.end()
        elif kind == "line":
            pos = floor = m.end()
        elif kind == "block":
            depth, i = 1, m.end()
            while depth:
                e = _BLOCK_EDGE.search(sql, i)
                if e is None:
                    return None
                depth += 1 if e.group() == "/*" else -1
                i = e.end()
            pos = floor = i
        elif start - 1 >= floor and name_char(sql, start - 1):
            pos = start + 1  # "$" inside a name (a$b)
        else:  # "$": a dollar quote (stays as written); a parameter or a stray "$": no shape
            d = _DOLLAR.match(sql, start)
            if d is None:
                return None
            close = sql.find(d.group(), d.end())
            if close < 0:
                return None
            pos = floor = close + len(d.group())
    if not values:
        return None  # nothing to share: the exact text is the key
    parts.append(sql[done:])
    text = "".join(parts)
    return Found(text + "\x00" + "".join(classes), text, tuple(values))


# --- templates ----------------------------------------------------------------------------------

_LOCATIONS = frozenset({"location", "arg_location", "conninfo_location", "name_location",
                        "payload_location", "list_start", "list_end", "rexpr_list_start",
                        "rexpr_list_end", "stmt_location", "stmt_len"})


def _const_value(node: ast.A_Const) -> str | None:
    v = node.val
    if isinstance(v, ast.Integer):
        return str(v.ival)
    if isinstance(v, ast.Float):
        return v.fval
    if isinstance(v, ast.String):
        return v.sval
    return None


def _same_tree(shape: Any, orig: Any, values: tuple[str, ...], seen: list[int]) -> bool:
    """Whether `orig` is `shape` with the literals `values` for its placeholders (locations
    aside); `seen` collects the placeholder numbers met."""
    if isinstance(shape, ast.ParamRef):
        n = shape.number
        if not isinstance(orig, ast.A_Const) or orig.isnull or not 1 <= n <= len(values):
            return False
        seen.append(n)
        return _const_value(orig) == values[n - 1]
    if isinstance(shape, ast.Node):
        if type(shape) is not type(orig):
            return False
        for attr in shape:
            if attr not in _LOCATIONS and not _same_tree(
                    getattr(shape, attr), getattr(orig, attr), values, seen):
                return False
        return True
    if isinstance(shape, list | tuple):
        return isinstance(orig, list | tuple) and len(shape) == len(orig) and all(
            _same_tree(a, b, values, seen) for a, b in zip(shape, orig, strict=True))
    return bool(shape == orig)


def _unwrap(node: Any) -> Any:
    while isinstance(node, ast.TypeCast):
        node = node.arg
    return node


def _is_column(node: Any, key: str) -> bool:
    if not isinstance(node, ast.ColumnRef):
        return False
    last = node.fields[-1]
    return isinstance(last, ast.String) and last.sval.lower() == key


def _key_compared(stmt: Any, key: str) -> set[int]:
    """Placeholders that keys.py may read as the key `key` (a superset: any operator, any
    qualifier, anywhere in the statement)."""
    out: set[int] = set()

    def params(node: Any) -> None:
        out.update(n.number for n in walk_nodes(node) if isinstance(n, ast.ParamRef))

    for node in walk_nodes(stmt):
        if isinstance(node, ast.A_Expr):
            if _is_column(_unwrap(node.lexpr), key):
                params(node.rexpr)
            if _is_column(_unwrap(node.rexpr), key):
                params(node.lexpr)
        elif isinstance(node, ast.InsertStmt) and node.cols and isinstance(node.selectStmt, ast.SelectStmt):
            names = [(c.name or "").lower() for c in node.cols]
            for pos in (i for i, n in enumerate(names) if n == key):
                for row in node.selectStmt.valuesLists or ():
                    if pos < len(row):
                        params(row[pos])
    return out


@dataclass(frozen=True, slots=True)
class Template:
    """A shape's analysis, to be given each statement's text and literal values."""

    analysis: Analysis  # of the shape text: its keys hold Param(n) for literal n
    key_type: str  # the group's, for converting the values


def instantiate(t: Template, sql: str, values: tuple[str, ...]) -> Analysis:
    """The analysis of `sql` (a statement of `t`'s shape, with these literal values)."""
    a = t.analysis
    try:
        keys = tuple(_convert(values[r.number - 1], t.key_type) if isinstance(r, Param) else r
                     for r in a.keys) if a.keys else ()
        rows = tuple(_convert(values[r.number - 1], t.key_type) if isinstance(r, Param) else r
                     for r in a.row_keys) if a.row_keys else ()
    except KeyTypeError as exc:
        return Analysis(sql, "error", error=Refuse(INVALID_TEXT, str(exc)))
    return Analysis(sql, a.kind, a.group, keys, rows, a.shard, a.error, None, a.key_range)


def template(sql: str, found: Found, full: Analysis, groups: list[GroupSpec],
             shard_names: tuple[str, ...]) -> Template | None:
    """The template of `found`'s shape, or None when its analysis may not be reused (see the
    module docstring); `full` is keys.analyze of `sql`."""
    if full.kind == "error":
        return None  # errors are not the fast path; the exact cache has them
    try:
        shape_raw = parse_sql(found.text)
        orig_raw = parse_sql(sql)
    except ParseError:
        return None
    if len(shape_raw) != 1 or len(orig_raw) != 1:
        return None
    seen: list[int] = []
    if not _same_tree(shape_raw[0].stmt, orig_raw[0].stmt, found.values, seen) \
            or sorted(seen) != list(range(1, len(found.values) + 1)):
        return None
    a = analyze(found.text, groups, shard_names)
    if a.kind == "error":
        return None
    spec = next((g for g in groups if g.name == a.group), None)
    if a.kind in ("keyed", "insert", "keyless") and spec is not None:
        used = [r.number for r in (*a.keys, *a.row_keys) if isinstance(r, Param)]
        if len(set(used)) != len(used) or set(used) != _key_compared(shape_raw[0].stmt, spec.key):
            return None
    elif any(isinstance(r, Param) for r in (*a.keys, *a.row_keys)):
        return None
    t = Template(a, spec.key_type if spec is not None else "integer")
    return t if instantiate(t, sql, found.values) == full else None
