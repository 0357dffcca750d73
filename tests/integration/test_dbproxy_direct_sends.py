"""The dbproxy's relay writes to its clients with direct sends where safe (proxy/core/sendnow.py:
send(2) while uvloop holds nothing for the connection, transport.write otherwise). End to end,
through the shared dbproxy and real PostgreSQL: a result of several megabytes to a client with a
small receive buffer (the proxy's socket fills, uvloop queues, the server is paused, later
chunks meet a non-empty buffer) arrives whole and in order, and the connection serves on; a
client that resets the connection mid-result leaves the proxy serving everyone else.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from proxy.devstack.poll import wait_until
from proxy.pgwire import encode
from proxy.pgwire.messages import CommandComplete, DataRow, ReadyForQuery

from .pgraw import RawPg
from .sockq import queues

ROWS = 6000
WIDTH = 1000  # ~6 MB of DataRows


class SmallBuffer(RawPg):
    """A raw client whose socket's receive buffer is small: the proxy's writes to it fill up."""

    def __init__(self, port: int) -> None:
        super().__init__("127.0.0.1", port, "app", "app-secret")
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)


def _big_query() -> bytes:
    return encode.query(f"SELECT i, repeat(chr(65 + i % 26), {WIDTH}) FROM generate_series(1, {ROWS}) AS i")


def test_megabytes_to_a_client_with_a_small_buffer_arrive_whole_and_in_order(dbproxy: Any) -> None:
    c = SmallBuffer(dbproxy.port)
    try:
        port = c.sock.getsockname()[1]
        for _ in range(2):  # and the connection serves on, in order
            c.send(_big_query() + encode.query("SELECT 'after'"))
            # Not reading yet: the proxy's socket to us fills (its sends then meet EAGAIN, uvloop
            # queues the rest and pauses the server's reading).
            wait_until(lambda: queues(dbproxy.port, port)[0] > 256 * 1024, 30.0, "the proxy's socket to the client fills")
            msgs = c.until(ReadyForQuery, timeout=60)
            rows = [m.values for m in msgs if isinstance(m, DataRow)]
            assert len(rows) == ROWS
            for i, (n, text) in enumerate(rows, 1):
                assert n == str(i).encode() and text == bytes([65 + i % 26]) * WIDTH
            assert isinstance(msgs[-2], CommandComplete) and msgs[-2].tag == f"SELECT {ROWS}"
            after = c.until(ReadyForQuery)
            assert [m.values for m in after if isinstance(m, DataRow)] == [(b"after",)]
    finally:
        c.close()


def test_a_client_that_resets_mid_result_leaves_the_proxy_serving(dbproxy: Any) -> None:
    for _ in range(3):
        c = SmallBuffer(dbproxy.port)
        c.send(_big_query())
        assert c.recv(timeout=30) is not None  # the answer has started (RowDescription)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.sock.close()  # RST, with most of the result still to come
        other = RawPg("127.0.0.1", dbproxy.port, "app", "app-secret")
        try:
            other.send(encode.query("SELECT 41 + 1"))
            msgs = other.until(ReadyForQuery)
            assert [m.values for m in msgs if isinstance(m, DataRow)] == [(b"42",)]
        finally:
            other.close()
