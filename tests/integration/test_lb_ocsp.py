"""OCSP stapling on an https listener, seen with `openssl s_client -status` (proxy/lb/ocspstaple.py).

The PKI is made with the openssl command line: a CA, an OCSP responder certificate it signs
(extendedKeyUsage OCSPSigning) and leaves; `openssl ocsp -index ... -respout` answers for a leaf
as a responder would and writes the DER response the balancer staples. An expired response
cannot come from `openssl ocsp` (it dates responses from now), so that one is signed by the same
responder key with the `cryptography` package.

One balancer serves the whole module: listener "secure" (files watched) with
a.test (good response), b.test (revoked response), c.test (no response file), d.test (expired
response), e.test (a.test's response) and f.test (its response file appears later); listener
"hup" (watch_interval 0: SIGHUP only) with g.test.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.devstack.ports import allocate_port
from tests.integration.lbproc import LbProcess, http_json, wait_for
from tests.integration.recording_backend import RecordingBackend
from tests.integration.tlsutil import Ca, curl, make_ca

pytestmark = pytest.mark.integration


def openssl(*args: object) -> str:
    r = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


@dataclass
class Site:
    name: str
    chain: Path  # leaf + CA, PEM
    key: Path
    serial: str  # hex, as openssl prints it


class Pki:
    def __init__(self, ca: Ca) -> None:
        self.ca = ca
        d = ca.dir
        self.responder = _issue(ca, "responder", "extendedKeyUsage=OCSPSigning\nbasicConstraints=CA:FALSE\n")
        self.index = d / "index.txt"
        self.index.write_text("")
        (d / "index.txt.attr").write_text("unique_subject = no\n")

    def site(self, name: str) -> Site:
        leaf = self.ca.issue(name, [name])
        chain = self.ca.dir / f"{name}.chain"
        chain.write_bytes(leaf.cert.read_bytes() + self.ca.cert.read_bytes())
        serial = openssl("x509", "-in", leaf.cert, "-noout", "-serial").strip().split("=", 1)[1]
        site = Site(name, chain, leaf.key, serial)
        self.set_status(site, "V")
        return site

    def set_status(self, site: Site, status: str) -> None:
        """The CA's index line for `site`: V (valid) or R (revoked)."""
        lines = [ln for ln in self.index.read_text().splitlines() if f"\t{site.serial}\t" not in ln]
        revoked = dt.datetime.now(dt.timezone.utc).strftime("%y%m%d%H%M%SZ") if status == "R" else ""
        lines.append(f"{status}\t301231000000Z\t{revoked}\t{site.serial}\tunknown\t/CN={site.name}")
        self.index.write_text("\n".join(lines) + "\n")

    def respond(self, site: Site, out: Path) -> Path:
        """`openssl ocsp` as the responder: the DER response for `site` into `out`."""
        openssl("ocsp", "-index", self.index, "-rsigner", self.responder[0], "-rkey", self.responder[1],
                "-CA", self.ca.cert, "-issuer", self.ca.cert, "-cert", site.chain, "-no_nonce",
                "-ndays", "1", "-respout", out)  # fmt: skip
        return out

    def expired(self, site: Site, out: Path) -> Path:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509 import ocsp

        load = x509.load_pem_x509_certificate
        leaf, issuer = x509.load_pem_x509_certificates(site.chain.read_bytes())
        responder = load(self.responder[0].read_bytes())
        key = serialization.load_pem_private_key(self.responder[1].read_bytes(), None)
        now = dt.datetime.now(dt.timezone.utc)
        resp = (ocsp.OCSPResponseBuilder()
                .add_response(cert=leaf, issuer=issuer, algorithm=hashes.SHA1(), cert_status=ocsp.OCSPCertStatus.GOOD,
                              this_update=now - dt.timedelta(days=2), next_update=now - dt.timedelta(days=1),
                              revocation_time=None, revocation_reason=None)
                .responder_id(ocsp.OCSPResponderEncoding.NAME, responder).certificates([responder])
                .sign(key, hashes.SHA256()))  # type: ignore[arg-type]  # fmt: skip
        out.write_bytes(resp.public_bytes(serialization.Encoding.DER))
        return out


def _issue(ca: Ca, name: str, ext: str) -> tuple[Path, Path]:
    key, csr, cert, extf = (ca.dir / f"{name}.{s}" for s in ("key", "csr", "crt", "ext"))
    extf.write_text(ext)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", csr, "-subj", f"/CN={name}")  # fmt: skip
    openssl("x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial", "-days", "2",
            "-out", cert, "-extfile", extf)  # fmt: skip
    return cert, key


class Setup:
    def __init__(self, lb: LbProcess, pki: Pki, sites: dict[str, Site], files: dict[str, Path],
                 secure: int, hup: int) -> None:  # fmt: skip
        self.lb, self.pki, self.sites, self.files = lb, pki, sites, files
        self.secure, self.hup = secure, hup

    def managed_processes(self) -> list[LbProcess]:
        return [self.lb]

    def s_client(self, name: str, *args: str, port: int | None = None) -> str:
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port or self.secure}",
                            "-servername", name, "-CAfile", str(self.pki.ca.cert), *args],
                           input="", capture_output=True, text=True, timeout=30)  # fmt: skip
        assert "Verify return code: 0 (ok)" in r.stdout, r.stdout + r.stderr  # the handshake succeeded
        return r.stdout

    def stapled(self) -> float:
        _, metrics = http_json(self.lb.admin("/metrics"))
        m = re.search(r'^tierproxy_lb_listener_tls_ocsp_stapled_total\{listener="secure"\} (\S+)$', metrics, re.M)
        return float(m.group(1)) if m else -1.0


def cert_status(out: str) -> tuple[str, str] | None:
    """(Cert Status, Serial Number) of the stapled response s_client printed; None: none sent."""
    if "OCSP response: no response sent" in out:
        return None
    assert "OCSP Response Status: successful (0x0)" in out, out
    status = re.search(r"Cert Status: (\w+)", out)
    serial = re.search(r"Serial Number: (\w+)", out)
    assert status and serial, out
    return status.group(1), serial.group(1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("lbocsp")
    pki = Pki(make_ca(tmp / "pki"))
    sites = {n: pki.site(f"{n}.test") for n in "abcdefg"}
    pki.set_status(sites["b"], "R")
    files = {
        "a": pki.respond(sites["a"], tmp / "a.der"),
        "b": pki.respond(sites["b"], tmp / "b.der"),
        "d": pki.expired(sites["d"], tmp / "d.der"),
        "e": tmp / "a.der",  # a.test's response for e.test's certificate
        "f": tmp / "f.der",  # appears during a test
        "g": pki.respond(sites["g"], tmp / "g.der"),
    }

    def cert(n: str) -> str:
        ocsp = f', ocsp_response_file = "{files[n]}"' if n in files else ""
        return f'{{ cert_file = "{sites[n].chain}", key_file = "{sites[n].key}"{ocsp} }}'

    rec = RecordingBackend("rec")
    secure, hup = allocate_port(), allocate_port()
    body = f"""
[[listeners]]
name = "secure"
address = "127.0.0.1:{secure.port}"
protocol = "https"
[listeners.tls]
watch_interval = 0.5
certificates = [{", ".join(cert(n) for n in "abcdef")}]

[[listeners]]
name = "hup"
address = "127.0.0.1:{hup.port}"
protocol = "https"
[listeners.tls]
watch_interval = 0
certificates = [{cert("g")}]

[pools.web]
[pools.web.health]
type = "none"
[[pools.web.backends]]
name = "rec"
address = "{rec.address}"
"""
    lb = LbProcess(tmp, body, name="lbocsp", listen=False)
    lb.start()
    try:
        yield Setup(lb, pki, sites, files, secure.port, hup.port)
    finally:
        lb.stop()
        rec.close()
        secure.release()
        hup.release()


def test_each_server_name_gets_the_response_for_its_certificate(setup: Setup) -> None:
    a, b = setup.sites["a"], setup.sites["b"]
    for version in ("-tls1_3", "-tls1_2"):
        assert cert_status(setup.s_client("a.test", "-status", version)) == ("good", a.serial)
        assert cert_status(setup.s_client("b.test", "-status", version)) == ("revoked", b.serial)
    # no SNI: the default (first) certificate, and its response
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{setup.secure}", "-noservername",
                        "-status"], input="", capture_output=True, text=True, timeout=30)  # fmt: skip
    assert cert_status(r.stdout) == ("good", a.serial)


def test_a_response_is_sent_only_to_clients_that_ask(setup: Setup) -> None:
    before = setup.stapled()
    assert before >= 0
    out = setup.s_client("a.test")
    assert "OCSP response" not in out and "OCSP Response" not in out
    setup.s_client("c.test", "-status")  # asks, but c.test has no response
    assert cert_status(setup.s_client("a.test", "-status")) is not None
    # The counters are snapshotted together: once the last handshake shows, the others would too.
    wait_for(lambda: setup.stapled() >= before + 1, 10, "the stapled handshake to be counted")
    assert setup.stapled() == before + 1


@pytest.mark.parametrize("name,why", [("c", None), ("d", "expired"), ("e", "for another certificate")],
                         ids=["no-file", "expired", "other-certificate"])  # fmt: skip
def test_without_a_usable_response_nothing_is_stapled_and_the_handshake_succeeds(setup: Setup, name: str,
                                                                                why: str | None) -> None:  # fmt: skip
    host = f"{name}.test"
    assert cert_status(setup.s_client(host, "-status")) is None
    r = curl("--cacert", str(setup.pki.ca.cert), "--resolve", f"{host}:{setup.secure}:127.0.0.1",
             "--cert-status", f"https://{host}:{setup.secure}/x")  # curl insists on a staple here
    assert r.returncode != 0
    r = curl("--cacert", str(setup.pki.ca.cert), "--resolve", f"{host}:{setup.secure}:127.0.0.1",
             "-o", "/dev/null", "-w", "%{http_code}", f"https://{host}:{setup.secure}/x")
    assert r.stdout == "200", r.stderr
    if why is not None:
        log = setup.lb.log_path.read_text()
        assert re.search(r'"event": "ocsp response not stapled".*"file": "[^"]*/' + re.escape(setup.files[name].name)
                         + r'".*"error": "' + why, log), log  # fmt: skip


def test_curl_checks_the_stapled_response(setup: Setup) -> None:
    r = curl("--cacert", str(setup.pki.ca.cert), "--resolve", f"a.test:{setup.secure}:127.0.0.1",
             "--cert-status", "-o", "/dev/null", "-w", "%{http_code}", f"https://a.test:{setup.secure}/x")
    assert r.stdout == "200", r.stderr


def test_a_new_response_is_stapled_after_a_file_change_and_after_sighup(setup: Setup) -> None:
    pki, f, g = setup.pki, setup.sites["f"], setup.sites["g"]
    assert cert_status(setup.s_client("f.test", "-status")) is None
    pki.respond(f, setup.files["f"])  # the file appears: the watched listener reloads
    wait_for(lambda: cert_status(setup.s_client("f.test", "-status")) == ("good", f.serial), 15,
             "f.test's new response to be stapled")
    # "hup" does not watch its files: a swapped response waits for SIGHUP.
    assert cert_status(setup.s_client("g.test", "-status", port=setup.hup)) == ("good", g.serial)
    pki.set_status(g, "R")
    pki.respond(g, setup.files["g"])
    assert cert_status(setup.s_client("g.test", "-status", port=setup.hup)) == ("good", g.serial)
    setup.lb.signal(signal.SIGHUP)
    wait_for(lambda: cert_status(setup.s_client("g.test", "-status", port=setup.hup)) == ("revoked", g.serial), 15,
             "g.test's swapped response to be stapled after SIGHUP")
