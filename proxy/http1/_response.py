"""ResponseParser: the upstream side of the HTTP/1.1 codec, in plain Python.

llhttp cannot be told that a response answers HEAD (and so has no body), hence this parser;
`expect(method)` queues request methods in send order. It is written for the common case of a
whole response in one feed: one ``find`` for the end of the head, one regex per header line, and
body slices taken straight out of the fed bytes. Bytes that wait for a delimiter (a partial head
or chunk-size line) sit in a bytearray that is only rescanned from where the last search ended.
Public through `proxy.http1.parser`.

This file is compiled (proxy/_native.py) and is also its own pure-Python twin: _response.pxd makes
`ResponseParser` an extension type (its slots typed C fields, the helpers of `feed` C methods) and
has `feed_simple` call _simple's compiled scanner in C; tests/unit/test_native_response.py holds the
two twins to the same answers, errors included.
"""

from __future__ import annotations

from collections import deque

from ._abnf import CHUNK_LINE_RE, FIELD_BLOCK_RE, FIELD_LINE_RE, STATUS_LINE_RE
from ._framing import (
    CL,
    CONN,
    DEFAULT_MAX_HEADER_BYTES,
    MAX_CHUNK_LINE_BYTES,
    SPECIAL_HEADERS,
    TE,
    parse_content_length,
)
from ._simple import REMEMBER_MAX, simple_response
from .errors import ProtocolError
from .events import END_OF_MESSAGE, Body, Framing, ResponseHead, Tunnel
from .headers import split_tokens

__all__ = ["ResponseParser"]

# ResponseParser states.
(
    _R_HEAD,
    _R_LENGTH,
    _R_CHUNK_SIZE,
    _R_CHUNK_DATA,
    _R_CHUNK_CRLF,
    _R_TRAILER,
    _R_UNTIL_CLOSE,
    _R_TUNNEL,
    _R_CLOSED,
    _R_DEAD,
) = range(10)

# What a state must see before buffered bytes can make progress (None: any byte may help).
_R_NEEDS: dict[int, bytes | None] = {
    _R_HEAD: b"\r\n\r\n",
    _R_CHUNK_SIZE: b"\n",
    _R_TRAILER: b"\n",
    _R_CHUNK_CRLF: None,
}

_NO_BODY_STATUS = frozenset({204, 304})

# deque's methods, unbound, for the queue of expected methods: compiled (_response.pxd), their C
# functions are called directly (proxy/_deque.pxd: `self._expected.append(m)` looked `append` up by
# name first, ~0.2k instructions, and the descriptor called through Python cost ~0.11k);
# interpreted, the same number of steps either way.
_append = deque.append
_popleft = deque.popleft


def _probe() -> None:
    pass


# A compiled module's functions are Cython's, not Python's. Compiled, `_same_start` (_response.pxd)
# is `startswith` by memcmp (through Python, the method call cost ~0.4k instructions a response).
_COMPILED = type(_probe).__name__ != "function"


class ResponseParser:
    """Client-side (upstream) response parser. Call `expect(method)` once per request sent.

    Events per response: ResponseHead, Body*, EndOfMessage. Interim 1xx heads come alone and the
    final response for the same request follows. A 101 gives ResponseHead(upgrade=True) and then
    every further byte as Tunnel (no EndOfMessage). Every ProtocolError hints 502: a broken
    upstream response is a Bad Gateway for the client (RFC 9110 15.6.3).
    """

    __slots__ = (
        "_max_head",
        "_head_limit",
        "_expected",
        "_state",
        "_buf",
        "_remaining",
        "_keep_alive",
        "_interim",
        "_trailer_bytes",
        "_last_head",
        "_last_size",
        "_last_result",
    )

    def __init__(self, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> None:
        self._max_head = max_header_bytes
        # The same as an object, passed to the scanner (compiled, `_max_head` is a C integer: an
        # int object made of it per response, ~0.1k instructions).
        self._head_limit = max_header_bytes
        self._expected: deque[bytes] = deque()
        self._state = _R_HEAD
        self._buf = bytearray()  # bytes held back until a delimiter arrives
        self._remaining = 0
        self._keep_alive = True
        self._interim = False  # a 1xx was seen; the final response is still owed
        self._trailer_bytes = 0
        # The last simple response's head, total size and verdict (`feed_simple`): a backend
        # sends the same head again and again (it changes when its Date does, once a second).
        self._last_head = b""
        self._last_size = -1
        self._last_result: tuple[int, int, int, int, int] | None = None

    def expect(self, method: bytes) -> None:
        """Queue the method of a request just sent; responses are matched in order."""
        if _COMPILED:
            _call2(_append, self._expected, method)  # noqa: F821  # proxy/_deque.pxd
        else:
            _append(self._expected, method)

    @property
    def in_message(self) -> bool:
        """True once any byte of a not yet complete response has arrived."""
        state = self._state
        if state == _R_HEAD:
            return self._interim or bool(self._buf)
        return state not in (_R_TUNNEL, _R_CLOSED, _R_DEAD)

    def feed(self, data: bytes) -> list:
        """Parse `data`; return the events it completes, in order. Raises ProtocolError(502)."""
        state = self._state
        if state == _R_TUNNEL:
            return [Tunnel(bytes(data))] if data else []
        if state == _R_DEAD:
            raise ProtocolError("upstream connection already failed", 502)
        if not data:
            return []
        if type(data) is not bytes:
            data = bytes(data)
        buf = self._buf
        if buf:
            old = len(buf)
            buf += data
            need = _R_NEEDS.get(state)
            if need is not None and buf.find(need, max(0, old - len(need) + 1)) < 0:
                # No delimiter yet: avoid re-copying the whole buffer on every tiny feed.
                if state == _R_HEAD and not self._expected:
                    self._die()
                    raise ProtocolError("response bytes with no request outstanding", 502)
                self._check_buffer(len(buf))
                return []
            data = bytes(buf)
            buf.clear()
        events: list = []
        try:
            pos = self._run(data, events)
            if pos < len(data):
                buf += memoryview(data)[pos:]
                self._check_buffer(len(buf))
        except ProtocolError as exc:
            self._die()
            exc.events = events
            raise
        return events

    def feed_simple(self, data: bytes) -> tuple[int, int, int, int, int] | None:
        """`feed` for the commonest response: all of `data` one HTTP/1.1 response with its
        whole Content-Length body (see `_simple.py`), to a request that is not HEAD.
        `simple_response`'s answer when it is; the response is then consumed as `feed` would
        (no events). None: use `feed`."""
        if self._state != _R_HEAD or self._buf or self._interim or not self._expected:
            return None
        if self._expected[0] == b"HEAD":
            return None
        n = len(data)  # compiled, a C integer (_response.pxd): the length taken once, not three times
        if n == self._last_size and (
            _same_start(data, self._last_head, self._last_result) if _COMPILED else data.startswith(self._last_head)  # noqa: F821
        ):
            # The same head and the same size as the last simple response: the same verdict
            # (it depends on the head's bytes and on the size alone, never on the body's bytes).
            result = self._last_result
        else:
            result = simple_response(data, self._head_limit)
            if result is None:
                return None
            head_len = result[1]  # compiled, both compared in C (_response.pxd)
            if head_len <= REMEMBER_MAX:
                # Compiled, a response no longer than that is kept whole, not copied (~0.45k
                # instructions: a slice object and a bytes): `_same_start` compares its head only.
                self._last_head = data if _COMPILED and n <= REMEMBER_MAX else data[:head_len]
                self._last_size = n
                self._last_result = result
        if _COMPILED:
            _call1(_popleft, self._expected)  # noqa: F821  # proxy/_deque.pxd
        else:
            _popleft(self._expected)
        self._keep_alive = True
        return result

    def feed_eof(self) -> list:
        """The upstream closed. [EndOfMessage] ends an until-close body; mid-response raises."""
        state = self._state
        if state == _R_DEAD:
            raise ProtocolError("upstream connection already failed", 502)
        if state == _R_UNTIL_CLOSE:
            self._state = _R_CLOSED
            return [END_OF_MESSAGE]
        if self.in_message:
            self._die()
            raise ProtocolError("upstream closed mid-response", 502)
        return []

    def _die(self) -> None:
        self._state = _R_DEAD
        self._buf.clear()

    def _check_buffer(self, size: int) -> None:
        state = self._state
        if state == _R_HEAD:
            if size > self._max_head:
                raise ProtocolError("response head too large", 502)
        elif state == _R_TRAILER:
            if size + self._trailer_bytes > self._max_head:
                raise ProtocolError("response trailers too large", 502)
        elif size > MAX_CHUNK_LINE_BYTES:
            raise ProtocolError("chunk-size line too long", 502)

    def _run(self, data: bytes, events: list) -> int:
        """Consume as much of `data` as possible; return the offset of the unconsumed rest."""
        pos = 0
        n = len(data)
        while pos < n:
            state = self._state
            if state == _R_LENGTH or state == _R_CHUNK_DATA:
                take = n - pos
                if take > self._remaining:
                    take = self._remaining
                events.append(Body(data if take == n else data[pos : pos + take]))
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    if state == _R_LENGTH:
                        self._finish(events)
                    else:
                        self._state = _R_CHUNK_CRLF
            elif state == _R_HEAD:
                if not self._expected:
                    raise ProtocolError("response bytes with no request outstanding", 502)
                end = data.find(b"\r\n\r\n", pos)
                if end < 0:
                    # Fail garbage early instead of buffering up to the head limit.
                    prefix = data[pos : pos + 5]
                    if b"HTTP/"[: len(prefix)] != prefix:
                        raise ProtocolError("response does not start with HTTP/", 502)
                    return pos
                if end - pos > self._max_head:
                    raise ProtocolError("response head too large", 502)
                self._head(data[pos:end], events)
                pos = end + 4
            elif state == _R_CHUNK_SIZE:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    return pos
                # RFC 9112 7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
                if nl == pos or data[nl - 1] != 13:
                    raise ProtocolError("chunk-size line not ended by CRLF", 502)
                m = CHUNK_LINE_RE.fullmatch(data, pos, nl - 1)
                if m is None:
                    raise ProtocolError("invalid chunk-size line", 502)
                size = int(m.group(1), 16)
                pos = nl + 1
                if size:
                    self._remaining = size
                    self._state = _R_CHUNK_DATA
                else:
                    self._trailer_bytes = 0
                    self._state = _R_TRAILER
            elif state == _R_CHUNK_CRLF:
                if n - pos < 2:
                    if data[pos] != 13:
                        raise ProtocolError("chunk data not followed by CRLF", 502)
                    return pos
                if data[pos] != 13 or data[pos + 1] != 10:
                    raise ProtocolError("chunk data not followed by CRLF", 502)
                pos += 2
                self._state = _R_CHUNK_SIZE
            elif state == _R_TRAILER:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    return pos
                if nl == pos or data[nl - 1] != 13:
                    raise ProtocolError("trailer line not ended by CRLF", 502)
                if nl - 1 == pos:  # the empty line that ends the trailer section
                    pos = nl + 1
                    self._finish(events)
                    continue
                # RFC 9112 7.1.2: trailer-section = *( field-line CRLF ). Validated, then
                # dropped: a proxy may discard trailers (RFC 9110 6.5.1).
                if FIELD_LINE_RE.fullmatch(data, pos, nl - 1) is None:
                    raise ProtocolError("invalid trailer field", 502)
                self._trailer_bytes += nl + 1 - pos
                if self._trailer_bytes > self._max_head:
                    raise ProtocolError("response trailers too large", 502)
                pos = nl + 1
            elif state == _R_UNTIL_CLOSE or state == _R_TUNNEL:
                chunk = data if pos == 0 else data[pos:]
                events.append(Body(chunk) if state == _R_UNTIL_CLOSE else Tunnel(chunk))
                return n
            else:  # _R_CLOSED
                raise ProtocolError("bytes after a response that closed the connection", 502)
        return pos

    def _finish(self, events: list) -> None:
        events.append(END_OF_MESSAGE)
        self._state = _R_HEAD if self._keep_alive else _R_CLOSED

    def _head(self, head: bytes, events: list) -> None:
        lines = head.split(b"\r\n")
        if len(lines) > 1:
            first_end = len(lines[0]) + 2
            if FIELD_BLOCK_RE.fullmatch(head, first_end) is None:
                # Covers obs-fold, bare CR/LF, CTLs, space before the colon (RFC 9112 5.1, 5.2).
                raise ProtocolError("invalid header field line", 502)
        m = STATUS_LINE_RE.fullmatch(lines[0])
        if m is None:
            raise ProtocolError("invalid status line", 502)
        major, minor, status_b, reason = m.groups()
        if major != b"1" or minor not in (b"0", b"1"):
            raise ProtocolError("unsupported HTTP version in response", 502)
        http11 = minor == b"1"
        version = b"1.1" if http11 else b"1.0"
        status = int(status_b)
        if status < 100:
            raise ProtocolError("invalid status code", 502)

        headers = []
        cl_values: list[bytes] | None = None
        te_values: list[bytes] | None = None
        conn: list[bytes] | None = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")  # validated above: token ":" field-value
            name = name.lower()
            value = value.strip(b" \t")
            headers.append((name, value))
            kind = SPECIAL_HEADERS.get(name)
            if kind is None:
                continue
            if kind == CL:
                cl_values = [value] if cl_values is None else cl_values + [value]
            elif kind == TE:
                te_values = [value] if te_values is None else te_values + [value]
            elif kind == CONN:
                conn = split_tokens(value) if conn is None else conn + split_tokens(value)

        if conn is None:
            keep_alive = http11
        elif b"close" in conn:
            keep_alive = False
        else:
            keep_alive = http11 or b"keep-alive" in conn

        if status < 200:
            if status == 101:
                # RFC 9110 15.2.2: the connection switches protocol after this head.
                self._expected.popleft()
                self._interim = False
                events.append(
                    ResponseHead(status, reason or b"", version, headers, keep_alive, upgrade=True)
                )
                self._state = _R_TUNNEL
                return
            # RFC 9110 15.2: 1xx is interim; the final response to the same request follows.
            self._interim = True
            events.append(ResponseHead(status, reason or b"", version, headers, keep_alive))
            return

        method = self._expected.popleft()
        self._interim = False
        content_length = None
        if cl_values is not None:
            # RFC 9112 6.3 item 5: an invalid or conflicting Content-Length in a response means a
            # proxy MUST close the upstream connection and answer 502.
            content_length = parse_content_length(cl_values, 502)
        # RFC 9112 6.3 item 1: no body for HEAD, 1xx, 204 and 304, whatever the headers say.
        if method == b"HEAD" or status in _NO_BODY_STATUS:
            framing = Framing.NONE
        elif te_values is not None:
            codings = split_tokens(te_values[0])
            for extra in te_values[1:]:
                codings += split_tokens(extra)
            # We only decode chunked; anything else cannot be relayed once TE is stripped.
            if codings != [b"chunked"]:
                raise ProtocolError("unsupported transfer coding in response", 502)
            framing = Framing.CHUNKED
            if content_length is not None:
                # RFC 9112 6.3 item 3: chunked wins, and the connection MUST then be closed.
                content_length = None
                keep_alive = False
            if not http11:
                keep_alive = False  # RFC 9112 6.1: HTTP/1.0 + TE: framing is faulty, close after
        elif content_length is not None:
            framing = Framing.LENGTH
        else:
            # RFC 9112 6.3 item 8: the body runs until the server closes.
            framing = Framing.UNTIL_CLOSE
            keep_alive = False
        self._keep_alive = keep_alive
        events.append(
            ResponseHead(
                status, reason or b"", version, headers, keep_alive, framing, content_length
            )
        )
        if framing == Framing.LENGTH:
            if content_length:
                self._remaining = content_length
                self._state = _R_LENGTH
            else:
                self._finish(events)
        elif framing == Framing.CHUNKED:
            self._state = _R_CHUNK_SIZE
        elif framing == Framing.UNTIL_CLOSE:
            self._state = _R_UNTIL_CLOSE
        else:
            self._finish(events)
