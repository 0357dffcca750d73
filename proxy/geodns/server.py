"""The DNS listeners: a UDP DatagramProtocol and a TCP Protocol on the same port (asyncio only
moves bytes; `Engine.handle` decides).

TCP follows RFC 7766: each message has a 2-byte length prefix, a connection carries any number of
queries (answered in order; pipelined ones too), and an idle connection is closed after
`tcp_idle_timeout`. A zero-length message loses the framing: the connection is closed.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from proxy.core.config import parse_hostport

__all__ = ["DnsServer", "TcpDns", "UdpDns"]

Handle = Callable[[bytes, str, bool], "bytes | None"]
MAX_TCP_BUFFER = 65535 + 2


class UdpDns(asyncio.DatagramProtocol):
    def __init__(self, handle: Handle) -> None:
        self.handle = handle
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        out = self.handle(data, addr[0], False)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable from a client that left: nothing to do


class TcpDns(asyncio.Protocol):
    __slots__ = ("handle", "server", "transport", "buf", "peer", "_idle")

    def __init__(self, handle: Handle, server: DnsServer) -> None:
        self.handle = handle
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.peer = ""
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "0.0.0.0"
        self.server.conns.add(self)
        self._arm()

    def _arm(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(self.server.idle_timeout, self.close)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        out = []
        while len(buf) >= 2:
            n = (buf[0] << 8) | buf[1]
            if n == 0:
                self.close()
                return
            if len(buf) < n + 2:
                break
            answer = self.handle(buf[2 : n + 2], self.peer, True)
            if answer is not None:
                out.append(len(answer).to_bytes(2, "big") + answer)
            buf = buf[n + 2 :]
        self.buf = buf
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
        self._arm()
        if self.server.closing and not self.buf:
            self.close()

    # A client that pipelines queries without reading the answers fills our write buffer:
    # stop reading its queries until the answers drain.
    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self.server.conns.discard(self)


class DnsServer:
    """Both listeners on one address; `drain` stops them and closes TCP connections."""

    def __init__(self, address: str, handle: Handle, idle_timeout: float) -> None:
        self.host, self.port = parse_hostport(address)
        self.handle = handle
        self.idle_timeout = idle_timeout
        self.conns: set[TcpDns] = set()
        self.closing = False
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_proto: UdpDns | None = None
        self._tcp: asyncio.AbstractServer | None = None

    def set_handle(self, handle: Handle) -> None:
        """A reload: every listener and open connection answers with the new engine from now on."""
        self.handle = handle
        if self._udp_proto is not None:
            self._udp_proto.handle = handle
        for conn in self.conns:
            conn.handle = handle

    async def start(self, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self._udp, proto = await loop.create_datagram_endpoint(lambda: UdpDns(self.handle), sock=sock)
        self._udp_proto = proto  # type: ignore[assignment]
        try:
            self._tcp = await loop.create_server(lambda: TcpDns(self.handle, self), self.host, self.port,
                                                 reuse_address=True, reuse_port=reuse_port or None,
                                                 backlog=1024)  # fmt: skip
        except OSError:
            self._udp.close()
            raise

    async def drain(self, timeout: float) -> None:
        """Stop taking queries; TCP connections finish the queries they sent, then close."""
        self.closing = True
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for conn in list(self.conns):
            if not conn.buf:
                conn.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.conns and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()
