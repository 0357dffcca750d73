"""HTTP on the wire through a real balancer: malformed input, byte-split requests, header
rewriting, streaming bodies with bounded memory, WebSocket tunnelling, limits and timeouts."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import backends_toml
from tests.integration.hardening_util import parse_stream, raw_exchange
from tests.integration.lbproc import LbProcess

NO_HEALTH = '[pools.web]\n[pools.web.health]\ntype = "none"\n'


def responses(raw: bytes, methods: list[str]) -> list[tuple[int, bytes]]:
    """Parse pipelined responses with the standard library's parser (not ours)."""
    return [(r.status, r.body) for r in parse_stream(raw, methods)]


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One whole response from a live socket, parsed by the standard library."""
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    return resp.status, resp.read()


def statuses(raw: bytes) -> list[int]:
    return [int(line.split()[1]) for line in raw.split(b"\r\n") if line.startswith(b"HTTP/1.")]


LB_CONFIG = ("[timeouts]\nclient_header = 1.0\n[limits]\nmax_header_bytes = 8192\nmax_body_bytes = 1000000\n"
             "max_client_connections = 40\n" + NO_HEALTH)


@pytest.fixture
def lb(web_worker_factory, lb_factory) -> LbProcess:
    """A balancer of the test's own, for tests that hold connections open (timeouts, limits)."""
    w = web_worker_factory("w")
    return lb_factory(LB_CONFIG + backends_toml("web", [w]))


@pytest.fixture(scope="module")
def shared_lb(module_web_workers, module_lb_factory) -> LbProcess:
    """The same balancer, shared by the tests that only exchange requests on connections of their
    own, each closed by the end of its exchange (and after each, the balancer must still serve)."""
    w = module_web_workers("w")
    return module_lb_factory(LB_CONFIG + backends_toml("web", [w]))


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo(st: x\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\n\rX: y\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    ],
    ids=["cl+te", "two-cl", "obs-fold", "space-colon", "bad-name", "bare-lf", "bad-chunk",
         "http10-chunked", "no-host", "tls-hello", "bad-version"],
)
def test_malformed_requests_get_4xx_5xx_and_close(shared_lb, request_bytes):
    out = raw_exchange(shared_lb.port, request_bytes)
    codes = statuses(out)
    assert len(codes) == 1 and 400 <= codes[0] <= 505, out
    assert b"connection: close" in out.lower()
    # and the balancer still serves everyone else
    assert statuses(raw_exchange(shared_lb.port, b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == [200]


def test_oversized_head_gets_431_and_oversized_body_413(shared_lb):
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    assert statuses(raw_exchange(shared_lb.port, big)) == [431]
    body = b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n" + b"x" * 1000
    assert statuses(raw_exchange(shared_lb.port, body)) == [413]


def test_request_split_at_every_byte_is_parsed_identically(shared_lb):
    req = (
        b"POST /echo HTTP/1.1\r\nHost: example\r\nX-Test: split\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        b"GET /headers HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n"
    )
    for i in range(0, len(req)):
        pieces = [req[:i], req[i:]] if i else [req]
        out = raw_exchange(shared_lb.port, pieces)
        (s1, body1), (s2, body2) = responses(out, ["POST", "GET"])
        assert (s1, body1, s2) == (200, b"hello world", 200), (i, out[:300])
        seen = json.loads(body2)
        assert seen["method"] == "GET" and seen["path"] == "/headers"
        assert seen["headers"]["Host"] == "example"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=300) | st.builds(
    lambda junk, pos: b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n"[:pos] + junk,
    st.binary(max_size=40), st.integers(0, 30)))
def test_garbage_gets_an_http_answer_or_close_never_a_hang(shared_lb, data):
    out = raw_exchange(shared_lb.port, data, timeout=10)
    for code in statuses(out):
        assert code in (200, 400, 404, 405, 408, 413, 414, 431, 501, 505), out[:300]
    # the daemon is alive and serving
    assert statuses(raw_exchange(shared_lb.port, b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == [200]


def test_headers_rewritten(shared_lb):
    req = (b"GET /headers HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 10.1.1.1\r\n"
           b"X-Forwarded-Proto: https\r\nConnection: close, X-Secret\r\nX-Secret: s3\r\n"
           b"Keep-Alive: timeout=5\r\nTE: trailers\r\n\r\n")
    out = raw_exchange(shared_lb.port, req)
    seen = json.loads(out[out.index(b"\r\n\r\n") + 4:])
    h = seen["headers"]
    assert h["X-Forwarded-For"] == "10.1.1.1, 127.0.0.1"
    assert h["X-Forwarded-Proto"] == "http"
    assert h["X-Forwarded-Host"] == "shop.example"
    assert h["X-Request-ID"]
    for hop in ("X-Secret", "Keep-Alive", "TE"):
        assert hop not in h
    rid = b"GET /headers HTTP/1.1\r\nHost: x\r\nX-Request-ID: abc-123\r\nConnection: close\r\n\r\n"
    out = raw_exchange(shared_lb.port, rid)
    assert json.loads(out[out.index(b"\r\n\r\n") + 4:])["headers"]["X-Request-ID"] == "abc-123"


def test_slowloris_gets_408_and_normal_clients_still_served(lb):
    slow = socket.create_connection(("127.0.0.1", lb.port), timeout=10)
    slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
    assert statuses(raw_exchange(lb.port, b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == [200]
    out = b""
    while chunk := slow.recv(4096):
        out += chunk
    assert statuses(out) == [408]
    slow.close()


def test_connections_beyond_the_limit_are_refused_fast(lb):
    held = [socket.create_connection(("127.0.0.1", lb.port), timeout=10) for _ in range(40)]
    try:
        for s in held[:5]:
            s.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s)[0] == 200
        extra = socket.create_connection(("127.0.0.1", lb.port), timeout=10)
        out = extra.recv(65536)  # refused at once, before any request is sent
        extra.close()
        assert statuses(out) == [503]
        # the existing clients are unharmed
        held[0].sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(held[0])[0] == 200
    finally:
        for s in held:
            s.close()


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


def _reset_peak(pid: int) -> int:
    """Reset the process's peak RSS (VmHWM; proc(5): clear_refs "5") and return its RSS now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    rss = _status_kib(pid, "VmRSS")
    assert _status_kib(pid, "VmHWM") <= rss + 1024, "the peak was not reset"
    return rss


def test_one_gib_download_and_upload_with_bounded_memory(web_worker_factory, lb_factory, tmp_path):
    # The kernel's peak RSS (VmHWM), reset before each transfer, is the most the balancer held at
    # any moment of it: a transfer that buffered and then freed hundreds of MiB shows there.
    w = web_worker_factory("big")
    lb = lb_factory(NO_HEALTH + backends_toml("web", [w]))
    gib = 1 << 30
    rss_before = _reset_peak(lb.pid)
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", lb.url(f"/bytes?n={gib}")],
        capture_output=True, check=True, timeout=300,
    ).stdout.decode()
    assert out == f"200 {gib}"
    assert _status_kib(lb.pid, "VmHWM") - rss_before < 64 * 1024  # far below the 1 GiB that passed
    # upload: a 1 GiB chunked body generated on the fly, counted and hashed by the backend
    rss_before = _reset_peak(lb.pid)
    gen = subprocess.Popen(["head", "-c", str(gib), "/dev/zero"], stdout=subprocess.PIPE)
    up = subprocess.run(
        ["curl", "-s", "-T", "-", "-H", "Content-Type: application/octet-stream", lb.url("/sink")],
        stdin=gen.stdout, capture_output=True, check=True, timeout=300,
    )
    gen.wait(10)
    result = json.loads(up.stdout)
    assert result["bytes"] == gib
    assert result["sha256"] == "49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14"
    assert _status_kib(lb.pid, "VmHWM") - rss_before < 64 * 1024


async def test_websocket_is_tunnelled(web_worker_factory, lb_factory):
    w = await web_worker_factory.start_async("ws")
    lb = lb_factory(NO_HEALTH + backends_toml("web", [w]))
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(lb.url("/ws")) as ws:
            for i in range(20):
                await ws.send_str(f"message {i}")
                msg = await ws.receive(timeout=10)
                assert msg.data == f"message {i}"
            await ws.send_bytes(b"\x00\x01" * 5000)
            msg = await ws.receive(timeout=10)
            assert msg.data == b"\x00\x01" * 5000


def test_head_and_http10_and_pipelining(shared_lb):
    out = raw_exchange(shared_lb.port, b"HEAD /bytes?n=1000 HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"GET /bytes?n=10&chunked=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    (s1, b1), (s2, b2), (s3, b3) = responses(out, ["HEAD", "GET", "GET"])
    assert (s1, b1, s2, s3, b3) == (200, b"", 200, 200, bytes(range(10)))
    assert json.loads(b2)["instance"] == "w"
    assert b"content-length: 1000" in out.lower()
    assert out.endswith(b"\r\n0\r\n\r\n")  # re-chunked for the HTTP/1.1 client
    out10 = raw_exchange(shared_lb.port, b"GET /bytes?n=5&chunked=1 HTTP/1.0\r\nHost: x\r\n\r\n")
    # an HTTP/1.0 client cannot take chunked: the body is delimited by closing the connection
    assert statuses(out10) == [200] and out10.endswith(b"\r\n\r\n" + bytes(range(5)))
    assert b"transfer-encoding" not in out10.lower()


def test_idle_keepalive_connection_is_closed_after_client_idle(web_worker_factory, lb_factory):
    w = web_worker_factory("idle")
    lb = lb_factory("[timeouts]\nclient_idle = 0.5\n" + NO_HEALTH + backends_toml("web", [w]))
    s = socket.create_connection(("127.0.0.1", lb.port), timeout=10)
    s.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(s)[0] == 200
    # nothing more is sent: the balancer closes the idle connection (recv sees EOF, not a timeout)
    assert s.recv(1) == b""
    s.close()
