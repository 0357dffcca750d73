"""The query cache for the extended protocol (issue 20): statements prepared and bound by asyncpg,
psycopg, JDBC... (Parse/Bind/Execute) answered from the cache exactly as the server answers them.

A batch (everything up to a Sync) is looked up when it is one execution of one statement:

    [Parse]  Bind  [Describe portal]  Execute  Sync

with the unnamed portal, `Execute` asking for all rows (max_rows 0: a row limit leaves the
portal suspended, which a replay cannot continue), and the Parse (if any) of the statement the
Bind names (not a re-preparation of a name the client has: 42P05 is the server's to answer).
The statement's text (the Parse's, or the one the session remembers for a named statement) must
be cacheable exactly as a simple Query's is (qcache_rules.py: the hint or a rule;
qcache_policy.cacheable: safe, outside a transaction, not pinned).

The key is the simple Query's (qcache_policy.cache_key) with what decides the answer's bytes in
this flow: the bound parameter values and their formats, the result formats, whether the portal
is described (a RowDescription, or none), and the parameter types the Parse declared, in a key
space of its own (a simple Query's answer is never served to a Bind, nor the reverse).

What is stored: the server's answer from BindComplete to CommandComplete (BindComplete,
RowDescription or NoData when described, DataRows, CommandComplete), only when it is exactly
that (`extended_answer`: no error, notice, settings change or PortalSuspended). ParseCompletes
before it are not stored: they belong to the client's Parse (or were injected by the session to
re-create the statement on that server, and swallowed). A hit answers ParseComplete when the
batch has a Parse, then the stored bytes, then ReadyForQuery with the session's status; the
statement then exists for the client (the session re-creates it on a server when a later Bind
needs it, as after any Parse).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from proxy.pgwire.errors import PgProtocolError
from proxy.pgwire.framing import Message
from proxy.pgwire.messages import Bind, Execute, Parse, decode_frontend

from .classify_types import Reason
from .qcache_policy import cache_key, cacheable
from .qcache_rules import MEMO_SIZE

if TYPE_CHECKING:
    from .qcache_policy import Shape

__all__ = ["PARSE_COMPLETE", "ExtendedLookup", "extended_answer", "extended_lookup", "prepared_on_primary",
           "ready_offset"]

_INT32 = struct.Struct("!i")
PARSE_COMPLETE = b"1\x00\x00\x00\x04"


class ExtendedLookup:
    """What a batch's lookup needs: its key, the tables it reads, its TTL, and what a hit answers
    before the stored bytes (ParseComplete when the batch has a Parse)."""

    __slots__ = ("key", "tables", "ttl", "prefix", "fill")

    def __init__(self, key: bytes, tables: frozenset[str], ttl: int, prefix: bytes, fill: list[int]) -> None:
        self.key = key
        self.tables = tables
        self.ttl = ttl
        self.prefix = prefix
        self.fill = fill  # the batch's indexes whose decision a miss replaces (sent to the primary)


def _shape_of(batch: list[tuple[Any, Any]]) -> tuple[int | None, int, bool] | None:
    """(index of the Parse or None, index of the Bind, described?) when the batch is
    [P] B [D portal] E S, else None."""
    types = [msg.type for msg, _ in batch]
    if len(types) < 3 or types[-1] != b"S" or types[-2] != b"E":
        return None
    body = types[:-2]
    parse = None
    if body and body[0] == b"P":
        parse = 0
        body = body[1:]
    described = False
    if body and body[-1] == b"D":
        described = True
        body = body[:-1]
    if body != [b"B"]:
        return None
    bind = 1 if parse is not None else 0
    if described:
        raw = bytes(batch[bind + 1][0].raw)
        if raw[5:6] != b"P" or raw[6:7] != b"\0":  # Describe of the unnamed portal only
            return None
    return parse, bind, described


def extended_lookup(batch: list[tuple[Any, Any]], *, planner: Any, in_transaction: bool, pinned: bool,
                    context: bytes) -> tuple[ExtendedLookup, Shape] | None:  # fmt: skip
    """The lookup for `batch` (the session's messages with their aux tuples), or None when it is
    not one cacheable execution (see the module docstring); `context` is the session's
    qcache_policy.key_context. Pure: no I/O, no session."""
    if in_transaction or pinned:
        return None
    shape_of = _shape_of(batch)
    if shape_of is None:
        return None
    parse_i, bind_i, described = shape_of
    bind_aux = batch[bind_i][1]
    if bind_aux is None or bind_aux[0] != "use":
        return None  # a statement the session does not know: the server's error
    fill = [bind_i]
    if parse_i is not None:
        parse_aux = batch[parse_i][1]
        if parse_aux is None or parse_aux[0] != "parse" or parse_aux[1] != bind_aux[1]:
            return None
        fill.append(parse_i)
    decision = bind_aux[3]
    if decision.reason is not Reason.READ:
        return None
    parse = _parse_of(planner, bind_aux[2])
    if parse is None:
        return None
    ttl, shape = planner.plan(parse.query)  # memoised: a statement no hint or rule names stops here
    if ttl is None or shape is None:
        return None
    try:
        bind = decode_frontend(batch[bind_i][0])
        execute = decode_frontend(batch[-2][0])
    except (PgProtocolError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(bind, Bind) or not isinstance(execute, Execute):
        return None
    if bind.portal or execute.portal or execute.max_rows != 0:
        return None
    if not cacheable(decision, shape, in_transaction=False, read_only_transaction=False, pinned=False):
        return None
    text = planner.normalise(parse.query)
    if text is None:
        return None
    flow = b"\x00extended\x00" + (b"D" if described else b"-") + ",".join(map(str, parse.param_types)).encode()
    key = cache_key(flow + b"\x00" + text, context=context, params=bind.params, param_formats=bind.param_formats,
                    result_formats=bind.result_formats)  # fmt: skip
    prefix = PARSE_COMPLETE if parse_i is not None else b""
    return ExtendedLookup(key, shape.tables, ttl, prefix, fill), shape


def prepared_on_primary(batch: list[tuple[Any, Any]], *, planner: Any, in_transaction: bool, pinned: bool) -> list[int]:
    """The indexes of the Parses in `batch` (one that ends without an Execute: asyncpg's
    Parse/Describe/Flush) whose statement is cacheable: the session sends such a batch to the
    primary, so the Bind/Execute/Sync that follows in the same server transaction runs there
    and its answer may be stored."""
    if in_transaction or pinned:
        return []
    out = []
    for i, (msg, aux) in enumerate(batch):
        if msg.type == b"E":
            return []
        if msg.type != b"P" or aux is None or aux[0] != "parse" or aux[3].reason is not Reason.READ:
            continue
        parse = _parse_of(planner, aux[2])
        if parse is None:
            continue
        ttl, shape = planner.plan(parse.query)
        if ttl is not None and cacheable(aux[3], shape, in_transaction=False, read_only_transaction=False,
                                         pinned=False):  # fmt: skip
            out.append(i)
    return out


def _parse_of(planner: Any, raw: Any) -> Parse | None:
    """The Parse message `raw` decoded, memoised by its bytes on the planner (the session keeps
    one bytes object per statement, so a Bind of a known statement costs a dict lookup)."""
    memo = planner.parses
    if raw in memo:
        return memo[raw]
    try:
        parse = decode_frontend(_message(bytes(raw)))
    except (PgProtocolError, ValueError, UnicodeDecodeError):
        parse = None
    if not isinstance(parse, Parse):
        parse = None
    if len(memo) >= MEMO_SIZE:
        del memo[next(iter(memo))]
    memo[raw] = parse
    return parse


def _message(raw: bytes) -> Message:
    return Message(raw[:1], raw, 5)


def extended_answer(buf: bytes | bytearray) -> tuple[bool, bytes | None]:
    """(done, answer) for an extended-protocol execution: done once a ReadyForQuery ends `buf`;
    answer is the bytes from BindComplete to CommandComplete when they are exactly BindComplete,
    [RowDescription | NoData], DataRow*, CommandComplete (after any ParseComplete/CloseComplete),
    else None (not to be stored)."""
    pos, n = 0, len(buf)
    kinds: list[int] = []  # the messages after BindComplete
    start = -1
    bad = False
    while n - pos >= 5:
        length = _INT32.unpack_from(buf, pos + 1)[0]
        end = pos + 1 + length
        if length < 4 or end > n:
            return False, None
        t = buf[pos]
        if t == 0x5A:  # ReadyForQuery
            if end != n or buf[end - 1] == 0x45 or start < 0 or bad:  # 'E': a failed transaction
                return True, None
            body = kinds[1:] if kinds and kinds[0] in (0x54, 0x6E) else kinds  # RowDescription, NoData
            ok = bool(body) and body[-1] == 0x43 and all(k == 0x44 for k in body[:-1])
            return True, bytes(buf[start:pos]) if ok else None
        if start >= 0:
            kinds.append(t)
        elif t == 0x32:  # BindComplete
            start = pos
        elif t not in (0x31, 0x33):  # only ParseComplete/CloseComplete may come before it
            bad = True
        pos = end
    return False, None


def ready_offset(data: bytes) -> int:
    """Where the first whole ReadyForQuery in `data` (whole messages from its start) begins, else -1."""
    pos, n = 0, len(data)
    while n - pos >= 5:
        length = _INT32.unpack_from(data, pos + 1)[0]
        if length < 4:
            return -1
        if data[pos] == 0x5A:
            return pos if pos + 1 + length <= n else -1
        pos += 1 + length
    return -1
