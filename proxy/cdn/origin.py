"""Fetching from the origin over HTTP/1.1 with the shared codec (proxy/http1): one request per
connection, the response parsed by `ResponseParser`, the body collected up to a limit.

This module only moves bytes; what to ask and what to keep is decided in engine.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from proxy.core.config import parse_hostport
from proxy.http1 import Body, EndOfMessage, ProtocolError, ResponseHead, ResponseParser, write_request_head

__all__ = ["OriginError", "OriginResponse", "fetch"]


class OriginError(Exception):
    """No usable response: `status` is what the client gets (502 refused/broken, 504 timeout)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class OriginResponse:
    head: ResponseHead
    body: bytes


async def _exchange(address: str, request: bytes, method: bytes, connect_timeout: float) -> OriginResponse:
    host, port = parse_hostport(address)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), connect_timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise OriginError(502, f"connect {address}: {exc.__class__.__name__}") from None
    try:
        writer.write(request)
        parser = ResponseParser()
        parser.expect(method)
        head: ResponseHead | None = None
        body = bytearray()
        while True:
            data = await reader.read(65536)
            events = parser.feed(data) if data else parser.feed_eof()
            for ev in events:
                if isinstance(ev, ResponseHead):
                    if ev.status >= 200:
                        head = ev
                elif isinstance(ev, Body):
                    body += ev.data
                elif isinstance(ev, EndOfMessage) and head is not None:
                    return OriginResponse(head, bytes(body))
            if not data:
                raise OriginError(502, "origin closed before a complete response")
    except OSError as exc:
        raise OriginError(502, f"origin {address}: {exc.__class__.__name__}") from None
    except ProtocolError as exc:
        raise OriginError(502, f"bad response from {address}: {exc}") from None
    finally:
        writer.close()


async def fetch(origins: list[str], method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                connect_timeout: float, timeout: float, body: bytes = b"") -> OriginResponse:
    """Send one request to the first origin that accepts a connection; OriginError otherwise."""
    out = [(n, v) for n, v in headers if n not in (b"connection", b"keep-alive", b"te", b"upgrade",
                                                    b"transfer-encoding", b"content-length")]
    if body or method not in (b"GET", b"HEAD"):
        out.append((b"content-length", b"%d" % len(body)))
    out.append((b"connection", b"close"))
    request = write_request_head(method, target, out) + body
    last = OriginError(502, "no origin")
    for address in origins:
        try:
            return await asyncio.wait_for(_exchange(address, request, method, connect_timeout), timeout)
        except asyncio.TimeoutError:
            raise OriginError(504, f"origin {address} timed out") from None
        except OriginError as exc:
            last = exc
            if exc.reason.startswith("connect"):
                continue
            raise
    raise last
