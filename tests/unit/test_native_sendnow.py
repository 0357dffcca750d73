"""Direct sends (proxy/core/sendnow.py): compiled, `send` puts bytes on a plain TCP transport's
socket with send(2) when that is what uvloop's `transport.write` would do, and falls back to
`transport.write` otherwise. What must hold, over real loopback connections on uvloop's loop:

* order: bytes written through `transport.write` that uvloop still holds (a slow reader) are
  never overtaken (hypothesis mixes the two kinds of writes, large and small);
* completeness: megabytes to a slow reader arrive whole and in order;
* nothing goes out after `close()` (uvloop drops such a write), nor on a closed connection's
  descriptor number once another connection has it, nor on another transport's socket;
* a peer that resets mid-response is reported as uvloop reports it (connection_lost with the error);
* only uvloop's plain TCP transport is sent to directly: never a TLS, Unix-socket or asyncio one.

Under TIERPROXY_PURE=1 `direct_send` gives None and `send` is `transport.write`: the same
properties hold (the tests that need the direct path say so and are skipped).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.core import sendnow
from proxy.core.sendnow import DirectSend, direct_send, send

needs_compiled = pytest.mark.skipif(not sendnow.COMPILED, reason="the direct path is the compiled twin's")


class _Proto(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.made.set_result(self)

    def connection_lost(self, exc) -> None:
        self.lost.set_result(exc)


class _Server:
    """A uvloop TCP server on 127.0.0.1 whose accepted connections' protocols are queued."""

    def __init__(self, loop, ssl_ctx=None) -> None:
        self.loop = loop
        self.ssl_ctx = ssl_ctx
        self.accepted: asyncio.Queue[_Proto] = asyncio.Queue()

    async def start(self):
        def factory():
            p = _Proto(self.loop)
            p.made.add_done_callback(lambda f: self.accepted.put_nowait(f.result()))
            return p

        self.server = await self.loop.create_server(factory, "127.0.0.1", 0, ssl=self.ssl_ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def connect(self, rcvbuf: int | None = None, cli: socket.socket | None = None):
        """A raw client socket (non-blocking, read with the loop) and the server side's protocol."""
        cli = cli if cli is not None else socket.socket()
        if rcvbuf:
            cli.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        cli.setblocking(False)
        await self.loop.sock_connect(cli, ("127.0.0.1", self.port))
        p = await asyncio.wait_for(self.accepted.get(), 10)
        if rcvbuf and self.ssl_ctx is None:  # the writer's side small too: large writes fill it
            p.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
        return cli, p


async def _read(loop, cli, n: int | None = None, slow: bool = False) -> bytes:
    """Read `n` bytes (or to EOF); `slow`: small reads, yielding to the loop between them, so the
    writer's socket buffer fills and uvloop queues."""
    out = bytearray()
    while n is None or len(out) < n:
        chunk = await asyncio.wait_for(loop.sock_recv(cli, 4096 if slow else 1 << 20), 20)
        if not chunk:
            break
        out += chunk
        if slow:
            await asyncio.sleep(0)
    return bytes(out)


def _run(coro_fn):
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro_fn(loop), 60))
    finally:
        loop.close()


def _pattern(tag: int, size: int) -> bytes:
    """`size` bytes that say which write they came from (`tag`) and where in it (mod 251, a
    prime: a reordered, lost or repeated piece shows)."""
    unit = bytes((tag * 7 + j) % 256 for j in range(251))
    return (unit * (size // 251 + 1))[:size]


# -- which transports are sent to directly ----------------------------------------------------


def test_only_uvloops_plain_tcp_transport_is_sent_to_directly(tmp_path):
    async def main(loop):
        srv = await _Server(loop).start()
        cli, p = await srv.connect()
        d = direct_send(p.transport)
        if sendnow.COMPILED:
            assert isinstance(d, DirectSend) and d.transport is p.transport
            assert d.fd == p.transport.get_extra_info("socket").fileno() >= 0
        else:
            assert d is None
        # A Unix socket's transport: not this path (never checked to behave the same).
        path = str(tmp_path / "s")
        made = loop.create_future()

        class U(asyncio.Protocol):
            def connection_made(self, t):
                made.set_result(t)

        userver = await loop.create_unix_server(U, path)
        ucli = socket.socket(socket.AF_UNIX)
        ucli.setblocking(False)
        await loop.sock_connect(ucli, path)
        assert direct_send(await made) is None
        ucli.close()
        userver.close()
        cli.close()
        srv.server.close()

    _run(main)


@needs_compiled
def test_uvloops_checks_are_c_calls_of_its_own_methods():
    """Compiled, `send` asks uvloop's TCPTransport whether it is closing and what it holds by
    calling those methods' C functions (bound at import; the fallback, by name, is the same
    answer dearer): with the installed uvloop they must be bound, or the direct path's tests
    below test the fallback only. The answers themselves are what the order and close tests check."""
    assert sendnow.bound()


def test_asyncios_own_transport_is_not_sent_to_directly():
    async def main():
        loop = asyncio.get_running_loop()
        made = loop.create_future()

        class P(asyncio.Protocol):
            def connection_made(self, t):
                made.set_result(t)

        server = await loop.create_server(P, "127.0.0.1", 0)
        r, w = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        t = await made
        assert direct_send(t) is None
        send(t, None, b"through asyncio\n")
        assert await asyncio.wait_for(r.readline(), 10) == b"through asyncio\n"
        w.close()
        server.close()

    asyncio.run(main())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificate")
def test_tls_transports_are_never_sent_to_directly():
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=sendnow"],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(cert, key)

    async def main(loop):
        srv = await _Server(loop, sctx).start()
        cctx = ssl.create_default_context()
        cctx.check_hostname = False
        cctx.verify_mode = ssl.CERT_NONE
        r, w = await asyncio.open_connection("127.0.0.1", srv.port, ssl=cctx)
        p = await asyncio.wait_for(srv.accepted.get(), 10)
        assert direct_send(p.transport) is None
        # Even given a DirectSend (another connection's), the TLS transport's bytes go through TLS.
        plain = await _Server(loop).start()
        raw, q = await plain.connect()
        body = _pattern(7, 200_000)
        send(p.transport, direct_send(q.transport), body)
        assert await asyncio.wait_for(r.readexactly(len(body)), 20) == body
        q.transport.write(b"end")
        assert await _read(loop, raw, 3) == b"end"  # nothing of the TLS connection's came here
        w.close()
        raw.close()
        srv.server.close()
        plain.server.close()

    _run(main)


# -- order and completeness --------------------------------------------------------------------

def _drain(cli: socket.socket, out: bytearray) -> None:
    """Read what the socket has now, without yielding to the loop: the writer's socket gains
    room while uvloop, which has not polled since, still holds what it queued."""
    while True:
        try:
            chunk = cli.recv(1 << 20)
        except BlockingIOError:
            return
        if not chunk:
            return
        out += chunk


_OPS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["write", "send"]), st.sampled_from([1, 17, 1000, 65536, 300_000, 1_500_000])),
        st.tuples(st.sampled_from(["drain", "yield"]), st.just(0)),
    ),
    min_size=1, max_size=10,
)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_sends_never_overtake_what_uvloop_still_holds(ops):
    """Writes through `transport.write` and `send`, mixed, to a reader with a small receive
    buffer (large writes fill the socket, uvloop queues the rest), which reads in between without
    letting the loop run (`drain`) or lets it run (`yield`): the reader gets the writes in the
    order they were made, each whole."""

    async def main(loop):
        srv = await _Server(loop).start()
        cli, p = await srv.connect(rcvbuf=8192)
        t = p.transport
        d = direct_send(t)
        expected = bytearray()
        got = bytearray()
        for i, (how, size) in enumerate(ops):
            data = _pattern(i, size)
            if how == "write":
                t.write(data)
                expected += data
            elif how == "send":
                send(t, d, data)
                expected += data
            elif how == "drain":
                _drain(cli, got)
            else:
                await asyncio.sleep(0)
        got += await _read(loop, cli, len(expected) - len(got), slow=True)
        assert bytes(got) == bytes(expected)
        cli.close()
        srv.server.close()

    _run(main)


def test_a_send_waits_behind_what_uvloop_queued():
    """The case the ordering rests on, made to happen: a write uvloop could not finish (the rest
    queued in libuv), the reader then makes room without the loop polling in between, and a
    small send: it must not go out before the queued rest."""

    async def main(loop):
        srv = await _Server(loop).start()
        cli, p = await srv.connect(rcvbuf=8192)
        t = p.transport
        d = direct_send(t)
        big = _pattern(1, 2_000_000)
        t.write(big)
        assert t.get_write_buffer_size() > 0  # uvloop holds the rest
        got = bytearray()
        _drain(cli, got)
        assert got  # room made
        send(t, d, b"after the big one")
        got += await _read(loop, cli, len(big) + 17 - len(got), slow=True)
        assert bytes(got) == big + b"after the big one"
        cli.close()
        srv.server.close()

    _run(main)


def test_megabytes_to_a_slow_reader_arrive_whole_and_in_order():
    async def main(loop):
        srv = await _Server(loop).start()
        cli, p = await srv.connect(rcvbuf=16384)
        t = p.transport
        d = direct_send(t)
        chunks = [_pattern(i, 65536 + i) for i in range(96)]  # ~6.3 MB
        reader = loop.create_task(_read(loop, cli, sum(map(len, chunks)), slow=True))
        for i, c in enumerate(chunks):
            send(t, d, c)
            if i % 8 == 0:
                await asyncio.sleep(0)
        assert await reader == b"".join(chunks)
        cli.close()
        srv.server.close()

    _run(main)


# -- closed connections ------------------------------------------------------------------------


def test_nothing_goes_out_after_close():
    """uvloop drops a write made after close() (nothing was buffered): so must a direct send."""

    async def main(loop):
        srv = await _Server(loop).start()
        cli, p = await srv.connect()
        t = p.transport
        d = direct_send(t)
        send(t, d, b"before")
        t.close()
        send(t, d, b"after close")
        assert await _read(loop, cli) == b"before"  # to EOF
        await asyncio.wait_for(p.lost, 10)
        cli.close()
        srv.server.close()

    _run(main)


def test_a_closed_connections_descriptor_number_is_never_written_to():
    """A connection closed and lost; a new one (which the kernel gives the lowest free descriptor
    number: the old one's, here); bytes sent for the old connection must not reach the new one."""

    async def main(loop):
        srv = await _Server(loop).start()
        cli_a, a = await srv.connect()
        cli_b = socket.socket()  # made first: the accepted one then gets a's number
        d_a = direct_send(a.transport)
        a.transport.close()
        await asyncio.wait_for(a.lost, 10)
        assert await _read(loop, cli_a) == b""
        cli_b, b = await srv.connect(cli=cli_b)
        d_b = direct_send(b.transport)
        if sendnow.COMPILED:
            assert d_a.fd == d_b.fd  # the number was reused: the case that matters
        with pytest.raises(RuntimeError):  # as uvloop's write says of a closed transport
            send(a.transport, d_a, b"for the old connection")
        send(b.transport, d_a, b"new:")  # another connection's DirectSend: through b's own transport
        send(b.transport, d_b, b"done")
        assert await _read(loop, cli_b, 8) == b"new:done"
        cli_a.close()
        cli_b.close()
        srv.server.close()

    _run(main)


def test_a_peer_that_resets_mid_response_is_reported_as_uvloop_reports_it():
    async def main(loop):
        srv = await _Server(loop).start()
        cli, p = await srv.connect(rcvbuf=8192)
        t = p.transport
        d = direct_send(t)
        send(t, d, _pattern(1, 4096))
        assert len(await _read(loop, cli, 100)) >= 100
        cli.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        cli.close()  # RST
        for i in range(10_000):
            if p.lost.done():
                break
            send(t, d, _pattern(i, 65536))  # must not raise
            await asyncio.sleep(0)
        exc = await asyncio.wait_for(p.lost, 10)
        assert isinstance(exc, (ConnectionResetError, BrokenPipeError)), exc
        srv.server.close()

    _run(main)
