"""The cdn's Protocol-based client side (proxy/cdn/client.py) with raw sockets against a real
origin process: pipelined hits (answered synchronously) and misses (answered by a task) leave in
request order; valid requests before a malformed one in the same segment are answered, then 400;
a client that stops reading large hits pins no more than a bounded amount of memory, gets every
byte when it reads again, and is cut after client_idle_timeout if it never does; a client cutting
its connection mid-fill leaves the fill to complete and be stored; arbitrary request bytes
(hypothesis) get well-formed HTTP/1.1 answers and the daemon keeps serving; a keep-alive
connection idle at SIGTERM is closed at once while one with a request in flight gets its answer
with "connection: close".
"""

from __future__ import annotations

import re
import signal
import socket
import struct
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration import cdnproc
from tests.integration.lbproc import wait_for
from tests.integration.rss import RssSampler

IDLE = 4.0
MiB = 1024 * 1024
BLOCK = bytes(range(256))
BIG = 3 * MiB  # a stored object over the client side's 256 KiB slice, under max_object_bytes

origin = cdnproc.origin
cdn = cdnproc.cdn_fixture(top=f"client_idle_timeout = {IDLE}",
                          cache=f"max_bytes = {64 * MiB}\nmax_object_bytes = {4 * MiB}")


def connect(cdn, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket()
    if rcvbuf is not None:  # before connect: no receive-window autotuning beyond it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(20)
    s.connect(("127.0.0.1", cdn.port))
    return s


ESTABLISHED = "01"  # the "st" column of /proc/net/tcp


def server_side_state(server_port: int, client_port: int) -> str | None:
    """The TCP state of the server's end of the loopback connection from `client_port` (IPv4), or
    None once it is gone."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].partition(":")[2], fields[2].partition(":")[2]
        if int(local, 16) == server_port and int(remote, 16) == client_port:
            return fields[3]
    return None


def get(path: bytes, method: bytes = b"GET", extra: bytes = b"") -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: proto\r\n%s\r\n" % (method, path, extra)


class Reader:
    """HTTP/1.1 responses read one by one from a socket (Content-Length, chunked, bodyless,
    or until close)."""

    def __init__(self, s: socket.socket) -> None:
        self.s = s
        self.buf = bytearray()
        self.eof = False

    def _more(self) -> bool:
        try:
            data = self.s.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            assert self._more(), f"closed after {len(self.buf)} of {n} bytes"

    def response(self, head_request: bool = False) -> tuple[int, dict[bytes, bytes], bytes] | None:
        """(status, fields lowercased, body) of the next response, None at a clean end."""
        while b"\r\n\r\n" not in self.buf:
            if not self._more():
                assert not self.buf, f"closed inside a response head: {bytes(self.buf)[:200]!r}"
                return None
        end = self.buf.index(b"\r\n\r\n") + 4
        head = bytes(self.buf[:end])
        m = re.fullmatch(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [^\r\n]*\r\n((?:[!-9;-~]+:[^\r\n]*\r\n)*)\r\n", head)
        assert m is not None, f"not an HTTP/1.1 response head: {head[:300]!r}"
        status = int(m.group(1))
        fields = {}
        for line in m.group(2).split(b"\r\n")[:-1]:
            name, _, value = line.partition(b":")
            fields[name.lower()] = value.strip()
        del self.buf[:end]
        if head_request or status in (204, 304) or status < 200:
            return status, fields, b""
        if b"content-length" in fields:
            n = int(fields[b"content-length"])
            self._need(n)
            body = bytes(self.buf[:n])
            del self.buf[:n]
        elif fields.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    assert self._more(), "closed inside a chunk size"
                line, _, _ = bytes(self.buf).partition(b"\r\n")
                size = int(line.split(b";")[0], 16)
                self._need(len(line) + 2 + size + 2)
                body += bytes(self.buf[len(line) + 2:len(line) + 2 + size])
                del self.buf[:len(line) + 2 + size + 2]
                if size == 0:
                    break
        else:
            while self._more():
                pass
            body = bytes(self.buf)
            self.buf.clear()
        return status, fields, body

    def closed(self) -> bool:
        """True when the peer has closed with nothing more sent."""
        return not self._more() and not self.buf


def body_of(size: int) -> bytes:
    return (BLOCK * (size // 256 + 1))[:size]


def store(cdn, path: bytes) -> bytes:
    """Request `path` until it is a hit; its body."""
    s = connect(cdn)
    r = Reader(s)
    for _ in range(2):
        s.sendall(get(path))
        status, fields, body = r.response()
        assert status == 200
    assert b"; hit" in fields[b"cache-status"], fields
    s.close()
    return body


def test_pipelined_hits_and_misses_are_answered_in_request_order(cdn, origin):
    hit_a, hit_b = b"/obj/pa?cc=max-age%3D300&size=5000", b"/obj/pb?cc=max-age%3D300&size=70"
    body_a, body_b = store(cdn, hit_a), store(cdn, hit_b)
    slow, quick = b"/obj/pslow?cc=max-age%3D300&delay=0.6", b"/obj/pquick?cc=no-store"
    s = connect(cdn)
    r = Reader(s)
    # One segment: hit, slow miss, hit, HEAD hit, uncached miss, Range on a hit, hit.
    s.sendall(get(hit_a) + get(slow) + get(hit_b) + get(hit_a, b"HEAD") + get(quick)
              + get(hit_a, extra=b"Range: bytes=10-19\r\n") + get(hit_b))
    expect = [(200, b"; hit", body_a), (200, b"fwd=uri-miss", b"/obj/pslow #1"), (200, b"; hit", body_b),
              (200, b"; hit", b""), (200, b"fwd=uri-miss", b"/obj/pquick #1"), (206, b"; hit", body_a[10:20]),
              (200, b"; hit", body_b)]
    for i, (status, cs, body) in enumerate(expect):
        got = r.response(head_request=i == 3)
        assert got is not None and (got[0], got[2]) == (status, body), (i, got)
        assert cs in got[1][b"cache-status"], (i, got[1])
    # Still a keep-alive connection, and the slow miss is now a plain hit.
    s.sendall(get(slow))
    status, fields, body = r.response()
    assert (status, body) == (200, b"/obj/pslow #1") and b"; hit" in fields[b"cache-status"]
    s.close()


def test_valid_requests_before_a_malformed_one_are_answered_then_400(cdn, origin):
    path = b"/obj/pbad?cc=max-age%3D300&size=100"
    body = store(cdn, path)
    s = connect(cdn)
    r = Reader(s)
    s.sendall(get(path) + get(path) + b"GET /x HTTP/1.1\r\nHost: proto\r\nBad Field: 1\r\n\r\n" + get(path))
    for _ in range(2):
        status, fields, got = r.response()
        assert (status, got) == (200, body) and b"; hit" in fields[b"cache-status"]
    status, fields, _ = r.response()
    assert status == 400 and fields[b"connection"] == b"close"
    assert r.closed()
    s.close()


def test_a_client_that_stops_reading_large_hits_pins_bounded_memory(cdn, origin):
    path = b"/big/pstop?size=%d&chunk=65536" % BIG
    assert store(cdn, path) == body_of(BIG)
    count = 24  # 72 MiB of answers, far past what the kernel's socket buffers hold
    s = connect(cdn, rcvbuf=65536)
    with RssSampler(cdn.proc.pid, interval=0.01) as rss:
        s.sendall(get(path) * count)
        # Meanwhile the daemon serves another client (its reading of the first has paused).
        for _ in range(20):
            assert store(cdn, b"/obj/pother?cc=max-age%3D300") == b"/obj/pother #1"
    assert rss.growth < 24 * 1024, f"RSS grew {rss.growth} KiB while a client did not read"
    r = Reader(s)
    for _ in range(count):
        status, fields, body = r.response()
        assert status == 200 and body == body_of(BIG) and b"; hit" in fields[b"cache-status"]
    s.close()


def test_a_client_that_never_reads_is_cut_after_the_idle_timeout(cdn, origin):
    path = b"/big/pnever?size=%d&chunk=65536" % BIG
    assert store(cdn, path) == body_of(BIG)
    s = connect(cdn, rcvbuf=65536)
    s.sendall(get(path) * 8)
    t0 = time.monotonic()
    # Nothing read until the daemon has closed its side (its socket leaves ESTABLISHED in
    # /proc/net/tcp: FIN queued behind what the kernel still holds); on a daemon that never
    # cuts the connection this times out.
    wait_for(lambda: server_side_state(cdn.port, s.getsockname()[1]) != ESTABLISHED,
             timeout=IDLE + 30, what="the cdn to cut a client that reads nothing")
    r = Reader(s)
    got = 0
    while r._more():
        got += len(r.buf)
        r.buf.clear()
    assert got < 8 * BIG, "every answer arrived: the connection was not cut"
    assert time.monotonic() - t0 < 60
    s.close()


def test_a_client_cutting_its_connection_mid_fill_leaves_the_fill_to_be_stored(cdn, origin):
    size = 1024 * 1024
    path = b"/big/pcut?size=%d&chunk=65536&delay=0.05" % size
    s = connect(cdn)
    s.sendall(get(path))
    r = Reader(s)
    while b"\r\n\r\n" not in r.buf or len(r.buf) < r.buf.index(b"\r\n\r\n") + 4 + 65536:
        assert r._more()
    assert b"fwd=uri-miss" in bytes(r.buf)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # a reset, mid-body
    # A second client joins the fill (or, if it is over, hits the stored object): the whole body.
    s2 = connect(cdn)
    s2.sendall(get(path))
    status, _, body = Reader(s2).response()
    assert status == 200 and body == body_of(size)
    s2.close()
    wait_for(lambda: origin.count("/big/pcut")["completed"] == 1, 20, "the fill to complete")
    assert store(cdn, path) == body_of(size)
    assert origin.count("/big/pcut")["requests"] == 1
    log = cdn.log_path.read_text()
    assert "Traceback" not in log and "never retrieved" not in log, log[-3000:]


# No HEAD among them: its answer's Content-Length announces a body it does not have, which a reader
# of arbitrary answers cannot tell (HEAD is tested above and in test_cdn_client_conns.py).
_VALID = [get(b"/obj/pfuzz?cc=max-age%3D300&size=50"),
          get(b"/obj/pfuzz2", extra=b"Cache-Control: no-cache\r\nRange: bytes=0-3\r\n"),
          b"GET /obj/pfuzz?cc=max-age%3D300&size=50 HTTP/1.0\r\n\r\n",
          b"POST /obj/pfuzz3 HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\n\r\nabc",
          b"GET /obj/pfuzz4 HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"]


@st.composite
def request_bytes(draw):
    """Valid requests, some mutated (bytes replaced, inserted, cut), concatenated."""
    out = b""
    for _ in range(draw(st.integers(1, 3))):
        req = bytearray(draw(st.sampled_from(_VALID)))
        for _ in range(draw(st.integers(0, 3))):
            at = draw(st.integers(0, len(req)))
            op = draw(st.sampled_from(["replace", "insert", "cut"]))
            junk = draw(st.binary(min_size=1, max_size=4))
            if op == "insert":
                req[at:at] = junk
            elif op == "replace":
                req[at:at + len(junk)] = junk
            else:
                del req[at:]
        out += bytes(req)
    if draw(st.booleans()):
        out += draw(st.binary(max_size=64))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=request_bytes())
def test_arbitrary_request_bytes_get_well_formed_answers_and_the_daemon_keeps_serving(cdn, origin, data):
    s = connect(cdn)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)  # then every answer, and the connection closes
    r = Reader(s)
    while (got := r.response()) is not None:
        assert 200 <= got[0] <= 599, got
        if got[0] in (400, 413, 414, 431, 501, 505) and got[1].get(b"connection") == b"close":
            assert r.closed()  # the parser's error ends the connection
            break
    s.close()
    assert cdn.proc.poll() is None
    ok = connect(cdn)
    ok.sendall(get(b"/obj/pfuzz-after?cc=max-age%3D300"))
    status, _, body = Reader(ok).response()
    assert (status, body) == (200, b"/obj/pfuzz-after #1")
    ok.close()


def test_sigterm_closes_idle_keep_alive_connections_and_finishes_answers_in_flight(cdn, origin):
    # Last in this module: it stops the cdn (the fixture then checks that it exited 0).
    path = b"/obj/pterm?cc=max-age%3D300&size=64"
    body = store(cdn, path)
    idle = connect(cdn)
    ri = Reader(idle)
    idle.sendall(get(path))
    assert ri.response()[2] == body  # a keep-alive connection, now idle
    busy = connect(cdn)
    rb = Reader(busy)
    busy.sendall(get(b"/obj/pterm-slow?cc=max-age%3D300&delay=2"))
    wait_for(lambda: origin.count("/obj/pterm-slow")["requests"] == 1, 10, "the slow miss to reach the origin")
    cdn.proc.send_signal(signal.SIGTERM)
    assert ri.closed()  # closed without an answer
    status, fields, got = rb.response()
    assert (status, got) == (200, b"/obj/pterm-slow #1") and fields[b"connection"] == b"close"
    assert rb.closed()
    assert cdn.proc.wait(30) == 0
