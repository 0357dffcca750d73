"""`Reader`: the bounded cursor every PostgreSQL message decoder reads a body through.

In the manner of dnspython's `Parser` (STYLE.md section 7): every read is checked against the end
of the body, `expect_end()` requires that a message be consumed exactly, and `restrict_to(n)` bounds
a length-prefixed field. A truncated, overlong or trailing field, or text that does not decode,
raises `PgProtocolError` (08P01), never IndexError/struct.error/UnicodeDecodeError.
Formats: https://www.postgresql.org/docs/15/protocol-message-types.html (Int8/16/32, String, Byten).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import PROTOCOL_VIOLATION, PgProtocolError

__all__ = ["Reader"]

_I8 = struct.Struct("!b")
_I16 = struct.Struct("!h")
_U16 = struct.Struct("!H")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")


class Reader:
    """A bounded cursor over one message body. Every overrun raises PgProtocolError (08P01)."""

    __slots__ = ("_buf", "_pos", "_end", "encoding")

    def __init__(self, buf: bytes | bytearray | memoryview, encoding: str = "utf-8") -> None:
        self._buf = bytes(buf)
        self._pos = 0
        self._end = len(self._buf)
        self.encoding = encoding

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def _take(self, n: int) -> int:
        pos = self._pos
        if n < 0 or n > self._end - pos:
            raise PgProtocolError("truncated message or invalid field length", PROTOCOL_VIOLATION)
        self._pos = pos + n
        return pos

    def byte1(self) -> bytes:
        pos = self._take(1)
        return self._buf[pos : pos + 1]

    def int8(self) -> int:
        return _I8.unpack_from(self._buf, self._take(1))[0]

    def int16(self) -> int:
        return _I16.unpack_from(self._buf, self._take(2))[0]

    def uint16(self) -> int:
        return _U16.unpack_from(self._buf, self._take(2))[0]

    def int32(self) -> int:
        return _I32.unpack_from(self._buf, self._take(4))[0]

    def uint32(self) -> int:
        return _U32.unpack_from(self._buf, self._take(4))[0]

    def bytes(self, n: int) -> bytes:
        pos = self._take(n)
        return self._buf[pos : pos + n]

    def rest(self) -> bytes:
        return self.bytes(self._end - self._pos)

    def cstring_bytes(self) -> bytes:
        nul = self._buf.find(b"\0", self._pos, self._end)
        if nul < 0:
            raise PgProtocolError("unterminated string in message", PROTOCOL_VIOLATION)
        value = self._buf[self._pos : nul]
        self._pos = nul + 1
        return value

    def cstring(self) -> str:
        return self.text(self.cstring_bytes())

    def text(self, raw: bytes) -> str:
        try:
            return raw.decode(self.encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise PgProtocolError(f"invalid {self.encoding} in message", PROTOCOL_VIOLATION) from exc

    def expect_end(self) -> None:
        if self._pos != self._end:
            raise PgProtocolError("message has trailing bytes", PROTOCOL_VIOLATION)

    @contextmanager
    def restrict_to(self, n: int) -> Iterator[None]:
        """Bound the next `n` bytes as one field that must be consumed exactly (dnspython's idiom)."""
        if n < 0 or n > self._end - self._pos:
            raise PgProtocolError("field length exceeds the message", PROTOCOL_VIOLATION)
        saved = self._end
        self._end = self._pos + n
        try:
            yield
            self.expect_end()
        finally:
            self._end = saved

