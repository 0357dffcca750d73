"""Several listeners in one balancer and TLS termination, driven by real clients: curl (with
--cacert/--resolve for SNI), openssl s_client, Python's ssl. Certificates are made with openssl
for each test (tests/integration/tlsutil.py)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess

import pytest

from tests.integration.conftest import backends_toml
from tests.integration.lbproc import http_json, wait_for
from tests.integration.tlsutil import curl, make_ca, peer_cert_names, tls_get

pytestmark = pytest.mark.integration


def pools_toml(wa, wb) -> str:
    return ('[pools.a]\n[pools.a.health]\ntype = "none"\n' + backends_toml("a", [wa])
            + '[pools.b]\n[pools.b.health]\ntype = "none"\n' + backends_toml("b", [wb]))  # fmt: skip


def body_json(raw: bytes) -> dict:
    return json.loads(raw[raw.index(b"\r\n\r\n") + 4:])


def secure_lb(port: int, cert, key, wa, wb, tls: str = "") -> str:
    """The balancer config of most tests here: one https listener "secure" on PORT serving the
    pair CERT/KEY, with TLS (lines of [listeners.tls] besides the certificate), and pools a, b."""
    return f"""
[[listeners]]
name = "secure"
address = "127.0.0.1:{port}"
protocol = "https"
[listeners.tls]
{tls}
certificates = [{{ cert_file = "{cert}", key_file = "{key}" }}]
""" + pools_toml(wa, wb)


def renewable_pair(tmp_path, ca):
    """An old and a new certificate for site.test, and the live files (a copy of the old pair)
    that a test replaces to renew: (old, new, live_cert, live_key)."""
    old = ca.issue("old", ["site.test"])
    new = ca.issue("new", ["site.test"])
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(old.cert, live_cert)
    shutil.copy(old.key, live_key)
    return old, new, live_cert, live_key


def test_two_listeners_http_and_https_route_and_forward(web_worker_factory, lb_factory, tmp_path, free_port):
    ca = make_ca(tmp_path / "pki")
    site = ca.issue("site", ["site.test"])
    wa, wb = web_worker_factory("wa"), web_worker_factory("wb")
    p_http, p_https = free_port(), free_port()
    body = f"""
[[listeners]]
name = "plain"
address = "127.0.0.1:{p_http}"
routes = [{{ pool = "a" }}]

[[listeners]]
name = "secure"
address = "127.0.0.1:{p_https}"
protocol = "https"
default_pool = "b"
forwarded = true
[listeners.tls]
certificates = [{{ cert_file = "{site.cert}", key_file = "{site.key}" }}]
""" + pools_toml(wa, wb)
    lb = lb_factory(body, listen=False)
    r = curl(f"http://127.0.0.1:{p_http}/headers")
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    assert seen["instance"] == "wa"
    assert seen["headers"]["X-Forwarded-Proto"] == "http"
    assert "Forwarded" not in seen["headers"]
    for version in ("--http1.1", "--tlsv1.3"):
        r = curl(version, "--cacert", str(ca.cert), "--resolve", f"site.test:{p_https}:127.0.0.1",
                 f"https://site.test:{p_https}/headers")
        assert r.returncode == 0, r.stderr
        seen = json.loads(r.stdout)
        assert seen["instance"] == "wb"
        assert seen["headers"]["X-Forwarded-Proto"] == "https"
        assert seen["headers"]["Forwarded"] == f'for=127.0.0.1;proto=https;host="site.test:{p_https}"'
    # A Forwarded header from the client is kept, ours comes after it (RFC 7239 4).
    r = curl("--cacert", str(ca.cert), "--resolve", f"site.test:{p_https}:127.0.0.1",
             "-H", "Forwarded: for=10.9.9.9", f"https://site.test:{p_https}/headers")
    raw = [v for n, v in json.loads(r.stdout)["raw_headers"] if n.lower() == "forwarded"]
    assert raw == ["for=10.9.9.9", f'for=127.0.0.1;proto=https;host="site.test:{p_https}"']
    status = lb.status()
    assert status["listeners"] == {"plain": {"address": f"127.0.0.1:{p_http}", "protocol": "http"},
                                   "secure": {"address": f"127.0.0.1:{p_https}", "protocol": "https"}}
    code, metrics = http_json(lb.admin("/metrics"))
    assert 'tierproxy_lb_listener_tls_handshakes_total{listener="secure",version="TLSv1.3"} 3.0' in metrics
    assert 'tierproxy_lb_listener_requests_total{listener="plain",protocol="http/1.1"} 1.0' in metrics


def test_sni_picks_the_certificate_and_unknown_names_get_the_default(web_worker_factory, lb_factory, tmp_path, free_port):
    ca = make_ca(tmp_path / "pki")
    first = ca.issue("first", ["first.test"])
    wild = ca.issue("wild", ["*.wild.test"])
    named = ca.issue("named", ["whatever.test"])
    wa, wb = web_worker_factory("wa"), web_worker_factory("wb")
    port = free_port()
    body = f"""
[[listeners]]
name = "secure"
address = "127.0.0.1:{port}"
protocol = "https"
[listeners.tls]
certificates = [
  {{ cert_file = "{first.cert}", key_file = "{first.key}" }},
  {{ cert_file = "{wild.cert}", key_file = "{wild.key}" }},
  {{ cert_file = "{named.cert}", key_file = "{named.key}", server_names = ["other.test"] }},
]
""" + pools_toml(wa, wb)
    lb_factory(body, listen=False)
    assert peer_cert_names(port, "first.test", ca.cert) == ["first.test"]
    assert peer_cert_names(port, "shop.wild.test", ca.cert) == ["*.wild.test"]
    assert peer_cert_names(port, "OTHER.test", ca.cert) == ["whatever.test"]  # configured name
    assert peer_cert_names(port, "a.b.wild.test", ca.cert) == ["first.test"]  # * is one label
    assert peer_cert_names(port, "nobody.test", ca.cert) == ["first.test"]
    assert peer_cert_names(port, None, ca.cert) == ["first.test"]
    # curl verifies the chain and the name it asked for
    r = curl("--cacert", str(ca.cert), "--resolve", f"x.wild.test:{port}:127.0.0.1",
             f"https://x.wild.test:{port}/whoami")
    assert r.returncode == 0 and json.loads(r.stdout)["instance"] == "wa", r.stderr


def _s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "site.test",
                           *args], input="", capture_output=True, text=True, timeout=20)  # fmt: skip


def test_only_tls12_and_13_with_intermediate_ciphers_and_resumption(web_worker_factory, lb_factory, tmp_path, free_port):
    ca = make_ca(tmp_path / "pki")
    site = ca.issue("site", ["site.test"])
    wa, wb = web_worker_factory("wa"), web_worker_factory("wb")
    port = free_port()
    body = secure_lb(port, site.cert, site.key, wa, wb)
    lb = lb_factory(body, listen=False)
    assert "Protocol  : TLSv1.2" in _s_client(port, "-tls1_2").stdout
    assert "TLSv1.3" in _s_client(port, "-tls1_3").stdout
    # TLS 1.0/1.1 refused (the client's own OpenSSL may refuse them first at its security level:
    # either way no session is established)
    for old in ("-tls1", "-tls1_1"):
        out = _s_client(port, old, "-cipher", "DEFAULT@SECLEVEL=0")
        assert "Cipher is (NONE)" in out.stdout or out.returncode != 0, out.stdout
    # A cipher outside Mozilla intermediate (CBC, no forward secrecy) is refused over TLS 1.2
    out = _s_client(port, "-tls1_2", "-cipher", "AES128-SHA")
    assert out.returncode != 0 and "Cipher is (NONE)" in out.stdout
    out = _s_client(port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA")
    assert out.returncode != 0
    # Secure renegotiation is not offered to a TLS 1.2 client (OP_NO_RENEGOTIATION)
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2"],
                         input="R\n", capture_output=True, text=True, timeout=20)  # fmt: skip
    assert "RENEGOTIATING" not in out.stdout or "DONE" in out.stdout or out.returncode != 0
    # Session resumption by ticket, TLS 1.3 and 1.2
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = ssl.create_default_context(cafile=str(ca.cert))
        ctx.maximum_version = version
        sess = None
        reused = []
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="site.test", session=sess) as s:
                    s.sendall(b"GET /whoami HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
                    while s.recv(65536):
                        pass
                    reused.append(s.session_reused)
                    sess = s.session
        assert reused == [False, True], (version, reused)
    code, metrics = http_json(lb.admin("/metrics"))
    assert 'tierproxy_lb_listener_tls_handshake_failures_total{listener="secure",reason="no_shared_cipher"} 2.0' in metrics, metrics


def _fingerprint(port: int, name: str, ca) -> str:
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            return s.getpeercert(binary_form=True).hex()


def test_reload_keeps_the_old_pair_when_the_new_fails_and_serves_a_new_one_without_dropping(
        web_worker_factory, lb_factory, tmp_path, free_port):  # fmt: skip
    ca = make_ca(tmp_path / "pki")
    old, new, live_cert, live_key = renewable_pair(tmp_path, ca)
    wa, wb = web_worker_factory("wa"), web_worker_factory("wb")
    port = free_port()
    body = secure_lb(port, live_cert, live_key, wa, wb, tls="watch_interval = 0")
    lb = lb_factory(body, listen=False)
    old_fp = _fingerprint(port, "site.test", ca)
    # An established keep-alive connection, from before any change
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    held = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="site.test")

    def get_on_held() -> int:
        held.sendall(b"GET /whoami HTTP/1.1\r\nHost: site.test\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += held.recv(1)
        length = int([ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")][0])
        got = b""
        while len(got) < length:
            got += held.recv(length - len(got))
        return int(head.split(b" ")[1])

    assert get_on_held() == 200
    # A broken pair: the new certificate with the old key. The reload is refused with the
    # located reason and the old pair keeps serving.
    shutil.copy(new.cert, live_cert)
    lb.signal(signal.SIGHUP)
    wait_for(lambda: "listeners[0].tls.certificates[0]: cannot use cert_file" in lb.log_path.read_text()
             and "KEY_VALUES_MISMATCH" in lb.log_path.read_text(), 10, "the failed reload logged")
    assert _fingerprint(port, "site.test", ca) == old_fp
    assert get_on_held() == 200
    # The new pair complete: served to new connections; the held one still works
    shutil.copy(new.key, live_key)
    lb.signal(signal.SIGHUP)
    wait_for(lambda: _fingerprint(port, "site.test", ca) != old_fp, 10, "the new certificate served")
    assert _fingerprint(port, "site.test", ca) == _fingerprint_file(new.cert)
    assert get_on_held() == 200
    held.close()


def _fingerprint_file(path) -> str:
    return ssl.PEM_cert_to_DER_cert(path.read_text()).hex()


def test_changed_files_are_picked_up_without_a_signal(web_worker_factory, lb_factory, tmp_path, free_port):
    ca = make_ca(tmp_path / "pki")
    old, new, live_cert, live_key = renewable_pair(tmp_path, ca)
    wa, wb = web_worker_factory("wa"), web_worker_factory("wb")
    port = free_port()
    body = secure_lb(port, live_cert, live_key, wa, wb, tls="watch_interval = 0.5")
    lb = lb_factory(body, listen=False)
    assert _fingerprint(port, "site.test", ca) == _fingerprint_file(old.cert)
    # The key alone: a mismatched pair, not loaded (logged, counted); the old pair serves
    shutil.copy(new.key, live_key)
    wait_for(lambda: "keeping the ones in use" in lb.log_path.read_text(), 15, "the bad pair refused")
    assert _fingerprint(port, "site.test", ca) == _fingerprint_file(old.cert)
    code, metrics = http_json(lb.admin("/metrics"))
    assert 'tierproxy_lb_listener_tls_reloads_failed_total{listener="secure"} 1.0' in metrics
    # Then the certificate: the pair is whole and served from the next handshake on
    shutil.copy(new.cert, live_cert)
    wait_for(lambda: _fingerprint(port, "site.test", ca) == _fingerprint_file(new.cert), 15,
             "the renewed certificate served after its files changed")


def test_http_redirects_to_https_and_https_sends_hsts(web_worker_factory, lb_factory, tmp_path, free_port):
    ca = make_ca(tmp_path / "pki")
    site = ca.issue("site", ["site.test"])
    wa, wb = web_worker_factory("wa"), web_worker_factory("wb")
    p_http, p_https = free_port(), free_port()
    body = f"""
[[listeners]]
name = "redirect"
address = "127.0.0.1:{p_http}"
redirect_https = true
redirect_port = {p_https}

[[listeners]]
name = "secure"
address = "127.0.0.1:{p_https}"
protocol = "https"
hsts_max_age = 31536000
hsts_include_subdomains = true
[listeners.tls]
certificates = [{{ cert_file = "{site.cert}", key_file = "{site.key}" }}]
""" + pools_toml(wa, wb)
    lb_factory(body, listen=False)
    r = curl("-i", "-H", "Host: site.test", f"http://127.0.0.1:{p_http}/whoami?x=1")
    head = r.stdout.split("\r\n\r\n")[0].lower()
    assert head.startswith("http/1.1 308"), r.stdout
    assert f"location: https://site.test:{p_https}/whoami?x=1" in head
    # Following it lands on the https listener, whose responses carry HSTS (simple and full path)
    r = curl("-i", "-L", "--cacert", str(ca.cert), "--resolve", f"site.test:{p_https}:127.0.0.1",
             "--resolve", f"site.test:{p_http}:127.0.0.1", f"http://site.test:{p_http}/whoami")
    assert r.returncode == 0, r.stderr
    assert r.stdout.lower().count("http/1.1 308") == 1 and r.stdout.lower().count("http/1.1 200") == 1, r.stdout
    final = r.stdout.lower().split("http/1.1 200")[1]
    assert "strict-transport-security: max-age=31536000; includesubdomains" in final
    for path in ("/whoami", "/bytes?n=100000&chunked=1", "/status/404"):
        out, _, _, _ = tls_get(p_https, "site.test", ca.cert, path)
        head = out.split(b"\r\n\r\n")[0].lower()
        assert b"\r\nstrict-transport-security: max-age=31536000; includesubdomains\r\n" in head, (path, head)


def test_ticket_keys_are_renewed_every_ticket_key_rotation(web_worker_factory, lb_factory, tmp_path, free_port):
    ca = make_ca(tmp_path / "pki")
    site = ca.issue("site", ["site.test"])
    wa, wb = web_worker_factory("wa"), web_worker_factory("wb")
    port = free_port()
    body = secure_lb(port, site.cert, site.key, wa, wb, tls="ticket_key_rotation = 2")
    lb_factory(body, listen=False)
    ctx = ssl.create_default_context(cafile=str(ca.cert))

    def connect(session):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="site.test", session=session) as s:
                s.sendall(b"GET /whoami HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
                while s.recv(65536):
                    pass
                return s.session_reused, s.session

    def fresh_ticket_resumes() -> bool:
        return connect(connect(None)[1])[0]

    # A ticket resumes within its key's life (retried: a renewal may fall between the two)
    wait_for(fresh_ticket_resumes, 20, "a fresh ticket to resume")
    _reused, old = connect(None)
    # once the key is renewed it no longer does (a full handshake, not an error) ...
    wait_for(lambda: not connect(old)[0], 20, "the old ticket to stop resuming after a key renewal")
    # ... and tickets under the new key resume again
    wait_for(fresh_ticket_resumes, 20, "a ticket of the new key to resume")
