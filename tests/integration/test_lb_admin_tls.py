"""The admin port beyond loopback: TLS with client certificates, or TLS with a bearer token that
reads need too. Real clients: curl with --cacert/--cert, Python's urllib over ssl."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest

from tests.integration.conftest import backends_toml
from tests.integration.lbproc import LbProcess, wait_for
from tests.integration.tlsutil import curl, make_ca

pytestmark = pytest.mark.integration


class TlsAdminLb(LbProcess):
    """A balancer whose admin port is 0.0.0.0 (not loopback) over TLS; probed over TLS."""

    def __init__(self, tmp_path, body, admin_tls: str, token_file: str | None, ca, client) -> None:
        self.admin_tls = admin_tls
        self.token_file = token_file
        self.ca = ca
        self.client = client
        super().__init__(tmp_path, body)

    def write_config(self, body: str) -> None:
        token = f'token_file = "{self.token_file}"\n' if self.token_file else ""
        head = (f'listen = "127.0.0.1:{self.port}"\n' + body + f'[admin]\naddress = "0.0.0.0:{self.admin_port}"\n'
                + token + 'allowed_hosts = ["admin.test"]\n' + "[admin.tls]\n" + self.admin_tls)  # fmt: skip
        self.config_path.write_text(head)

    def admin(self, path: str) -> str:
        return f"https://127.0.0.1:{self.admin_port}{path}"

    def get(self, path: str, token: str | None = None, method: str = "GET") -> tuple[int, str]:
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        if self.client is not None:
            ctx.load_cert_chain(str(self.client.cert), str(self.client.key))
        req = urllib.request.Request(self.admin(path), method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if method != "GET":
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"tierproxy lb exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            code, _ = self.get("/healthz", token="s3cret-token-1234")
        except OSError:
            return False
        return code == 200


def _body(w) -> str:
    return '[pools.web]\n[pools.web.health]\ntype = "none"\n' + backends_toml("web", [w])


def test_admin_beyond_loopback_with_client_certificates(web_worker_factory, lb_factory, tmp_path):
    ca = make_ca(tmp_path / "pki")
    server = ca.issue("admin", ["admin.test"])
    client = ca.issue("operator", ["operator"], client=True)
    other_ca = make_ca(tmp_path / "other", "other")
    stranger = other_ca.issue("stranger", ["stranger"], client=True)
    w = web_worker_factory("w")
    tls = f'cert_file = "{server.cert}"\nkey_file = "{server.key}"\nclient_ca_file = "{ca.cert}"\n'
    lb = TlsAdminLb(tmp_path, _body(w), tls, None, ca, client)
    lb_factory.started.append(lb)
    lb.start()
    code, text = lb.get("/status")
    assert code == 200 and json.loads(text)["pools"]["web"]["backends"][0]["name"] == "w"
    base = ["--cacert", str(ca.cert), "--resolve", f"admin.test:{lb.admin_port}:127.0.0.1"]
    url = f"https://admin.test:{lb.admin_port}/status"
    ok = curl(*base, "--cert", str(client.cert), "--key", str(client.key), url)
    assert ok.returncode == 0 and json.loads(ok.stdout)["pools"], ok.stderr
    # no client certificate, or one from another CA: no TLS session, no answer
    assert curl(*base, url).returncode != 0
    assert curl(*base, "--cert", str(stranger.cert), "--key", str(stranger.key), url).returncode != 0
    # plain HTTP to the TLS port gets nothing useful
    plain = curl(f"http://127.0.0.1:{lb.admin_port}/status")
    assert plain.returncode != 0 or "pools" not in plain.stdout


def test_admin_beyond_loopback_with_a_token_guards_reads_too(web_worker_factory, lb_factory, tmp_path):
    ca = make_ca(tmp_path / "pki")
    server = ca.issue("admin", ["admin.test"])
    token = tmp_path / "token"
    token.write_text("s3cret-token-1234\n")
    w = web_worker_factory("w")
    tls = f'cert_file = "{server.cert}"\nkey_file = "{server.key}"\n'
    lb = TlsAdminLb(tmp_path, _body(w), tls, str(token), ca, None)
    lb_factory.started.append(lb)
    lb.start()
    assert lb.get("/status")[0] == 401
    assert lb.get("/metrics")[0] == 401
    assert lb.get("/status", token="wrong")[0] == 401
    code, text = lb.get("/status", token="s3cret-token-1234")
    assert code == 200 and "web" in json.loads(text)["pools"]
    code, _ = lb.get("/pools/web/backends/w/drain", token="s3cret-token-1234", method="POST")
    assert code == 200
    wait_for(lambda: json.loads(lb.get("/status", token="s3cret-token-1234")[1])["pools"]["web"]["backends"][0]["state"] == "draining",
             10, "the backend draining")
    r = curl("--cacert", str(ca.cert), "--resolve", f"admin.test:{lb.admin_port}:127.0.0.1",
             "-H", "Authorization: Bearer s3cret-token-1234", f"https://admin.test:{lb.admin_port}/metrics")
    assert r.returncode == 0 and "tierproxy_lb_requests_total" in r.stdout
