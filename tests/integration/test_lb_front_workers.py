"""The front door with `workers = 2`, and HTTP/2 with the balancer's HTTP/1.1 features: TLS and
HTTP/2 served by both workers, a certificate renewed by SIGHUP in every worker; sticky sessions
over HTTP/2 (the cookie pins the backend); HTTP/2 after a PROXY header on an https listener."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl

import pytest
from h2.events import ResponseReceived

from proxy.devstack.ports import allocate_port
from tests.integration.conftest import backends_toml
from tests.integration.h2client import H2Client
from tests.integration.lbproc import wait_for
from tests.integration.tlsutil import curl, make_ca

pytestmark = pytest.mark.integration


def _fingerprint(port: int, ca) -> str:
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="site.test") as s:
            return s.getpeercert(binary_form=True).hex()


def test_two_workers_serve_tls_and_h2_and_both_take_a_renewed_certificate(web_worker_factory, lb_factory, tmp_path):
    ca = make_ca(tmp_path / "pki")
    old, new = ca.issue("old", ["site.test"]), ca.issue("new", ["site.test"])
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(old.cert, live_cert)
    shutil.copy(old.key, live_key)
    w = web_worker_factory("w")
    lock = allocate_port()
    try:
        body = (f'workers = 2\n[[listeners]]\nname = "s"\naddress = "127.0.0.1:{lock.port}"\nprotocol = "https"\n'
                f'http2 = true\n[listeners.tls]\nwatch_interval = 0\n'
                f'certificates = [{{ cert_file = "{live_cert}", key_file = "{live_key}" }}]\n'
                '[pools.web]\n[pools.web.health]\ntype = "none"\n' + backends_toml("web", [w]))  # fmt: skip
        lb = lb_factory(body, listen=False)
        base = ["--cacert", str(ca.cert), "--resolve", f"site.test:{lock.port}:127.0.0.1"]
        urls = [a for _ in range(20) for a in ("-o", "/dev/null", f"https://site.test:{lock.port}/whoami")]
        r = curl(*base, "--http2", "-w", "%{http_version}%{http_code}\n", *urls)
        assert sorted(r.stdout.split()) == ["2200"] * 20, r.stderr
        status = lb.status()
        assert len(status["worker_pids"]) == 2

        def both_served() -> bool:
            if all(n > 0 for n in lb.status()["worker_requests"]):
                return True
            curl(*base, "--http1.1", "-o", "/dev/null", f"https://site.test:{lock.port}/whoami")  # one more
            return False

        wait_for(both_served, 30, "both workers to have served")
        old_fp = _fingerprint(lock.port, ca)
        shutil.copy(new.cert, live_cert)
        shutil.copy(new.key, live_key)
        lb.signal(signal.SIGHUP)
        new_fp = ssl.PEM_cert_to_DER_cert(new.cert.read_text()).hex()
        assert new_fp != old_fp
        # 20 new connections (spread over both workers by the kernel): all see the new pair
        wait_for(lambda: all(_fingerprint(lock.port, ca) == new_fp for _ in range(20)), 20,
                 "every worker to serve the renewed certificate")
    finally:
        lock.release()


def test_sticky_sessions_hold_over_http2(web_worker_factory, lb_factory, tmp_path):
    ca = make_ca(tmp_path / "pki")
    site = ca.issue("site", ["site.test"])
    wa, wb = web_worker_factory("wa"), web_worker_factory("wb")
    lock = allocate_port()
    try:
        body = (f'[[listeners]]\nname = "s"\naddress = "127.0.0.1:{lock.port}"\nprotocol = "https"\nhttp2 = true\n'
                f'[listeners.tls]\ncertificates = [{{ cert_file = "{site.cert}", key_file = "{site.key}" }}]\n'
                '[pools.web]\nalgorithm = "round_robin"\nmode = "sticky"\n'
                '[pools.web.sticky]\nsecret = "0123456789abcdef0123"\n[pools.web.health]\ntype = "none"\n'
                + backends_toml("web", [wa, wb]))  # fmt: skip
        lb_factory(body, listen=False)
        c = H2Client(lock.port, ca.cert)
        try:
            sid = c.request("/whoami")
            status, headers, body1 = c.response(sid)
            cookie = headers[b"set-cookie"].split(b";")[0]
            first = json.loads(body1)["instance"]
            seen = set()
            for _ in range(6):
                _s, _h, b = c.response(c.request("/whoami", headers=[(b"cookie", cookie)]))
                seen.add(json.loads(b)["instance"])
            assert seen == {first}
            # without the cookie, round robin spreads the requests
            spread = {json.loads(c.response(c.request("/whoami"))[2])["instance"] for _ in range(4)}
            assert spread == {"wa", "wb"}
            assert any(isinstance(e, ResponseReceived) for e in c.events)
        finally:
            c.close()
    finally:
        lock.release()


def test_http2_after_a_proxy_header_uses_the_proxied_client(web_worker_factory, lb_factory, tmp_path):
    ca = make_ca(tmp_path / "pki")
    site = ca.issue("site", ["site.test"])
    w = web_worker_factory("w")
    lock = allocate_port()
    try:
        body = (f'[[listeners]]\nname = "s"\naddress = "127.0.0.1:{lock.port}"\nprotocol = "https"\nhttp2 = true\n'
                'proxy_protocol = true\nproxy_protocol_from = ["127.0.0.0/8"]\n'
                f'[listeners.tls]\ncertificates = [{{ cert_file = "{site.cert}", key_file = "{site.key}" }}]\n'
                '[pools.web]\n[pools.web.health]\ntype = "none"\n' + backends_toml("web", [w]))  # fmt: skip
        lb_factory(body, listen=False)
        raw = socket.create_connection(("127.0.0.1", lock.port), timeout=10)
        raw.sendall(b"PROXY TCP4 198.51.100.77 127.0.0.1 5000 443\r\n")
        c = H2Client(lock.port, ca.cert, raw=raw)
        try:
            _s, _h, b = c.response(c.request("/headers"))
            assert json.loads(b)["headers"]["X-Forwarded-For"] == "198.51.100.77"
        finally:
            c.close()
    finally:
        lock.release()
