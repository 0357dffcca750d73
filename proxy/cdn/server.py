"""The cdn's client listener: accepts connections (each a `CdnConn`, proxy/cdn/client.py, an
asyncio Protocol on the shared HTTP/1.1 codec) and drains them on SIGTERM.

`handler` answers any request (a coroutine: misses, revalidations, streamed fills, PURGE, ...);
`quick` answers a fresh plain hit synchronously or returns None. This module only moves bytes.
"""

from __future__ import annotations

import asyncio

from proxy.cdn.client import CdnConn, Handler, Quick
from proxy.core.config import parse_hostport

__all__ = ["CdnServer"]


class CdnServer:
    def __init__(self, listen: str, handler: Handler, quick: Quick, idle_timeout: float) -> None:
        self.listen = listen
        self.handler = handler
        self.quick = quick
        self.idle_timeout = idle_timeout
        self.server: asyncio.AbstractServer | None = None
        self.conns: set[CdnConn] = set()
        self.closing = False

    async def start(self, reuse_port: bool = False) -> None:
        """`reuse_port`: a worker of `workers = N`, sharing the port with the others (SO_REUSEPORT)."""
        host, port = parse_hostport(self.listen)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: CdnConn(self), host, port, reuse_address=True,
                                               reuse_port=reuse_port)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def drain(self, timeout: float) -> None:
        """Stop accepting; requests being answered finish (up to `timeout`) and their connections
        close after them ("connection: close"); idle keep-alive connections close now."""
        self.closing = True
        if self.server is not None:
            self.server.close()
        for conn in list(self.conns):
            conn.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(c.busy for c in self.conns) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.conns):
            conn.transport.close()
