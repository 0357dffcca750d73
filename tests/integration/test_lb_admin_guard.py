"""The admin API against what a web page in an operator's browser can send (CSRF, DNS rebinding),
its bearer token, and backend addresses it must not accept (cloud metadata services). Real HTTP
requests to a running `tierproxy lb`; http.client lets a test set Host and Origin as a browser
would."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

from tests.integration.conftest import backends_toml
from tests.integration.lbproc import REPO, http_json

POOL = '[pools.web]\n[pools.web.health]\ntype = "none"\n'


def _send(lb, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", lb.admin_port, timeout=10)
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    try:
        data = json.loads(raw)
    except ValueError:
        data = {"raw": raw.decode("utf-8", "replace")}
    return resp.status, data, dict(resp.getheaders())


def test_browser_shaped_cross_origin_and_rebinding_requests_change_nothing(web_worker_factory, lb_factory):
    a = web_worker_factory("a")
    lb = lb_factory(POOL + backends_toml("web", [a]))
    host = f"127.0.0.1:{lb.admin_port}"
    drain = "/pools/web/backends/a/drain"
    # What a cross-site form or fetch(no-cors) sends: a simple request, no preflight.
    code, body, _ = _send(lb, "POST", drain, {"Host": host, "Content-Type": "text/plain",
                                              "Origin": "http://evil.example"}, b"{}")  # fmt: skip
    assert code == 403 and "cross-origin" in body["error"]
    code, body, _ = _send(lb, "POST", drain, {"Host": host, "Content-Type": "text/plain"}, b"{}")
    assert code == 415 and "application/json" in body["error"]
    code, body, _ = _send(lb, "POST", drain, {"Host": host, "Content-Type": "application/json",
                                              "Origin": "http://localhost:3000"})  # fmt: skip
    assert code == 403  # another origin on the same machine is still another origin
    # DNS rebinding: evil.example now resolves to 127.0.0.1; the browser sends its own name
    rebound = {"Host": f"evil.example:{lb.admin_port}", "Content-Type": "application/json"}
    assert _send(lb, "POST", drain, rebound)[0] == 403
    assert _send(lb, "DELETE", "/pools/web/backends/a", rebound)[0] == 403
    assert _send(lb, "GET", "/status", {"Host": f"evil.example:{lb.admin_port}"})[0] == 403
    assert lb.backend("web", "a")["state"] == "up"  # nothing above was obeyed
    # what an operator's tools send is obeyed: curl (no Origin), the page's own origin, localhost
    code, body, _ = _send(lb, "POST", drain, {"Host": host, "Content-Type": "application/json"})
    assert code == 200 and body["draining"] == "a"
    code, _, _ = _send(lb, "POST", "/pools/web/backends/a/enable",
                       {"Host": f"localhost:{lb.admin_port}", "Content-Type": "application/json",
                        "Origin": f"http://localhost:{lb.admin_port}"})  # fmt: skip
    assert code == 200 and lb.backend("web", "a")["state"] == "up"


def test_admin_token_guards_changes_and_rotates_on_reload(web_worker_factory, lb_factory, tmp_path):
    a = web_worker_factory("a")
    token_file = tmp_path / "admin.token"
    token_file.write_text("s3cret-token-1\n")
    lb = lb_factory(POOL + backends_toml("web", [a]), admin_extra=f'token_file = "{token_file}"')
    json_ct = {"Content-Type": "application/json"}
    drain = "/pools/web/backends/a/drain"
    code, body, headers = _send(lb, "POST", drain, json_ct)
    assert code == 401 and "Bearer" in body["error"] and headers["WWW-Authenticate"].startswith("Bearer")
    assert _send(lb, "POST", drain, {**json_ct, "Authorization": "Bearer s3cret-token-2"})[0] == 401
    assert _send(lb, "POST", drain, {**json_ct, "Authorization": "Basic s3cret-token-1"})[0] == 401
    assert lb.backend("web", "a")["state"] == "up"  # reads need no token
    code, _, _ = _send(lb, "POST", drain, {**json_ct, "Authorization": "Bearer s3cret-token-1"})
    assert code == 200 and lb.backend("web", "a")["state"] == "draining"
    # a reload re-reads the file: the old token stops working, the new one works
    token_file.write_text("s3cret-token-2\n")
    assert _send(lb, "POST", "/reload", {**json_ct, "Authorization": "Bearer s3cret-token-1"})[0] == 200
    enable = "/pools/web/backends/a/enable"
    assert _send(lb, "POST", enable, {**json_ct, "Authorization": "Bearer s3cret-token-1"})[0] == 401
    assert _send(lb, "POST", enable, {**json_ct, "Authorization": "Bearer s3cret-token-2"})[0] == 200


def test_backends_at_metadata_or_unspecified_addresses_are_refused(web_worker_factory, lb_factory, tmp_path):
    a = web_worker_factory("a")
    lb = lb_factory(POOL + backends_toml("web", [a]))
    for address, why in [("169.254.169.254:80", "link-local"), ("[fe80::1]:80", "link-local"),
                         ("[::ffff:169.254.169.254]:80", "link-local"), ("0.0.0.0:80", "unspecified")]:  # fmt: skip
        code, body = http_json(lb.admin("/pools/web/backends"), "POST", {"name": "meta", "address": address})
        assert code == 403 and why in body["error"], (address, body)
    assert [b["name"] for b in lb.status()["pools"]["web"]["backends"]] == ["a"]

    # in a config file: a located error from check-config (and the daemon would not start)
    bad = tmp_path / "lb-meta.toml"
    bad.write_text('[pools.web]\n[[pools.web.backends]]\nname = "m"\naddress = "169.254.169.254:80"\n')
    run = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(bad)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2
    assert "lb-meta.toml: pools.web.backends[0].address: 169.254.169.254 is link-local" in run.stderr
    # an explicit allow-list admits only its networks
    listed = tmp_path / "lb-nets.toml"
    listed.write_text('allowed_backend_networks = ["10.0.0.0/8"]\n[pools.web]\n'
                      '[[pools.web.backends]]\nname = "m"\naddress = "127.0.0.1:80"\n')  # fmt: skip
    run = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(listed)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2 and "outside allowed_backend_networks (10.0.0.0/8)" in run.stderr


def test_check_config_refuses_an_open_admin_address_without_tls_and_auth(tmp_path):
    # Was a warning; since issue 18 an admin port beyond loopback needs TLS and client
    # certificates or a token (tests/integration/test_lb_admin_tls.py serves one).
    cfg = tmp_path / "lb-open.toml"
    cfg.write_text('[admin]\naddress = "0.0.0.0:9080"\n[pools.web]\n'
                   '[[pools.web.backends]]\nname = "a"\naddress = "127.0.0.1:8001"\n')  # fmt: skip
    run = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(cfg)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2
    assert "lb-open.toml: admin.address: 0.0.0.0:9080 is not loopback: it needs [admin.tls]" in run.stderr
    token = tmp_path / "t"
    token.write_text("x" * 32)
    cfg.write_text(cfg.read_text().replace('"0.0.0.0:9080"\n', f'"0.0.0.0:9080"\ntoken_file = "{token}"\n'))
    run = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(cfg)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2 and "is not loopback: it needs [admin.tls]" in run.stderr
