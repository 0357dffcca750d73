"""Listening sockets whose connections are accepted in batches, by our own reader callback.

Why not `loop.create_server`: uvloop's server accepts about one connection per loop iteration
(libuv stops watching the listening socket after each connection until the loop comes round).
Under load an iteration takes milliseconds, so a burst of new clients waits in the kernel's accept
queue: with `wrk -c512` against `tierproxy lb`, accepting the 512 connections took 3.2 s and their
first requests made a multi-second latency tail (asyncio's own loop takes a batch per readiness
event, and so does this). Each accepted socket is handed to the loop with
`connect_accepted_socket`, which gives it the same transport `create_server` would.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable

__all__ = ["Acceptor", "listen_sockets"]

log = logging.getLogger("tierproxy.accept")

# Connections taken per readiness event: enough to empty a burst, bounded so one event cannot
# hold the loop for long.
ACCEPT_BATCH = 256
# Out of file descriptors (or kernel memory): stop accepting for this long, as asyncio does,
# instead of spinning on a listening socket that stays readable.
RETRY_DELAY = 1.0
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def listen_sockets(host: str, port: int, *, reuse_port: bool = False, backlog: int = 4096) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address of `host` (as create_server)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, type_, proto, _name, addr in dict.fromkeys(infos):
            sock = socket.socket(family, type_, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


class Acceptor:
    """Serves one listening socket: each connection gets a protocol from `factory`, or is given
    to `hand_over` (a listener's own: PROXY header, TLS handshake), which must close it on failure."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 factory: Callable[[], asyncio.BaseProtocol],
                 hand_over: Callable[[socket.socket], Awaitable[None]] | None = None) -> None:  # fmt: skip
        self._loop = loop
        self._sock = sock
        self._factory = factory
        self._hand_over_fn = hand_over or self._hand_over
        self._reading = False
        self._closed = False
        self._pending: set[asyncio.Task[object]] = set()  # hand-overs not yet done

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return host, port

    def start(self) -> None:
        if not self._closed and not self._reading:
            self._loop.add_reader(self._sock.fileno(), self._accept_batch)
            self._reading = True

    def close(self) -> None:
        """Stop accepting and close the listening socket (accepted connections live on)."""
        if self._closed:
            return
        self._closed = True
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False
        self._sock.close()

    def _accept_batch(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    log.warning("cannot accept connections: %s; pausing %.0f s", exc, RETRY_DELAY)
                    self._loop.remove_reader(self._sock.fileno())
                    self._reading = False
                    self._loop.call_later(RETRY_DELAY, self.start)
                # Others (ECONNABORTED: the client gave up while queued) concern one connection.
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._hand_over_fn(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _hand_over(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError:
            conn.close()  # reset before its transport existed: nothing else to undo
