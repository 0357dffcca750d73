"""Message framing for the PostgreSQL v3 wire protocol: find boundaries and types, decode nothing.

Theory of operation
-------------------
A proxy's hot path forwards most messages untouched, so the framers only read the 1-byte type and
the Int32 length of each message (pgbouncer's ACT_SEND/ACT_SKIP/ACT_CALL idea: the caller decides
per type whether to forward, drop or decode) and hand back `Message` objects whose `raw` and `body`
are memoryview slices of the bytes fed in, so no body is copied or parsed. Decoding a body is a
separate, explicit call into `proxy.pgwire.messages`.

Formats (https://www.postgresql.org/docs/15/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS):

* typed message:   Byte1 type, Int32 length (counts itself, not the type byte), body.
* startup packet:  Int32 length (counts itself), Int32 code, body. Only the very first packet(s)
  a client sends are untyped: StartupMessage (code = protocol version 3.0 = 196608), SSLRequest
  (80877103), GSSENCRequest (80877104) and CancelRequest (80877102).
  https://www.postgresql.org/docs/15/protocol-flow.html#id-1.10.6.7.3

After SSLRequest/GSSENCRequest the server answers a single byte ('S'/'G' accept, 'N' refuse) and
the client sends another startup packet (in the clear after 'N', inside TLS/GSS after accept), so
`FrontendFramer` stays in the startup phase; after a StartupMessage it switches to typed messages
by itself. A proxy that relays SSLRequest to a server calls `BackendFramer.expect_encryption_response()`
so that the lone answer byte is framed as a startup-phase message (type b"").
Security note (CVE-2021-23214): bytes that arrive after an SSLRequest but before the TLS handshake
were sent in the clear and may be injected; check `buffered == 0` before switching to TLS.

Buffering is linear in the bytes fed: while a message is incomplete, chunks are only appended to a
list and joined once, when enough bytes for the whole message are present. A message over
`LARGE_MESSAGE` is instead collected in one bytearray that grows as its bytes arrive (each chunk is
copied into it once and dropped; growing a large bytearray moves pages, it does not copy them), so
a 200 MiB message costs about its own size in memory, not twice that at the final join. Lengths are checked as
soon as the header is complete, so a declared length of 2**31-1 raises (it is over the maximum)
before anything of that size is buffered; no allocation ever depends on a declared length.

Compiled (proxy/_native.py), framing.pxd beside this file makes `Message` and the framers extension
types (their slots as C fields): the same classes and behaviour, a Message at a fraction of the cost.

Any exception out of `feed` other than `PgProtocolError` is a bug. After a `PgProtocolError` a
framer is dead and raises again on every call (the stream has lost sync and cannot recover).
"""

from __future__ import annotations

import struct

from .errors import FEATURE_NOT_SUPPORTED, PROGRAM_LIMIT_EXCEEDED, PROTOCOL_VIOLATION, PgProtocolError

__all__ = [
    "Message",
    "FrontendFramer",
    "BackendFramer",
    "PROTOCOL_VERSION_3_0",
    "SSL_REQUEST_CODE",
    "GSSENC_REQUEST_CODE",
    "CANCEL_REQUEST_CODE",
    "DEFAULT_MAX_MESSAGE_LENGTH",
    "MAX_STARTUP_PACKET_LENGTH",
    "FRONTEND_TYPES",
    "BACKEND_TYPES",
]

# https://www.postgresql.org/docs/15/protocol-message-formats.html (StartupMessage, SSLRequest,
# GSSENCRequest, CancelRequest): the codes are "chosen to not collide with any protocol version".
PROTOCOL_VERSION_3_0 = 196608  # (3 << 16) | 0
SSL_REQUEST_CODE = 80877103  # (1234 << 16) | 5679
GSSENC_REQUEST_CODE = 80877104  # (1234 << 16) | 5680
CANCEL_REQUEST_CODE = 80877102  # (1234 << 16) | 5678

# PostgreSQL refuses any typed message over PQ_LARGE_MESSAGE_LIMIT (MaxAllocSize - 1, ~1 GiB,
# src/backend/libpq/pqcomm.c); we compare the length word itself against 1 GiB.
DEFAULT_MAX_MESSAGE_LENGTH = 1 << 30
# The postmaster refuses startup packets whose length minus the length word exceeds this
# (MAX_STARTUP_PACKET_LENGTH in src/include/libpq/pqcomm.h); we apply the same rule.
MAX_STARTUP_PACKET_LENGTH = 10000

# Message types of protocol 3.0 by direction (protocol-message-formats.html: "(F)" / "(B)").
# F: Bind, Close, CopyData, CopyDone, CopyFail, Describe, Execute, Flush, FunctionCall,
#    PasswordMessage/SASLInitialResponse/SASLResponse/GSSResponse, Parse, Query, Sync, Terminate.
FRONTEND_TYPES = frozenset(b"BCdcfDEHFpPQSX")
# B: Authentication*, BackendKeyData, BindComplete, CloseComplete, CommandComplete, CopyData,
#    CopyDone, CopyInResponse, CopyOutResponse, CopyBothResponse, DataRow, EmptyQueryResponse,
#    ErrorResponse, FunctionCallResponse, NegotiateProtocolVersion, NoData, NoticeResponse,
#    NotificationResponse, ParameterDescription, ParameterStatus, ParseComplete, PortalSuspended,
#    ReadyForQuery, RowDescription.
BACKEND_TYPES = frozenset(b"RK23CdcGHWDIEVvnNAtS1sZT")

_INT32 = struct.Struct("!i")
_INT32_PAIR = struct.Struct("!ii")
# One shared bytes object per byte value, so a message's type costs an index, not an allocation.
_BYTE1 = tuple(bytes((i,)) for i in range(256))
_STARTUP_HEADER = 4
_TYPED_HEADER = 5


def _known_table(types: frozenset[int]) -> bytes:
    return bytes(1 if i in types else 0 for i in range(256))


_FRONTEND_KNOWN = _known_table(FRONTEND_TYPES)
_BACKEND_KNOWN = _known_table(BACKEND_TYPES)


def _probe() -> None:
    pass


# A compiled module's functions are Cython's, not Python's: `_scan_typed` takes the loop that
# suits how this module runs.
_COMPILED = type(_probe).__name__ != "function"

_COPY_AT_MOST = 8192
# A partial message needing more than this is collected in a growing bytearray (module docstring).
LARGE_MESSAGE = 1 << 20


class Message:
    """One framed message: `type` (b"" in the startup phase), `raw` (all of it, header included).

    `raw` is the message's bytes, or for a large one a memoryview into the bytes passed to `feed`;
    forward it as is, or `bytes(msg.raw)` to keep it. `body` is the payload after the header: for typed messages what follows the length
    word, for startup packets what follows the length word (so it starts with the Int32 code).
    """

    __slots__ = ("type", "raw", "_header")

    def __init__(self, type: bytes, raw: memoryview | bytes, header: int) -> None:
        self.type = type
        self.raw = raw
        self._header = header

    @property
    def body(self) -> memoryview:
        return memoryview(self.raw)[self._header :]

    @property
    def startup_code(self) -> int | None:
        """The Int32 code of a startup packet (protocol version or request code), else None."""
        if self.type or len(self.raw) < 8:
            return None
        return _INT32.unpack_from(self.raw, 4)[0]

    def __len__(self) -> int:
        return len(self.raw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.type == other.type and self.raw == other.raw

    __hash__ = None  # type: ignore[assignment]  # mutable-by-view; compare, never hash

    def __repr__(self) -> str:
        head = bytes(self.raw[:32])
        more = "..." if len(self.raw) > 32 else ""
        return f"Message(type={self.type!r}, len={len(self.raw)}, raw={head!r}{more})"


class _Framer:
    """Shared buffering and typed-message scanning; subclasses add the phases of their direction."""

    __slots__ = ("_big", "_chunks", "_have", "_need", "_dead", "_known", "max_message_length")

    def __init__(self, known: bytes, max_message_length: int) -> None:
        if max_message_length < _TYPED_HEADER - 1:
            raise ValueError("max_message_length must be at least 4")
        self._chunks: list[bytes] = []
        self._big: bytearray | None = None  # the partial message, when it is over LARGE_MESSAGE
        self._have = 0
        self._need = 0
        self._dead = False
        self._known = known
        self.max_message_length = max_message_length

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a message (a partial message)."""
        return self._have

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Append `data`; return every message it completes, in order (possibly none)."""
        if self._dead:
            raise PgProtocolError("stream already failed to frame", PROTOCOL_VIOLATION)
        size = len(data)
        if not size:
            return []
        if self._big is not None:
            return self._feed_big(data)
        if self._chunks:
            self._chunks.append(bytes(data))
            self._have += size
            if self._have < self._need:
                return []
            buf = b"".join(self._chunks)
        else:
            # bytes(b) of a bytes object is the object itself: no copy on the common path.
            buf = bytes(data)
        out: list[Message] = []
        try:
            view = memoryview(buf)
            pos = self._scan(buf, view, out)
        except PgProtocolError as exc:
            self._dead = True
            self._chunks = []
            self._have = 0
            exc.messages = list(out)
            raise
        left = len(buf) - pos
        if left and self._need > LARGE_MESSAGE:
            self._big = bytearray(view[pos:])
            self._chunks = []
        else:
            self._chunks = [buf[pos:]] if left else []
        self._have = left
        return out

    def _feed_big(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """`feed` while a large message is incomplete (typed: its header was checked)."""
        big = self._big
        assert big is not None
        missing = self._need - self._have
        if len(data) < missing:
            big += data
            self._have += len(data)
            return []
        view = memoryview(data)
        big += view[:missing]
        self._big = None
        self._chunks = []
        self._have = 0
        out = [Message(_BYTE1[big[0]], memoryview(big), _TYPED_HEADER)]
        if len(data) > missing:
            try:
                out += self.feed(bytes(view[missing:]))
            except PgProtocolError as exc:
                exc.messages = out + list(exc.messages)
                raise
        return out

    def _scan(self, buf: bytes, view: memoryview, out: list[Message]) -> int:
        raise NotImplementedError

    def _scan_typed(self, buf: bytes, view: memoryview, pos: int, out: list[Message]) -> int:
        """Typed messages of `buf` from `pos` into `out`; returns where the first incomplete one
        starts. Each twin has its loop (`_COMPILED`); tests/unit/test_native_differential.py holds
        them to the same results, errors included."""
        if _COMPILED:
            return self._scan_compiled(buf, view, pos, out)
        return self._scan_interpreted(buf, view, pos, out)

    def _scan_interpreted(self, buf: bytes, view: memoryview, pos: int, out: list[Message]) -> int:
        """`_scan_typed` for the pure-Python module: a struct call and the class call are the
        cheapest way to read a length and make a Message interpreted."""
        end = len(buf)
        known = self._known
        limit = self.max_message_length
        while True:
            avail = end - pos
            if avail < _TYPED_HEADER:
                if avail and not known[buf[pos]]:
                    raise self._unknown(buf[pos])
                self._need = _TYPED_HEADER
                return pos
            code = buf[pos]
            if not known[code]:
                raise self._unknown(code)
            length = _INT32.unpack_from(buf, pos + 1)[0]
            if length < 4 or length > limit:
                raise self._bad_length(code, length, avail)
            total = length + 1
            if avail < total:
                self._need = total
                return pos
            # Small messages as bytes (a copy no dearer than a view, and cheap to index and keep),
            # large ones as views into the buffer (no copy of a big row or COPY chunk).
            raw = buf[pos : pos + total] if total <= _COPY_AT_MOST else view[pos : pos + total]
            out.append(Message(_BYTE1[code], raw, _TYPED_HEADER))
            pos += total

    def _scan_compiled(self, buf: bytes, view: memoryview, pos: int, out: list[Message]) -> int:
        """`_scan_typed` for the compiled module (framing.pxd: `p` points to the bytes of `buf`,
        read below `end`; `msg` is a Message made by tp_new and its C fields): the length word
        from its four bytes, signed as the protocol's Int32, and no call through the type."""
        end = len(buf)
        known = self._known
        limit = self.max_message_length
        p = buf
        while True:
            avail = end - pos
            if avail < _TYPED_HEADER:
                if avail and not known[buf[pos]]:
                    raise self._unknown(buf[pos])
                self._need = _TYPED_HEADER
                return pos
            code = buf[pos]
            if not known[code]:
                raise self._unknown(code)
            length = p[pos + 1]  # a 64-bit integer: widened before its shift
            length = (length << 24) | (p[pos + 2] << 16) | (p[pos + 3] << 8) | p[pos + 4]
            if length >= 0x80000000:
                length -= 0x100000000
            if length < 4 or length > limit:
                raise self._bad_length(code, length, avail)
            total = length + 1
            if avail < total:
                self._need = total
                return pos
            # Small messages as bytes (a copy no dearer than a view, and cheap to index and keep),
            # large ones as views into the buffer (no copy of a big row or COPY chunk).
            msg = Message.__new__(Message)
            msg.type = _BYTE1[code]
            msg.raw = p[pos : pos + total] if total <= _COPY_AT_MOST else view[pos : pos + total]
            msg._header = _TYPED_HEADER
            out.append(msg)
            pos += total

    def _unknown(self, code: int) -> PgProtocolError:
        return PgProtocolError(f"unknown message type {_BYTE1[code]!r}", PROTOCOL_VIOLATION)

    def _bad_length(self, code: int, length: int, avail: int) -> PgProtocolError:
        """The error for a typed message's length word under 4 or over `max_message_length`
        (both scans raise it; off the hot path)."""
        if length < 4:
            return PgProtocolError(f"invalid length {length} for message type {_BYTE1[code]!r}", PROTOCOL_VIOLATION)
        # Over the protocol's own 1 GiB: a broken stream (08P01). Under it but over a lower
        # configured limit: a valid message we refuse to take (54000); `unread` says how many of
        # its bytes are still to come (a caller may drain them).
        limit = self.max_message_length
        exc = PgProtocolError(
            f"message type {_BYTE1[code]!r} of {length} bytes exceeds the limit of {limit}",
            PROGRAM_LIMIT_EXCEEDED if length <= DEFAULT_MAX_MESSAGE_LENGTH else PROTOCOL_VIOLATION,
        )
        exc.unread = length + 1 - avail  # type: ignore[attr-defined]
        return exc


_STARTUP, _TYPED, _CANCELLED = 0, 1, 2


class FrontendFramer(_Framer):
    """Frames client->server bytes: startup packets first, then typed messages.

    `max_startup_length` bounds a startup packet the way the postmaster does (length minus the
    length word); `max_message_length` bounds the length word of typed messages.
    """

    __slots__ = ("_phase", "max_startup_length")

    def __init__(
        self,
        *,
        startup: bool = True,
        max_message_length: int = DEFAULT_MAX_MESSAGE_LENGTH,
        max_startup_length: int = MAX_STARTUP_PACKET_LENGTH,
    ) -> None:
        super().__init__(_FRONTEND_KNOWN, max_message_length)
        self._phase = _STARTUP if startup else _TYPED
        self.max_startup_length = max_startup_length

    @property
    def in_startup(self) -> bool:
        return self._phase == _STARTUP

    def startup_done(self) -> None:
        """Switch to typed messages now (only needed if the automatic switch is not wanted)."""
        if self._phase == _STARTUP:
            self._phase = _TYPED
            self._need = 0  # rescan what is buffered under the new phase on the next feed

    def _scan(self, buf: bytes, view: memoryview, out: list[Message]) -> int:
        pos = 0
        end = len(buf)
        while self._phase != _TYPED:
            avail = end - pos
            if self._phase == _CANCELLED:
                if avail:
                    # The server closes the connection after a CancelRequest; nothing may follow.
                    raise PgProtocolError("data after CancelRequest", PROTOCOL_VIOLATION)
                return pos
            if avail < _STARTUP_HEADER:
                self._need = _STARTUP_HEADER
                return pos
            length = _INT32.unpack_from(buf, pos)[0]
            if length < 8 or length - 4 > self.max_startup_length:
                raise PgProtocolError(f"invalid length of startup packet: {length}", PROTOCOL_VIOLATION)
            if avail < length:
                self._need = length
                return pos
            code = _INT32.unpack_from(buf, pos + 4)[0]
            if code == SSL_REQUEST_CODE or code == GSSENC_REQUEST_CODE:
                # These carry nothing but the code (protocol-message-formats.html, SSLRequest).
                if length != 8:
                    raise PgProtocolError("invalid length of encryption request", PROTOCOL_VIOLATION)
            elif code == CANCEL_REQUEST_CODE:
                self._phase = _CANCELLED
            elif code >> 16 == 3:
                # Any 3.x: the server answers newer minors with NegotiateProtocolVersion.
                self._phase = _TYPED
            else:
                raise PgProtocolError(
                    f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}",
                    FEATURE_NOT_SUPPORTED,
                )
            out.append(Message(b"", view[pos : pos + length], _STARTUP_HEADER))
            pos += length
        if _COMPILED:  # _scan_typed, inlined: one call less per feed for the pure twin
            return self._scan_compiled(buf, view, pos, out)
        return self._scan_interpreted(buf, view, pos, out)


class BackendFramer(_Framer):
    """Frames server->client bytes: typed messages, plus the one-byte answer to SSL/GSS requests."""

    __slots__ = ("_expect_byte",)

    def __init__(self, *, max_message_length: int = DEFAULT_MAX_MESSAGE_LENGTH) -> None:
        super().__init__(_BACKEND_KNOWN, max_message_length)
        self._expect_byte = False

    def expect_encryption_response(self) -> None:
        """The next byte answers an SSLRequest/GSSENCRequest: 'S', 'G' or 'N' as a 1-byte message.

        A server too old to know the request answers an ErrorResponse instead, which is framed as
        usual (protocol-flow.html, "SSL Session Encryption").
        """
        self._expect_byte = True
        self._need = 0

    def _scan(self, buf: bytes, view: memoryview, out: list[Message]) -> int:
        pos = 0
        if self._expect_byte:
            code = buf[0]
            if code in b"SGN":
                self._expect_byte = False
                out.append(Message(b"", view[0:1], 1))
                pos = 1
            elif code == 0x45:  # 'E': the ErrorResponse of a pre-7.0 or refusing server
                self._expect_byte = False
            else:
                raise PgProtocolError(
                    f"unexpected answer {_BYTE1[code]!r} to an encryption request", PROTOCOL_VIOLATION
                )
        if _COMPILED:  # _scan_typed, inlined: one call less per feed for the pure twin
            return self._scan_compiled(buf, view, pos, out)
        return self._scan_interpreted(buf, view, pos, out)
