"""Sans-IO HTTP/1.1 parsers: bytes in, events out. No sockets, no asyncio.

Theory of operation
-------------------
`RequestParser` drives llhttp (through httptools) in its default strict mode, which rejects most
request-smuggling shapes in C (CL+TE, duplicate CL, obs-fold, bare CR/LF, bad tokens, bad chunk
sizes). Its callbacks build events into a list that `feed()` returns. On top of llhttp we check what
it lets through: HTTP/1.0 with Transfer-Encoding, codings other than a lone ``chunked``, Host
rules, versions other than 1.0/1.1, fragments and absolute-form targets, upgrade with a body.

Two things keep the per-byte cost bounded when a peer dribbles a head in tiny pieces:
* while a head is incomplete we hand llhttp complete lines only and keep the partial last line in
  a bytearray. httptools concatenates a header split across feeds with ``bytes +=``, which would be
  quadratic for a head fed a byte at a time; whole lines make that at most one join per line.
* the head size is the size reported by callbacks plus the partial line, checked on every feed.

`ResponseParser` (in `_response.py`, re-exported here) is plain Python because llhttp cannot
be told that a response answers HEAD and so has no body.

Any exception out of `feed`/`feed_eof` other than `ProtocolError` is a bug. After a
`ProtocolError` a parser is dead and raises again on every call.
"""

from __future__ import annotations

import httptools

from ._abnf import ABSOLUTE_FORM_RE, HOST_RE
from ._lenient import MAX_REWRITES_PER_FEED, RECOVERABLE, normalize, start_of_request
from ._framing import (
    CL,
    CONN,
    DEFAULT_MAX_HEADER_BYTES,
    HOST,
    SPECIAL_HEADERS,
    TE,
    parse_content_length,
)
from ._request import OPEN, RequestCore
from ._response import ResponseParser
from .errors import ProtocolError
from .events import END_OF_MESSAGE, Body, Framing, RequestHead, Tunnel
from .headers import split_tokens

__all__ = ["RequestParser", "ResponseParser", "DEFAULT_MAX_HEADER_BYTES"]

# RequestParser states (_request.py's feed_simple takes OPEN, 0, as the only false one).
_OPEN, _TUNNEL, _CLOSED, _DEAD = range(4)
assert _OPEN == OPEN


class _Closed(Exception):
    """Raised from a callback to stop llhttp after a request that closes the connection."""


def _llhttp_error(exc: Exception) -> ProtocolError:
    msg = str(exc) or type(exc).__name__
    # llhttp says "Invalid HTTP version" for a well-formed version it does not support (1.2, 3.0);
    # "Invalid major/minor version" is a malformed one, which is a plain 400.
    hint = 505 if msg == "Invalid HTTP version" else 400
    return ProtocolError(f"malformed request: {msg}", hint)


class _Callbacks:
    """The object httptools reads callbacks from; keeps them off RequestParser's public surface."""

    __slots__ = (
        "on_message_begin",
        "on_url",
        "on_header",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
    )


class RequestParser(RequestCore):
    """Server-side request parser: `feed(bytes) -> [events]`, pipelining and upgrades included.

    Events per request: RequestHead, Body*, EndOfMessage. After a request with upgrade=True
    (websocket etc.) every further byte comes back as Tunnel. After a request that does not keep
    the connection alive, later bytes are discarded (RFC 9112 9.6: the server MUST NOT process
    further requests). CONNECT is refused with 501: this is a reverse proxy.

    `feed_simple` and the fields it reads are `RequestCore`'s (_request.py, compiled: the lb's
    client connection calls it in C).
    """

    __slots__ = (
        "_p",
        "_max_body",
        "_dead_hint",
        "_events",
        "_head_done",
        "_url",
        "_headers",
        "_head_size",
        "_keep_alive",
        "_upgrade",
        "_chunked",
        "_body_total",
        "_body_seen",
        "_stall",
        "_cb_error",
        "_cb",
        "_raw",
        "_raw_skip",
    )

    def __init__(
        self,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_body_bytes: int | None = None,
    ) -> None:
        self._max_head = max_header_bytes
        self._max_body = max_body_bytes
        self._state = _OPEN
        self._dead_hint = 400
        self._events: list = []
        self._pending = bytearray()  # partial head line not yet given to llhttp
        self._in_msg = False
        self._head_done = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._keep_alive = True
        self._upgrade = False
        self._chunked = False
        self._body_total = 0  # body bytes of the current message (for max_body_bytes)
        self._body_seen = 0  # body bytes ever, to tell chunk-framing-only feeds apart
        self._stall = 0  # chunked-mode bytes fed without any body byte (extensions, trailers)
        self._cb_error: BaseException | None = None
        # The last simple request and its head (`feed_simple`): a keep-alive client that repeats
        # itself (a poller, a health checker, a load generator) gets the same answer again. The
        # head is shared between those exchanges; nothing changes a head once it is made.
        self._last_simple = b""
        self._last_head: RequestHead | None = None
        # Bytes given to llhttp since a message boundary while a head is open across feeds, and
        # how many requests they complete before it (`_recover`); None otherwise.
        self._raw: list[bytes] | None = None
        self._raw_skip = 0
        cb = _Callbacks()
        cb.on_message_begin = self._on_message_begin
        cb.on_url = self._on_url
        cb.on_header = self._on_header
        cb.on_headers_complete = self._on_headers_complete
        cb.on_body = self._on_body
        cb.on_message_complete = self._on_message_complete
        self._cb = cb
        self._p = httptools.HttpRequestParser(cb)

    @property
    def in_message(self) -> bool:
        """True once any byte of a not yet complete request has arrived."""
        return self._state == _OPEN and (self._in_msg or bool(self._pending))

    def feed(self, data: bytes) -> list:
        """Parse `data`; return the events it completes, in order. Raises ProtocolError."""
        state = self._state
        if state != _OPEN:
            if state == _TUNNEL:
                return [Tunnel(bytes(data))] if data else []
            if state == _CLOSED:
                return []
            raise ProtocolError("connection already failed", self._dead_hint)
        if type(data) is not bytes:
            data = bytes(data)
        pending = self._pending
        if pending:
            pending += data
            if b"\n" not in data:
                # Still no complete line: nothing for llhttp yet. Only the size can go wrong.
                self._check_pending()
                return []
            data = bytes(pending)
            pending.clear()
        events: list = []
        self._events = events
        try:
            self._run(data)
        except ProtocolError as exc:
            self._state = _DEAD
            self._dead_hint = exc.status_hint
            exc.events = events
            raise
        return events

    def feed_eof(self) -> list:
        """The peer closed. Returns [] at a message boundary; raises ProtocolError mid-request."""
        if self._state == _DEAD:
            raise ProtocolError("connection already failed", self._dead_hint)
        if self.in_message:
            self._state = _DEAD
            raise ProtocolError("connection closed mid-request", 400)
        return []

    # -- feeding ------------------------------------------------------------------------------

    def _run(self, data: bytes) -> None:
        n = len(data)
        start = 0
        mark = 0  # events before this index belong to bytes before `data` (after a recovery)
        rewrites = 0
        while start < n:
            if self._head_done:
                # In a body: llhttp takes everything, including any pipelined requests after it.
                before = self._body_seen
                chunked, first = self._chunked, len(self._events)
                try:
                    if not self._exec(data, start, n):
                        return
                except ProtocolError as exc:
                    # A pipelined head after this body, refused by llhttp but legal: as below.
                    if (rewrites := rewrites + 1) > MAX_REWRITES_PER_FEED:
                        raise
                    data = self._recover(exc, data, n, *self._body_end(exc, start, first, chunked))
                    n, start, mark = len(data), 0, len(self._events)
                    continue
                if self._head_done and self._chunked:
                    # Trailers are buffered inside httptools; bound them like a head.
                    if self._body_seen == before:
                        self._stall += n - start
                        if self._stall > self._max_head:
                            raise ProtocolError("chunk extensions or trailers too large", 431)
                    else:
                        self._stall = 0
                elif self._in_msg and not self._head_done and not chunked:
                    # A pipelined head began after this body: keep its bytes, as below.
                    end = self._body_end(None, start, first, chunked)
                    self._keep_raw(data, end[0], n, end[1], True)
                return
            cut = data.rfind(b"\n", start) + 1
            if cut == 0:
                self._pending += data[start:]
                self._check_pending()
                return
            fresh = not self._in_msg  # data starts at a message boundary
            try:
                if not self._exec(data, start, cut):
                    return
            except ProtocolError as exc:
                # A legal head llhttp refuses (_lenient.py): parse it again, rewritten.
                if (rewrites := rewrites + 1) > MAX_REWRITES_PER_FEED:
                    raise
                data = self._recover(exc, data, cut, 0 if fresh else -1, mark)
                n, start, mark = len(data), 0, len(self._events)
                continue
            if not self._head_done:
                # Head (this one or a pipelined next one) still open: keep the partial line,
                # and the bytes since the boundary in case llhttp refuses a later line of it.
                if cut < n:
                    self._pending += data[cut:]
                    self._check_pending()
                if self._in_msg:
                    self._keep_raw(data, 0, cut, mark, fresh)
                elif self._raw is not None:
                    self._raw = None
                return
            if self._raw is not None:
                self._raw = None
            start = cut

    def _exec(self, data: bytes, start: int, end: int) -> bool:
        """Give data[start:end] to llhttp. False when parsing has stopped (upgrade or close)."""
        chunk = data if start == 0 and end == len(data) else memoryview(data)[start:end]
        try:
            self._p.feed_data(chunk)
        except httptools.HttpParserUpgrade as exc:
            # llhttp stops right after the upgrade request; the offset is relative to `chunk`.
            self._state = _TUNNEL
            off = start + exc.args[0]
            if off < len(data):
                self._events.append(Tunnel(data[off:]))
            return False
        except httptools.HttpParserError as exc:
            err = self._cb_error
            self._cb_error = None
            if isinstance(err, _Closed):
                self._state = _CLOSED
                return False
            if isinstance(err, ProtocolError):
                raise err from None
            if err is not None:
                raise err
            if isinstance(exc, httptools.HttpParserCallbackError) and exc.__context__:
                # One of our callbacks raised something other than ProtocolError: our bug.
                raise RuntimeError("bug in an HTTP/1 parser callback") from exc.__context__
            raise _llhttp_error(exc) from None
        return True

    def _keep_raw(self, data: bytes, begin: int, end: int, mark: int, fresh: bool) -> None:
        """The bytes llhttp has of an open head, from a message boundary (bounded by the head
        limit plus one read): what `_recover` needs if a later line of that head fails.
        `data[begin:end]` went to llhttp, from a boundary if `fresh`; events from `mark` on."""
        ends = sum(1 for ev in self._events[mark:] if ev is END_OF_MESSAGE)
        if fresh:
            self._raw = [data[begin:end]]
            self._raw_skip = ends
        elif self._raw is not None:
            self._raw.append(data[begin:end])
            self._raw_skip += ends

    def _body_end(self, exc: ProtocolError | None, start: int, first: int, chunked: bool) -> tuple[int, int]:
        """For bytes given to llhttp from `start`, inside a Content-Length body (its events from
        index `first`): where that body ended, and the index of the first event after it.
        Raises `exc` when that cannot be known."""
        events = self._events
        size = 0
        for i in range(first, len(events)):
            ev = events[i]
            if ev is END_OF_MESSAGE:
                if chunked:  # decoded sizes say nothing of where the chunked framing ended
                    break
                return start + size, i + 1
            size += len(ev.data)
        raise exc or AssertionError("no end of the body")

    def _recover(self, exc: ProtocolError, data: bytes, end: int, begin: int, mark: int) -> bytes:
        """After llhttp refused something `_lenient.normalize` can make acceptable: the bytes to
        parse again with a fresh llhttp, from the failing request on. `data[begin:end]` is what
        llhttp was given from a message boundary on (begin -1: the failing head began in an
        earlier feed); events from `mark` on come from it. Raises `exc` when it cannot."""
        if str(exc) not in RECOVERABLE:
            raise exc
        events = self._events
        ends = [i for i in range(mark, len(events)) if events[i] is END_OF_MESSAGE]
        skip = len(ends)
        if begin >= 0:
            base = data[begin:end]
        elif self._raw is not None:
            base = b"".join(self._raw) + data[:end]
            skip += self._raw_skip
        else:
            raise exc
        part = base[start_of_request(base, skip) :]
        fixed = normalize(part)
        # Unchanged whole lines would fail the same way again. (Bytes after the last line end
        # go to `_pending` now, not to llhttp: a line llhttp refused before its end is retried
        # once it is complete.)
        if fixed is None or (fixed == part and part.endswith(b"\n")):
            raise exc
        # The failing request's events (llhttp refuses some heads after their last field) go.
        del events[ends[-1] + 1 if ends else mark :]
        self._raw = None
        self._in_msg = self._head_done = False
        self._p = httptools.HttpRequestParser(self._cb)
        return fixed + data[end:]

    def _check_pending(self) -> None:
        if len(self._pending) + self._head_size > self._max_head:
            if not self._url:
                raise ProtocolError("request line too long", 414)
            raise ProtocolError("request head too large", 431)

    def _fail(self, exc: BaseException) -> None:
        # httptools swallows callback exceptions into a generic error; remember ours.
        self._cb_error = exc
        raise exc

    # -- llhttp callbacks ---------------------------------------------------------------------

    def _on_message_begin(self) -> None:
        self._in_msg = True
        self._head_done = False
        self._url = b""
        self._headers = []
        self._head_size = 0

    def _on_url(self, part: bytes) -> None:
        # One call per contiguous span; whole lines make that one call except across a feed.
        self._url = self._url + part if self._url else part
        self._head_size += len(part)
        if self._head_size > self._max_head:
            self._fail(ProtocolError("request target too long", 414))

    def _on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:
            return  # a trailer field: llhttp validated it; we drop trailers (RFC 9110 6.5.1)
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._max_head:
            self._fail(ProtocolError("request head too large", 431))
        # llhttp strips leading OWS only (RFC 9112 5: field-line = name ":" OWS value OWS).
        self._headers.append((name.lower(), value.rstrip(b" \t")))

    def _on_headers_complete(self) -> None:
        try:
            head = self._build_head()
        except ProtocolError as exc:
            self._fail(exc)
            return
        self._head_done = True
        self._keep_alive = head.keep_alive
        self._upgrade = head.upgrade
        self._chunked = head.framing == Framing.CHUNKED
        self._body_total = 0
        self._stall = 0
        self._events.append(head)

    def _on_body(self, data: bytes) -> None:
        self._events.append(Body(data))
        size = len(data)
        self._body_seen += size
        if self._max_body is not None and self._chunked:
            self._body_total += size
            if self._body_total > self._max_body:
                self._fail(ProtocolError("request body too large", 413))

    def _on_message_complete(self) -> None:
        self._events.append(END_OF_MESSAGE)
        self._in_msg = False
        self._head_done = False
        self._url = b""
        self._head_size = 0
        if not self._keep_alive and not self._upgrade:
            self._fail(_Closed())

    # -- head validation ----------------------------------------------------------------------

    def _build_head(self) -> RequestHead:
        p = self._p
        ver = p.get_http_version()
        # RFC 9112 2.3 / RFC 9110 15.6.6: we speak 1.0 and 1.1 only. llhttp also lets through
        # 0.9 ("GET /" with no version) and 2.0 (the h2 preface).
        if ver == "1.1":
            version, http11 = b"1.1", True
        elif ver == "1.0":
            version, http11 = b"1.0", False
        else:
            raise ProtocolError(f"unsupported HTTP version {ver}", 505)
        method = p.get_method()
        if method == b"CONNECT":
            raise ProtocolError("CONNECT is not supported by this proxy", 501)

        headers = self._headers
        cl_values: list[bytes] | None = None
        te_values: list[bytes] | None = None
        host: bytes | None = None
        hosts = 0
        conn: list[bytes] | None = None
        expect = False
        special = SPECIAL_HEADERS
        for name, value in headers:
            kind = special.get(name)
            if kind is None:
                continue
            if kind == CL:
                if cl_values is None:
                    cl_values = [value]
                else:
                    cl_values.append(value)
            elif kind == TE:
                if te_values is None:
                    te_values = [value]
                else:
                    te_values.append(value)
            elif kind == HOST:
                hosts += 1
                host = value
            elif kind == CONN:
                if conn is None:
                    conn = split_tokens(value)
                else:
                    conn += split_tokens(value)
            elif value.lower() == b"100-continue":
                expect = True

        # RFC 9112 3.2: 400 for an HTTP/1.1 request without Host, for more than one Host field
        # line, and for a Host with an invalid value.
        if hosts > 1:
            raise ProtocolError("more than one Host header", 400)
        if host is None:
            if http11:
                raise ProtocolError("missing Host header", 400)
        elif HOST_RE.fullmatch(host) is None:
            raise ProtocolError("invalid Host header", 400)

        target = self._url
        if target[:1] != b"/":
            target, host, headers = self._non_origin_form(method, target, host, headers)
        elif b"#" in target:
            # RFC 9112 3.2.1: origin-form = absolute-path [ "?" query ]; fragments never go on
            # the wire, and a proxy must not guess what a backend would make of one.
            raise ProtocolError("fragment in request target", 400)

        framing = Framing.NONE
        content_length = None
        if te_values is not None:
            # RFC 9112 6.1: a server MUST treat an HTTP/1.0 message with Transfer-Encoding as
            # having faulty framing. 6.3 item 3: TE with CL is a smuggling attempt: reject.
            if not http11:
                raise ProtocolError("Transfer-Encoding in an HTTP/1.0 request", 400)
            if cl_values is not None:
                raise ProtocolError("both Transfer-Encoding and Content-Length", 400)
            codings = split_tokens(te_values[0])
            for extra in te_values[1:]:
                codings += split_tokens(extra)
            # RFC 9112 6.3 item 4: if chunked is not the final coding of a request, 400.
            # 7: chunked MUST NOT be applied more than once.
            if not codings or codings[-1] != b"chunked":
                raise ProtocolError("Transfer-Encoding does not end in chunked", 400)
            if len(codings) > 1:
                if b"chunked" in codings[:-1]:
                    raise ProtocolError("chunked applied more than once", 400)
                # RFC 9112 6.1: a coding we do not understand is a 501. We would have to strip
                # the (hop-by-hop) header and forward a body the backend cannot decode.
                raise ProtocolError("unsupported transfer coding", 501)
            framing = Framing.CHUNKED
        elif cl_values is not None:
            content_length = parse_content_length(cl_values, 400)
            if self._max_body is not None and content_length > self._max_body:
                raise ProtocolError("request body too large", 413)
            framing = Framing.LENGTH

        # llhttp's own flag decides whether it stops parsing; follow it so the two never disagree
        # (it needs both "Connection: upgrade" and an Upgrade header).
        upgrade = p.should_upgrade()
        if upgrade and (framing == Framing.CHUNKED or content_length):
            # llhttp would hand the body over as tunnel bytes; refuse rather than guess.
            raise ProtocolError("upgrade request with a body", 400)

        # RFC 9112 9.3: 1.1 is persistent unless "close"; 1.0 only with "keep-alive".
        if conn is None:
            keep_alive = http11
        elif b"close" in conn:
            keep_alive = False
        else:
            keep_alive = http11 or b"keep-alive" in conn

        # RFC 9110 10.1.1: a 100-continue expectation in an HTTP/1.0 request MUST be ignored.
        return RequestHead(
            method,
            target,
            version,
            headers,
            keep_alive,
            framing,
            content_length,
            upgrade,
            expect and http11,
            host,
        )

    @staticmethod
    def _non_origin_form(
        method: bytes, target: bytes, host: bytes | None, headers: list[tuple[bytes, bytes]]
    ) -> tuple[bytes, bytes | None, list[tuple[bytes, bytes]]]:
        """asterisk-form and absolute-form targets (RFC 9112 3.2.4, 3.2.2)."""
        if target == b"*":
            if method != b"OPTIONS":
                raise ProtocolError("asterisk-form target outside OPTIONS", 400)
            return target, host, headers
        m = ABSOLUTE_FORM_RE.fullmatch(target)
        if m is None:
            raise ProtocolError("invalid request target", 400)
        authority, rest = m.group(2), m.group(3)
        if b"@" in authority:
            raise ProtocolError("userinfo in absolute-form target", 400)
        if not authority or HOST_RE.fullmatch(authority) is None:
            raise ProtocolError("invalid authority in absolute-form target", 400)
        # RFC 9112 3.2.2: the server MUST ignore the received Host and use the target's
        # authority; rewrite the header too so the backend cannot see the other one.
        if rest[:1] != b"/":
            rest = b"/" + rest
        headers = [(n, authority if n == b"host" else v) for n, v in headers]
        if host is None:
            headers.append((b"host", authority))
        return rest, authority, headers


