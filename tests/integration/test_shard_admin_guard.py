"""The shard router's admin API behind the shared guard (proxy/core/adminguard.py): `allowed_hosts`,
`token_file`, and beyond loopback TLS with a token that reads need too. A real router over one
real PostgreSQL shard; requests from http.client and urllib, which send the Host we choose."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.core.config import AdminTlsConfig
from proxy.devstack.poll import wait_until
from proxy.devstack.ports import allocate_port
from proxy.devstack.postgres import HOST, PgCluster, start_pg_cluster
from proxy.devstack.shard import ShardRouterServer, shard_config
from proxy.shard.reshard_run import RouterAdmin
from tests.integration.tlsutil import make_ca

pytestmark = pytest.mark.integration

TOKEN = "shard-admin-token-5678"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    cluster = start_pg_cluster(0, log_dir=tmp_path_factory.mktemp("shard_guard_pg"), name="s0")
    try:
        yield cluster
    finally:
        cluster.close()


def _router(pg: PgCluster, tmp: Path, admin: str, admin_host: str = HOST) -> ShardRouterServer:
    """A router whose [admin] table is `admin` (TOML keys after `address`)."""
    port_lock, admin_lock = allocate_port(HOST), allocate_port(HOST)
    config = shard_config({"s0": pg.primary}, port=port_lock.port, admin_port=admin_lock.port,
                          users={"app": "app-secret"}, backend_user=pg.user, backend_password=pg.password)  # fmt: skip
    inline = f'admin = {{ address = "{HOST}:{admin_lock.port}" }}'
    assert inline in config
    config = config.replace(inline, "") + f'[admin]\naddress = "{admin_host}:{admin_lock.port}"\n{admin}'
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "token").write_text(TOKEN + "\n")
    return ShardRouterServer(config.replace("TOKEN_FILE", str(tmp / "token")), log_dir=tmp,
                             users={"app": "app-secret"}, port_lock=port_lock, admin_lock=admin_lock)  # fmt: skip


def _request(port: int, method: str, path: str, host: str, token: str | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        headers = {"Host": f"{host}:{port}"}
        body = None
        if method == "POST":
            headers["Content-Type"] = "application/json"
            body = json.dumps({"fence": "no-such-fence"})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_allowed_hosts_and_token_on_a_loopback_admin(pg: PgCluster, tmp_path: Path) -> None:
    router = _router(pg, tmp_path, 'token_file = "TOKEN_FILE"\nallowed_hosts = ["shard.internal"]\n')
    try:
        router.wait_ready()
        port = router.admin_port
        # a listed name and an IP literal are answered; a foreign name (DNS rebinding) is not
        code, text = _request(port, "GET", "/status", "shard.internal")
        assert code == 200 and [s["name"] for s in json.loads(text)["shards"]] == ["s0"]
        assert _request(port, "GET", "/metrics", "127.0.0.1")[0] == 200
        code, text = _request(port, "GET", "/status", "evil.example")
        assert code == 403 and "evil.example" in text
        # changes need the token; with it the request reaches the endpoint (no such fence: 409)
        code, text = _request(port, "POST", "/reshard/abort", "shard.internal")
        assert code == 401 and "token" in text
        assert _request(port, "POST", "/reshard/abort", "shard.internal", token="wrong")[0] == 401
        assert _request(port, "POST", "/reshard/abort", "shard.internal", token=TOKEN)[0] == 409
        # `tierproxy reshard` reaches the endpoints with OLD's admin token
        assert asyncio.run(_reshard_client(f"{HOST}:{port}", TOKEN, None)) == (200, 409)
        assert asyncio.run(_reshard_client(f"{HOST}:{port}", None, None))[1] == 401
        # a reload (SIGHUP) re-reads the token file: the new token is taken, the old one refused
        (tmp_path / "token").write_text("rotated-token-0000\n")
        os.kill(router.process.pid, signal.SIGHUP)
        wait_until(lambda: _request(port, "POST", "/reshard/abort", "shard.internal", token="rotated-token-0000")[0]
                   == 409, 20, "the reload did not take the new token")  # fmt: skip
        assert _request(port, "POST", "/reshard/abort", "shard.internal", token=TOKEN)[0] == 401
    finally:
        router.close()


def test_beyond_loopback_the_admin_is_tls_and_reads_need_the_token(pg: PgCluster, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    cert = ca.issue("admin", ["shard.internal"])
    router = _router(pg, tmp_path, f'token_file = "TOKEN_FILE"\nallowed_hosts = ["shard.internal"]\n'
                     f'[admin.tls]\ncert_file = "{cert.cert}"\nkey_file = "{cert.key}"\n', admin_host="0.0.0.0")
    ctx = ssl.create_default_context(cafile=str(ca.cert))

    def get(path: str, token: str | None) -> int:
        req = urllib.request.Request(f"https://127.0.0.1:{router.admin_port}{path}")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        # ShardRouterServer's own readiness probe is plain HTTP on loopback: poll over TLS instead
        router.process.wait_ready(lambda: _answers(get), 30)
        assert get("/status", TOKEN) == 200
        assert get("/status", None) == 401
        assert get("/metrics", "wrong") == 401
        # `tierproxy reshard` over TLS trusts the router's own certificate and sends the token
        tls = AdminTlsConfig(cert_file=str(cert.cert), key_file=str(cert.key))
        assert asyncio.run(_reshard_client(f"0.0.0.0:{router.admin_port}", TOKEN, tls)) == (200, 409)
    finally:
        router.close()


async def _reshard_client(address: str, token: str | None, tls: AdminTlsConfig | None) -> tuple[int, int]:
    """The statuses `tierproxy reshard`'s client gets for GET /reshard and an abort of no fence."""
    admin = RouterAdmin(address, token, tls)
    try:
        got, _ = await admin.call("GET", "/reshard", timeout=10)
        aborted, _ = await admin.call("POST", "/reshard/abort", {"fence": "no-such-fence"}, timeout=10)
        return got, aborted
    finally:
        await admin.close()


def _answers(get) -> bool:
    try:
        return get("/healthz", TOKEN) == 200
    except OSError:
        return False


def test_check_config_refuses_an_exposed_admin(pg: PgCluster, tmp_path: Path) -> None:
    config = shard_config({"s0": pg.primary}, port=16433, admin_port=19188, users={"app": "x"},
                          backend_user="u", backend_password="p")  # fmt: skip
    exposed = config.replace(f'admin = {{ address = "{HOST}:19188" }}', 'admin = { address = "0.0.0.0:19188" }')
    assert exposed != config
    path = tmp_path / "shard.toml"
    path.write_text(exposed)
    proc = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "is not loopback" in proc.stderr and "admin.token_file" in proc.stderr
    (tmp_path / "token").write_text(TOKEN)
    ca = make_ca(tmp_path / "pki")
    cert = ca.issue("admin", ["shard.internal"])
    path.write_text(exposed.replace('admin = { address = "0.0.0.0:19188" }', "")
                    + f'[admin]\naddress = "0.0.0.0:19188"\ntoken_file = "{tmp_path / "token"}"\n'
                    f'[admin.tls]\ncert_file = "{cert.cert}"\nkey_file = "{cert.key}"\n')
    proc = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
