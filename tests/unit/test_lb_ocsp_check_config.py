"""`tierproxy check-config` on an lb config whose certificates' `ocsp_response_file`s cannot be
stapled: one warning per such file naming the certificate and the reason, exit status 0 (the
daemon serves those certificates without stapling). Certificates and responses are made with
`cryptography` (tests/unit/test_lb_ocsp.py's Pki); the check-config run is the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.unit.test_lb_ocsp import HOUR, NOW, Pki, pem

REPO = Path(__file__).resolve().parents[2]


def _pair(tmp: Path, pki: Pki, name: str):
    cert, key = pki.leaf(name)
    cert_file, key_file = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_file.write_bytes(pem(cert, pki.cert))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert, cert_file, key_file


def test_check_config_warns_of_each_unusable_ocsp_response(tmp_path: Path) -> None:
    pki = Pki()
    certs = {n: _pair(tmp_path, pki, n) for n in ("good.test", "missing.test", "garbage.test", "expired.test",
                                                   "other.test")}  # fmt: skip
    files = {n: tmp_path / f"{n}.der" for n in certs}
    files["good.test"].write_bytes(pki.response(certs["good.test"][0]))
    files["garbage.test"].write_bytes(b"this is not a DER OCSP response")
    files["expired.test"].write_bytes(pki.response(certs["expired.test"][0], this_update=NOW - 3 * HOUR,
                                                   next_update=NOW - HOUR))  # fmt: skip
    files["other.test"].write_bytes(pki.response(certs["good.test"][0]))  # good.test's response
    entries = "".join(f'[[listeners.tls.certificates]]\ncert_file = "{c[1]}"\nkey_file = "{c[2]}"\n'
                      f'ocsp_response_file = "{files[n]}"\n' for n, c in certs.items())  # fmt: skip
    config = tmp_path / "lb.toml"
    config.write_text('[[listeners]]\nname = "web"\naddress = "127.0.0.1:8443"\nprotocol = "https"\n'
                      f'[listeners.tls]\n{entries}'
                      '[pools.web]\nbackends = [{ name = "b", address = "127.0.0.1:9000" }]\n')  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(config)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "lb.toml: ok (lb)"
    lines = proc.stderr.splitlines()
    assert len(lines) == 4, proc.stderr
    assert all(line.startswith("lb.toml: warning: listeners[0].tls.certificates[") for line in lines)
    by_cert = {n: [line for line in lines if str(certs[n][1]) in line] for n in certs}
    assert by_cert["good.test"] == []
    reasons = {"missing.test": "cannot read it: No such file or directory", "garbage.test": "unparsable",
               "expired.test": "expired", "other.test": "for another certificate"}  # fmt: skip
    for i, (name, reason) in enumerate(reasons.items(), start=1):
        [line] = by_cert[name]
        assert f"certificates[{i}].ocsp_response_file: {files[name]}" in line
        assert f"({name})" in line and reason in line and "without stapling" in line
