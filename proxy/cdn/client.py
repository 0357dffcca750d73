"""The cdn's client connections: one asyncio Protocol per accepted connection (as the lb's
proxy/lb/client.py), feeding the shared request parser (proxy/http1) and writing answers in
request order.

Theory of operation. `data_received` gives the bytes to `RequestParser.feed_simple` (a whole
bodiless GET/HEAD, one regex match) or else to `RequestParser.feed`; each complete request is
first offered to the engine's synchronous `quick` path (a fresh plain hit, proxy/cdn/hit.py): its
answer goes out at once with one `transport.write` of head and body, with no coroutine, Task or
future. Anything else (a miss, a revalidation, a fill being streamed, a coalesced wait, a Range
or conditional request, PURGE, another method) is answered by the daemon's coroutine handler in
a Task of its own; pipelined requests behind it wait in `queue` (in arrival order, a malformed
request as its ProtocolError) and are answered when it is done, so answers always leave in
request order.

Flow control: the transport's write buffer is bounded (`WRITE_HIGH`); when the client does not
take what is written, reading pauses (no more requests are parsed or answered), a streamed answer
waits before its next chunk (backpressure reaches the origin), and a large stored body is
written in slices of `SLICE` bytes as the buffer drains, so a client that stops reading pins at
most about one slice and the high-water mark besides the stored object itself. Reading also
pauses while `PIPELINE_LIMIT` complete requests wait behind the one being answered.

Timeouts: one timer per connection (moved on only when it fires) closes a connection idle for
`idle_timeout` (no request, or a request head or body not completed) and aborts one whose client
has taken nothing of a pending answer for as long; time spent waiting for the origin is not idle
time (origin_timeout bounds that).

Bad requests get the parser's status (400, 413, 431, ...) after the answers to the requests
before them, and the connection is closed; the listener keeps serving. Only moves bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from proxy.http1 import (
    LAST_CHUNK,
    Body,
    EndOfMessage,
    ProtocolError,
    RequestHead,
    RequestParser,
    encode_chunk,
    simple_response,
    write_response_head,
)

if TYPE_CHECKING:
    from proxy.cdn.server import CdnServer

__all__ = ["MAX_REQUEST_BODY", "PIPELINE_LIMIT", "SLICE", "WRITE_HIGH", "CdnConn", "Handler", "Quick"]

log = logging.getLogger("tierproxy.cdn")

MAX_REQUEST_BODY = 8 * 1024 * 1024
WRITE_HIGH = 256 * 1024  # the transport's write buffer above which we stop producing for the client
SLICE = 256 * 1024  # a stored body larger than this is written in pieces as the client takes them
PIPELINE_LIMIT = 64  # complete requests waiting behind the current answer before reading pauses

Handler = Callable[[RequestHead, bytes], Awaitable[Any]]  # the coroutine path: any request
# The synchronous path: (status, whole head, body) for a fresh plain hit, or None.
Quick = Callable[[RequestHead], "tuple[int, bytes, bytes] | None"]


class CdnConn(asyncio.Protocol):
    __slots__ = (
        "body",
        "close_after",
        "closed",
        "deadline",
        "eof",
        "head",
        "loop",
        "out",
        "parser",
        "queue",
        "quick",
        "read_paused",
        "server",
        "task",
        "timer",
        "transport",
        "waiter",
        "write_paused",
    )

    def __init__(self, server: CdnServer) -> None:
        self.server = server
        self.quick = server.quick
        self.loop = asyncio.get_running_loop()
        self.transport: Any = None  # asyncio.Transport (uvloop's is no subclass)
        self.parser = RequestParser(max_body_bytes=MAX_REQUEST_BODY)
        # Complete requests (head, body) not answered yet, or the ProtocolError that ended them.
        self.queue: deque[tuple[RequestHead, bytes] | ProtocolError] = deque()
        self.head: RequestHead | None = None  # a request whose body is still arriving
        self.body = bytearray()
        self.task: asyncio.Task[None] | None = None  # the coroutine answering the current request
        self.out: memoryview | None = None  # what is left of a large body being written in slices
        self.close_after = False  # close once what was written has gone (Connection: close, drain)
        self.write_paused = False
        self.read_paused = False
        self.closed = False
        self.eof = False  # the client half-closed: answer what it sent, then close
        self.deadline: float | None = None  # when the idle / slow-client timeout fires
        self.timer: asyncio.TimerHandle | None = None
        self.waiter: asyncio.Future[None] | None = None  # a streamed answer waiting for room

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH)  # type: ignore[attr-defined]
        self.server.conns.add(self)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.closed or self.close_after:
            return
        if not self.queue and self.task is None and self.out is None and not self.write_paused:
            head = self.parser.feed_simple(data)
            if head is not None:
                # The commonest request, whole in one read: a hit is answered within this call.
                self._answer(head, b"")
                if self.task is None and not self.closed:
                    self._idle()
                return
        try:
            events = self.parser.feed(data)
        except ProtocolError as exc:
            self._collect(exc.events)  # type: ignore[arg-type]
            self.queue.append(exc)
        else:
            self._collect(events)
        self._advance()

    def eof_received(self) -> bool:
        self.eof = True
        try:
            self.parser.feed_eof()
        except ProtocolError as exc:
            self.queue.append(exc)  # cut inside a request: 400, after the answers before it
        self._advance()
        return True  # keep the write side open for those answers

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.queue.clear()
        self.out = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._wake()
        self.server.conns.discard(self)
        # A running answer task is left to finish: it may lead a coalesced miss other clients
        # wait for. It sees `closed` and writes nothing more.

    def pause_writing(self) -> None:
        self.write_paused = True
        self._flow()
        self._arm()  # the client must take some of it within the idle timeout

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()
        if self.out is not None:
            self._send_out()
        self._advance()
        self._arm()

    # -- requests ----------------------------------------------------------------------------

    def _collect(self, events: list) -> None:
        for ev in events:
            if type(ev) is EndOfMessage:
                if self.head is not None:
                    self.queue.append((self.head, bytes(self.body)))
                    self.head = None
            elif type(ev) is RequestHead:
                self.head, self.body = ev, bytearray()
            elif type(ev) is Body:
                self.body += ev.data
            # Tunnel (after an Upgrade the origin accepted): not relayed, as before.

    def _advance(self) -> None:
        """Answer queued requests while nothing else is being answered or written, then decide
        whether to read on, pause or close."""
        queue = self.queue
        while queue and self.task is None and self.out is None and not self.write_paused and not self.closed:
            if self.close_after:
                queue.clear()  # requests after a "Connection: close" answer (or a drain) are not answered
                break
            item = queue.popleft()
            if type(item) is tuple:
                self._answer(*item)
            else:
                self._bad_request(item)  # type: ignore[arg-type]
        if self.closed:
            return
        if self.task is None and self.out is None and not queue:
            if self.close_after or self.eof or self.server.closing:
                self._close()
                return
            self._idle()
        self._flow()

    def _answer(self, head: RequestHead, body: bytes) -> None:
        try:
            hit = self.quick(head)
        except Exception:
            log.exception("request failed", extra={"target": head.target.decode("latin-1")})
            self._fail()
            return
        if hit is None:
            self.deadline = None  # waiting for the origin is not idle time
            self.task = self.loop.create_task(self._respond(head, body))
            return
        _, wire, body = hit
        if len(body) <= SLICE and head.keep_alive and not self.server.closing:
            self.transport.write(wire + body)  # the commonest answer: one join, one write
        else:
            self._write_hit(head, wire, body)

    def _write_hit(self, head: RequestHead, wire: bytes, body: bytes) -> None:
        """A plain hit's whole head (`wire`) and body; "connection: close" put in when closing."""
        close = not head.keep_alive or self.server.closing
        if close:
            wire = wire[:-2] + b"connection: close\r\n\r\n"
            self.close_after = True
        if len(body) <= SLICE:
            self.transport.write(wire + body)
        else:
            self.transport.write(wire)
            self.out = memoryview(body)
            self._send_out()

    def _write_whole(self, data: bytes) -> None:
        if len(data) <= SLICE:
            self.transport.write(data)
        else:
            self.out = memoryview(data)
            self._send_out()

    def _send_out(self) -> None:
        """The next slices of a large body, while the client's buffer has room."""
        out = self.out
        while out is not None and not self.write_paused and not self.closed:
            piece = out[:SLICE]
            out = self.out = out[SLICE:] if len(out) > SLICE else None
            self.transport.write(piece)

    async def _respond(self, head: RequestHead, body: bytes) -> None:
        """Answer one request through the daemon's handler (the origin may be waited for)."""
        close = True
        try:
            try:
                answer: Any = await self.server.handler(head, body)
            except Exception:
                log.exception("request failed", extra={"target": head.target.decode("latin-1")})
                self._fail()
                return
            if self.closed:
                if answer.stream is not None:
                    answer.stream.close()
                return
            close = not head.keep_alive or self.server.closing
            if answer.wire is not None:
                self._write_hit(head, answer.wire, answer.body)
                close = self.close_after
            elif answer.stream is not None:
                close = await self._write_stream(head, answer, close)
            else:
                headers = list(answer.headers)
                if answer.status not in (204, 304) and not any(n == b"content-length" for n, _ in headers):
                    headers.append((b"content-length", b"%d" % len(answer.body)))
                if close:
                    headers.append((b"connection", b"close"))
                self._write_whole(write_response_head(answer.status, headers) + answer.body)
        except (ConnectionError, OSError):
            pass
        finally:
            self.task = None
            if close:
                self.close_after = True
            if not self.closed:
                self._advance()

    async def _write_stream(self, head: RequestHead, answer: Any, close: bool) -> bool:
        """Send a streamed answer: the head at once, then each chunk as the stream gives it
        (Content-Length when known, else chunked to an HTTP/1.1 client, else until close), the
        next chunk asked for only when the client's buffer has room (backpressure reaches the
        origin). Returns whether the connection must close. A stream that fails midway, or
        whose length is not what it announced, aborts the connection: the client sees a
        truncated message, never a wrong one."""
        stream = answer.stream
        try:
            headers = [(n, v) for n, v in answer.headers if n not in (b"content-length", b"transfer-encoding")]
            bodyless = head.method == b"HEAD" or answer.status in (204, 304) or answer.status < 200
            chunked = False
            if answer.length is not None:
                if answer.status not in (204, 304):
                    headers.append((b"content-length", b"%d" % answer.length))
            elif not bodyless:
                if head.version == b"1.1":
                    chunked = True
                    headers.append((b"transfer-encoding", b"chunked"))
                else:
                    close = True  # HTTP/1.0: the body ends with the connection
            if close:
                headers.append((b"connection", b"close"))
            self.transport.write(write_response_head(answer.status, headers))
            if bodyless:
                return close
            sent = 0
            while True:
                if self.write_paused:
                    await self._room()
                if self.closed:
                    return True
                try:
                    chunk = await stream.next_chunk()
                except Exception as exc:
                    log.warning("origin body failed midway; aborting the client connection",
                                extra={"target": head.target.decode("latin-1"), "error": str(exc)})
                    self.transport.abort()
                    return True
                if self.closed:
                    return True
                if not chunk:
                    break
                sent += len(chunk)
                self.transport.write(encode_chunk(chunk) if chunked else chunk)
            if answer.length is not None and sent != answer.length:
                self.transport.abort()  # the origin's body did not match its Content-Length
                return True
            if chunked:
                self.transport.write(LAST_CHUNK)
            return close
        finally:
            stream.close()

    async def _room(self) -> None:
        """Until the client's write buffer is below its low-water mark again (or the connection is gone)."""
        waiter = self.waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self.waiter = None

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- errors, flow, timeouts, closing -----------------------------------------------------

    def _bad_request(self, exc: ProtocolError) -> None:
        self.transport.write(simple_response(exc.status_hint, f"{exc}\n".encode(), close=True))
        self.close_after = True

    def _fail(self) -> None:
        if not self.closed:
            self.transport.write(simple_response(500, b"internal error\n", close=True))
        self.close_after = True

    def _flow(self) -> None:
        """Read while the client takes what is written and few requests wait; else pause."""
        stop = self.write_paused or len(self.queue) >= PIPELINE_LIMIT
        if stop != self.read_paused and not self.closed:
            self.read_paused = stop
            if stop:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _idle(self) -> None:
        """Waiting for the client (its next request, or room to write): the timeout runs from now."""
        self.deadline = self.loop.time() + self.server.idle_timeout
        if self.timer is None:
            self.timer = self.loop.call_at(self.deadline, self._expire)

    def _arm(self) -> None:
        if self.closed:
            return
        if self.task is None or self.write_paused:
            self._idle()
        else:
            self.deadline = None  # a streamed answer waits for the origin: not idle time

    def _expire(self) -> None:
        self.timer = None
        if self.closed or self.deadline is None:
            return  # answering through the origin; the next wait sets a new deadline
        if self.loop.time() < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._expire)
            return
        if self.write_paused:
            self.transport.abort()  # the client took nothing of its answer for the whole timeout
        else:
            self._close()  # idle: closed without an answer

    def _close(self) -> None:
        if not self.closed:
            self.transport.close()  # what was written still goes out first

    @property
    def busy(self) -> bool:
        """An answer is being produced or written (a drain waits for it)."""
        return self.task is not None or self.out is not None

    def drain(self) -> None:
        """SIGTERM: an idle connection closes now; a busy one after its current answer."""
        self.close_after = True
        if not self.busy and not self.queue:
            self._close()
