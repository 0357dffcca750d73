"""Held sends (proxy/core/sendnow.py's `SendBatch`, `hold`, `release`, `discard`): compiled, the lb
holds a simple response for its client and a request head for its backend until the end of the
event loop's round and sends them then. What must hold, over real loopback connections on
uvloop's loop:

* nothing held is on the wire before the round ends, and all of it is after the batch's flush;
* nothing is reordered: a later `send` to the same connection sends what is held first, and two
  holds in one round go out in the order they were held;
* `release` before `close()` puts what is held on the wire before the end of the stream;
  `discard` (an abort) drops it; a connection already closing when the round ends drops it and
  the batch still sends everyone else's;
* under TIERPROXY_PURE=1 (and for a connection without a DirectSend) `hold` is `send`, at once.
"""

from __future__ import annotations


import pytest

from proxy.core import sendnow
from proxy.core.sendnow import SendBatch, direct_send, discard, hold, release, send
from tests.unit.test_native_sendnow import _pattern, _read, _run, _Server

needs_compiled = pytest.mark.skipif(not sendnow.COMPILED, reason="sends are held by the compiled twin only")


def _pending(cli) -> bytes:
    """What the raw client socket has to read right now, without waiting (b"": nothing)."""
    try:
        return cli.recv(1 << 20)
    except BlockingIOError:
        return b""


async def _flushed(loop, batch: SendBatch) -> None:
    """Let the loop run its round: the batch's flush (armed with call_soon) runs before this."""
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done
    assert not batch.armed


@needs_compiled
def test_held_bytes_go_out_at_the_rounds_end_in_order():
    async def main(loop):
        srv = await _Server(loop).start()
        (cli1, p1), (cli2, p2) = await srv.connect(), await srv.connect()
        d1, d2 = direct_send(p1.transport), direct_send(p2.transport)
        batch = SendBatch(loop)
        a, b, c = _pattern(1, 300), _pattern(2, 5000), _pattern(3, 70)
        hold(batch, p1.transport, d1, a)
        hold(batch, p2.transport, d2, c)
        hold(batch, p1.transport, d1, b)  # a second message in the same round: after the first
        assert batch.armed and d1.held == a + b and d2.held == c
        # Not on the wire yet: the round has not ended.
        assert _pending(cli1) == b"" and _pending(cli2) == b""
        await _flushed(loop, batch)
        assert d1.held is None and d2.held is None and batch.held == []
        assert await _read(loop, cli1, len(a) + len(b)) == a + b
        assert await _read(loop, cli2, len(c)) == c
        # The next round arms the batch again.
        hold(batch, p2.transport, d2, a)
        assert batch.armed
        await _flushed(loop, batch)
        assert await _read(loop, cli2, len(a)) == a
        for s in (cli1, cli2):
            s.close()
        srv.server.close()

    _run(main)


@needs_compiled
def test_a_later_send_sends_what_is_held_first():
    async def main(loop):
        srv = await _Server(loop).start()
        cli, p = await srv.connect()
        d = direct_send(p.transport)
        batch = SendBatch(loop)
        first, second = _pattern(4, 1000), _pattern(5, 2000)
        hold(batch, p.transport, d, first)
        send(p.transport, d, second)  # e.g. the next pipelined request's error answer
        assert d.held is None
        assert await _read(loop, cli, len(first) + len(second)) == first + second
        await _flushed(loop, batch)  # the flush finds nothing held: nothing more is sent
        assert _pending(cli) == b""
        cli.close()
        srv.server.close()

    _run(main)


@needs_compiled
def test_release_before_close_puts_the_held_bytes_before_the_end():
    async def main(loop):
        srv = await _Server(loop).start()
        cli, p = await srv.connect()
        d = direct_send(p.transport)
        batch = SendBatch(loop)
        body = _pattern(6, 40_000)
        hold(batch, p.transport, d, body)
        release(d)
        p.transport.close()
        assert await _read(loop, cli) == body  # to EOF: all of it, then the end
        await _flushed(loop, batch)
        cli.close()
        srv.server.close()

    _run(main)


@needs_compiled
def test_discarded_and_closing_connections_drop_what_is_held_and_the_rest_still_goes():
    async def main(loop):
        srv = await _Server(loop).start()
        (cli1, p1), (cli2, p2), (cli3, p3) = await srv.connect(), await srv.connect(), await srv.connect()
        d1, d2, d3 = (direct_send(p.transport) for p in (p1, p2, p3))
        batch = SendBatch(loop)
        hold(batch, p1.transport, d1, b"aborted\n")
        hold(batch, p2.transport, d2, b"closed\n")
        hold(batch, p3.transport, d3, b"kept\n")
        discard(d1)
        p1.transport.abort()
        p2.transport.close()  # closing without a release: the held bytes are not written after close
        await _flushed(loop, batch)
        assert await _read(loop, cli3, 5) == b"kept\n"
        assert await _read(loop, cli2) == b""  # only the end of the stream
        try:  # the abort: a reset (or the end), nothing before it
            data = await _read(loop, cli1)
        except ConnectionResetError:
            data = b""
        assert data == b""
        for s in (cli1, cli2, cli3):
            s.close()
        srv.server.close()

    _run(main)


def test_without_a_direct_connection_hold_is_send_at_once():
    """Pure (`direct_send` gives None) or not compiled: nothing is held, the bytes are written now."""

    async def main(loop):
        srv = await _Server(loop).start()
        cli, p = await srv.connect()
        batch = SendBatch(loop)
        hold(batch, p.transport, None, b"now\n")
        assert not batch.armed and batch.held == []
        assert await _read(loop, cli, 4) == b"now\n"
        d = direct_send(p.transport)
        hold(batch, p.transport, d, b"then\n")
        if not sendnow.COMPILED:
            assert d is None and not batch.armed
        await _flushed(loop, batch)
        assert await _read(loop, cli, 5) == b"then\n"
        cli.close()
        srv.server.close()

    _run(main)
