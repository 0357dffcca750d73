"""HTTP/2 to clients (ALPN h2 on an https listener with `http2 = true`; prior knowledge on a plain
listener with `h2c = true`), with the `h2` library.

Each stream is one HTTP/1.1 exchange run by the listener's own `ClientConn` class (as a mixin
subclass, `H2StreamConn`) over a `StreamTransport`: the request's header list is written out as an
HTTP/1.1 head (DATA as its body, chunked unless Content-Length was given) and fed to it; what it
writes back, an HTTP/1.1 response, is parsed again (`ResponseParser`) into HEADERS and DATA
frames. So routing, stickiness, retries, timeouts, redispatch, metrics and the backend keep-alive
pools are the HTTP/1.1 ones, unchanged; the price is re-encoding heads on this path only.

Limits: SETTINGS_MAX_CONCURRENT_STREAMS (`limits.h2_max_concurrent_streams`), header lists up to
`limits.max_header_bytes` (h2's HPACK decoder refuses more: HPACK bombs), the dynamic table at
4096 bytes, flow control both ways (a stream's request body is acknowledged only as its exchange
takes it; its response is buffered up to 256 KiB before the backend is paused), CONTINUATION
floods and rapid reset (lb/h2guard.py), and a client that does not read stops being read.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error, StreamClosedError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from proxy.http1 import (
    Body,
    EndOfMessage,
    ProtocolError,
    ResponseHead,
    ResponseParser,
    encode_chunk,
    strip_hop_by_hop,
)
from proxy.lb.client import ClientConn
from proxy.lb.h2fields import request_fields_error, simple_response_fields, trailer_fields_error
from proxy.lb.h2guard import PREFACE, FrameScanner, ResetBudget
from proxy.lb.hpackenc import StaticEncoder

if TYPE_CHECKING:
    from proxy.lb.frontend import Frontend

__all__ = ["AlpnSwitch", "H2Conn", "H2StreamConn", "H2cConn", "StreamTransport"]

log = logging.getLogger("tierproxy.lb")

STREAM_HIGH_WATER = 256 * 1024
# Client stream resets allowed: this many at once, refilled per second (rapid reset).
RESET_BURST = 200
RESET_PER_SECOND = 50
_DROP_REQUEST = frozenset({b"host", b"te", b"connection", b"keep-alive", b"proxy-connection",
                           b"transfer-encoding", b"upgrade"})  # fmt: skip


class H2StreamConn(ClientConn):
    """Mixed in before a listener's connection class: one stream's exchange."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.client_ip = transport.client_ip
        fe = self.fe
        fe.conns.add(self)
        self.deadline = fe.now + fe.cfg.timeouts.client_header


class StreamTransport:
    """The transport a stream's `H2StreamConn` writes to (the subset ClientConn uses)."""

    def __init__(self, owner: H2Conn, sid: int, method: bytes, chunked: bool) -> None:
        self.owner = owner
        self.sid = sid
        self.client_ip = owner.client_ip
        self.chunked = chunked  # request body sent chunked (no Content-Length from the client)
        self.parser = ResponseParser(max_header_bytes=owner.fe.cfg.limits.max_header_bytes)
        self.parser.expect(method)
        self.conn: ClientConn | None = None
        self.out: deque[bytes] = deque()  # response DATA waiting for flow-control window
        self.out_size = 0
        self.end_pending = False  # the response ended: END_STREAM after `out`
        self.ended = False  # END_STREAM sent, or the stream reset
        self.headers_sent = False
        self.closing = False
        self.reading_paused = False
        self.held: deque[tuple[bytes, int]] = deque()  # request body held while paused
        self.write_paused = False

    # -- what ClientConn calls ------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.owner.transport.get_extra_info(name, default) if self.owner.transport else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # STREAM_HIGH_WATER applies

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        if self.ended or self.closing:
            return
        if not self.headers_sent:
            simple = self.parser.feed_simple(data)
            if simple is not None:
                self._simple(data, simple)
                return
        try:
            events = self.parser.feed(data)
        except ProtocolError:
            self.owner.reset(self, ErrorCodes.INTERNAL_ERROR)
            return
        h2 = self.owner.h2
        for i, ev in enumerate(events):
            cls = type(ev)
            if cls is Body:
                if ev.data:
                    self.out.append(ev.data)
                    self.out_size += len(ev.data)
            elif cls is ResponseHead:
                if ev.status < 200:
                    continue  # interim answers are not relayed over h2
                headers = [(b":status", b"%d" % ev.status)]
                headers += [(k, v) for k, v in strip_hop_by_hop(ev.headers)]
                last = i + 1 < len(events) and type(events[i + 1]) is EndOfMessage
                try:
                    h2.send_headers(self.sid, headers, end_stream=last)
                except (H2Error, ValueError):
                    self.owner.reset(self, ErrorCodes.INTERNAL_ERROR)
                    return
                self.headers_sent = True
                if last:
                    self._finished()
                    self.owner.send()
                    return
            elif cls is EndOfMessage:
                self.end_pending = True
        self.owner.flush_stream(self)

    def _simple(self, data: bytes, result: tuple[int, int, int, int, int]) -> None:
        """A whole Content-Length response that the simple recogniser took (what
        `SimpleResponseMixin.on_simple_response` writes): its header list without a second parse."""
        status, head_len, body_len, cut_start, cut_end = result
        owner = self.owner
        head = data[:head_len] if cut_start == cut_end else data[:cut_start] + data[cut_end:head_len]
        if head == owner.last_head:  # a backend's heads repeat: the same list again
            fields = owner.last_fields
        else:
            fields = simple_response_fields(head, status)
            if head_len <= 4096:
                owner.last_head, owner.last_fields = head, fields
        try:
            owner.h2.send_headers(self.sid, fields, end_stream=body_len == 0)
        except (H2Error, ValueError):
            owner.reset(self, ErrorCodes.INTERNAL_ERROR)
            return
        self.headers_sent = True
        if body_len == 0:
            self._finished()
            owner.send()
            return
        self.out.append(data[head_len:])
        self.out_size += body_len
        self.end_pending = True
        owner.flush_stream(self)

    def _finished(self) -> None:
        self.ended = True
        conn = self.conn
        if conn is not None:
            # The exchange has ended (ClientConn finishes it right after this write): then drop it.
            self.owner.loop.call_soon(conn._close)
        self.owner.stream_done(self)

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False
        while self.held and not self.reading_paused and self.conn is not None and not self.conn.closed:
            data, acked = self.held.popleft()
            self._deliver(data, acked)

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if not self.ended and not self.end_pending:
            # Closed before the response ended (a cut backend, our error after headers): the
            # client must not take a truncated body for a whole one.
            self.owner.reset(self, ErrorCodes.INTERNAL_ERROR if self.headers_sent else ErrorCodes.REFUSED_STREAM)

    def abort(self) -> None:
        self.close()

    # -- request side ---------------------------------------------------------------------

    def body(self, data: bytes, acked: int) -> None:
        if self.chunked and data:
            data = encode_chunk(data)
        if self.reading_paused or self.held:
            self.held.append((data, acked))
        else:
            self._deliver(data, acked)

    def body_end(self) -> None:
        if self.chunked:
            self.body(b"", 0)
            if self.reading_paused or self.held:
                self.held.append((b"0\r\n\r\n", 0))
            else:
                self._deliver(b"0\r\n\r\n", 0)

    def _deliver(self, data: bytes, acked: int) -> None:
        conn = self.conn
        if conn is not None and not conn.closed and data:
            conn.data_received(data)
        if acked and not self.ended:
            try:
                self.owner.h2.acknowledge_received_data(acked, self.sid)
            except (H2Error, ValueError):
                pass
            self.owner.send()


class H2Conn(asyncio.Protocol):
    """One HTTP/2 client connection."""

    def __init__(self, fe: Frontend, conn_cls: type[ClientConn], client_ip: bytes | None = None,
                 proxied: Any = None, counted: bool = False) -> None:  # fmt: skip
        self.fe = fe
        self.loop = fe.loop
        limits = fe.cfg.limits
        self.stream_cls: type[ClientConn] = type("H2_" + conn_cls.__name__, (H2StreamConn, conn_cls), {})
        # What we send is an HTTP/1.1 response our own parser took apart (names lowercased tokens,
        # values trimmed, hop-by-hop fields gone, so nothing h2 would refuse) and :status: h2's
        # outbound validation and normalisation would redo that per stream. The client's fields
        # are checked by lb/h2fields.py in one pass instead of h2's chain of generators (same
        # rules); split cookie fields are joined by _request. Together a third of this path's CPU.
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None,
                                               validate_outbound_headers=False,
                                               normalize_outbound_headers=False,
                                               validate_inbound_headers=False,
                                               normalize_inbound_headers=False))
        # Response header blocks without the dynamic table, each field's bytes cached (lb/hpackenc.py).
        self.h2.encoder = StaticEncoder()  # type: ignore[assignment]
        # Our SETTINGS, sent by initiate_connection (h2's documented way to set them first).
        self.h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: limits.h2_max_concurrent_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_bytes,
            SettingCodes.HEADER_TABLE_SIZE: 4096,
            SettingCodes.ENABLE_PUSH: 0,
        })
        self.transport: Any = None
        self.client_ip = client_ip or b""
        self.proxied = proxied
        self.streams: dict[int, StreamTransport] = {}
        self.scanner = FrameScanner(max_block=limits.max_header_bytes + 16384, max_frames=32)
        self.resets = ResetBudget(RESET_BURST, RESET_PER_SECOND, self.loop.time())
        self.closed = False
        self.write_paused = False
        self.send_scheduled = False  # a send_now is queued for this event-loop turn
        self.counted = counted  # accepted (and admitted) already, as an HTTP/1.1 connection (h2c)
        self.idle_since = self.loop.time()  # no stream open since (timeouts.client_idle applies)
        self.draining = False  # GOAWAY sent: no new stream; close when the open ones are done
        # The last simple response head relayed and its header list (StreamTransport._simple).
        self.last_head = b""
        self.last_fields: list[tuple[bytes, bytes]] = []

    # -- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        fe = self.fe
        if not self.client_ip:
            peer = transport.get_extra_info("peername")
            self.client_ip = (peer[0] if peer else "").encode()
        if self.proxied is not None and self.proxied[0] is not None:
            self.client_ip = self.proxied[0][0].encode()
        self.h2.initiate_connection()
        window = fe.cfg.limits.h2_initial_window_size
        if window != 65535:
            # A second SETTINGS, pending until the client ACKs it (RFC 9113 6.9.2: until then it
            # may send 65,535 per stream); h2 then moves the open streams' windows by the delta.
            self.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: window})
            if window > 65535:  # the connection's window is not a setting: WINDOW_UPDATE on 0
                self.h2.increment_flow_control_window(window - 65535)
        if not self.counted:
            fe.accepted_total += 1
        if not self.counted and (len(fe.conns) + len(fe.h2_conns) >= fe.cfg.limits.max_client_connections
                                 or fe.draining):  # fmt: skip
            fe.refused_total += 1
            self.goaway(ErrorCodes.REFUSED_STREAM, "too many connections")
            return
        fe.h2_conns.add(self)
        self.send()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        why = self.scanner.feed(data)
        if why is not None:
            code = ErrorCodes(self.scanner.error_code)
            if code == ErrorCodes.ENHANCE_YOUR_CALM:
                self.fe.h2_abuse["continuation"] = self.fe.h2_abuse.get("continuation", 0) + 1
            self.goaway(code, why)
            return
        try:
            events = self.h2.receive_data(data)
        except H2Error as exc:
            code = getattr(exc, "error_code", None) or ErrorCodes.PROTOCOL_ERROR
            if "Oversized header block" in str(exc):
                self.fe.h2_abuse["header_list"] = self.fe.h2_abuse.get("header_list", 0) + 1
            self.goaway(code, str(exc))
            return
        for ev in events:
            if self.closed:
                return
            cls = type(ev)
            if cls is RequestReceived:
                why = request_fields_error(ev.headers)
                if why is not None:  # malformed (RFC 9113 8.1.1): as h2 itself would, a connection error
                    self.goaway(ErrorCodes.PROTOCOL_ERROR, why)
                    return
                self._request(ev)
            elif cls is DataReceived:
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    st.body(ev.data, ev.flow_controlled_length)
                else:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif cls is StreamEnded:
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    st.body_end()
            elif cls is StreamReset:
                st = self.streams.pop(ev.stream_id, None)
                if st is not None:
                    st.ended = True
                    if st.conn is not None:
                        st.conn._close()
                if not self.resets.spend(self.loop.time()):
                    self.fe.h2_abuse["rapid_reset"] = self.fe.h2_abuse.get("rapid_reset", 0) + 1
                    self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, "too many stream resets (rapid reset)")
                    return
            elif cls is WindowUpdated:
                self.flush()
            elif cls is TrailersReceived:  # not forwarded, but checked as h2 would
                why = trailer_fields_error(ev.headers)
                if why is not None:
                    self.goaway(ErrorCodes.PROTOCOL_ERROR, why)
                    return
            elif cls is ConnectionTerminated:
                self._close()
                return
        self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        self._close()

    def pause_writing(self) -> None:
        # The client does not read: stop reading it (its pings and settings want answers too).
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        self.flush()

    def eof_received(self) -> bool:
        return False

    # -- streams --------------------------------------------------------------------------

    def _request(self, ev: RequestReceived) -> None:
        sid = ev.stream_id
        fe = self.fe
        if self.draining:  # after our GOAWAY: not processed, the client may retry it elsewhere
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        fe.h2_requests += 1
        method = path = authority = None
        cookies: list[bytes] = []
        lines: list[bytes] = []
        has_length = False
        for k, v in ev.headers:
            if k.startswith(b":"):
                if k == b":method":
                    method = v
                elif k == b":path":
                    path = v
                elif k == b":authority":
                    authority = v
                continue
            if k == b"cookie":
                cookies.append(v)  # RFC 9113 8.2.3: split crumbs are joined again for HTTP/1.1
                continue
            if k == b"host":
                authority = authority or v
                continue
            if k in _DROP_REQUEST:
                continue
            if k == b"content-length":
                has_length = True
            lines.append(k + b": " + v + b"\r\n")
        if method is None or path is None or method == b"CONNECT":
            self._answer(sid, 501 if method == b"CONNECT" else 400)
            return
        ended = ev.stream_ended is not None
        chunked = not ended and not has_length
        head = [method, b" ", path, b" HTTP/1.1\r\n"]
        if authority is not None:
            head.append(b"host: " + authority + b"\r\n")
        if cookies:
            head.append(b"cookie: " + b"; ".join(cookies) + b"\r\n")
        head += lines
        if chunked:
            head.append(b"transfer-encoding: chunked\r\n")
        head.append(b"\r\n")
        st = StreamTransport(self, sid, method, chunked)
        self.streams[sid] = st
        conn = self.stream_cls(fe)
        if self.proxied is not None:
            conn.proxied = self.proxied
        st.conn = conn
        conn.connection_made(st)
        conn.data_received(b"".join(head))

    def _answer(self, sid: int, status: int) -> None:
        try:
            self.h2.send_headers(sid, [(b":status", b"%d" % status), (b"content-length", b"0")], end_stream=True)
        except H2Error:
            pass

    def flush_stream(self, st: StreamTransport) -> None:
        h2 = self.h2
        if not self.write_paused:
            while st.out and not st.ended:
                try:
                    window = min(h2.local_flow_control_window(st.sid), h2.max_outbound_frame_size)
                except (StreamClosedError, H2Error):
                    st.out.clear()
                    st.out_size = 0
                    break
                if window <= 0:
                    break
                chunk = st.out[0]
                if len(chunk) > window:
                    st.out[0] = chunk[window:]
                    chunk = chunk[:window]
                else:
                    st.out.popleft()
                st.out_size -= len(chunk)
                if not st.out and st.end_pending:
                    # The last DATA frame carries END_STREAM (not an empty frame after it).
                    h2.send_data(st.sid, chunk, end_stream=True)
                    st._finished()
                    break
                h2.send_data(st.sid, chunk)
            if not st.out and st.end_pending and not st.ended:
                try:
                    h2.end_stream(st.sid)
                except H2Error:
                    pass
                st._finished()
        conn = st.conn
        if conn is not None and not st.ended:
            if not st.write_paused and st.out_size > STREAM_HIGH_WATER:
                st.write_paused = True
                conn.pause_writing()
            elif st.write_paused and st.out_size <= STREAM_HIGH_WATER // 2:
                st.write_paused = False
                conn.resume_writing()
        self.send()

    def flush(self) -> None:
        for st in list(self.streams.values()):
            self.flush_stream(st)
        self.send()

    def check_idle(self, now: float, idle: float) -> None:
        """From the sweeper: a connection with no stream for `idle` seconds is closed (GOAWAY)."""
        if self.streams:
            self.idle_since = now
        elif now - self.idle_since > idle:
            self.goaway(ErrorCodes.NO_ERROR, "idle")

    def stream_done(self, st: StreamTransport) -> None:
        self.streams.pop(st.sid, None)
        if self.draining and not self.streams:
            self.loop.call_soon(self.goaway, ErrorCodes.NO_ERROR, "drained")

    def reset(self, st: StreamTransport, code: ErrorCodes) -> None:
        if not st.ended:
            st.ended = True
            try:
                self.h2.reset_stream(st.sid, code)
            except H2Error:
                pass
        self.streams.pop(st.sid, None)
        self.send()

    def send(self) -> None:
        """Write what h2 has queued, once per event-loop turn: the responses of many streams
        that complete in the same turn leave in one TLS record and one send(2), not one each."""
        if not self.send_scheduled and not self.closed:
            self.send_scheduled = True
            self.loop.call_soon(self.send_now)

    def send_now(self) -> None:
        self.send_scheduled = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def goaway(self, code: ErrorCodes, why: str) -> None:
        """Close the connection with GOAWAY (`why` logged at debug: clients cause it)."""
        log.debug("http/2 connection closed", extra={"error": why, "client": self.client_ip.decode("ascii", "replace")})
        try:
            self.h2.close_connection(code)
        except H2Error:
            pass
        self.send_now()  # before the transport closes
        self._close()

    def drain(self) -> None:
        """SIGTERM: GOAWAY now naming the last stream we take; open streams finish, then the
        connection closes. h2's close_connection would end the state machine (no more frames
        for open streams), so this first GOAWAY is written beside it, on a frame boundary."""
        if not self.streams:
            self.goaway(ErrorCodes.NO_ERROR, "draining")
            return
        self.draining = True
        self.send_now()  # what is queued goes before the GOAWAY written beside h2
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.h2.highest_inbound_stream_id
        frame.error_code = ErrorCodes.NO_ERROR
        if self.transport is not None and not self.closed:
            self.transport.write(frame.serialize())

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.fe.h2_conns.discard(self)
        for st in list(self.streams.values()):
            st.ended = True
            if st.conn is not None:
                st.conn._close()
        self.streams.clear()
        if self.transport is not None:
            self.transport.close()


class AlpnSwitch(asyncio.Protocol):
    """An https listener's protocol until the handshake is done: then HTTP/2 if the client
    chose h2 by ALPN, else the listener's HTTP/1.1 connection class."""

    def __init__(self, fe: Frontend, conn_cls: type[ClientConn], proxied: Any = None) -> None:
        self.fe = fe
        self.conn_cls = conn_cls
        self.proxied = proxied

    def connection_made(self, transport: Any) -> None:
        sslobj = transport.get_extra_info("ssl_object")
        chosen = sslobj.selected_alpn_protocol() if sslobj is not None else None
        proto: asyncio.Protocol
        if chosen == "h2":
            proto = H2Conn(self.fe, self.conn_cls, proxied=self.proxied)
        else:
            proto = self.conn_cls(self.fe)
            if self.proxied is not None:
                proto.proxied = self.proxied
        transport.set_protocol(proto)
        proto.connection_made(transport)


class H2cConn(ClientConn):
    """A plain listener with `h2c = true`: HTTP/2 when the connection starts with the HTTP/2
    preface (prior knowledge, RFC 9113 3.3), else HTTP/1.1 as usual. Until the first bytes tell,
    this is an ordinary HTTP/1.1 connection (its deadlines apply)."""

    h2_stream_base: type[ClientConn] = ClientConn  # the listener's class without this one
    _sniffed = b""
    _decided = False

    def data_received(self, data: bytes) -> None:
        if self._decided or self.closed:
            super().data_received(data)
            return
        buf = self._sniffed + data
        n = min(len(buf), len(PREFACE))
        if buf[:n] == PREFACE[:n]:
            if n < len(PREFACE):
                self._sniffed = buf
                return
            self._decided = True
            self.fe.conns.discard(self)
            self.closed = True  # this object is done; the H2Conn takes the transport
            h2 = H2Conn(self.fe, self.h2_stream_base, client_ip=self.client_ip,
                        proxied=getattr(self, "proxied", None), counted=True)  # fmt: skip
            transport = self.transport
            assert transport is not None
            transport.set_protocol(h2)
            h2.connection_made(transport)
            h2.data_received(buf)
            return
        self._decided = True
        self._sniffed = b""
        super().data_received(buf)
