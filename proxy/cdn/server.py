"""The cdn's client side: asyncio streams feeding the shared request parser (proxy/http1), each
complete request handed to `Engine.handle`, answers written in request order.

Bad requests get the parser's status (400, 413, 431, ...) and the connection is closed; the
listener keeps serving. This module only moves bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.core.config import parse_hostport
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

__all__ = ["CdnServer"]

log = logging.getLogger("tierproxy.cdn")
MAX_REQUEST_BODY = 8 * 1024 * 1024

Handler = Callable[[RequestHead, bytes], Awaitable["object"]]


class _IdleTimer:
    """Closes a connection that waits longer than `timeout` for its next bytes. One timer per
    connection, moved on only when it fires: `asyncio.wait_for` around each read would cost a
    task, a timer and their cancellation per request. Time spent answering is not idle time."""

    __slots__ = ("_handle", "_loop", "_timeout", "_writer", "deadline", "expired")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, writer: asyncio.StreamWriter) -> None:
        self._loop = loop
        self._timeout = timeout
        self._writer = writer
        self._handle: asyncio.TimerHandle | None = None
        self.deadline: float | None = None  # while a read is waiting: when it times out
        self.expired = False

    def reading(self) -> None:
        self.deadline = self._loop.time() + self._timeout
        if self._handle is None:
            self._handle = self._loop.call_at(self.deadline, self._fire)

    def done(self) -> None:
        self.deadline = None

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        if self.deadline is None:
            return  # answering a request; the next read sets a new deadline
        if self._loop.time() < self.deadline:
            self._handle = self._loop.call_at(self.deadline, self._fire)
            return
        # The pending read then ends with b"" (end of stream); the loop sees `expired` and returns.
        self.expired = True
        self._writer.close()


class CdnServer:
    def __init__(self, listen: str, handler: Handler, idle_timeout: float) -> None:
        self.listen = listen
        self.handler = handler
        self.idle_timeout = idle_timeout
        self.server: asyncio.AbstractServer | None = None
        self.busy: set[asyncio.Task] = set()
        self.conns: set[asyncio.StreamWriter] = set()
        self.closing = False

    async def start(self, reuse_port: bool = False) -> None:
        """`reuse_port`: a worker of `workers = N`, sharing the port with the others (SO_REUSEPORT)."""
        host, port = parse_hostport(self.listen)
        self.server = await asyncio.start_server(self._conn, host, port, reuse_address=True, reuse_port=reuse_port)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns.add(writer)
        parser = RequestParser(max_body_bytes=MAX_REQUEST_BODY)
        head: RequestHead | None = None
        body = bytearray()
        idle = _IdleTimer(asyncio.get_running_loop(), self.idle_timeout, writer)
        task = asyncio.current_task()
        assert task is not None
        try:
            while not self.closing:
                idle.reading()
                data = await reader.read(65536)
                idle.done()
                if idle.expired:
                    return
                simple = parser.feed_simple(data) if data else None
                if simple is not None:
                    # The commonest request, whole in one read (one regex match, no llhttp).
                    if await self._respond(writer, simple, b"", task):
                        return
                    continue
                try:
                    events = parser.feed(data) if data else parser.feed_eof()
                except ProtocolError as exc:
                    writer.write(simple_response(exc.status_hint, f"{exc}\n".encode(), close=True))
                    await writer.drain()
                    return
                for ev in events:
                    if isinstance(ev, RequestHead):
                        head, body = ev, bytearray()
                    elif isinstance(ev, Body):
                        body += ev.data
                    elif isinstance(ev, EndOfMessage) and head is not None:
                        if await self._respond(writer, head, bytes(body), task):
                            return
                        head = None
                if not data:
                    return
        except (ConnectionError, OSError):
            pass
        finally:
            idle.cancel()
            self.conns.discard(writer)
            writer.close()

    async def _respond(self, writer: asyncio.StreamWriter, head: RequestHead, body: bytes,
                       task: asyncio.Task) -> bool:
        """Answer one complete request (`task`: the connection's); True when the connection must close."""
        self.busy.add(task)
        try:
            answer: Any = await self.handler(head, body)
        except Exception:
            log.exception("request failed", extra={"target": head.target.decode("latin-1")})
            writer.write(simple_response(500, b"internal error\n", close=True))
            await writer.drain()
            return True
        finally:
            self.busy.discard(task)
        close = not head.keep_alive or self.closing
        if answer.wire is not None:  # a plain hit: its head is ready but for the end
            writer.write(answer.wire + (b"connection: close\r\n\r\n" if close else b"\r\n") + answer.body)
            if writer.transport.get_write_buffer_size():  # all sent at once (the usual): nothing to wait for
                await writer.drain()
        elif answer.stream is not None:
            close = await self._write_stream(writer, head, answer, close)
        else:
            headers = list(answer.headers)
            if answer.status not in (204, 304) and not any(n == b"content-length" for n, _ in headers):
                headers.append((b"content-length", b"%d" % len(answer.body)))
            if close:
                headers.append((b"connection", b"close"))
            writer.write(write_response_head(answer.status, headers) + answer.body)
            await writer.drain()
        return close

    async def _write_stream(self, writer: asyncio.StreamWriter, head: RequestHead, answer: Any, close: bool) -> bool:
        """Send a streamed answer: the head at once, then each chunk as the stream gives it
        (Content-Length when known, else chunked to an HTTP/1.1 client, else until close), each
        write drained before the next chunk is asked for (backpressure reaches the origin).
        Returns whether the connection must close. A stream that fails midway aborts the
        connection: the client sees a truncated message, never a wrong one."""
        stream = answer.stream
        task = asyncio.current_task()
        self.busy.add(task)  # type: ignore[arg-type]
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
            writer.write(write_response_head(answer.status, headers))
            if bodyless:
                await writer.drain()
                return close
            sent = 0
            while True:
                try:
                    chunk = await stream.next_chunk()
                except Exception as exc:
                    log.warning("origin body failed midway; aborting the client connection",
                                extra={"target": head.target.decode("latin-1"), "error": str(exc)})
                    writer.transport.abort()
                    return True
                if not chunk:
                    break
                sent += len(chunk)
                writer.write(encode_chunk(chunk) if chunked else chunk)
                await writer.drain()
            if chunked:
                writer.write(LAST_CHUNK)
            await writer.drain()
            if answer.length is not None and sent != answer.length:
                writer.transport.abort()  # the origin's body did not match its Content-Length
                return True
            return close
        finally:
            stream.close()
            self.busy.discard(task)  # type: ignore[arg-type]

    async def drain(self, timeout: float) -> None:
        """Stop accepting; requests being answered finish (up to `timeout`), idle connections close."""
        self.closing = True
        if self.server is not None:
            self.server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.busy and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for w in list(self.conns):
            w.close()
