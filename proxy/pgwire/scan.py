"""Stepping over PostgreSQL messages a relay forwards untouched, without a Python object per message.

A proxy relaying a server's answer acts on a few message types only (ReadyForQuery, errors, ...);
everything else, DataRow above all, goes to the client as it came, in one large write together
with its neighbours. `skip_plain` finds where the next message that matters starts: it reads each
header (type byte and Int32 length) and steps over the message, creating nothing. It is the inner
loop of `FrontendSession.relay_from_server` (proxy/pgfront/session.py).

This file is compiled (proxy/_native.py; scan.pxd types `_skip_typed`) and is also its own
pure-Python twin. The two twins want different code for the same loop: compiled, the bytes are
read through a pointer and the length assembled from four bytes (a few instructions); interpreted,
that arithmetic costs more than one `struct` call (callgrind: docs/perf.md). So both loops are
here and `skip_plain` is whichever suits how this module runs; the differential tests
(tests/unit/test_native_differential.py) hold them to the same answers.

It raises only on bad arguments (`n` past the end of `data`, a negative `pos`, a table of another
size; compiled, `data` must be bytes or bytearray); otherwise it stops at anything it does not
step over (a message of a flagged type, an invalid length, an incomplete message) and leaves that
to its caller, whose errors stay its own.
"""

from __future__ import annotations

import struct

__all__ = ["skip_plain", "COMPILED"]

# The largest length word a message may have: PostgreSQL's 1 GiB (framing.DEFAULT_MAX_MESSAGE_LENGTH).
_MAX_LENGTH = 1 << 30
_UNPACK_INT32 = struct.Struct("!i").unpack_from


def _check(data: bytes, pos: int, n: int, flagged: bytes) -> None:
    if n > len(data) or pos < 0 or len(flagged) != 256:
        raise ValueError("pos or n outside data, or flagged not a 256-byte table")


def _skip_typed(data: bytes, pos: int, n: int, flagged: bytes) -> int:
    """`skip_plain` for the compiled module (scan.pxd: `p` and `t` are pointers to the bytes)."""
    _check(data, pos, n, flagged)
    p = data
    t = flagged
    while n - pos >= 5:  # every index read is under n <= len(data)
        if t[p[pos]]:
            return pos
        # `length` is a 64-bit integer (scan.pxd): the first byte is widened before its shift, and
        # a length word over 2**31 (negative as the protocol's Int32) is over the maximum.
        length = p[pos + 1]
        length = (length << 24) | (p[pos + 2] << 16) | (p[pos + 3] << 8) | p[pos + 4]
        if length < 4 or length > 1073741824 or pos + 1 + length > n:  # 1 GiB: _MAX_LENGTH
            return pos
        pos += 1 + length
    return pos


def _skip_interpreted(data: bytes, pos: int, n: int, flagged: bytes) -> int:
    """`skip_plain` for the pure-Python module."""
    _check(data, pos, n, flagged)
    unpack = _UNPACK_INT32
    while n - pos >= 5:
        if flagged[data[pos]]:
            return pos
        length = unpack(data, pos + 1)[0]
        end = pos + 1 + length
        if length < 4 or length > _MAX_LENGTH or end > n:
            return pos
        pos = end
    return pos


def _probe() -> None:
    pass


# A compiled module's functions are Cython's, not Python's.
COMPILED = type(_probe).__name__ != "function"


# skip_plain(data, pos, n, flagged) -> the position, from `pos`, of the first message in
# `data[:n]` that is not whole with a valid length and a type whose entry in the 256-byte table
# `flagged` is 0 (or of the first incomplete header, or `n`): every message before it is one the
# caller forwards as it is.
skip_plain = _skip_typed if COMPILED else _skip_interpreted
