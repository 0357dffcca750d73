"""HTTP/2 to clients on an https listener (ALPN h2), mapped onto the HTTP/1.1 backend pools.

Real clients: curl --http2 (and --http1.1 on the same port), the `h2` library as a client for the
RFC 9113 cases (SETTINGS, PING, concurrent streams, flow control, malformed requests) and raw
frames for the abuse cases: rapid reset (CVE-2023-44487), CONTINUATION flood, HPACK bomb; each
is cut with GOAWAY while the balancer's memory stays bounded and other clients are served."""

from __future__ import annotations

import json

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hpack import Encoder
from hyperframe.frame import ContinuationFrame, HeadersFrame, RstStreamFrame

from proxy.devstack.ports import allocate_port
from tests.integration.conftest import backends_toml
from tests.integration.h2client import H2Client
from tests.integration.lbproc import http_json
from tests.integration.rss import RssSampler
from tests.integration.tlsutil import curl, make_ca

pytestmark = pytest.mark.integration


@pytest.fixture
def h2lb(web_worker_factory, lb_factory, tmp_path):
    yield from _h2lb(web_worker_factory, lb_factory, tmp_path)


@pytest.fixture
def h2lb_small_window(web_worker_factory, lb_factory, tmp_path):
    """h2lb with a 16 KiB stream window (limits.h2_initial_window_size)."""
    yield from _h2lb(web_worker_factory, lb_factory, tmp_path, "h2_initial_window_size = 16384\n")


@pytest.fixture
def h2lb_big_window(web_worker_factory, lb_factory, tmp_path):
    """h2lb with a 1 MiB stream window."""
    yield from _h2lb(web_worker_factory, lb_factory, tmp_path, "h2_initial_window_size = 1048576\n")


def _h2lb(web_worker_factory, lb_factory, tmp_path, limits: str = ""):
    ca = make_ca(tmp_path / "pki")
    site = ca.issue("site", ["site.test"])
    w = web_worker_factory("w")
    lock = allocate_port()
    body = (f'[limits]\nmax_header_bytes = 16384\nh2_max_concurrent_streams = 50\n{limits}'
            f'[[listeners]]\nname = "s"\naddress = "127.0.0.1:{lock.port}"\nprotocol = "https"\nhttp2 = true\n'
            f'hsts_max_age = 600\n'
            f'[listeners.tls]\ncertificates = [{{ cert_file = "{site.cert}", key_file = "{site.key}" }}]\n'
            '[pools.web]\n[pools.web.health]\ntype = "none"\n' + backends_toml("web", [w]))  # fmt: skip
    lb = lb_factory(body, listen=False)
    lb.port = lock.port
    lb.ca = ca
    yield lb
    lock.release()


def _curl(lb, *args: str):
    return curl("--cacert", str(lb.ca.cert), "--resolve", f"site.test:{lb.port}:127.0.0.1", *args)


def test_curl_http2_and_http11_on_one_listener(h2lb, tmp_path):
    r = _curl(h2lb, "--http2", "-w", "\n%{http_version}", f"https://site.test:{h2lb.port}/headers")
    body, version = r.stdout.rsplit("\n", 1)
    assert version == "2", r.stderr
    seen = json.loads(body)
    assert seen["instance"] == "w" and seen["headers"]["X-Forwarded-Proto"] == "https"
    assert seen["headers"]["Host"] == f"site.test:{h2lb.port}"
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 8192)  # 2 MiB
    r = _curl(h2lb, "--http2", "--data-binary", f"@{big}", "-o", str(tmp_path / "echo.out"), "-w", "%{http_version} %{http_code}",
              f"https://site.test:{h2lb.port}/echo")
    assert r.stdout == "2 200" and (tmp_path / "echo.out").read_bytes() == big.read_bytes()
    r = _curl(h2lb, "--http2", "-i", f"https://site.test:{h2lb.port}/whoami")
    assert "strict-transport-security: max-age=600" in r.stdout.lower()
    r = _curl(h2lb, "--http1.1", "-w", "\n%{http_version}", f"https://site.test:{h2lb.port}/whoami")
    assert r.stdout.endswith("\n1.1")
    urls = [a for _ in range(40) for a in ("-o", "/dev/null", f"https://site.test:{h2lb.port}/whoami")]
    r = _curl(h2lb, "--http2", "--parallel", "--parallel-max", "40", "-w", "%{http_version}%{http_code}\n", *urls)
    assert sorted(r.stdout.split()) == ["2200"] * 40
    code, metrics = http_json(h2lb.admin("/metrics"))
    assert 'tierproxy_lb_listener_requests_total{listener="s",protocol="h2"} 43.0' in metrics
    assert 'tierproxy_lb_listener_requests_total{listener="s",protocol="http/1.1"} 1.0' in metrics


def test_rfc9113_settings_ping_streams_and_flow_control(h2lb):
    c = H2Client(h2lb.port, h2lb.ca.cert, settings={SettingCodes.INITIAL_WINDOW_SIZE: 16384})
    try:
        c.until(lambda: c.h2.remote_settings.max_concurrent_streams == 50)
        # 6.5.2: our SETTINGS: the stream limit, no push, a bounded header list and HPACK table
        assert c.h2.remote_settings.enable_push == 0
        assert c.h2.remote_settings.max_header_list_size == 16384
        assert c.h2.remote_settings.header_table_size == 4096
        # 6.7: PING is answered with the same payload
        c.h2.ping(b"12345678")
        c.flush()
        c.until(lambda: any(type(e).__name__ == "PingAckReceived" and e.ping_data == b"12345678" for e in c.events))
        # 5.1: concurrent streams, each answered on its own
        sids = [c.request(f"/headers?i={i}") for i in range(10)]
        for i, sid in enumerate(sids):
            status, _h, body = c.response(sid)
            assert status == 200 and json.loads(body)["query"] == f"i={i}"
        # 6.9: a 1 MiB answer through a 16 KiB stream window: only as the client opens it
        sid = c.request("/bytes?n=1048576")
        status, headers, body = c.response(sid)
        assert status == 200 and len(body) == 1048576 and headers[b"content-length"] == b"1048576"
        # 8.1.1/8.3: POST with a body; a HEAD gets no body
        sid = c.request("/echo", "POST", b"x" * 60000, headers=[(b"content-length", b"60000")])
        assert c.response(sid)[2] == b"x" * 60000
        sid = c.request("/whoami", "HEAD")
        status, headers, body = c.response(sid)
        assert status == 200 and body == b""
        # A refused backend answer maps to its status (no backend 404 handling of our own)
        assert c.response(c.request("/status/503"))[0] == 503
    finally:
        c.close()


def test_malformed_requests_and_too_many_streams_get_protocol_errors(h2lb):
    # 8.2.2: a connection-specific header field makes the request malformed
    c = H2Client(h2lb.port, h2lb.ca.cert, validate=False)
    try:
        c.request("/whoami", headers=[(b"connection", b"keep-alive")])
        c.until(lambda: c.goaway() is not None or any(type(e).__name__ == "StreamReset" for e in c.events))
        ga = c.goaway()
        assert ga is not None and ga.error_code == ErrorCodes.PROTOCOL_ERROR
    finally:
        c.close()
    # 5.1.2: more streams than SETTINGS_MAX_CONCURRENT_STREAMS (sent before our SETTINGS were read)
    c = H2Client(h2lb.port, h2lb.ca.cert)
    try:
        for _ in range(51):
            sid = c.h2.get_next_available_stream_id()
            c.h2.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"site.test"),
                                    (b":path", b"/echo")])  # fmt: skip
        c.flush()
        c.until(lambda: c.goaway() is not None)
        assert c.goaway().error_code in (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.REFUSED_STREAM)
    finally:
        c.close()
    r = _curl(h2lb, "--http2", "-w", "%{http_code}", "-o", "/dev/null", f"https://site.test:{h2lb.port}/whoami")
    assert r.stdout == "200"


def _headers_frame(sid: int, block: bytes, end_headers: bool = True) -> bytes:
    f = HeadersFrame(sid)
    f.data = block
    f.flags.add("END_STREAM")
    if end_headers:
        f.flags.add("END_HEADERS")
    return f.serialize()


def _request_block(enc: Encoder, path: bytes = b"/slow?ms=5000", extra: list | None = None) -> bytes:
    return enc.encode([(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"site.test"),
                       (b":path", path)] + (extra or []))  # fmt: skip


def test_rapid_reset_is_cut_with_bounded_memory(h2lb):
    c = H2Client(h2lb.port, h2lb.ca.cert)
    enc = Encoder()
    try:
        with RssSampler(h2lb.pid) as rss:
            sent = 0
            for i in range(2000):
                sid = 1 + 2 * i
                rst = RstStreamFrame(sid)
                rst.error_code = ErrorCodes.CANCEL
                if not c.send_raw(_headers_frame(sid, _request_block(enc)) + rst.serialize()):
                    break
                sent += 1
            c.until(lambda: c.goaway() is not None, 20, ack_data=False)
        ga = c.goaway()
        assert ga is not None and ga.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert rss.growth < 64 * 1024, rss.growth  # KiB
    finally:
        c.close()
    code, metrics = http_json(h2lb.admin("/metrics"))
    assert 'tierproxy_lb_listener_http2_connections_cut_total{listener="s",reason="rapid_reset"} 1.0' in metrics
    r = _curl(h2lb, "--http2", "-w", "%{http_code}", "-o", "/dev/null", f"https://site.test:{h2lb.port}/whoami")
    assert r.stdout == "200"


def test_continuation_flood_is_cut_before_the_block_is_held(h2lb):
    c = H2Client(h2lb.port, h2lb.ca.cert)
    try:
        with RssSampler(h2lb.pid) as rss:
            junk = b"\x00" * 16384
            first = HeadersFrame(1)
            first.data = junk
            sent = len(first.serialize())
            c.send_raw(first.serialize())
            for _ in range(2000):  # 32 MiB of CONTINUATION without END_HEADERS if never cut
                cont = ContinuationFrame(1)
                cont.data = junk
                if not c.send_raw(cont.serialize()):
                    break
                sent += 16393
            c.until(lambda: c.goaway() is not None, 20)
        ga = c.goaway()
        assert ga is not None and ga.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert rss.growth < 32 * 1024, rss.growth
    finally:
        c.close()
    code, metrics = http_json(h2lb.admin("/metrics"))
    assert 'tierproxy_lb_listener_http2_connections_cut_total{listener="s",reason="continuation"} 1.0' in metrics


def test_hpack_bomb_is_refused(h2lb):
    c = H2Client(h2lb.port, h2lb.ca.cert)
    try:
        c.until(lambda: c.h2.remote_settings.max_concurrent_streams == 50)
        enc = Encoder()
        # one 4000-byte field into the dynamic table, then 200 one-byte references to it: a
        # header block of ~4.2 KB that decodes to ~800 KB, far over max_header_bytes (16 KiB)
        block = _request_block(enc, b"/whoami", [(b"x-bomb", b"a" * 4000)] * 200)
        assert len(block) < 5000
        c.send_raw(_headers_frame(1, block))
        c.until(lambda: c.goaway() is not None)
        assert c.goaway().error_code in (ErrorCodes.ENHANCE_YOUR_CALM, ErrorCodes.PROTOCOL_ERROR,
                                         ErrorCodes.COMPRESSION_ERROR)  # fmt: skip
    finally:
        c.close()
    code, metrics = http_json(h2lb.admin("/metrics"))
    assert 'tierproxy_lb_listener_http2_connections_cut_total{listener="s",reason="header_list"} 1.0' in metrics


def test_sigterm_sends_goaway_and_lets_open_streams_finish(h2lb):
    import signal
    import subprocess

    from tests.integration.lbproc import wait_for

    idle = H2Client(h2lb.port, h2lb.ca.cert)
    assert idle.response(idle.request("/whoami"))[0] == 200
    busy = subprocess.Popen(["curl", "-sS", "--http2", "--cacert", str(h2lb.ca.cert), "--resolve",
                             f"site.test:{h2lb.port}:127.0.0.1", "-w", "\n%{http_version} %{http_code}",
                             f"https://site.test:{h2lb.port}/slow?ms=2000"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: h2lb.status()["pools"]["web"]["backends"][0]["inflight"] == 1, 10, "the slow stream")
        h2lb.signal(signal.SIGTERM)
        # an idle HTTP/2 connection gets GOAWAY (NO_ERROR) at once
        idle.until(lambda: idle.goaway() is not None or idle.closed, 10)
        assert idle.goaway() is not None and int(idle.goaway().error_code) == 0
        # the stream in progress is answered in full (curl saw the GOAWAY and waited for it)
        out, _ = busy.communicate(timeout=30)
        body, status = out.rsplit("\n", 1)
        assert status == "2 200" and json.loads(body)["slept_ms"] == 2000
    finally:
        idle.close()
        if busy.poll() is None:
            busy.kill()
    assert h2lb.proc.wait(30) == 0
