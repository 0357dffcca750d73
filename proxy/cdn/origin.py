"""Fetching from the origin pool over HTTP/1.1 keep-alive connections: the lb's `UpstreamConn`
(proxy/upstream/conn.py, the shared codec's `ResponseParser` inside) on each server's idle list,
with the response body streamed to the caller as it arrives.

`fetch` picks a server (originpool.py), takes an idle connection or opens one, writes the request
and returns an `OriginResponse` as soon as the response head is in; its body is read with
`next_chunk()` (or whole with `read_all`). Reading pauses the origin connection when the caller
is more than `HIGH_WATER` bytes behind and resumes it below `LOW_WATER` (backpressure), so a
response is never buffered whole here. A connection goes back to its server's idle list when the
response ended cleanly with keep-alive.

Failures are `OriginError` with the status the client gets: no eligible server (`down`: the
health checks say so; nothing is tried), connect failures (the next eligible server is tried),
a broken or closed response (502) and timeouts (504). A reused idle connection that the origin
closed before answering is retried once on a new connection. This module only moves bytes;
what to ask and what to keep is decided in engine.py.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from proxy.cdn.originpool import OriginPool
from proxy.http1 import Body, EndOfMessage, ProtocolError, ResponseHead, write_request_head
from proxy.upstream.backend import Backend
from proxy.upstream.conn import UpstreamConn

__all__ = ["OriginError", "OriginResponse", "fetch"]

HIGH_WATER = 256 * 1024  # unread body bytes above which the origin connection is paused
LOW_WATER = 64 * 1024
MAX_HEADER_BYTES = 65536
_HOP = frozenset({b"connection", b"keep-alive", b"te", b"upgrade", b"transfer-encoding", b"content-length",
                  b"proxy-connection"})


class OriginError(Exception):
    """No usable response: `status` is what the client gets (502 refused/broken/down, 504 timeout);
    `down`: no origin server was eligible (the health checks marked them all down)."""

    def __init__(self, status: int, reason: str, down: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.down = down


class _Stale(Exception):
    """A reused keep-alive connection closed by the origin before any response byte."""


class OriginResponse:
    """One origin response: `head` at once, the body through `next_chunk` as it arrives. The
    exchange side of an `UpstreamConn` (the methods it calls are below `# -- UpstreamConn`)."""

    def __init__(self, pool: OriginPool, backend: Backend, up: UpstreamConn, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self.pool = pool
        self.backend = backend
        self.up: UpstreamConn | None = up
        self.timeout = timeout
        self.head: ResponseHead | None = None
        self._head_fut: asyncio.Future[ResponseHead] = loop.create_future()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._ended = False
        self._error: OriginError | None = None
        self._wake: asyncio.Future[None] | None = None
        self.received = 0  # body bytes so far
        self._released = False

    # -- UpstreamConn callbacks --------------------------------------------------------------

    def takes_simple_response(self) -> bool:
        return False

    def on_upstream_events(self, up: UpstreamConn, events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, Body):
                if ev.data:
                    self._chunks.append(ev.data)
                    self._buffered += len(ev.data)
                    self.received += len(ev.data)
            elif isinstance(ev, ResponseHead):
                if ev.status >= 200 and self.head is None:
                    self.head = ev
                    if not self._head_fut.done():
                        self._head_fut.set_result(ev)
            elif isinstance(ev, EndOfMessage) and self.head is not None:
                self._ended = True
                self._release(reuse=self.head.keep_alive)
        if self._buffered > HIGH_WATER and not self._ended:
            up.pause_reading()
        self._notify()

    def upstream_protocol_error(self, up: UpstreamConn, exc: ProtocolError) -> None:
        self._fail(OriginError(502, f"bad response from {self.backend.name}: {exc}"))

    def upstream_closed_early(self, up: UpstreamConn, exc: ProtocolError) -> None:
        self._fail(OriginError(502, f"origin {self.backend.name} closed before a complete response"))

    def upstream_lost(self, up: UpstreamConn, exc: Exception | None) -> None:
        if self._ended:
            return
        if self.head is None and not up.got_bytes and up.reused:
            # A stale keep-alive connection: the caller retries on a new one.
            self._ended = True
            self._release(reuse=False)
            if not self._head_fut.done():
                self._head_fut.set_exception(_Stale())
            return
        self._fail(OriginError(502, f"origin {self.backend.name} closed the connection"))

    def pause_reading_for_upstream(self) -> None:
        pass  # request bodies are written whole (they are bounded by the client side)

    def resume_reading_for_upstream(self) -> None:
        pass

    # -- the caller's side -------------------------------------------------------------------

    async def _wait_head(self) -> ResponseHead:
        return await self._head_fut

    async def next_chunk(self) -> bytes:
        """The next piece of the body; b"" at its end. OriginError when the origin fails or
        sends nothing for `timeout` seconds."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._ended:
                return b""
            loop = asyncio.get_running_loop()
            self._wake = loop.create_future()
            try:
                async with asyncio.timeout(self.timeout):
                    await self._wake
            except TimeoutError:
                self.abort()
                raise OriginError(504, f"origin {self.backend.name} stalled mid-body") from None
            finally:
                self._wake = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < LOW_WATER and self.up is not None and self.up.read_paused:
            self.up.resume_reading()
        return chunk

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.next_chunk():
            parts.append(chunk)
        return b"".join(parts)

    @property
    def ended(self) -> bool:
        return self._ended

    def abort(self) -> None:
        """Give up on the body: the connection is closed (its rest cannot be skipped safely)."""
        if not self._ended:
            self._ended = True
            self._error = self._error or OriginError(502, "aborted")
            self._release(reuse=False)
        if not self._head_fut.done():
            self._head_fut.cancel()

    def close(self) -> None:
        """The reader is done (or gone): an unfinished body is abandoned."""
        self.abort()

    # -- internals ---------------------------------------------------------------------------

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _fail(self, exc: OriginError) -> None:
        if self._error is None:
            self._error = exc
        self._ended = True
        self.backend.failures["broken"] = self.backend.failures.get("broken", 0) + 1
        if not self._head_fut.done():
            self._head_fut.set_exception(exc)
        self._release(reuse=False)
        self._notify()

    def _release(self, reuse: bool) -> None:
        if self._released:
            return
        self._released = True
        self.backend.inflight -= 1
        up, self.up = self.up, None
        if up is None:
            return
        up.client = None
        b = self.backend
        if reuse and not up.closed and not b.removed and len(b.idle) < self.pool.max_idle and b.health.up:
            if up.read_paused:
                up.resume_reading()
            up.reused = True
            up.idle_since = asyncio.get_running_loop().time()
            b.idle.append(up)
        else:
            up.close()


def _request_bytes(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    out = [(n, v) for n, v in headers if n not in _HOP]
    if body or method not in (b"GET", b"HEAD"):
        out.append((b"content-length", b"%d" % len(body)))
    return write_request_head(method, target, out) + body


async def _connect(backend: Backend, connect_timeout: float) -> UpstreamConn:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(connect_timeout):
            _t, up = await loop.create_connection(lambda: UpstreamConn(backend, MAX_HEADER_BYTES),
                                                  backend.host, backend.port)  # fmt: skip
    except TimeoutError:
        raise OriginError(504, f"connect {backend.name} ({backend.address}): timed out") from None
    except OSError as exc:
        raise OriginError(502, f"connect {backend.name} ({backend.address}): {exc.strerror or exc}") from None
    return up


async def _attempt(pool: OriginPool, backend: Backend, request: bytes, method: bytes, connect_timeout: float,
                   timeout: float, fresh: bool) -> OriginResponse:  # fmt: skip
    up = None
    while not fresh and backend.idle:
        candidate = backend.idle.pop()
        if not candidate.closed:
            up = candidate
            break
    reused = up is not None
    if up is None:
        up = await _connect(backend, connect_timeout)
    resp = OriginResponse(pool, backend, up, timeout)
    backend.inflight += 1
    backend.requests += 1
    up.client = resp
    up.reused = reused
    up.got_bytes = False
    up.parser.expect(method)
    if up.read_paused:
        up.resume_reading()
    up.write(request)
    try:
        async with asyncio.timeout(timeout):
            head = await resp._wait_head()
    except TimeoutError:
        resp.abort()
        raise OriginError(504, f"origin {backend.name} timed out") from None
    except asyncio.CancelledError:
        resp.abort()
        raise
    backend.responses[min(head.status // 100, 5) - 1] += 1
    return resp


async def fetch(pool: OriginPool, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                connect_timeout: float, timeout: float, body: bytes = b"") -> OriginResponse:
    """Send one request to an eligible origin server; its response once the head is in."""
    request = _request_bytes(method, target, headers, body)
    tried: list[Backend] = []
    last: OriginError | None = None
    while True:
        backend = pool.pick(tuple(tried))
        if backend is None:
            if last is not None:
                raise last
            raise OriginError(502, "origin-down", down=True)
        try:
            try:
                return await _attempt(pool, backend, request, method, connect_timeout, timeout, fresh=False)
            except _Stale:
                return await _attempt(pool, backend, request, method, connect_timeout, timeout, fresh=True)
        except _Stale:
            last = OriginError(502, f"origin {backend.name} closed the connection")
        except OriginError as exc:
            if not exc.reason.startswith("connect"):
                raise
            backend.failures["connect"] = backend.failures.get("connect", 0) + 1
            last = exc
        tried.append(backend)
