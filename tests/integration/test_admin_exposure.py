"""An admin address beyond loopback needs [admin.tls] plus client certificates or a token, for the
dbproxy, the cdn and geodns as for the lb and the shard router (proxy/core/config.py,
admin_exposure_error). The real CLI on the example configs of deploy/config/ with the admin moved to
0.0.0.0: `check-config` and the daemon's own start refuse it, naming admin.address; with TLS and a
token check-config accepts it. One real cdn (no backend needed) serves such an admin over TLS and
asks the token of reads."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from proxy.devstack.ports import allocate_port
from tests.integration.tlsutil import Ca, make_ca

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOKEN = "exposure-admin-token-4321"

# daemon -> the loopback admin text in deploy/config/<daemon>.toml, and how its keys are written there
ADMIN = {
    "dbproxy": ('address = "127.0.0.1:9187"', "table"),
    "cdn": ('admin = { address = "127.0.0.1:9088" }', "inline"),
    "geodns": ('admin = { address = "127.0.0.1:9053" }', "inline"),
}


def _config(daemon: str, port: int, extra: dict[str, str], host: str = "0.0.0.0") -> str:
    """deploy/config/<daemon>.toml with its admin on host:port plus the `extra` keys (TOML values)."""
    text = (REPO / "deploy" / "config" / f"{daemon}.toml").read_text()
    old, shape = ADMIN[daemon]
    assert old in text
    keys = {"address": f'"{host}:{port}"', **extra}
    if shape == "inline":
        new = "admin = { " + ", ".join(f"{k} = {v}" for k, v in keys.items()) + " }"
    else:
        new = "\n".join(f"{k} = {v}" for k, v in keys.items())
    return text.replace(old, new)


def _protection(tmp: Path) -> tuple[Ca, dict[str, str]]:
    """A token file and a certificate (for admin.internal and 127.0.0.1) as [admin] keys."""
    (tmp / "token").write_text(TOKEN + "\n")
    ca = make_ca(tmp / "pki")
    cert = ca.issue("admin", ["admin.internal"])
    return ca, {"token_file": f'"{tmp / "token"}"',
                  "tls": f'{{ cert_file = "{cert.cert}", key_file = "{cert.key}" }}'}


def _clis(*argvs: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """`python -m proxy.cli ARGV` for each, run at once (each is mostly Python's start-up and
    imports: one after the other they were most of this module's time); their results in order."""
    procs = [subprocess.Popen([sys.executable, "-m", "proxy.cli", *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO) for argv in argvs]  # fmt: skip
    done = []
    try:
        for argv, proc in zip(argvs, procs, strict=True):
            out, err = proc.communicate(timeout=60)
            done.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return done


@pytest.mark.parametrize("daemon", sorted(ADMIN))
def test_an_exposed_admin_is_refused_without_tls_and_accepted_with_tls_and_a_token(daemon: str, tmp_path: Path) -> None:
    bare, token_only, protected = (tmp_path / f"{daemon}-{n}.toml" for n in ("bare", "token", "protected"))
    bare.write_text(_config(daemon, 19999, {}))
    _, protect = _protection(tmp_path)
    token_only.write_text(_config(daemon, 19999, {"token_file": protect["token_file"]}))  # a token alone: no
    protected.write_text(_config(daemon, 19999, protect))
    checked, started, with_token, with_both = _clis(
        ["check-config", "--daemon", daemon, str(bare)],
        [daemon, "--config", str(bare)],
        ["check-config", "--daemon", daemon, str(token_only)],
        ["check-config", "--daemon", daemon, str(protected)],
    )
    assert checked.returncode == 2, checked.stderr
    assert "admin.address: 0.0.0.0:19999 is not loopback" in checked.stderr
    assert "[admin.tls]" in checked.stderr and "admin.token_file" in checked.stderr
    # the daemon itself does not start on it either (the same message, before binding anything)
    assert started.returncode != 0 and "admin.address: 0.0.0.0:19999 is not loopback" in started.stderr
    assert with_token.returncode == 2 and "is not loopback" in with_token.stderr, with_token.stderr
    assert with_both.returncode == 0, with_both.stderr


def test_a_cdn_serves_an_exposed_admin_over_tls_and_reads_need_the_token(tmp_path: Path) -> None:
    ca, protect = _protection(tmp_path)
    lock, admin_lock = allocate_port("127.0.0.1"), allocate_port("0.0.0.0")
    text = _config("cdn", admin_lock.port, protect).replace('listen = "127.0.0.1:8088"',
                                                             f'listen = "127.0.0.1:{lock.port}"')
    assert f"127.0.0.1:{lock.port}" in text
    path = tmp_path / "cdn.toml"
    path.write_text(text)
    ctx = ssl.create_default_context(cafile=str(ca.cert))

    def get(path: str, token: str | None) -> int:
        req = urllib.request.Request(f"https://127.0.0.1:{admin_lock.port}{path}",
                                     headers={"Host": "127.0.0.1"})
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    lock.release()
    admin_lock.release()
    log = (tmp_path / "cdn.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "cdn", "--config", str(path)], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if get("/healthz", TOKEN) == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "cdn.log").read_text()
            assert time.monotonic() < deadline, "the cdn's TLS admin never answered"
            time.sleep(0.05)
        assert get("/status", TOKEN) == 200
        assert get("/status", None) == 401
        assert get("/metrics", "wrong") == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
