"""The extended protocol's Bind and Execute messages, read whole, and the renumbering of a split
INSERT's parameters (pure).

The router answers some extended-protocol batches itself (extended_scatter.py): it needs every
field of a Bind (portal, statement, parameter formats and values, result formats) and of an
Execute (portal, row limit), and it writes new Binds for the shards: a multi-row INSERT whose
rows belong to several shards is split per shard, each part keeping only its rows' parameters,
renumbered from $1 (`renumber_params`), with those parameters' values (`Bind.subset`).

Malformed messages raise PgProtocolError (08P01), as the server's own checks would.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pglast import ast

from proxy.pgwire import encode
from proxy.pgwire.errors import PROTOCOL_VIOLATION, PgProtocolError

from .keys import walk_nodes

__all__ = ["Bind", "Execute", "parse_bind", "parse_execute", "renumber_params"]

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")


@dataclass(frozen=True)
class Bind:
    portal: str
    statement: str
    param_formats: tuple[int, ...]
    values: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]

    def param_format(self, i: int) -> int:
        """Parameter i's format (0-based): one code for all, one each, or none (text)."""
        f = self.param_formats
        return f[0] if len(f) == 1 else f[i] if i < len(f) else 0

    def result_format(self, i: int) -> int:
        f = self.result_formats
        return f[0] if len(f) == 1 else f[i] if i < len(f) else 0

    def encode(self, *, result_formats: Sequence[int] | None = None, portal: str = "",
               statement: str = "") -> bytes:
        return encode.bind(portal, statement, self.values, param_formats=self.param_formats,
                           result_formats=self.result_formats if result_formats is None else result_formats)

    def subset(self, numbers: Sequence[int]) -> Bind:
        """This Bind with only parameters `numbers` (1-based, in the new order)."""
        fmts = self.param_formats if len(self.param_formats) <= 1 else \
            tuple(self.param_formats[n - 1] for n in numbers)
        return Bind(self.portal, self.statement, fmts, tuple(self.values[n - 1] for n in numbers),
                     self.result_formats)


@dataclass(frozen=True)
class Execute:
    portal: str
    max_rows: int


def _cstring(raw: bytes, pos: int) -> tuple[str, int]:
    end = raw.find(b"\0", pos)
    if end < 0:
        raise PgProtocolError("invalid message format: unterminated string", PROTOCOL_VIOLATION)
    return raw[pos:end].decode("utf-8", "replace"), end + 1


def _codes(raw: bytes, pos: int, what: str) -> tuple[tuple[int, ...], int]:
    (n,) = _I16.unpack_from(raw, pos)
    pos += 2
    if n < 0:
        raise PgProtocolError(f"invalid Bind message: negative {what} count", PROTOCOL_VIOLATION)
    codes = struct.unpack_from(f"!{n}h", raw, pos)
    if any(c not in (0, 1) for c in codes):
        raise PgProtocolError(f"unsupported format code in Bind {what}", PROTOCOL_VIOLATION)
    return codes, pos + 2 * n


def parse_bind(raw: bytes) -> Bind:
    """A whole Bind message (type byte and length included)."""
    try:
        portal, pos = _cstring(raw, 5)
        stmt, pos = _cstring(raw, pos)
        pfmts, pos = _codes(raw, pos, "parameter formats")
        (nv,) = _I16.unpack_from(raw, pos)
        pos += 2
        if nv < 0 or len(pfmts) not in (0, 1, nv):
            raise PgProtocolError(f"bind message has {len(pfmts)} parameter formats but {nv} parameters",
                                  PROTOCOL_VIOLATION)
        values: list[bytes | None] = []
        for _ in range(nv):
            (ln,) = _I32.unpack_from(raw, pos)
            pos += 4
            if ln < -1 or pos + max(ln, 0) > len(raw):
                raise PgProtocolError("invalid Bind message: bad parameter length", PROTOCOL_VIOLATION)
            values.append(None if ln == -1 else raw[pos : pos + ln])
            pos += max(ln, 0)
        rfmts, pos = _codes(raw, pos, "result formats")
    except struct.error:
        raise PgProtocolError("invalid Bind message: truncated", PROTOCOL_VIOLATION) from None
    if pos != len(raw):
        raise PgProtocolError("invalid Bind message: trailing bytes", PROTOCOL_VIOLATION)
    return Bind(portal, stmt, pfmts, tuple(values), rfmts)


def parse_execute(raw: bytes) -> Execute:
    portal, pos = _cstring(raw, 5)
    if pos + 4 != len(raw):
        raise PgProtocolError("invalid Execute message", PROTOCOL_VIOLATION)
    (n,) = _I32.unpack_from(raw, pos)
    return Execute(portal, n)


def renumber_params(stmt: Any) -> tuple[Any, tuple[int, ...]]:
    """`stmt` (an AST, changed in place) with its parameters renumbered $1.. in order of first use;
    returns it and the old numbers in their new order (for `Bind.subset`)."""
    mapping: dict[int, int] = {}
    for node in walk_nodes(stmt):
        if isinstance(node, ast.ParamRef):
            node.number = mapping.setdefault(node.number, len(mapping) + 1)
    return stmt, tuple(sorted(mapping, key=mapping.__getitem__))
