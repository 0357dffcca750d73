"""The query cache's decisions: which statements may be cached, their key, their tables, the hint.

Pure functions, no I/O (issue 20). The dbproxy session (qcache_session.py) asks, per statement:

- `cache_hint(sql)`: the TTL asked for by a leading `/* tierproxy:cache ttl=30 */` comment
  (seconds, a positive integer; case-insensitive, whitespace-tolerant like the routing hints, and
  it may sit among other leading comments), or None. A malformed hint caches nothing and is never
  an error: the statement runs as if it had no hint.
- `cacheable(decision, shape, ...)`: may this statement's answer be stored and served? Only when
  every one of these holds (anything else is answered by the database, every time):
  the classifier says a plain read (Reason.READ, detail "select": so no write, no FOR UPDATE/SHARE,
  no writing CTE, no SELECT INTO, no function of the classifier's write list, no multi-statement
  string, no SHOW/EXPLAIN/COPY/cursor, no routing hint); it reads no system catalog
  (`reads_catalog`) and no temporary relation; it calls no function whose answer changes between
  two runs over the same data (`VOLATILE_FUNCTIONS`: random(), now(), clock_timestamp(),
  current_setting(), ...) and uses no CURRENT_DATE/CURRENT_USER-style keyword and no TABLESAMPLE;
  the session is not pinned (a pinned session may hold temp tables, prepared statements or
  settings of its own); and it is not inside a read-write transaction (whose reads may see its own
  uncommitted writes). Reads inside a read-only transaction are cacheable, as the issue says.
  Functions the list does not name (an application's own) are taken to be deterministic over
  the data they read: caching is opt-in per statement, and the hint is the application's word.
- `statement_shape(sql)`: one parse: the relations the statement names (for the table index and
  for invalidation) and the facts above; None when the text does not parse.
- `written_tables(sql, decision)`: the tables a write may change, for invalidation; None means
  "unknown, drop everything" (DDL, DO, CALL, TRUNCATE ... CASCADE, a SELECT calling a writing
  function, unparseable text, ...). Every relation a DML statement names is counted (also those
  it only reads: over-invalidation is safe).
- `cache_key(...)`: a 32-byte digest of the normalised statement, the bound parameter values and
  formats, the result formats, the database, the user, and the session settings that change
  results (`RESULT_SETTINGS`).

Tables are bare relation names as PostgreSQL folds them (`Public.T` -> `t`, `"T"` stays `T`),
schema dropped: a write to `a.t` also drops entries reading `b.t`, which costs hits, never
correctness. What the proxy cannot see is stated in docs/dbproxy.md: a view or a function reads
tables its statement does not name, and a trigger, rule or ON DELETE CASCADE writes tables its
statement does not name; the TTL bounds those.

Normalisation: PostgreSQL's own scanner (pglast `scan`) splits the text into tokens; comments are
dropped and the other tokens joined by one space. Two texts share a key only if their tokens
are the same, so they are the same statement to PostgreSQL (literals are kept: `id = 1` and
`id = 2` are different keys, unlike the classifier's literal_key).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pglast.parser import ParseError, parse_sql_json, scan

from .classify import leading_comments
from .classify_types import Decision, Reason

__all__ = [
    "MAX_HINT_TTL",
    "RESULT_SETTINGS",
    "VOLATILE_FUNCTIONS",
    "Shape",
    "cache_hint",
    "cache_key",
    "cacheable",
    "key_context",
    "normalise",
    "statement_shape",
    "written_tables",
]

MAX_HINT_TTL = 86_400  # a day: a larger ttl= is read as malformed

# Functions whose answer differs between two runs over the same data: volatile ones of pg_catalog
# that the classifier leaves on replicas (it routes by side effects, not volatility), the stable
# ones that read the clock, the session or the settings, and the usual extension generators.
VOLATILE_FUNCTIONS: frozenset[str] = frozenset(
    {
        "random", "random_normal", "setseed", "gen_random_uuid", "uuid_generate_v1",
        "uuid_generate_v1mc", "uuid_generate_v4", "uuidv4", "uuidv7", "gen_random_bytes",
        "gen_salt", "now", "clock_timestamp", "statement_timestamp", "transaction_timestamp",
        "timeofday", "age", "pg_sleep", "pg_sleep_for", "pg_sleep_until",
        "current_setting", "current_schema", "current_schemas", "current_database",
        "current_user", "session_user", "current_role", "user", "current_query", "inet_client_addr",
        "inet_client_port", "inet_server_addr", "inet_server_port", "pg_backend_pid",
        "pg_postmaster_start_time", "pg_conf_load_time", "pg_is_in_recovery",
        "pg_last_wal_receive_lsn", "pg_last_wal_replay_lsn", "pg_last_xact_replay_timestamp",
        "pg_current_snapshot", "txid_current_snapshot", "pg_trigger_depth", "pg_jit_available",
        "pg_relation_size", "pg_total_relation_size", "pg_table_size", "pg_indexes_size",
        "pg_database_size", "pg_stat_get_activity", "pg_read_file", "pg_read_binary_file",
        "pg_ls_dir", "pg_stat_file", "dblink", "nextval", "currval", "lastval", "setval",
    }
)  # fmt: skip

# Settings that change what a read answers (its rows, or their text form): part of the key.
RESULT_SETTINGS: frozenset[str] = frozenset(
    {
        "search_path", "timezone", "datestyle", "intervalstyle", "extra_float_digits",
        "bytea_output", "client_encoding", "lc_monetary", "lc_numeric", "lc_time",
        "standard_conforming_strings", "row_security", "role", "session_authorization",
        "default_text_search_config", "transform_null_equals", "array_nulls", "xmlbinary",
        "xmloption", "enable_partition_pruning", "constraint_exclusion", "backslash_quote",
        "escape_string_warning", "integer_datetimes", "server_encoding", "server_version",
        "options",  # the startup packet's command-line options: any -c setting
    }
)  # fmt: skip

_HINT_BODY = re.compile(r"\s*tierproxy\s*:\s*cache\s+ttl\s*=\s*([0-9]{1,9})\s*", re.IGNORECASE)


def cache_hint(sql: str) -> int | None:
    """The ttl of the first `tierproxy:cache ttl=N` among the comments before the first token
    (classify.leading_comments: the walker the routing hint reads too)."""
    for body in leading_comments(sql):
        match = _HINT_BODY.fullmatch(body)
        if match:
            ttl = int(match.group(1))
            return ttl if 0 < ttl <= MAX_HINT_TTL else None
    return None


@dataclass(frozen=True, slots=True)
class Shape:
    """What one parse of a statement tells the cache."""

    tables: frozenset[str]  # every relation name it mentions (bare, as PostgreSQL folds it)
    volatile: bool  # a VOLATILE_FUNCTIONS call, a SQLValueFunction (CURRENT_DATE...) or TABLESAMPLE
    temp: bool  # names a pg_temp relation or creates a temporary one
    statements: int  # top-level statements in the text
    kinds: tuple[str, ...]  # their parse-node types ("SelectStmt", "InsertStmt", ...)
    cascade: bool = False  # TRUNCATE ... CASCADE: also empties tables it does not name


def statement_shape(sql: str) -> Shape | None:
    """One parse of `sql`; None when it does not parse (never cacheable, invalidates all)."""
    if "\x00" in sql:
        return None
    try:
        tree = json.loads(parse_sql_json(sql))
    except (ParseError, ValueError, RecursionError):
        return None
    stmts = [raw["stmt"] for raw in tree.get("stmts", ()) if raw.get("stmt")]
    tables: set[str] = set()
    volatile = temp = cascade = False
    stack: list[Any] = list(stmts)
    while stack:  # iterative: deep expressions must not hit Python's recursion limit
        item = stack.pop()
        if type(item) is list:
            stack.extend(item)
            continue
        if type(item) is not dict:
            continue
        if type(item.get("relname")) is str:
            # A RangeVar's body: wrapped as {"RangeVar": {...}} in lists, inlined in typed fields
            # (DeleteStmt.relation, IntoClause.rel, ...).
            tables.add(item["relname"])
            if item.get("relpersistence") == "t" or item.get("schemaname", "").startswith("pg_temp"):
                temp = True
        for key, value in item.items():
            if key == "FuncCall":
                names = [p.get("String", {}).get("sval", "").lower() for p in value.get("funcname", ())]
                if names and names[-1] in VOLATILE_FUNCTIONS:
                    volatile = True
            elif key in ("SQLValueFunction", "RangeTableSample"):
                volatile = True
            elif key == "TruncateStmt" and value.get("behavior") == "DROP_CASCADE":
                cascade = True
            if type(value) is dict or type(value) is list:
                stack.append(value)
    kinds = tuple(next(iter(stmt)) for stmt in stmts)
    return Shape(frozenset(tables), volatile, temp, len(stmts), kinds, cascade)


def cacheable(
    decision: Decision,
    shape: Shape | None,
    *,
    in_transaction: bool,
    read_only_transaction: bool,
    pinned: bool,
) -> bool:
    """May this statement's answer be stored and served from the cache (see the module doc)?"""
    if decision.reason is not Reason.READ or decision.detail != "select":
        return False
    if decision.reads_catalog or decision.pins_session or pinned:
        return False
    if in_transaction and not read_only_transaction:
        return False
    if shape is None or shape.statements != 1 or shape.kinds != ("SelectStmt",):
        return False
    return not shape.volatile and not shape.temp


# Writes whose changed tables are the relations the statement names; anything else clears all.
_DML_KINDS = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "TruncateStmt", "CopyStmt"})
_LOCK_DETAILS = frozenset({"for-update-share", "lock"})


def written_tables(sql: str, decision: Decision) -> frozenset[str] | None:
    """The tables the write `sql` (classified as `decision`) may change, or None for "unknown:
    invalidate everything". Locks change nothing; a SELECT counts only as a writing CTE (one
    that calls a writing function changes what that function writes: unknown)."""
    if decision.detail in _LOCK_DETAILS:
        return frozenset()
    shape = statement_shape(sql)
    if shape is None:
        return None
    if shape.kinds == ("SelectStmt",) and decision.detail == "writing-cte":
        return shape.tables
    if shape.cascade or not all(kind in _DML_KINDS for kind in shape.kinds):
        return None
    return shape.tables


def normalise(sql: str) -> bytes | None:
    """The statement's tokens without comments, joined by one space; None if it does not scan."""
    try:
        tokens = scan(sql)  # offsets in characters, `end` inclusive
    except (ParseError, ValueError):
        return None
    kept = (sql[t.start : t.end + 1] for t in tokens if t.name not in ("C_COMMENT", "SQL_COMMENT"))
    return " ".join(kept).encode("utf-8", "surrogatepass")


def _field(out: list[bytes], value: bytes | None) -> None:
    # Length-prefixed, -1 for NULL: no two different tuples encode alike.
    if value is None:
        out.append(b"\xff\xff\xff\xff")
    else:
        out.append(len(value).to_bytes(4, "big"))
        out.append(value)


def key_context(*, database: str, user: str, settings: Mapping[str, str]) -> bytes:
    """The part of a key that a session fixes at login (database, user, the RESULT_SETTINGS of
    its startup parameters), encoded once: a session passes it to every `cache_key` (a session
    that SETs anything is pinned and never looks up)."""
    out: list[bytes] = [b"tierproxy-qcache-2"]
    _field(out, database.encode())
    _field(out, user.encode())
    picked = sorted((k.lower(), v) for k, v in settings.items() if k.lower() in RESULT_SETTINGS)
    _field(out, str(len(picked)).encode())
    for name, value in picked:
        _field(out, name.encode())
        _field(out, value.encode("utf-8", "surrogatepass"))
    return b"".join(out)


def cache_key(
    normalised: bytes,
    *,
    database: str = "",
    user: str = "",
    settings: Mapping[str, str] | None = None,
    params: Sequence[bytes | None] = (),
    param_formats: Iterable[int] = (),
    result_formats: Iterable[int] = (),
    context: bytes | None = None,
) -> bytes:
    """The store's key: a BLAKE2b-256 digest of everything that decides the answer's bytes.

    `settings` may hold any names (case-insensitive): only RESULT_SETTINGS count. `context` is
    `key_context(database, user, settings)` computed beforehand (then those three are not read)."""
    if context is None:
        context = key_context(database=database, user=user, settings=settings or {})
    out: list[bytes] = [context]
    _field(out, normalised)
    if params or param_formats or result_formats:
        _field(out, str(len(params)).encode())
        for param in params:
            _field(out, param)
        _field(out, ",".join(map(str, param_formats)).encode())
        _field(out, ",".join(map(str, result_formats)).encode())
    return hashlib.blake2b(b"".join(out), digest_size=32).digest()
