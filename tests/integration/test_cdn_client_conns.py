"""The cdn's client connections with raw sockets: the idle timeout (client_idle_timeout), the
plain-hit path's connection handling (Connection: close, pipelining, HEAD) against a real origin.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.integration import cdnproc
from tests.integration.test_cdn import Cdn

IDLE = 1.0


@pytest.fixture(scope="module")
def cdn(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cdn-conns")
    with cdnproc.running_origin(tmp) as origin, \
            cdnproc.running_cdn(tmp, origin, top=f"client_idle_timeout = {IDLE}") as c:
        yield c


def connect(cdn: Cdn) -> socket.socket:
    return socket.create_connection(("127.0.0.1", cdn.port), timeout=20)


def read_until_closed(s: socket.socket) -> bytes:
    out = b""
    while data := s.recv(65536):
        out += data
    return out


def read_response(s: socket.socket, buf: bytearray) -> tuple[bytes, bytes]:
    """(head, body) of one Content-Length response; `buf` keeps what follows it."""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        assert data, "closed before a whole head"
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(buf) < end + length:
        data = s.recv(65536)
        assert data, "closed before a whole body"
        buf += data
    body = bytes(buf[end:end + length])
    del buf[:end + length]
    return head, body


def test_an_idle_connection_is_closed_after_client_idle_timeout(cdn):
    for sent in (b"", b"GET /obj/idle HTTP/1.1\r\nHost: a\r\n"):  # nothing, then half a head
        s = connect(cdn)
        t0 = time.monotonic()
        s.sendall(sent)
        assert read_until_closed(s) == b""  # closed without an answer
        assert time.monotonic() - t0 >= IDLE * 0.9
        s.close()


def test_time_between_requests_is_idle_time_not_time_in_total(cdn):
    """A client that sends a request every half timeout keeps its connection: each read waits anew."""
    s = connect(cdn)
    buf = bytearray()
    for _ in range(4):
        s.sendall(b"GET /obj/keep?cc=max-age%3D300 HTTP/1.1\r\nHost: k\r\n\r\n")
        head, _ = read_response(s, buf)
        assert head.startswith(b"HTTP/1.1 200")
        time.sleep(IDLE / 2)
    s.close()


def test_plain_hits_pipelined_with_connection_close_and_head(cdn):
    s = connect(cdn)
    buf = bytearray()
    path = b"/obj/pipe?cc=max-age%3D300&size=300"
    s.sendall(b"GET %s HTTP/1.1\r\nHost: p\r\n\r\n" % path)  # the miss that stores it
    head, body = read_response(s, buf)
    assert b"fwd=uri-miss" in head and len(body) == 300
    # Three hits in one segment (the parser's full path), the last one a HEAD, then one asking to close.
    s.sendall(b"GET %s HTTP/1.1\r\nHost: p\r\n\r\n" % path * 2 + b"HEAD %s HTTP/1.1\r\nHost: p\r\n\r\n" % path)
    for _ in range(2):
        head, got = read_response(s, buf)
        assert b"cache-status: tierproxy; hit; ttl=" in head and got == body
    rest = bytes(buf)  # the HEAD's answer: a head only
    while not rest.endswith(b"\r\n\r\n"):
        rest += s.recv(65536)
    assert b"cache-status: tierproxy; hit; ttl=" in rest and b"content-length: 300\r\n" in rest
    s.sendall(b"GET %s HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n" % path)
    out = read_until_closed(s)
    head, _, got = out.partition(b"\r\n\r\n")
    assert b"\r\nconnection: close" in head and b"; hit; " in head and got == body
    s.close()
