"""Recognising the client packets a proxy runs without framing them.

`whole_packet` recognises, by their headers, the two client packets the dbproxy runs without its
framer (`SessionCore.data_received`, proxy/dbproxy/sessioncore.py): one whole simple Query, and
one whole Parse of the unnamed statement + Bind of it to the unnamed portal + [Describe of that
portal] + Execute + Sync.

This file is compiled (proxy/_native.py; scan.pxd types `_whole_typed`) and is also its own
pure-Python twin. The two twins want different code for the same tests: compiled, the bytes are
read through a pointer and each length assembled from four bytes (a few instructions);
interpreted, that arithmetic costs more than one `struct` call (callgrind: docs/perf.md). So both
are here and `whole_packet` is whichever suits how this module runs; the differential tests
(tests/unit/test_native_differential.py) hold them to the same answers. The session calls the
compiled one in C, and only when compiled: interpreted, its own inline tests cost less than a
call; the pure twin is what the compiled one is tested against.

(The relay's step over the messages it forwards untouched, `skip_plain`, lived here too; the
relay's compiled loop steps over them itself now: proxy/pgfront/relay.py.)
"""

from __future__ import annotations

import struct

__all__ = ["COMPILED", "whole_packet"]

_UNPACK_INT32 = struct.Struct("!i").unpack_from


def _whole_typed(data: bytes) -> int:
    """`whole_packet` for the compiled module (scan.pxd: `p` points to the bytes; every index
    read is below n = len(data), checked before it)."""
    n = len(data)
    if n < 5:
        return 0
    p = data
    c = p[0]
    length = _int32(p, 1)
    if c == 0x51:  # Query: one message, its string's first NUL its last byte
        if n <= 6 or length != n - 1:
            return 0
        return 1 if _first_nul(p, 5, n) == n - 1 else 0  # noqa: F821  (scan.pxd: memchr)
    if c != 0x50:
        return 0
    end_p = 1 + length
    # The Bind: its portal and statement names empty (two NULs after its header).
    if end_p < 5 or end_p + 7 > n or p[end_p] != 0x42 or p[end_p + 5] or p[end_p + 6]:
        return 0
    pos = end_p + 1 + _int32(p, end_p + 1)
    if pos < end_p + 7 or pos + 5 > n:
        return 0
    if p[pos] == 0x44:  # Describe: of the unnamed portal only ('P', NUL)
        if _int32(p, pos + 1) != 6 or pos + 7 > n or p[pos + 5] != 0x50 or p[pos + 6]:
            return 0
        pos += 7
    end_d = pos
    if pos + 5 > n or p[pos] != 0x45:  # Execute
        return 0
    pos += 1 + _int32(p, pos + 1)
    # The Sync, last and whole.
    if pos < end_d + 5 or pos != n - 5 or p[pos] != 0x53 or _int32(p, pos + 1) != 4:
        return 0
    return end_p


def _int32(p: bytes, at: int) -> int:
    """The protocol's Int32 at `at` (compiled: from its four bytes, signed as struct reads it).
    The sign comes from the first byte, so that every constant here is a C one (a literal from
    2**31 up is a Python int to Cython: each call made and compared Python ints, ~60
    instructions)."""
    hi = p[at]
    if hi >= 128:
        hi -= 256
    return hi * 16777216 + ((p[at + 1] << 16) | (p[at + 2] << 8) | p[at + 3])


def _whole_interpreted(data: bytes) -> int:
    """`whole_packet` for the pure-Python module."""
    n = len(data)
    if n < 5:
        return 0
    unpack = _UNPACK_INT32
    c = data[0]
    if c == 0x51:
        return 1 if n > 6 and unpack(data, 1)[0] == n - 1 and data.find(b"\0", 5) == n - 1 else 0
    if c != 0x50:
        return 0
    end_p = 1 + unpack(data, 1)[0]
    if end_p < 5 or end_p + 7 > n or data[end_p] != 0x42 or data[end_p + 5] or data[end_p + 6]:
        return 0
    pos = end_p + 1 + unpack(data, end_p + 1)[0]
    if pos < end_p + 7 or pos + 5 > n:
        return 0
    if data[pos] == 0x44:
        if unpack(data, pos + 1)[0] != 6 or pos + 7 > n or data[pos + 5] != 0x50 or data[pos + 6]:
            return 0
        pos += 7
    end_d = pos
    if pos + 5 > n or data[pos] != 0x45:
        return 0
    pos += 1 + unpack(data, pos + 1)[0]
    if pos < end_d + 5 or pos != n - 5 or data[pos] != 0x53 or unpack(data, pos + 1)[0] != 4:
        return 0
    return end_p


def _probe() -> None:
    pass


# A compiled module's functions are Cython's, not Python's.
COMPILED = type(_probe).__name__ != "function"


# whole_packet(data) -> 1 when `data` (bytes) is exactly one whole simple Query (a NUL-terminated
# string, no NUL before its end); the length of the Parse (>= 5) when it is exactly Parse, Bind of
# the unnamed statement to the unnamed portal, [Describe of that portal,] Execute, Sync; else 0.
# Only the headers are checked: the Parse's own content is the caller's.
whole_packet = _whole_typed if COMPILED else _whole_interpreted
