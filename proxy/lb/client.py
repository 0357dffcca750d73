"""Client-side connections of the load balancer: the per-connection request/response relay.

Theory of operation. One `ClientConn` per accepted TCP connection. Bytes go through the sans-IO
`RequestParser`; its events drive one *exchange* at a time:

    RequestHead -> pick a backend (pool.pick) -> take an idle keep-alive UpstreamConn or connect
               -> write the rewritten head and any buffered body -> stream the rest of the body
    ResponseHead/Body/EndOfMessage from the UpstreamConn -> rewritten and written to the client
    EndOfMessage of both sides -> the UpstreamConn goes back to its backend's idle list

Pipelined requests wait in `backlog` until the current exchange ends. An attempt that fails before
any response byte (connect refused, reset, timeout) is retried on another backend when the request
is idempotent and its body is still held in the retry buffer. A keep-alive connection that the
backend closed while idle ("stale") is retried once on a fresh connection whatever the method.

Flow control runs both ways: a full client write buffer pauses the upstream reader and vice versa.
Timeouts are deadlines (`deadline`, `phase`) checked by the frontend's sweeper with a coarse clock,
so the hot path does no timer bookkeeping.

The connection's state and the commonest exchange (a simple request and a simple response, from
`data_received` to `_finish_exchange`) are in its base, `ClientCore` (proxy/lb/clientcore.py,
compiled as an extension type); here is the rest: the full parser's events, bodies, tunnels,
failures and retries, replies of our own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from proxy.core.sendnow import direct_send, release, send
from proxy.http1 import (
    HOP_BY_HOP,
    LAST_CHUNK,
    Body,
    EndOfMessage,
    Framing,
    ProtocolError,
    RequestHead,
    ResponseHead,
    Tunnel,
    encode_chunk,
    simple_response,
    strip_hop_by_hop,
    write_response_head,
)
from proxy.lb.clientcore import IDEMPOTENT, P_BACKLOG, P_PENDING, ClientCore, Phase
from proxy.lb.dial import open_backend
from proxy.lb.markdown import MarkedDownMixin
from proxy.lb.outlier import Outcome
from proxy.lb.reject import RejectMixin
from proxy.upstream.conn import UpstreamConn

if TYPE_CHECKING:
    from proxy.lb.pool import Backend

__all__ = ["IDEMPOTENT", "ClientConn", "Phase"]

log = logging.getLogger("tierproxy.lb")

WRITE_HIGH_WATER = 256 * 1024
# Body bytes held while no backend connection is attached yet, before we stop reading the client.
PENDING_BODY_LIMIT = 256 * 1024
# Pipelined events held behind the current exchange before we stop reading the client.
BACKLOG_LIMIT = 64



class ClientConn(ClientCore, MarkedDownMixin, RejectMixin, asyncio.Protocol):
    # The state is ClientCore's (C fields when compiled): no instance dict here.
    __slots__ = ()

    # -- asyncio callbacks -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.direct = direct_send(transport)
        fe = self.fe
        peer = transport.get_extra_info("peername")
        self.client_ip = (peer[0] if peer else "").encode()
        fe.accepted_total += 1
        if len(fe.conns) >= fe.cfg.limits.max_client_connections or fe.draining:
            # Refuse fast so existing clients keep their share of the process.
            fe.refused_total += 1
            self.closed = True
            transport.write(simple_response(503, b"too many connections\n", [(b"retry-after", b"1")], close=True))
            transport.close()
            return
        fe.conns.add(self)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        # A new connection must start its request within client_header (a silent connection
        # holds a client slot as surely as a slowloris one); keep-alive idle applies after that.
        self.deadline = fe.now + min(fe.cfg.timeouts.client_header, fe.cfg.timeouts.client_idle)

    def eof_received(self) -> bool:
        try:
            self.parser.feed_eof()
        except ProtocolError as exc:
            if self.req is None or self.req_done:
                # Half-closed inside a request head: say what was wrong (HAProxy answers 400 too).
                self._bad_request(exc)
                return True
            # Mid-body: the request can never complete; nothing useful to answer.
            self._close()
            return False
        if self.req is None or self.req_done:
            # Half-closed after complete requests: answer them all, then close.
            self.client_eof = True
            if self.req is None and not self.backlog:
                self._close()
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._release_all()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.up is not None:
            self.up.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.up is not None:
            self.up.resume_reading()

    # -- request side ----------------------------------------------------------------------

    def _on_event(self, ev: Any) -> None:
        if type(ev) is not Tunnel and (self.backlog or (self.req is not None and self.req_done)):
            # A pipelined request behind the current exchange: keep it for later.
            self.backlog.append(ev)
            if len(self.backlog) > BACKLOG_LIMIT:
                self._pause(P_BACKLOG)
        else:
            self._handle_event(ev)

    def _handle_event(self, ev: Any) -> None:
        cls = type(ev)
        if cls is Tunnel:
            self._tunnel_from_client(ev.data)
        elif cls is RequestHead:
            self._start_request(ev)
        elif cls is Body:
            self._request_body(ev.data)
        elif cls is EndOfMessage:
            self._request_end()
        else:  # the ProtocolError behind pipelined requests (lb/reject.py)
            self._protocol_error(ev)

    async def _connect(self, backend: Backend) -> None:
        fe = self.fe
        try:
            async with asyncio.timeout(fe.cfg.timeouts.connect):
                factory = lambda: UpstreamConn(backend, fe.cfg.limits.max_header_bytes)  # noqa: E731
                # plain TCP, or TLS and/or a PROXY header as the pool says (lb/dial.py)
                up = await open_backend(fe.loop, self.pool, backend, factory, self)
        except TimeoutError:
            self.connecting = None
            self._attempt_failed(Outcome.TIMEOUT)
            return
        except OSError:  # refused, unreachable, the backend's TLS failed (ssl.SSLError)
            self.connecting = None
            self._attempt_failed(Outcome.CONNECT_FAILED)
            return
        self.connecting = None
        if self.closed or self.backend is not backend:
            up.close()
            return
        self._attach(up, reused=False)

    def _request_body(self, data: bytes) -> None:
        req = self.req
        assert req is not None
        self.xfer += len(data)
        framed = encode_chunk(data) if req.framing == Framing.CHUNKED else data
        self._forward_body(framed)

    def _forward_body(self, framed: bytes) -> None:
        if not framed:
            return
        fe = self.fe
        self.deadline = fe.now + fe.cfg.timeouts.backend_response
        buf = self.retry_buf
        if buf is not None:
            self.retry_size += len(framed)
            if self.retry_size > fe.cfg.limits.retry_buffer_bytes:
                self.retry_buf = None  # too big to replay: this request can no longer be retried
            elif type(buf) is tuple:  # the empty `()` every request starts with (lb/clientcore.py)
                self.retry_buf = [framed]
            else:
                buf.append(framed)
        if self.up is not None:
            self.up.write(framed)
        else:
            self.pending.append(framed)
            self.pending_size += len(framed)
            if self.pending_size > PENDING_BODY_LIMIT:
                self._pause(P_PENDING)

    def _request_end(self) -> None:
        req = self.req
        assert req is not None
        self.req_done = True
        if req.framing == Framing.CHUNKED:
            self._forward_body(LAST_CHUNK)
        if self.resp is not None and self.up is None and self.phase != Phase.TUNNEL:
            # The response was complete before the request body: start the next exchange.
            self._finish_exchange()

    # -- response side (called by UpstreamConn) --------------------------------------------

    def on_upstream_events(self, up: UpstreamConn, events: list[Any]) -> None:
        transport = self.transport
        assert transport is not None
        # Everything the events produce goes out in one write: one syscall per response in the
        # common case (head and body arrive together) instead of one per piece.
        out: list[bytes] = []
        for ev in events:
            cls = type(ev)
            if cls is Body:
                self.xfer += len(ev.data)
                out.append(encode_chunk(ev.data) if self.resp_chunked else ev.data)
                self.deadline = self.fe.now + self.fe.cfg.timeouts.backend_response
            elif cls is ResponseHead:
                if ev.status < 200 and ev.status != 101:
                    self.continued = True
                    # Interim (100 Continue, 103): relay, the final response follows. Never to an
                    # HTTP/1.0 client, which would take it for the final one (RFC 9110 15.2).
                    if self.req is not None and self.req.version != b"1.0":
                        out.append(write_response_head(ev.status, strip_hop_by_hop(ev.headers), ev.reason))
                    continue
                if ev.status == 101 and (self.req is None or not self.req.upgrade):
                    # RFC 9110 7.8: switching protocols is only an answer to an Upgrade request.
                    if out:
                        send(transport, self.direct, b"".join(out))
                    self.upstream_protocol_error(up, ProtocolError("101 without an Upgrade request", 502))
                    return
                out.append(self._response_head(ev))
                if ev.status == 101:
                    send(transport, self.direct, b"".join(out))
                    out = []
                    self._enter_tunnel()
            elif cls is EndOfMessage:
                if self.resp_chunked:
                    out.append(LAST_CHUNK)
                send(transport, self.direct, out[0] if len(out) == 1 else b"".join(out))
                out = []
                self._response_end(up)
            elif cls is Tunnel:
                out.append(ev.data)
            if self.closed:
                return
        if out:
            send(transport, self.direct, out[0] if len(out) == 1 else b"".join(out))

    def _response_head(self, rh: ResponseHead) -> bytes:
        """Account for the response and return its head as the client will see it."""
        fe = self.fe
        req = self.req
        backend = self.backend
        pool = self.pool
        assert req is not None and backend is not None and pool is not None and self.transport
        self.resp = rh
        status = rh.status
        cls_index = status // 100 - 1
        if 0 <= cls_index < 5:
            backend.responses[cls_index] += 1
        if status >= 500:
            pool.report_failure(backend, Outcome.HTTP_5XX, fe.now)
        else:
            pool.report_success(backend, fe.now)
        headers = rh.headers
        for k, _ in headers:
            if k in HOP_BY_HOP:
                headers = strip_hop_by_hop(headers, keep_upgrade=status == 101)
                break
        # After an Upgrade request the parser has stopped at the tunnel; if the backend refused
        # the upgrade, nothing after it can be parsed as HTTP again: close after this response.
        client_ka = req.keep_alive and not fe.draining and not self.close_after and not req.upgrade
        framing = rh.framing
        rechunk = status != 101 and (framing == Framing.CHUNKED or framing == Framing.UNTIL_CLOSE)
        # One pass straight into bytes (this runs per response). Fields come from the response
        # parser, which rejects CR, LF and CTLs; the line count below is the backstop.
        out = [b"HTTP/1.1 %d " % status, rh.reason, b"\r\n"]
        lines = 1
        for k, v in headers:
            if rechunk and k == b"content-length":
                continue
            out += (k, b": ", v, b"\r\n")
            lines += 1
        if status == 101:
            out.append(b"connection: upgrade\r\n")
            lines += 1
            client_ka = False
        elif rechunk:
            if req.version == b"1.1":
                out.append(b"transfer-encoding: chunked\r\n")
                lines += 1
                self.resp_chunked = True
            else:
                client_ka = False  # HTTP/1.0 client: the body ends when we close
        if self.set_cookie is not None:
            out += (b"set-cookie: ", self.set_cookie, b"\r\n")
            lines += 1
        if status == 101:
            pass  # "connection: upgrade" only: "close" would contradict the switch
        elif not client_ka:
            out.append(b"connection: close\r\n")
            lines += 1
        elif req.version == b"1.0":
            out.append(b"connection: keep-alive\r\n")
            lines += 1
        out.append(b"\r\n")
        self.client_ka = client_ka
        data = b"".join(out)
        if data.count(b"\n") != lines + 1:
            raise ProtocolError("CR or LF inside a response field", 502)
        return data

    # -- tunnel (Upgrade / WebSocket) ------------------------------------------------------

    def _tunnel_from_client(self, data: bytes) -> None:
        if self.phase == Phase.TUNNEL and self.up is not None:
            self.up.write(data)
        else:
            # Bytes after an Upgrade request, before the backend said 101: hold them.
            if self.tunnel_buf is None:
                self.tunnel_buf = []
                self.tunnel_size = 0
            self.tunnel_buf.append(data)
            self.tunnel_size += len(data)
            if self.tunnel_size > PENDING_BODY_LIMIT:
                self._pause(P_PENDING)  # resumed when the tunnel opens (or never: we close)

    def _enter_tunnel(self) -> None:
        self.phase = Phase.TUNNEL
        self.deadline = 0.0
        if self.tunnel_buf and self.up is not None:
            self.up.write(b"".join(self.tunnel_buf))
        self.tunnel_buf = None
        self._resume(P_PENDING)

    # -- failures --------------------------------------------------------------------------

    def upstream_lost(self, up: UpstreamConn, exc: Exception | None) -> None:
        """The backend connection closed under an exchange."""
        if up is not self.up:
            return
        if self.phase == Phase.TUNNEL:
            self.up = None
            self._release_backend()
            self._close()
            return
        if self.resp is None:
            stale = up.reused and not up.got_bytes
            self._attempt_failed(Outcome.RESET, stale=stale)
        else:
            self._abort_mid_response(Outcome.RESET)

    def upstream_closed_early(self, up: UpstreamConn, exc: ProtocolError) -> None:
        """EOF from the backend in the middle of a response (or before one)."""
        up.detach()
        self.upstream_lost(up, exc)

    def upstream_protocol_error(self, up: UpstreamConn, exc: ProtocolError) -> None:
        """The backend sent something that is not HTTP: 502, and never reuse the connection."""
        up.abort()
        if up is not self.up:
            return
        if self.resp is None:
            log.warning("bad response from backend", extra={"backend": self.backend.name if self.backend else "", "error": str(exc)})
            self.up = None
            if self.backend is not None and self.pool is not None:
                self.pool.report_failure(self.backend, Outcome.HTTP_5XX, self.fe.now)
            self._release_backend()
            self._error(502, b"bad gateway: invalid response from backend\n")
        else:
            self._abort_mid_response(Outcome.RESET)

    def _release_backend(self) -> None:
        if self.backend is not None:
            self.backend.inflight -= 1
            self.backend = None

    def _attempt_failed(self, outcome: Outcome, stale: bool = False) -> None:
        """An attempt failed before any response byte: retry it or answer 502/504."""
        if self.closed:
            return
        fe = self.fe
        pool = self.pool
        backend = self.backend
        assert pool is not None and backend is not None
        if self.up is not None:
            up, self.up = self.up, None
            up.abort()
        self._release_backend()
        replayable = self.retry_buf is not None and self.phase != Phase.TUNNEL
        if stale and not self.stale_retried and replayable:
            # The backend closed a pooled keep-alive connection as we reused it: the request
            # never reached it, so replay it once on a fresh connection to the same backend.
            self.stale_retried = True
            self._replay(backend)
            return
        pool.report_failure(backend, outcome, fe.now)
        self.last_failure = outcome
        if replayable and (self.idempotent or not self.sent) and self.attempts < pool.cfg.retries:
            self.attempts += 1
            pool.retries_total += 1
            self.exclude = self.exclude + (backend,)
            self._replay(None)
            return
        self._answer_failure(outcome)

    def _answer_failure(self, outcome: Outcome) -> None:
        if outcome is Outcome.TIMEOUT:
            self._error(504, b"gateway timeout\n")
        else:
            self._error(502, b"bad gateway: backend unavailable\n")

    def _replay(self, backend: Backend | None) -> None:
        assert self.retry_buf is not None
        self.pending = list(self.retry_buf)
        self.pending_size = self.retry_size
        if backend is None:
            self.set_cookie = None
            self._dispatch(sticky=False)
            return
        self.backend = backend
        backend.inflight += 1
        self.connecting = self.fe.loop.create_task(self._connect(backend))

    def _abort_mid_response(self, outcome: Outcome, blame_backend: bool = True) -> None:
        """The response had started: nothing can be retried; cut the client so it sees a
        truncated message rather than a wrong one."""
        if blame_backend and self.backend is not None and self.pool is not None:
            self.pool.report_failure(self.backend, outcome, self.fe.now)
        if self.up is not None:
            up, self.up = self.up, None
            up.abort()
        self._release_backend()
        self._close()

    def on_deadline(self) -> None:
        """Called by the sweeper when `deadline` has passed."""
        phase = self.phase
        if phase == Phase.IDLE:
            self._close()
        elif phase == Phase.HEAD:
            self._rejected(408, "request timeout")
            self._reply_and_close(408, b"request timeout\n")
        elif phase == Phase.BACKEND:
            if self.resp is None and self.backend is not None:
                if self.connecting is not None:
                    self.connecting.cancel()
                    self.connecting = None
                self._attempt_failed(Outcome.TIMEOUT)
            else:
                # A stall while the client is not reading (our writes to it are paused) is the
                # client's doing: it must not get a healthy backend ejected.
                self._abort_mid_response(Outcome.TIMEOUT, blame_backend=not self.write_paused)

    def too_slow(self, now: float, min_rate: int, grace: float) -> bool:
        """Whether this client holds an exchange up while moving under `min_rate` bytes/s.

        Only the client's own slowness counts: not reading our response (our writes to it are
        paused), or trickling its request body while nothing upstream is holding it back. A slow
        backend (a long poll, a slow stream) is never the client's fault."""
        if self.phase != Phase.BACKEND or self.req is None:
            return False
        elapsed = now - self.xfer_since
        if elapsed < grace or self.xfer >= min_rate * elapsed:
            return False
        if self.write_paused:
            return True
        # A client that sent "Expect: 100-continue" waits for our go before its body.
        waiting = self.req.expect_continue and not self.continued
        return not self.req_done and self.paused == 0 and not waiting

    def on_too_slow(self) -> None:
        if self.resp is None:
            self._rejected(408, "request body too slow")
            if self.up is not None:
                up, self.up = self.up, None
                up.abort()
            self._release_backend()
            self._reply_and_close(408, b"request body too slow\n")
        else:
            self._abort_mid_response(Outcome.TIMEOUT, blame_backend=False)

    # -- replies of our own ----------------------------------------------------------------

    def _protocol_error(self, exc: ProtocolError) -> None:  # counted, logged: lb/reject.py
        if self.resp is not None or (self.req is not None and self.up is not None and self.req_done):
            # A response is in progress for an earlier request; we cannot interleave an error.
            self._close()
            return
        if self.up is not None:
            up, self.up = self.up, None
            up.abort()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        self._release_backend()
        self._reply_and_close(exc.status_hint, f"{exc}\n".encode("utf-8", "replace"))

    def _error(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """Answer the current request ourselves (no backend response started)."""
        fe = self.fe
        req = self.req
        fe.proxy_errors[status] = fe.proxy_errors.get(status, 0) + 1
        # After an Upgrade request the parser is at the tunnel: no further request can follow.
        keep = (req is not None and req.keep_alive and self.req_done and not req.upgrade
                and not fe.draining and not self.close_after)
        if self.transport is not None and not self.closed:
            hdrs = list(headers or ())
            if keep and req is not None and req.version == b"1.0":
                hdrs.append((b"connection", b"keep-alive"))
            if req is not None and req.method == b"HEAD":
                data = simple_response(status, body, hdrs, close=not keep)
                data = data[: data.index(b"\r\n\r\n") + 4]
            else:
                data = simple_response(status, body, hdrs, close=not keep)
            send(self.transport, self.direct, data)
        self.client_ka = keep
        if keep:
            self._finish_exchange()
        else:
            self._close()

    def _reply_and_close(self, status: int, body: bytes) -> None:
        if self.transport is not None and not self.closed:
            send(self.transport, self.direct, simple_response(status, body, close=True))
        self._close()

    def _release_all(self) -> None:
        """Give back what the connection holds: its slot, a pending connect, the backend
        connection (aborted: a response not read to its end leaves it unusable), the in-flight
        count."""
        self.fe.conns.discard(self)
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        if self.up is not None:
            up, self.up = self.up, None
            up.abort()
        self._release_backend()

    def _close(self) -> None:
        if self.closed:
            return
        self.phase = Phase.CLOSING
        self.closed = True
        self._release_all()
        if self.transport is not None:
            release(self.direct)  # a response held to the loop round's end goes first
            self.transport.close()

    def drain(self) -> None:
        """SIGTERM: close now if idle, else after the current response."""
        if self.req is None and not self.backlog and self.phase in (Phase.IDLE, Phase.HEAD):
            if self.phase == Phase.IDLE:
                self._close()
                return
        self.close_after = True
