"""Direct sends: a connection's bytes handed to its socket with send(2), where that is safe.

The proxies' hot writes (the dbproxy's relay and statement sends, the lb's exchange) went through
uvloop's `transport.write`: a method call into uvloop, which appends to its buffer list, tries
write(2) at once (uvloop 0.23: `_initiate_write`, when nothing is queued in libuv for the stream
and the protocol is not paused) and clears the list again, ~1.2k user-space instructions per call
(docs/perf.md), and write(2) takes the kernel's VFS path that send(2) skips. Compiled, `send`
calls send(2) itself, non-blocking and without SIGPIPE, when and only when that is the same as
what uvloop would do:

* the connection's transport is uvloop's plain TCP transport, checked once when the connection is
  made (`direct_send`: its exact type, a TCP socket, its descriptor; never an SSL/TLS transport,
  whose socket carries TLS records, nor a Unix socket, nor asyncio's own transports or a test's);
* the transport `send` is given is that same one (a session upgraded to TLS by start_tls has a
  new transport: its writes go through it);
* the transport is not closing: uvloop closes the socket (and the descriptor number may then be
  reused) only after its connection_lost, which follows close() or a fatal error, both of which
  set it closing; and a write after close() is dropped by uvloop, so it must not go out here;
* uvloop holds nothing for it (`get_write_buffer_size() == 0`): a write it could not finish
  (EAGAIN, partial) waits in libuv's queue, and bytes sent now would overtake it.

Otherwise, and for whatever send(2) did not take (the rest of a partial send, EAGAIN, any
error), `transport.write` as before: uvloop queues the rest, meets the error and reports it as it
always did. Interpreted (the pure twin), `direct_send` gives None and `send` is
`transport.write`; the hot sites call `transport.write` themselves when not compiled (no call in
between).

Held sends (`SendBatch`, the lb's exchange): compiled, the lb holds a whole simple response for
its client and a request head for its backend until the end of the event loop's current round
(after the callbacks of everything one poll returned) and sends them all then, as HAProxy sends
what its tasks produced after running them. Sent at once, each response woke the load generator
(and each request head a backend) on the other core for that one message, and the lb itself
went back to sleep between them: on the 2-core machine `bench lb --realistic` measured 1.0
context switch per request for the whole machine (0.6 with nginx as the proxy, 0.1 with the
interpreted lb, which is never idle); held to the round's end they arrive together and are taken
together (docs/perf.md "Held sends"). Nothing is reordered: a held message lives on its
connection's DirectSend (`held`), and every later `send` to that connection, and `release`,
which the connection calls before any other write and before it closes, sends it first. A
connection that is already closing drops it (uvloop would: the transport takes no more writes).
"""

from __future__ import annotations

import socket
from typing import Any

__all__ = ["COMPILED", "DirectSend", "SendBatch", "bound", "direct_send", "discard", "hold", "release", "send"]

try:  # the plain TCP transport's type (uvloop may be absent: then nothing is sent directly)
    from uvloop.loop import TCPTransport as _TCP_TRANSPORT
except ImportError:  # pragma: no cover - uvloop is a dependency
    _TCP_TRANSPORT = None

_INET = (socket.AF_INET, socket.AF_INET6)


def _probe() -> None:
    pass


# A compiled module's functions are Cython's, not Python's.
_COMPILED = type(_probe).__name__ != "function"
COMPILED = _COMPILED


class DirectSend:
    """What `send` needs of a connection made on uvloop's plain TCP transport: that transport
    (the one the descriptor belongs to) and the socket's descriptor."""

    __slots__ = ("fd", "held", "transport")

    def __init__(self, transport: Any, fd: int) -> None:
        self.transport = transport
        self.fd = fd
        self.held: bytes | None = None  # bytes held to the loop round's end (SendBatch), in order


def direct_send(transport: Any) -> DirectSend | None:
    """At connection_made: a `DirectSend` for `transport` if writes to it may go straight to its
    socket (compiled, uvloop's TCPTransport exactly, on a TCP socket), else None."""
    if not _COMPILED or _TCP_TRANSPORT is None or type(transport) is not _TCP_TRANSPORT:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in _INET or sock.type != socket.SOCK_STREAM:
        return None
    fd = sock.fileno()
    if fd < 0:
        return None
    return DirectSend(transport, fd)


if _COMPILED:
    _bind(_TCP_TRANSPORT)  # noqa: F821  # sendnow.pxd: uvloop's is_closing/get_write_buffer_size as C functions


def bound() -> bool:
    """Whether `send` calls uvloop's `is_closing` and `get_write_buffer_size` as C functions
    (compiled, with uvloop's TCPTransport as expected) rather than by name."""
    return _COMPILED and _bound()  # noqa: F821


def send(transport: Any, direct: Any, data: Any) -> None:
    """`transport.write(data)`; compiled, send(2) on the socket first where that is safe (see the
    module docstring), the rest (if any) through `transport.write`. Bytes held for the connection
    (`hold`) go first."""
    if _COMPILED and direct is not None and type(data) is bytes:
        d = direct
        if d.held is not None:
            if d.transport is not transport:
                release(d)
            else:
                data = d.held + data
                d.held = None
        if d.transport is not transport:
            transport.write(data)
            return
        idle = _idle(transport)  # noqa: F821  # sendnow.pxd: uvloop's two methods as C calls, -1 if not bound
        if idle < 0:
            idle = not transport.is_closing() and transport.get_write_buffer_size() == 0
        if idle:
            sent = _send_bytes(d.fd, data)  # noqa: F821  # sendnow.pxd
            if sent == len(data):
                return
            if sent > 0:
                data = data[sent:]
    transport.write(data)


def release(direct: Any) -> None:
    """Send what is held for `direct`'s connection now (before another write to it, or before it
    is closed); dropped if its transport is already closing. No-op for None or nothing held."""
    if direct is None:
        return
    d = direct
    data = d.held
    if data is None:
        return
    d.held = None
    transport = d.transport
    if transport.is_closing():
        return
    send(transport, d, data)


def discard(direct: Any) -> None:
    """Forget what is held for `direct`'s connection (it is being aborted)."""
    if direct is not None:
        direct.held = None


class SendBatch:
    """The sends held until the end of the event loop's current round (see the module docstring):
    one per event loop (the lb's listeners each have one), armed by the first `hold` of a round
    with one `call_soon`, which runs after the callbacks of what the poll returned and before the
    loop polls again."""

    __slots__ = ("armed", "held", "loop")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.held: list[Any] = []  # the DirectSends holding bytes, in the order they were first held
        self.armed = False

    def flush(self) -> None:
        """Send everything held (the round's end)."""
        self.armed = False
        held = self.held
        self.held = []
        for d in held:
            release(d)


def hold(batch: Any, transport: Any, direct: Any, data: Any) -> None:
    """`send(transport, direct, data)` at the end of the loop's round (`batch.flush`) rather than
    now, where that is possible (compiled, a direct connection whose transport this is, bytes);
    otherwise `send` now."""
    if not _COMPILED or batch is None or direct is None or type(data) is not bytes:
        send(transport, direct, data)
        return
    d = direct
    if d.transport is not transport:
        send(transport, direct, data)
        return
    if d.held is None:
        d.held = data
        b = batch
        b.held.append(d)
        if not b.armed:
            b.armed = True
            b.loop.call_soon(b.flush)
    else:
        d.held = d.held + data
