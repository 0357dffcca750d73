"""The load balancer's client connection, its hot half: the state of a connection and of its
exchange, and the commonest exchange from end to end.

`ClientCore` is the base of `ClientConn` (proxy/lb/client.py, which adds the full parser's path,
bodies, tunnels, failures and replies of our own). Here is what every simple exchange runs:

    data_received -> RequestParser.feed_simple -> _start_request -> _dispatch -> _attach
        (the rewritten head written to an idle keep-alive backend connection)
    UpstreamConn.data_received -> takes_simple_response, ResponseParser.feed_simple
        -> on_simple_response (the response relayed as it came, less its Connection line)
        -> _response_end -> _finish_exchange (the next request may come)

This module is compiled (proxy/_native.py): clientcore.pxd makes `ClientCore` an extension type
whose fields are typed C fields, so reading and setting the state costs no dictionary or
descriptor lookup (compiled as a plain class it cost more than interpreted: docs/perf.md, "The
native layer"); every field stays readable and writable from Python (`public`), so the Python
half and the mixins use them as before. This `.py` is the one source and the pure-Python twin.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from proxy.core.sendnow import hold
from proxy.http1 import Framing, ProtocolError, RequestHead, RequestParser, ResponseHead
from proxy.http1._simple import cut_connection
from proxy.lb.outlier import Outcome
from proxy.upstream.conn import UpstreamClient

if TYPE_CHECKING:
    import asyncio

    from proxy.lb.frontend import Frontend
    from proxy.lb.pool import Backend, Pool
    from proxy.upstream.conn import UpstreamConn

__all__ = ["IDEMPOTENT", "P_BACKLOG", "P_PENDING", "P_UPSTREAM", "ClientCore", "FrontendCore", "Phase", "PoolCore", "SimpleHeads"]

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


class Phase:
    """What the connection is waiting for; decides what a passed deadline means."""

    IDLE = 0  # between requests (keep-alive idle timeout)
    HEAD = 1  # part of a request head received (client header timeout -> 408)
    BACKEND = 2  # request forwarded, waiting for / streaming the response
    TUNNEL = 3  # upgraded (WebSocket): no deadline
    CLOSING = 4


# The same, read once at import: compiled, a module-level C int each (clientcore.pxd); an enum's
# member looked up on its class costs ~1.3k instructions (docs/perf.md), and Phase.X a generic
# attribute lookup.
_IDLE = Phase.IDLE
_HEAD = Phase.HEAD
_BACKEND = Phase.BACKEND
_TUNNEL = Phase.TUNNEL
_LENGTH = Framing.LENGTH
_HTTP_5XX = Outcome.HTTP_5XX
_IDEMPOTENT = IDEMPOTENT
# A backend's idle list's methods (a deque), unbound: compiled (clientcore.pxd), their C functions
# called directly (proxy/_deque.pxd's `_call1`, `_call2`: a lookup by name and a call was ~0.2k
# instructions each, the descriptor called through Python ~0.11k).
_idle_pop = deque.pop
_idle_append = deque.append

# Reasons for pausing the client's reader (a bit each; reading resumes when none is left).
P_UPSTREAM = 1  # the backend connection's write buffer is full
P_PENDING = 2  # body buffered while connecting
P_BACKLOG = 4  # too many pipelined events
_P_UPSTREAM = P_UPSTREAM
_P_PENDING = P_PENDING
_P_BACKLOG = P_BACKLOG


def _cut(data: bytes, start: int, end: int) -> bytes:
    """`cut_connection`, compiled: the bytes copied around the cut into one new bytes (no slice
    objects, one allocation: ~0.5k less than two slices and their sum)."""
    if not _COMPILED or type(data) is not bytes or not 0 <= start <= end <= len(data):
        return cut_connection(data, start, end)
    return _cut_bytes(data, start, end)  # noqa: F821  # clientcore.pxd: one new bytes, two memcpy


def _probe() -> None:
    pass


# A compiled module's functions are Cython's, not Python's.
_COMPILED = type(_probe).__name__ != "function"
if _COMPILED:  # `_idempotent` (clientcore.pxd) is `in IDEMPOTENT`, spelt out in C
    assert all(_idempotent(m) for m in IDEMPOTENT)  # noqa: F821
    assert not any(_idempotent(m) for m in (b"POST", b"PATCH", b"CONNECT", b"get", b"GETS", b"HEAD ", b"", b"PROPFIND"))  # noqa: F821


class SimpleHeads:
    """A listener's request heads for its backends, for the parser's simple path (`raw_fields`
    set: the lines forwarded as they came), and the request-ID counter every head of the listener
    shares (Frontend.upstream_head, which builds the others). Compiled, `simple` writes the head
    straight into a new bytes (clientcore.pxd, `_write_simple`: ~0.3k instructions, where the
    `%`-formatting costs ~2.8k); the pure twin formats it."""

    __slots__ = ("rid", "rid_prefix", "scheme")

    def __init__(self, scheme: bytes, rid_prefix: bytes) -> None:
        self.scheme = scheme  # X-Forwarded-Proto
        self.rid_prefix = rid_prefix  # X-Request-ID: <prefix>-<counter in hex>
        self.rid = 0

    def simple(self, head: RequestHead, client_ip: bytes) -> bytes | None:
        """The head as the backend sees it (Frontend.upstream_head's first case), or None when
        `head` is not the simple path's."""
        if head.raw_fields is None:
            return None
        self.rid += 1
        if _COMPILED:
            data = _write_simple(self, head, client_ip)  # noqa: F821  # clientcore.pxd
            if data is not None:
                return data
        return b"%s %s HTTP/1.1\r\n%sx-forwarded-for: %s\r\nx-forwarded-proto: %s\r\nx-forwarded-host: %s\r\nx-request-id: %s-%x\r\n\r\n" % (
            head.method, head.target, head.forward, client_ip, self.scheme, head.host, self.rid_prefix, self.rid)  # fmt: skip


class FrontendCore:
    """What the exchange reads of its listener per request: the base of lb/frontend.py's
    `Frontend`, which sets every field (the coarse clock `now`, the routes and pools, the request
    counter, the timeouts and limits and the values read of them per request). Compiled, an
    extension type: the compiled exchange reads these as C fields (each a generic attribute lookup
    of the Frontend's dict before, ~170 instructions); its object fields are member descriptors,
    so interpreted code reads them as it read the instance dict."""

    __slots__ = ("backend_response_timeout", "batch", "client_idle_timeout", "draining", "fallback",
                 "first_byte_timeout", "limits", "max_idle_per_backend", "now", "pools", "requests_total", "routes",
                 "simple_heads", "timeouts")  # fmt: skip


class PoolCore:
    """What the exchange reads of a pool per request, and its pick: the base of lb/pool.py's
    `Pool` (which sets every field and has the rest: membership, eligibility, outcomes, status).
    Compiled, an extension type: the compiled exchange reads these fields and calls `pick` in C
    (an interpreted call of 22 bytecodes and four generic attribute lookups before), and `pick`
    calls the balancer's (lb/rotation.py) in C; its object fields are member descriptors, so
    Pool's interpreted code reads them as it read its dict."""

    __slots__ = ("_backup_balancer", "_balancer", "_eligible", "_eligible_backup", "keyed", "no_backend_total",
                 "retry_non_idempotent", "sticky")  # fmt: skip

    def pick(self, now: float, key: bytes | None = None, exclude: tuple[Backend, ...] = ()) -> Backend | None:
        """Choose a backend for one request attempt (None: nothing eligible -> 503)."""
        if exclude:
            cands, backup = self._compute(now, exclude)  # type: ignore[attr-defined]  # Pool's
        else:
            cands = self._eligible
            if cands is None:
                cands = self.eligible(now)  # type: ignore[attr-defined]  # Pool's
            backup = self._eligible_backup
        if not cands:
            return None
        # Both typed (clientcore.pxd): the balancer's pick is called through its C entry.
        return (self._backup_balancer if backup else self._balancer).pick(cands, key)


class ClientCore(UpstreamClient):
    def __init__(self, fe: Frontend) -> None:
        self.fe = fe
        # The frontend's SimpleHeads where its upstream_head is Frontend's own (not a subclass's
        # that adds to it): the simple path's head is then made here, without that call.
        self.heads = getattr(fe, "core_heads", None)
        self.transport: asyncio.Transport | None = None
        self.direct: Any = None  # send(2) straight to its socket (proxy/core/sendnow.py's DirectSend)
        self.client_ip = b""
        self.parser = RequestParser(
            max_header_bytes=fe.cfg.limits.max_header_bytes,
            max_body_bytes=fe.cfg.limits.max_body_bytes,
        )
        self.clock = fe.loop.time  # the loop's clock (latency), bound once
        self.phase = _IDLE
        self.deadline = 0.0
        self.closed = False
        self.paused = 0  # bit set of _P_* reasons
        self.write_paused = False
        self.backlog: deque[Any] = deque()
        self.close_after = False  # finish the current response, then close (drain, errors)
        self.client_eof = False  # the client half-closed: answer what it sent, then close
        self.pending: list[bytes] = []
        self._reset_exchange()

    def _reset_exchange(self) -> None:
        self.req: RequestHead | None = None
        self.req_done = False
        self.pool: Pool | None = None
        self.backend: Backend | None = None
        self.up: UpstreamConn | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.up_head = b""
        if self.pending:
            self.pending = []  # framed body bytes not yet written upstream
        self.pending_size = 0
        self.retry_buf: list[bytes] | tuple[()] | None = None  # framed body bytes, for a retry
        self.retry_size = 0
        self.attempts = 0
        self.sent = False  # the request head went to some backend (POST is then not retried)
        self.idempotent = False
        self.exclude: tuple[Backend, ...] = ()
        self.stale_retried = False
        self.last_failure: Outcome | None = None
        self.tunnel_size = 0
        self.resp: ResponseHead | None = None
        self.resp_chunked = False
        self.client_ka = False
        self.set_cookie: bytes | None = None
        self.hash_key: bytes | None = None
        self.t0 = 0.0
        self.tunnel_buf: list[bytes] | None = None
        self.xfer = 0  # client bytes moved in this exchange (request body in, response body out)
        self.xfer_since = 0.0
        self.continued = False  # an interim (100 Continue) response came for this request

    # -- bytes from the client -------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        phase = self.phase
        if phase == _IDLE:  # first: the commonest (a tunnel's phase is never idle)
            if self.req is None and not self.backlog:
                # The commonest request (a whole bodiless GET, nothing unusual) without llhttp:
                # the same RequestHead and EndOfMessage the full parser would give.
                head = self.parser.feed_simple(data)
                if head is not None:
                    # Bodiless and whole: the request has ended before it is dispatched.
                    self.req_done = True
                    self._start_request(head)
                    return
            self.phase = _HEAD
            fe = self.fe
            self.deadline = fe.now + fe.timeouts.client_header
        elif phase == _TUNNEL and self.up is not None:
            self.up.write(data)
            return
        try:
            events = self.parser.feed(data)
        except ProtocolError as exc:
            self._bad_request(exc)  # type: ignore[attr-defined]  # lb/reject.py
            return
        for ev in events:
            if self.closed:
                return
            self._on_event(ev)  # type: ignore[attr-defined]  # lb/client.py

    # -- reading control -------------------------------------------------------------------

    def _pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def pause_reading_for_upstream(self) -> None:
        self._pause(_P_UPSTREAM)

    def resume_reading_for_upstream(self) -> None:
        self._resume(_P_UPSTREAM)

    # -- request side ----------------------------------------------------------------------

    def _start_request(self, head: RequestHead) -> None:
        fe = self.fe
        self.req = head
        self.phase = _BACKEND
        now = fe.now
        self.xfer_since = now
        self.deadline = now + fe.first_byte_timeout
        self.t0 = self.clock()
        fe.requests_total += 1
        pool = self.pool = fe.route(head) if fe.routes else fe.pools[fe.fallback]
        # Every request keeps a retry buffer (bounded): one that never reached a backend (connect
        # refused or timed out) can be replayed whatever its method. Empty, the shared `()`: the
        # first body bytes give it a list of its own (lb/client.py), so a bodiless request makes
        # none (a new list and its freeing, ~0.1k instructions compiled).
        self.retry_buf = ()
        # Compiled, the method compared in C (clientcore.pxd; the frozenset's lookup through
        # PySequence_Contains cost ~0.26k).
        self.idempotent = (
            (_idempotent(head.method) if _COMPILED else head.method in _IDEMPOTENT)  # noqa: F821
            or pool.retry_non_idempotent
        )
        if pool.keyed:
            self.hash_key = fe.hash_key(pool, head, self.client_ip)
        heads = self.heads
        up_head = heads.simple(head, self.client_ip) if heads is not None else None
        self.up_head = up_head if up_head is not None else fe.upstream_head(head, self.client_ip)
        self._dispatch_at(pool.sticky is not None, now)

    def _dispatch(self, sticky: bool = False) -> None:
        """Choose a backend for this attempt and get a connection to it."""
        self._dispatch_at(sticky, self.fe.now)

    def _dispatch_at(self, sticky: bool, now: float) -> None:
        fe = self.fe
        pool = self.pool
        backend = None
        if sticky:
            backend = fe.sticky_target(pool, self.req, now)
        if backend is None:
            backend = pool.pick(now, self.hash_key, self.exclude)
            if backend is None:
                if self.last_failure is not None:
                    # A retry found no other backend: report the failure we actually had.
                    self._answer_failure(self.last_failure)  # type: ignore[attr-defined]
                    return
                pool.no_backend_total += 1
                self._error(503, b"no backend available\n", [(b"retry-after", b"1")])  # type: ignore[attr-defined]
                return
            if pool.sticky is not None:
                self.set_cookie = fe.sticky_cookie(pool, backend)
        self.backend = backend
        backend.inflight += 1
        backend.requests += 1
        idle = backend.idle
        while idle:
            up = _call1(_idle_pop, idle) if _COMPILED else _idle_pop(idle)  # noqa: F821  # _deque.pxd
            if not up.closed:
                self._attach_at(up, True, now)
                return
        self.connecting = fe.loop.create_task(self._connect(backend))  # type: ignore[attr-defined]

    def _attach(self, up: UpstreamConn, reused: bool) -> None:
        self._attach_at(up, reused, self.fe.now)

    def _attach_at(self, up: UpstreamConn, reused: bool, now: float) -> None:
        req = self.req
        self.up = up
        up.client = self
        up.reused = reused
        up.got_bytes = False
        up.parser.expect(req.method)
        if self.write_paused:
            up.pause_reading()
        elif up.read_paused:
            up.resume_reading()
        # An attached connection is open: an idle one is taken only if not closed, a new one
        # comes from connection_made.
        if _COMPILED:
            # Held to the loop round's end, then send(2) where safe (proxy/core/sendnow.py), a C call.
            hold(self.fe.batch, up.transport, up.direct, self.up_head)
        else:
            up.transport.write(self.up_head)
        self.sent = True
        if self.pending:
            up.write(b"".join(self.pending))
            self.pending = []
            self.pending_size = 0
            self._resume(_P_PENDING)
        fe = self.fe
        self.deadline = now + fe.backend_response_timeout

    # -- the simple response (called by UpstreamConn) --------------------------------------

    def takes_simple_response(self) -> bool:
        """The response can go out as the backend sent it (less its Connection line): an
        HTTP/1.1 keep-alive exchange whose request has ended and with nothing to add to the head
        (no sticky cookie, no "connection: close")."""
        req = self.req
        fe = self.fe
        return (
            req is not None and self.req_done and self.resp is None and self.set_cookie is None
            and req.keep_alive and req.version == b"1.1" and not req.upgrade and not self.close_after
            and not fe.draining
        )  # fmt: skip

    def on_simple_response(self, up: UpstreamConn, data: bytes, result: tuple[int, int, int, int, int]) -> None:
        """A whole response that `ResponseParser.feed_simple` took: what `_response_head` and
        `on_upstream_events` do for it, in one step."""
        status, _head_len, body_len, cut_start, cut_end = result
        fe = self.fe
        backend = self.backend
        pool = self.pool
        # What the rest of the exchange reads of the head (`keep_alive`); one per status, kept.
        # Compiled, a dict's `get` and store in C (clientcore.pxd types the field).
        heads = fe.simple_heads
        rh = heads.get(status)
        if rh is None:
            rh = heads[status] = ResponseHead(status, b"", b"1.1", [], True, _LENGTH)
        self.resp = rh
        backend.responses[status // 100 - 1] += 1  # 2xx-5xx: feed_simple takes nothing else
        if status >= 500:
            pool.report_failure(backend, _HTTP_5XX, fe.now)
        elif backend.fail_streak:  # report_success has nothing to do otherwise
            pool.report_success(backend, fe.now)
        self.client_ka = True
        self.xfer += body_len
        if cut_start != cut_end:
            # Compiled, `_cut` is a C call (through a module global, a Python call of its wrapper).
            data = _cut(data, cut_start, cut_end) if _COMPILED else cut_connection(data, cut_start, cut_end)
        if _COMPILED:
            # Held to the loop round's end, then send(2) where safe (proxy/core/sendnow.py), a C call.
            hold(fe.batch, self.transport, self.direct, data)
        else:
            self.transport.write(data)
        self._response_end_at(up, True)  # `rh.keep_alive`, read by `_response_end`

    # -- the exchange's end ----------------------------------------------------------------

    def _response_end(self, up: UpstreamConn) -> None:
        resp = self.resp
        self._response_end_at(up, resp is not None and resp.keep_alive)

    def _response_end_at(self, up: UpstreamConn, keep_alive: bool) -> None:
        """`_response_end`, given the response head's `keep_alive` (False: no head): the simple
        path knows it is True (compiled, `ResponseHead` is a Python class: a generic attribute
        lookup, ~0.14k instructions)."""
        fe = self.fe
        backend = self.backend
        self.up = None
        up.client = None
        backend.inflight -= 1
        t = self.clock()  # compiled, a double (clientcore.pxd): the difference a C subtraction
        backend.latency.observe(t - self.t0)
        idle = backend.idle
        reusable = (
            keep_alive
            and self.req_done
            and not backend.draining
            and not backend.removed
            and not up.closed
            and not up.private
            and len(idle) < fe.max_idle_per_backend
        )
        now = fe.now
        if reusable:
            if up.read_paused:
                up.resume_reading()
            up.reused = True
            up.idle_since = now
            if _COMPILED:
                _call2(_idle_append, idle, up)  # noqa: F821  # proxy/_deque.pxd
            else:
                _idle_append(idle, up)
        else:
            up.close()
        self.backend = None
        if self.req_done:
            self._finish_at(now)
        else:
            # The backend answered before the request body ended (an early 413, say): the rest
            # of the body cannot be told apart from the next request safely, so close.
            self.client_ka = False
            self._close()  # type: ignore[attr-defined]

    def _finish_exchange(self) -> None:
        self._finish_at(self.fe.now)

    def _finish_at(self, now: float) -> None:
        if not self.client_ka or self.close_after:
            self._close()  # type: ignore[attr-defined]
            return
        self._reset_exchange()
        self.phase = _IDLE
        fe = self.fe
        self.deadline = now + fe.client_idle_timeout
        if self.paused:
            self._resume(_P_BACKLOG)
        # Replay pipelined events until one exchange is again waiting on its backend.
        backlog = self.backlog
        if backlog:
            while backlog and not self.closed and (self.req is None or not self.req_done):
                ev = backlog.popleft()
                if self.req is None and type(ev) is RequestHead:
                    self.phase = _HEAD
                self._handle_event(ev)  # type: ignore[attr-defined]
        if self.client_eof and self.req is None and not self.closed:
            self._close()  # type: ignore[attr-defined]


# Compiled, the object fields are member descriptors, not Cython's getsets (proxy/_members.pxd):
# ClientConn's interpreted half (bodies, failures, the full parser's events) and the frontend read
# and set them as fast as a slot of a Python class. (The typed fields keep their getsets.)
if _COMPILED:
    as_members(FrontendCore, ("draining", "fallback", "limits", "now", "pools", "routes", "timeouts"))  # noqa: F821
    as_members(PoolCore, tuple(n for n in PoolCore.__slots__ if not n.endswith("_balancer")))  # noqa: F821
    as_members(ClientCore, ("backend", "backlog", "clock", "connecting", "direct", "exclude", "fe", "hash_key",  # noqa: F821
                            "last_failure", "pool", "req", "resp", "retry_buf", "set_cookie", "transport",
                            "tunnel_buf", "up"))
