"""How a pool connects to its backends when it is more than plain TCP: TLS (the backend's
certificate and name verified, an optional client certificate) and/or a PROXY protocol header
(v1/v2) naming the client, sent in clear before anything else (before the TLS handshake too).

A pool without either has no `Dialer` (`Pool.dialer` is None) and `ClientConn._connect` opens
the connection itself as always.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from proxy.core.proxyproto import encode_v1, encode_v2
from proxy.core.tls import client_context

if TYPE_CHECKING:
    from proxy.lb.config import PoolConfig
    from proxy.lb.pool import Backend

__all__ = ["Dialer", "connection_addresses", "make_dialer", "open_backend"]

Address = tuple[str, int]


def connection_addresses(conn: Any) -> tuple[Address | None, Address | None]:
    """(client, address it connected to) of a client connection: from its PROXY header
    (`proxied`, lb/frontconn.py), else from its socket."""
    proxied = getattr(conn, "proxied", None)
    if proxied is not None:
        return proxied
    tr = conn.transport
    if tr is None:
        return None, None
    peer, sock = tr.get_extra_info("peername"), tr.get_extra_info("sockname")
    return ((peer[0], peer[1]) if peer else None), ((sock[0], sock[1]) if sock else None)


class Dialer:
    def __init__(self, cfg: PoolConfig) -> None:
        tls = cfg.tls
        self.ssl = client_context(tls.ca_file, tls.cert_file, tls.key_file, tls.verify) if tls else None
        self.server_name = tls.server_name if tls else None
        self.encode = {"v1": encode_v1, "v2": encode_v2, None: None}[cfg.proxy_protocol]
        # A connection that carries one client's PROXY header must not serve another client.
        self.private = self.encode is not None

    def ssl_for(self, backend: Backend) -> tuple[Any, str | None]:
        if self.ssl is None:
            return None, None
        return self.ssl, self.server_name or backend.host

    async def open(self, loop: asyncio.AbstractEventLoop, backend: Backend, factory: Callable[[], Any],
                   client: tuple[Address | None, Address | None]) -> tuple[Any, Any]:  # fmt: skip
        """A connection to `backend` for the client at `client` (source, destination)."""
        ssl_ctx, server_name = self.ssl_for(backend)
        if self.encode is None:
            return await loop.create_connection(factory, backend.host, backend.port, ssl=ssl_ctx,
                                                server_hostname=server_name)  # fmt: skip
        src, dst = client
        try:
            header = self.encode(src, dst)
        except ValueError:  # mixed families (an IPv6 client of an IPv4 listener): say nothing
            header = self.encode(None, None)
        infos = await loop.getaddrinfo(backend.host, backend.port, type=socket.SOCK_STREAM)
        family, type_, proto, _c, addr = infos[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, addr)
            await loop.sock_sendall(sock, header)
            return await loop.create_connection(factory, sock=sock, ssl=ssl_ctx, server_hostname=server_name)
        except BaseException:
            sock.close()
            raise


async def open_backend(loop: asyncio.AbstractEventLoop, pool: Any, backend: Backend,
                       factory: Callable[[], Any], conn: Any) -> Any:  # fmt: skip
    """A new connection to `backend` for the client connection `conn`: its protocol object."""
    dialer = pool.dialer if pool is not None else None
    if dialer is None:
        _t, up = await loop.create_connection(factory, backend.host, backend.port)
        return up
    _t, up = await dialer.open(loop, backend, factory, connection_addresses(conn))
    up.private = dialer.private
    return up


def make_dialer(cfg: PoolConfig) -> Dialer | None:
    return Dialer(cfg) if cfg.tls is not None or cfg.proxy_protocol is not None else None
