"""HTTP/2 through the balancer with whole clients: h2load (nghttp2-client) over TLS and over h2c
prior knowledge, curl --http2-prior-knowledge beside HTTP/1.1 on one plain port, a headless
Chromium page load over HTTPS + HTTP/2 (the test CA trusted through an NSS database), and an
idle HTTP/2 connection closed after timeouts.client_idle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from proxy.devstack.ports import allocate_port
from tests.integration.conftest import backends_toml
from tests.integration.h2client import H2Client
from tests.integration.lbproc import http_json
from tests.integration.tlsutil import curl, make_ca

pytestmark = pytest.mark.integration


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (scripts/dev.sh installs it)")
    return path


@pytest.fixture
def lbs(web_worker_factory, lb_factory, tmp_path):
    ca = make_ca(tmp_path / "pki")
    site = ca.issue("site", ["site.test"])
    w = web_worker_factory("w")
    tls_lock, plain_lock = allocate_port(), allocate_port()
    body = (f'[timeouts]\nclient_idle = 1.0\n'
            f'[[listeners]]\nname = "s"\naddress = "127.0.0.1:{tls_lock.port}"\nprotocol = "https"\nhttp2 = true\n'
            f'[listeners.tls]\ncertificates = [{{ cert_file = "{site.cert}", key_file = "{site.key}" }}]\n'
            f'[[listeners]]\nname = "p"\naddress = "127.0.0.1:{plain_lock.port}"\nh2c = true\n'
            '[pools.web]\n[pools.web.health]\ntype = "none"\n' + backends_toml("web", [w]))  # fmt: skip
    lb = lb_factory(body, listen=False)
    lb.tls_port, lb.plain_port, lb.ca = tls_lock.port, plain_lock.port, ca
    yield lb
    tls_lock.release()
    plain_lock.release()


def _h2load(url: str) -> str:
    run = subprocess.run([_tool("h2load"), "-n", "400", "-c", "4", "-m", "10", url], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    return run.stdout


def test_h2load_over_tls_and_h2c_all_succeed(lbs):
    out = _h2load(f"https://127.0.0.1:{lbs.tls_port}/whoami")
    assert "Application protocol: h2" in out and "400 succeeded, 0 failed, 0 errored" in out, out
    out = _h2load(f"http://127.0.0.1:{lbs.plain_port}/whoami")
    assert "Application protocol: h2c" in out and "400 succeeded, 0 failed, 0 errored" in out, out
    code, metrics = http_json(lbs.admin("/metrics"))
    assert 'tierproxy_lb_listener_requests_total{listener="s",protocol="h2"} 400.0' in metrics
    assert 'tierproxy_lb_listener_requests_total{listener="p",protocol="h2"} 400.0' in metrics


def test_h2c_prior_knowledge_and_http11_share_a_plain_port(lbs):
    r = curl("--http2-prior-knowledge", "-w", "\n%{http_version}", f"http://127.0.0.1:{lbs.plain_port}/headers")
    body, version = r.stdout.rsplit("\n", 1)
    assert version == "2" and json.loads(body)["headers"]["X-Forwarded-Proto"] == "http", r.stderr
    r = curl("-w", "\n%{http_version}", f"http://127.0.0.1:{lbs.plain_port}/headers")
    body, version = r.stdout.rsplit("\n", 1)
    assert version == "1.1" and json.loads(body)["instance"] == "w"
    # the preface split over several writes is still recognised; anything else is HTTP/1.1
    import socket

    with socket.create_connection(("127.0.0.1", lbs.plain_port), timeout=10) as s:
        for piece in (b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n", b"\r\n"):
            s.sendall(piece)
        first = s.recv(9)
        assert len(first) == 9 and first[3] == 0x4  # the server's SETTINGS frame
    with socket.create_connection(("127.0.0.1", lbs.plain_port), timeout=10) as s:
        s.sendall(b"PRI / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert s.recv(12).startswith(b"HTTP/1.1")


def test_idle_http2_connection_gets_goaway(lbs):
    c = H2Client(lbs.tls_port, lbs.ca.cert)
    try:
        status, _h, _b = c.response(c.request("/whoami"))
        assert status == 200
        c.until(lambda: c.goaway() is not None, 15)  # client_idle = 1 s
        assert int(c.goaway().error_code) == 0  # NO_ERROR
    finally:
        c.close()


def test_headless_chromium_loads_a_page_over_https_and_http2(lbs, tmp_path):
    chromium = _tool("chromium")
    certutil = _tool("certutil")
    home = tmp_path / "home"
    nss = home / ".pki" / "nssdb"
    nss.mkdir(parents=True)
    env = {**os.environ, "HOME": str(home)}
    subprocess.run([certutil, "-d", f"sql:{nss}", "-N", "--empty-password"], check=True, env=env, timeout=30)
    subprocess.run([certutil, "-d", f"sql:{nss}", "-A", "-t", "C,,", "-n", "tierproxy-test", "-i", str(lbs.ca.cert)],
                   check=True, env=env, timeout=30)  # fmt: skip
    run = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'chr'}",
                          "--host-resolver-rules=MAP site.test 127.0.0.1", "--dump-dom",
                          f"https://site.test:{lbs.tls_port}/"], capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert '<b id="instance">w</b>' in run.stdout, run.stderr[-2000:]
    code, metrics = http_json(lbs.admin("/metrics"))
    counts = {line.split('protocol="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith('tierproxy_lb_listener_requests_total{listener="s"')}  # fmt: skip
    assert counts["h2"] >= 1 and counts["http/1.1"] == 0, counts  # the page (and its favicon) over h2
