"""The clients' listener of a PostgreSQL front (dbproxy, shard): one asyncio server on `listen`."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from proxy.core.config import parse_hostport

__all__ = ["start_listener"]


async def start_listener(factory: Callable[[], asyncio.Protocol], listen: str, *, worker: bool) -> asyncio.Server:
    """Listen on `listen` ("host:port") with a session `factory`. A worker shares the port with
    the other workers (SO_REUSEPORT). TCP_NODELAY on the listening sockets, which accepted ones
    inherit: the protocol's small messages (ReadyForQuery, a short row) must not wait for Nagle."""
    host, port = parse_hostport(listen)
    server = await asyncio.get_running_loop().create_server(factory, host, port, reuse_address=True, backlog=1024,
                                                            reuse_port=worker or None)  # fmt: skip
    for sock in server.sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server
