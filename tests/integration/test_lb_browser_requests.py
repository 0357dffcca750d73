"""What a real `tierproxy lb` does with what browsers and HTTP libraries send: a dozen header lines
with a cookie and `Connection: keep-alive` (bench/realistic.py's header sets), one after the
other on one keep-alive connection, then one with `Connection: close`.

A raw socket on the client side, the recording backend (its own strict parser) on the other. The
requests take the balancer's fast path, which forwards the client's field lines as they came:
the backend must see every line exactly as the client wrote it (names' case included), except
the hop-by-hop Connection line, plus X-Forwarded-*; the client's connection must stay open
through them all, and `Connection: close` must still close it after its response.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import pytest

from bench.realistic import requests
from tests.integration.hardening_util import NO_HEALTH_NO_OUTLIER
from tests.integration.lbproc import LbProcess
from tests.integration.recording_backend import RecordingBackend


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LbProcess, RecordingBackend]]:
    rec = RecordingBackend("rec")
    lb = LbProcess(
        tmp_path_factory.mktemp("lbbrowser"),
        "[pools.web]\nretries = 0\n" + NO_HEALTH_NO_OUTLIER
        + f'[[pools.web.backends]]\nname = "rec"\naddress = "{rec.address}"\n',
        name="lbbrowser",
    )
    lb.start()
    try:
        yield lb, rec
    finally:
        lb.stop()
        rec.close()


def _exchange(sock: socket.socket, data: bytes) -> http.client.HTTPResponse:
    sock.sendall(data)
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    resp.read()
    return resp


def test_browser_requests_on_one_keep_alive_connection_reach_the_backend_as_sent(setup) -> None:
    lb, rec = setup
    before = len(rec.requests)
    sent = requests(12, host="shop.example")
    with socket.create_connection(("127.0.0.1", lb.port), timeout=10) as sock:
        for data in sent:
            resp = _exchange(sock, data)
            assert resp.status == 200 and not resp.will_close, data
        # The same connection still serves; then a browser's last request says close.
        closing = requests(1, host="shop.example", start=99)[0].replace(b"Connection: keep-alive", b"Connection: close")
        resp = _exchange(sock, closing)
        assert resp.status == 200 and resp.getheader("connection") == "close" and resp.will_close
        assert sock.recv(1) == b""  # the balancer closed its side after the response
    seen = rec.wait_count(before + len(sent) + 1)[before:]
    for data, got in zip(sent, seen):
        lines = data.split(b"\r\n")
        assert got.method == b"GET" and got.target == lines[0].split(b" ")[1]
        client_lines = [ln for ln in lines[1:-2] if not ln.lower().startswith(b"connection:")]
        got_lines = got.raw.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
        # every client line as it was written, in order, then ours; no Connection line
        assert got_lines[: len(client_lines)] == client_lines, (data, got.raw)
        assert got.header(b"connection") is None
        assert got.header(b"x-forwarded-for") == b"127.0.0.1" and got.header(b"x-forwarded-host") == b"shop.example"
    assert seen[-1].header(b"connection") is None  # hop-by-hop: not forwarded on the close either
