"""`tierproxy cdn` streaming: an object is sent to clients while it is being filled from the origin
(a second client joining the fill gets the bytes already in and the rest as they arrive, before
the origin has finished); a response over cache.max_object_bytes is passed through uncached and
streamed, not buffered; the daemon's peak RSS stays bounded while 10x the store's size of
distinct objects, and one object far larger than the store, go through. Real origin process
(cdnorigin.py /big/), real curl and raw sockets."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.integration import cdnproc
from tests.integration.lbproc import wait_for
from tests.integration.test_cdn import Cdn

BLOCK = bytes(range(256))
MiB = 1024 * 1024


def body_of(size: int) -> bytes:
    return (BLOCK * (size // 256 + 1))[:size]


origin = cdnproc.origin
cdn = cdnproc.cdn_fixture(cache=f"max_bytes = {16 * MiB}\nmax_object_bytes = {4 * MiB}")


class RawClient:
    """One GET on a raw socket, read step by step: the head, then body bytes as they come."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data
        return data

    def some_body(self) -> bytes:
        while not self.buf:
            self._recv()
        return self.buf

    def rest(self) -> bytes:
        try:
            while True:
                self._recv()
        except EOFError:
            pass
        self.sock.close()
        return self.buf


def curl_bin(cdn: Cdn, path: str) -> tuple[int, dict[str, str], int]:
    """curl with a binary body: (status, headers lowercased, body size)."""
    out = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/null", "-w", "%{size_download}",
                          f"http://127.0.0.1:{cdn.port}{path}"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    head, _, size = out.stdout.replace("\r\n", "\n").rpartition("\n\n")
    lines = head.split("\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, int(size)


def test_a_second_client_gets_bytes_while_the_object_fills(cdn, origin):
    # 1.25 MiB in 20 pieces 0.25 s apart: the fill takes ~5 s.
    path = "/big/fill?size=1310720&chunk=65536&delay=0.25"
    first = RawClient(cdn.port, path)
    assert first.status == 200 and "fwd=uri-miss" in first.headers["cache-status"]
    assert first.some_body()
    second = RawClient(cdn.port, path)
    assert second.status == 200 and "collapsed" in second.headers["cache-status"]
    assert int(second.headers["content-length"]) == 1310720
    # The second client has body bytes while the origin is still sending the one response.
    got = second.some_body()
    assert got and body_of(1310720).startswith(got)
    count = origin.count("/big/fill")
    assert count == {"requests": 1, "not_modified": 0, "completed": 0}, count
    assert second.rest() == body_of(1310720)
    assert first.rest() == body_of(1310720)
    # Then it is stored: a hit, still one origin request.
    status, headers, size = curl_bin(cdn, path)
    assert status == 200 and headers["cache-status"].startswith("tierproxy; hit") and size == 1310720
    assert origin.count("/big/fill")["requests"] == 1


@pytest.mark.parametrize("cl", ["1", "0"])
def test_over_the_object_limit_passed_through_streamed(cdn, origin, cl):
    # 6 MiB (limit 4 MiB) in 96 pieces 0.02 s apart; with cl=0 the size shows only while filling.
    path = f"/big/pt{cl}?size={6 * MiB}&chunk=65536&delay=0.02&cl={cl}"
    client = RawClient(cdn.port, path)
    assert client.status == 200
    if cl == "1":
        assert 'detail="too-large"' in client.headers["cache-status"]
        assert int(client.headers["content-length"]) == 6 * MiB
    else:
        assert client.headers.get("transfer-encoding") == "chunked"
    assert client.some_body()
    assert origin.count(f"/big/pt{cl}")["completed"] == 0  # streamed, not buffered first
    client.rest()
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                          f"http://127.0.0.1:{cdn.port}{path}"], capture_output=True, text=True, timeout=60)
    assert out.stdout == f"200 {6 * MiB}", out.stderr
    # Not stored: each request went to the origin.
    assert origin.count(f"/big/pt{cl}")["requests"] == 2


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_peak_memory_bounded_under_10x_the_store_and_a_huge_pass_through(cdn, origin):
    assert curl_bin(cdn, "/big/warm?size=65536")[0] == 200
    base = peak_rss(cdn.proc.pid)
    # 80 distinct 2 MiB objects: 160 MiB, 10x the 16 MiB store, on one curl connection.
    urls = [f"http://127.0.0.1:{cdn.port}/big/m{i}?size={2 * MiB}&chunk=262144" for i in range(80)]
    args = [a for u in urls for a in ("-o", "/dev/null", u)]
    out = subprocess.run(["curl", "-sS", "-w", "%{http_code}\n", *args], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["200"] * 80, out.stderr
    st = cdn.status()
    assert st["bytes"] <= st["max_bytes"] == 16 * MiB
    # One 256 MiB object (64x the per-object limit) streamed through.
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                          f"http://127.0.0.1:{cdn.port}/big/huge?size={256 * MiB}&chunk=262144"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout == f"200 {256 * MiB}", out.stderr
    growth = peak_rss(cdn.proc.pid) - base
    # The store's 16 MiB, one 4 MiB fill and buffers: far below the 416 MiB that went through.
    assert growth < 64 * MiB, growth / MiB
    wait_for(lambda: cdn.status()["objects"] >= 1, 5, "status")


def test_sigterm_lets_an_answer_being_streamed_finish(cdn, origin):
    # Last in this module: it stops the cdn (the fixture then finds it exited with 0).
    client = RawClient(cdn.port, "/big/term?size=1310720&chunk=65536&delay=0.15")
    assert client.status == 200 and client.some_body()
    cdn.proc.send_signal(signal.SIGTERM)
    assert client.rest() == body_of(1310720)
    assert cdn.proc.wait(30) == 0
