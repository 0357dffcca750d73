"""Backend-side HTTP/1.1 connections: one asyncio Protocol per TCP connection, shared by the load
balancer (its client connections, proxy/lb/client.py) and the cdn (its origin fetches,
proxy/cdn/origin.py).

An `UpstreamConn` is either *attached* to the exchange whose request it carries (`client` set:
an lb client connection or a cdn origin fetch) or *idle* on its backend's keep-alive list
(`client` None). It parses responses with
the sans-IO `ResponseParser` and hands the events to the client connection; it never decides
anything itself. Bytes arriving on an idle connection, or an idle connection closed by the backend,
simply retire it.

This file is compiled (proxy/_native.py) and is also its own pure-Python twin: conn.pxd makes
`UpstreamCore`, the connection's state and its asyncio callbacks, an extension type (typed C fields,
and the response parser's `feed_simple` called in C); `UpstreamConn` adds `asyncio.Protocol` as a
base (an extension type cannot have a Python class as its first base) and nothing else.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from proxy.core.sendnow import direct_send, discard, release, send
from proxy.http1 import ProtocolError
from proxy.http1._response import ResponseParser

if TYPE_CHECKING:
    from proxy.upstream.backend import Backend

__all__ = ["UpstreamClient", "UpstreamConn", "UpstreamCore"]

# Per-connection write buffer above which we pause the client that feeds it (request bodies).
WRITE_HIGH_WATER = 256 * 1024


def _probe() -> None:
    pass


# A compiled module's functions are Cython's, not Python's.
_COMPILED = type(_probe).__name__ != "function"


class UpstreamClient:
    """The simple-response half of an exchange an `UpstreamConn` serves: the base of the lb's
    client connection (proxy/lb/clientcore.py's `ClientCore`). Compiled, an extension type whose
    two methods `data_received` calls through their C entries (by name, each was a generic
    attribute lookup and a Python call per response). Other clients (the cdn's origin fetch)
    need not derive from it: they are called by name, as before."""

    __slots__ = ()

    def takes_simple_response(self) -> bool:
        return False

    def on_simple_response(self, up: UpstreamCore, data: bytes, result: tuple[int, int, int, int, int]) -> None:
        raise NotImplementedError


class UpstreamCore:
    """What an `UpstreamConn` is and does (see the module docstring)."""

    __slots__ = (
        "backend",
        "transport",
        "direct",
        "parser",
        "client",
        "reused",
        "got_bytes",
        "closed",
        "idle_since",
        "read_paused",
        "max_header_bytes",
        "private",
    )

    def __init__(self, backend: Backend, max_header_bytes: int) -> None:
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.direct: Any = None  # send(2) straight to its socket (proxy/core/sendnow.py's DirectSend)
        self.parser = ResponseParser(max_header_bytes=max_header_bytes)
        # The exchange this connection serves now, if any: it implements takes_simple_response,
        # on_simple_response, on_upstream_events, upstream_protocol_error, upstream_closed_early,
        # upstream_lost, pause_reading_for_upstream and resume_reading_for_upstream.
        self.client: Any = None
        self.reused = False  # served an earlier request: a failure may be a stale keep-alive
        self.got_bytes = False  # any response byte for the current request
        self.closed = False
        self.idle_since = 0.0
        self.read_paused = False
        self.max_header_bytes = max_header_bytes
        self.private = False  # carries one client's PROXY header: never pooled (lb/dial.py)

    # -- asyncio callbacks -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.direct = direct_send(transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.backend.open_connections += 1

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            # An idle keep-alive connection must stay silent; anything else is a broken backend.
            self.close()
            return
        self.got_bytes = True
        if _COMPILED and isinstance(client, UpstreamClient):
            # `core` is typed (conn.pxd): both calls go through the extension type's C entries.
            core = client
            if core.takes_simple_response():
                result = self.parser.feed_simple(data)
                if result is not None:
                    core.on_simple_response(self, data, result)
                    return
        elif client.takes_simple_response():
            result = self.parser.feed_simple(data)
            if result is not None:
                client.on_simple_response(self, data, result)
                return
        try:
            events = self.parser.feed(data)
        except ProtocolError as exc:
            client.upstream_protocol_error(self, exc)
            return
        if events:
            client.on_upstream_events(self, events)

    def eof_received(self) -> bool:
        client = self.client
        if client is not None:
            try:
                events = self.parser.feed_eof()
            except ProtocolError as exc:
                client.upstream_closed_early(self, exc)
                return False
            if events:
                client.on_upstream_events(self, events)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.backend.open_connections -= 1
        client = self.client
        if client is not None:
            self.client = None
            client.upstream_lost(self, exc)
        else:
            try:
                self.backend.idle.remove(self)
            except ValueError:
                pass

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_reading_for_upstream()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_reading_for_upstream()

    # -- used by the client side -----------------------------------------------------------

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            if _COMPILED:
                send(transport, self.direct, data)  # send(2) where safe (proxy/core/sendnow.py), a C call
            else:
                transport.write(data)

    def detach(self) -> None:
        self.client = None

    def close(self) -> None:
        self.client = None
        if self.transport is not None and not self.closed:
            release(self.direct)  # a request head held to the loop round's end goes first
            self.transport.close()

    def abort(self) -> None:
        self.client = None
        if self.transport is not None and not self.closed:
            discard(self.direct)
            self.transport.abort()


class UpstreamConn(UpstreamCore, asyncio.Protocol):
    """One backend connection: `UpstreamCore` as an asyncio Protocol."""

    __slots__ = ()


# Compiled, the object fields are member descriptors, not Cython's getsets (proxy/_members.pxd):
# the lb's interpreted client code and the cdn's origin fetches read and set them as fast as the
# pure twin's slots. (The typed fields keep their getsets.)
if _COMPILED:
    as_members(UpstreamCore, ("backend", "client", "direct", "max_header_bytes", "transport"))  # noqa: F821
