"""PROXY protocol on a listener (v1/v2, only from trusted networks, malformed headers close only
their connection) and to backends (v1/v2, seen by a real nginx with `listen ... proxy_protocol`).
Clients: raw sockets writing the spec's bytes by hand, curl --haproxy-protocol, haproxy in front."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import struct
import subprocess

import pytest

from proxy.devstack.poll import wait_until
from tests.integration.conftest import backends_toml
from tests.integration.lbproc import http_json
from tests.integration.nginxutil import Nginx
from tests.integration.tlsutil import curl, make_ca

pytestmark = pytest.mark.integration

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_tcp4(src: str, sport: int, dst: str, dport: int) -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIG + b"\x21\x11" + struct.pack("!H", len(body)) + body


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


def seen_headers(raw: bytes) -> dict:
    return json.loads(raw[raw.index(b"\r\n\r\n") + 4:])["headers"]


GET = b"GET /headers HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n"


def listener(name: str, port: int, trusted: str, extra: str = "") -> str:
    return (f'[[listeners]]\nname = "{name}"\naddress = "127.0.0.1:{port}"\nproxy_protocol = true\n'
            f'proxy_protocol_from = ["{trusted}"]\nforwarded = true\n{extra}')  # fmt: skip


def pool(w) -> str:
    return '[pools.web]\n[pools.web.health]\ntype = "none"\n' + backends_toml("web", [w])


def test_proxy_header_from_a_trusted_network_sets_the_client(web_worker_factory, lb_factory, free_port):
    w = web_worker_factory("w")
    p_trusted, p_untrusted, p_plain = free_port(), free_port(), free_port()
    body = (listener("trusted", p_trusted, "127.0.0.0/8") + listener("untrusted", p_untrusted, "10.0.0.0/8")
            + f'[[listeners]]\nname = "plain"\naddress = "127.0.0.1:{p_plain}"\n' + pool(w))  # fmt: skip
    lb = lb_factory(body, listen=False)
    h = seen_headers(exchange(p_trusted, b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n" + GET))
    assert h["X-Forwarded-For"] == "203.0.113.7"
    assert h["Forwarded"] == 'for=203.0.113.7;proto=http;host="site.test"'
    h = seen_headers(exchange(p_trusted, b"PROXY TCP6 2001:db8::5 ::1 40000 443\r\n" + GET))
    assert h["X-Forwarded-For"] == "2001:db8::5"
    assert h["Forwarded"] == 'for="[2001:db8::5]";proto=http;host="site.test"'
    h = seen_headers(exchange(p_trusted, v2_tcp4("198.51.100.20", 1234, "127.0.0.1", 80) + GET))
    assert h["X-Forwarded-For"] == "198.51.100.20"
    # v2 LOCAL (a balancer's own health check) and v1 UNKNOWN: the connection's own address
    h = seen_headers(exchange(p_trusted, V2_SIG + b"\x20\x00\x00\x00" + GET))
    assert h["X-Forwarded-For"] == "127.0.0.1"
    h = seen_headers(exchange(p_trusted, b"PROXY UNKNOWN\r\n" + GET))
    assert h["X-Forwarded-For"] == "127.0.0.1"
    # curl's own PROXY v1 header
    r = curl("--haproxy-protocol", f"http://127.0.0.1:{p_trusted}/headers")
    assert r.returncode == 0 and json.loads(r.stdout)["headers"]["X-Forwarded-For"] == "127.0.0.1", r.stderr
    # From a network not in proxy_protocol_from: closed without an answer, however good the header
    assert exchange(p_untrusted, b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n" + GET) == b""
    # Malformed headers close their connection only; the daemon keeps serving
    for bad in (b"PROXY TCP4 203.0.113.777 127.0.0.1 1 2\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"PROXY " + b"A" * 120 + b"\r\n",
                V2_SIG + b"\x31\x11\x00\x0c" + b"\x00" * 12, V2_SIG + b"\x21\x11\x00\x04" + b"\x00" * 4):
        assert exchange(p_trusted, bad + GET) == b"", bad
    h = seen_headers(exchange(p_trusted, b"PROXY TCP4 203.0.113.8 127.0.0.1 40000 443\r\n" + GET))
    assert h["X-Forwarded-For"] == "203.0.113.8"
    assert seen_headers(exchange(p_plain, GET))["X-Forwarded-For"] == "127.0.0.1"
    code, metrics = http_json(lb.admin("/metrics"))
    assert 'tierproxy_lb_listener_proxy_protocol_refused_total{listener="untrusted",why="untrusted"} 1.0' in metrics
    assert 'tierproxy_lb_listener_proxy_protocol_refused_total{listener="trusted",why="malformed"} 6.0' in metrics


def test_proxy_header_before_tls_and_through_haproxy(web_worker_factory, lb_factory, tmp_path, free_port):
    ca = make_ca(tmp_path / "pki")
    site = ca.issue("site", ["site.test"])
    w = web_worker_factory("w")
    port = free_port()
    tls = (f'protocol = "https"\n[listeners.tls]\n'
           f'certificates = [{{ cert_file = "{site.cert}", key_file = "{site.key}" }}]\n')  # fmt: skip
    lb_factory(listener("secure", port, "127.0.0.0/8", tls) + pool(w), listen=False)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(v2_tcp4("192.0.2.44", 5555, "127.0.0.1", 443))
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    with ctx.wrap_socket(raw, server_hostname="site.test") as s:
        s.sendall(GET)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    h = seen_headers(out)
    assert h["X-Forwarded-For"] == "192.0.2.44"
    assert h["Forwarded"] == 'for=192.0.2.44;proto=https;host="site.test"'
    # haproxy in front (TCP mode) sends its PROXY v2 header; curl's TLS runs through it to us
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    front = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""global
    log stderr format raw local0 err
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend f
    bind 127.0.0.1:{front}
    default_backend b
backend b
    server lb 127.0.0.1:{port} send-proxy-v2
""")
    proc = subprocess.Popen([haproxy, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", front), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(up, 15, "haproxy to listen")
        r = curl("--cacert", str(ca.cert), "--resolve", f"site.test:{front}:127.0.0.1", f"https://site.test:{front}/headers")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["headers"]["X-Forwarded-For"] == "127.0.0.1"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_header_sent_to_backends(lb_factory, tmp_path, free_port, version):
    nport = free_port()
    nginx = Nginx(tmp_path / "nginx", nport, ' proxy_protocol;\n        default_type text/plain;\n'
                  '        location / { return 200 "$proxy_protocol_addr $proxy_protocol_port $remote_addr\\n"; }')
    try:
        port = free_port()
        body = (listener("in", port, "127.0.0.0/8")
                + f'[pools.web]\nproxy_protocol = "{version}"\n[pools.web.health]\ntype = "tcp"\n'
                + f'[[pools.web.backends]]\nname = "n"\naddress = "{nginx.address}"\n')  # fmt: skip
        lb_factory(body, listen=False)
        for client in ("203.0.113.50", "203.0.113.51"):
            out = exchange(port, f"PROXY TCP4 {client} 127.0.0.1 4321 80\r\n".encode()
                           + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 200"), out
            assert out.split(b"\r\n\r\n", 1)[1] == f"{client} 4321 127.0.0.1\n".encode()
        # keep-alive on the client side: each client connection gets its own backend connection
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"PROXY TCP4 203.0.113.60 127.0.0.1 1000 80\r\n")
            for _ in range(2):
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                got = b""
                while not got.endswith(b"\n") or b"\r\n\r\n" not in got:
                    got += s.recv(4096)
                assert got.split(b"\r\n\r\n", 1)[1] == b"203.0.113.60 1000 127.0.0.1\n"
    finally:
        nginx.stop()
