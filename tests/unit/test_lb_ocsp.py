"""OCSP stapling's pure parts (proxy/lb/ocsp.py) against the `cryptography` package, and the
ctypes hook (proxy/lb/ocspstaple.py) on real `ssl` contexts over memory BIOs.

`cryptography` makes the certificates and OCSP responses and is the reference reader: what our
DER reader finds in a response (serial, hashes, status, times) must be what cryptography finds.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.lb.frontconfig import CertificateConfig
from proxy.lb.ocsp import OcspError, cert_info, parse_ocsp_response, pem_certificates, staple_for
from proxy.lb.ocspstaple import OcspStapling, SslLib, StaplingUnavailable

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)  # certificates are checked on the real clock
T = NOW.timestamp()
HOUR = dt.timedelta(hours=1)


class Pki:
    """A CA, an OCSP responder it delegates to, and leaves, made with cryptography."""

    def __init__(self, name: str = "test ca") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = self._sign(self.name, self.key.public_key(), ca=True)
        self.responder_key = ec.generate_private_key(ec.SECP256R1())
        self.responder = self._sign(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ocsp")]),
                                    self.responder_key.public_key(), ocsp_signing=True)  # fmt: skip

    def _sign(self, subject: x509.Name, public_key, *, ca: bool = False, ocsp_signing: bool = False,
              dns: str | None = None) -> x509.Certificate:  # fmt: skip
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.name).public_key(public_key)
             .serial_number(x509.random_serial_number()).not_valid_before(NOW - 24 * HOUR)
             .not_valid_after(NOW + 48 * HOUR)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))  # fmt: skip
        if ocsp_signing:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        if dns:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
        return b.sign(self.key, hashes.SHA256())

    def leaf(self, dns: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        return self._sign(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns)]), key.public_key(), dns=dns), key

    def response(self, cert: x509.Certificate, *, status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
                 this_update: dt.datetime = NOW - HOUR, next_update: dt.datetime | None = NOW + 24 * HOUR,
                 algorithm: hashes.HashAlgorithm = hashes.SHA1()) -> bytes:  # fmt: skip
        revoked = status == ocsp.OCSPCertStatus.REVOKED
        b = ocsp.OCSPResponseBuilder().add_response(
            cert=cert, issuer=self.cert, algorithm=algorithm, cert_status=status, this_update=this_update,
            next_update=next_update, revocation_time=NOW - 2 * HOUR if revoked else None,
            revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, self.responder).certificates([self.responder])
        return b.sign(self.responder_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="module")
def leaf(pki: Pki) -> x509.Certificate:
    return pki.leaf("a.test")[0]


# -- the DER reader agrees with cryptography ----------------------------------------------------


@pytest.mark.parametrize("status", list(ocsp.OCSPCertStatus), ids=lambda s: s.name)
@pytest.mark.parametrize("algorithm", [hashes.SHA1(), hashes.SHA256()], ids=lambda a: a.name)
@pytest.mark.parametrize("next_update", [True, False], ids=["next-update", "no-next-update"])
def test_response_fields_are_the_ones_cryptography_reads(pki, leaf, status, algorithm, next_update):
    der = pki.response(leaf, status=status, algorithm=algorithm, next_update=NOW + HOUR if next_update else None)
    ref = ocsp.load_der_ocsp_response(der)
    got = parse_ocsp_response(der)
    assert got.status == "successful" and ref.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert got.produced_at == ref.produced_at_utc.timestamp()
    (single,) = got.responses
    assert single.serial == ref.serial_number == leaf.serial_number
    assert single.hash_name == ref.hash_algorithm.name
    assert single.issuer_name_hash == ref.issuer_name_hash
    assert single.issuer_key_hash == ref.issuer_key_hash
    assert single.status == ref.certificate_status.name.lower()
    assert single.this_update == ref.this_update_utc.timestamp()
    assert single.next_update == (ref.next_update_utc.timestamp() if ref.next_update_utc else None)


def test_cert_info_matches_cryptography(pki, leaf):
    info = cert_info(leaf.public_bytes(serialization.Encoding.DER), [pki.cert.public_bytes(serialization.Encoding.DER)])
    assert info.serial == leaf.serial_number
    assert info.issuer_name == leaf.issuer.public_bytes()
    spki = pki.cert.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert info.issuer_key == spki
    # Without the issuer in the chain its key is unknown.
    assert cert_info(leaf.public_bytes(serialization.Encoding.DER)).issuer_key is None
    assert pem_certificates(pem(leaf, pki.cert)) == [c.public_bytes(serialization.Encoding.DER) for c in (leaf, pki.cert)]


# -- what may be stapled ------------------------------------------------------------------------


def test_a_fresh_response_for_the_certificate_is_stapled(pki, leaf):
    der = pki.response(leaf)
    for chain in (pem(leaf, pki.cert), pem(leaf)):  # issuer key checked when the chain has it
        staple = staple_for(der, chain, T)
        assert staple.der == der and staple.status == "good"
        assert staple.next_update == (NOW + 24 * HOUR).timestamp()
        assert staple.fresh(T) and not staple.fresh((NOW + 24 * HOUR).timestamp())
    revoked = staple_for(pki.response(leaf, status=ocsp.OCSPCertStatus.REVOKED), pem(leaf, pki.cert), T)
    assert revoked.status == "revoked"  # the truth is stapled; the client decides
    assert staple_for(pki.response(leaf, next_update=None), pem(leaf), T).fresh(T + 1e9)


def test_an_expired_response_is_refused(pki, leaf):
    der = pki.response(leaf, this_update=NOW - 48 * HOUR, next_update=NOW - HOUR)
    expected = (NOW - HOUR).strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(OcspError, match=rf"^expired \(nextUpdate {expected}\)"):
        staple_for(der, pem(leaf, pki.cert), T)


def test_a_response_from_the_future_is_refused(pki, leaf):
    der = pki.response(leaf, this_update=NOW + HOUR, next_update=NOW + 48 * HOUR)
    with pytest.raises(OcspError, match="^not yet valid"):
        staple_for(der, pem(leaf), T)
    # a responder clock a few minutes ahead is tolerated
    staple_for(pki.response(leaf, this_update=NOW + dt.timedelta(minutes=4)), pem(leaf), T)


def test_a_response_for_another_certificate_is_refused(pki, leaf):
    other, _ = pki.leaf("b.test")
    with pytest.raises(OcspError, match="^for another certificate"):
        staple_for(pki.response(other), pem(leaf, pki.cert), T)
    # Same CA name and serial, another CA key: the issuer key hash tells them apart.
    twin = Pki("test ca")
    twin_leaf = (x509.CertificateBuilder().subject_name(leaf.subject).issuer_name(twin.name)
                 .public_key(leaf.public_key()).serial_number(leaf.serial_number)
                 .not_valid_before(NOW - HOUR).not_valid_after(NOW + HOUR).sign(twin.key, hashes.SHA256()))  # fmt: skip
    with pytest.raises(OcspError, match="^for another certificate"):
        staple_for(twin.response(twin_leaf), pem(leaf, pki.cert), T)


@pytest.mark.parametrize("status", [s for s in ocsp.OCSPResponseStatus if s != ocsp.OCSPResponseStatus.SUCCESSFUL],
                         ids=lambda s: s.name)  # fmt: skip
def test_an_unsuccessful_response_is_refused(leaf, status):
    der = ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)
    assert ocsp.load_der_ocsp_response(der).response_status == status
    assert parse_ocsp_response(der).status == {"MALFORMED_REQUEST": "malformedRequest",
                                               "INTERNAL_ERROR": "internalError", "TRY_LATER": "tryLater",
                                               "SIG_REQUIRED": "sigRequired",
                                               "UNAUTHORIZED": "unauthorized"}[status.name]  # fmt: skip
    with pytest.raises(OcspError, match="the responder answered"):
        staple_for(der, pem(leaf), T)


@pytest.mark.parametrize("junk", [b"", b"not der at all", b"\x30\x03\x0a\x01", b"\x30\x80\x0a\x01\x00\x00\x00",
                                  b"-----BEGIN CERTIFICATE-----"], ids=range(5))  # fmt: skip
def test_garbage_is_unparsable(leaf, junk):
    with pytest.raises(OcspError, match="^unparsable"):
        staple_for(junk, pem(leaf), T)


def test_every_truncation_is_refused_with_ocsp_error(pki, leaf):
    der = pki.response(leaf)
    for n in range(len(der)):
        with pytest.raises(OcspError):
            staple_for(der[:n], pem(leaf), T)


def test_an_impossible_date_is_unparsable(pki, leaf):
    der = bytearray(pki.response(leaf))
    at = der.index(b"\x18\x0f") + 2  # producedAt, GeneralizedTime YYYYMMDDHHMMSSZ
    der[at + 4 : at + 6] = b"13"  # found by the property below: calendar.timegm raised ValueError
    with pytest.raises(OcspError, match="^unparsable: GeneralizedTime"):
        staple_for(bytes(der), pem(leaf), T)


@pytest.fixture(scope="module")
def good_der(pki: Pki, leaf: x509.Certificate) -> bytes:
    return pki.response(leaf)  # made once: ECDSA signatures vary in length


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_corrupted_responses_parse_or_raise_ocsp_error(good_der, leaf, data):
    der = bytearray(good_der)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(der) - 1))
        der[i] = data.draw(st.integers(0, 255))
    try:
        staple_for(bytes(der), pem(leaf), T)
    except OcspError:
        pass


def test_config_takes_a_response_file_that_does_not_serve(tmp_path: Path, pki, leaf):
    cert_file, key_file = tmp_path / "c.crt", tmp_path / "c.key"
    cert, key = pki.leaf("c.test")
    cert_file.write_bytes(pem(cert, pki.cert))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    cfg = CertificateConfig(cert_file=str(cert_file), key_file=str(key_file),
                            ocsp_response_file=str(tmp_path / "missing.der"))  # fmt: skip
    assert cfg.ocsp_response_file == str(tmp_path / "missing.der")


# -- the ctypes hook ----------------------------------------------------------------------------


def _server_context(tmp_path: Path, pki: Pki, name: str) -> tuple[ssl.SSLContext, Path, x509.Certificate]:
    cert, key = pki.leaf(name)
    cert_file, key_file = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_file.write_bytes(pem(cert, pki.cert))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx, cert_file, cert


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> None:
    """A full TLS handshake between two SSLObjects over memory BIOs."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname=name)
    done = {"c": False, "s": False}
    for _ in range(20):
        for key, obj in (("c", cli), ("s", srv)):
            if not done[key]:
                try:
                    obj.do_handshake()
                    done[key] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def _client(pki: Pki, ask_status: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=pki.cert.public_bytes(serialization.Encoding.PEM).decode())
    if ask_status:
        # SSL_CTX_set_tlsext_status_type(ctx, TLSEXT_STATUSTYPE_ocsp): the client sends status_request
        lib = SslLib()
        assert lib._ctx_ctrl(lib.ctx_pointer(ctx), 65, 1, None) == 1
    return ctx


def test_the_ssl_ctx_pointer_passes_the_getter_checks():
    lib = SslLib()
    a, b = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    pa, pb = lib.ctx_pointer(a), lib.ctx_pointer(b)
    assert pa and pb and pa != pb and lib.ctx_pointer(a) == pa
    b.options |= ssl.OP_NO_TICKET
    assert lib._get_options(pb) == int(b.options)  # the pointer follows the ssl module's own changes
    with pytest.raises(StaplingUnavailable, match="is not an ssl.SSLContext"):
        lib.ctx_pointer(object())  # type: ignore[arg-type]


def test_the_response_is_stapled_only_when_the_client_asks(tmp_path, pki):
    ctx, cert_file, cert = _server_context(tmp_path, pki, "a.test")
    resp = tmp_path / "a.der"
    resp.write_bytes(pki.response(cert))
    stapling = OcspStapling("t")
    staple = stapling.attach(ctx, str(cert_file), str(resp))
    assert staple is not None and staple.status == "good"
    _handshake(ctx, _client(pki, ask_status=False), "a.test")
    assert stapling.stapled == 0
    _handshake(ctx, _client(pki, ask_status=True), "a.test")
    assert stapling.stapled == 1


def test_a_response_that_does_not_serve_is_logged_and_the_context_still_handshakes(tmp_path, pki, caplog):
    ctx, cert_file, _ = _server_context(tmp_path, pki, "b.test")
    other, _ = pki.leaf("other.test")
    resp = tmp_path / "other.der"
    resp.write_bytes(pki.response(other))
    stapling = OcspStapling("t")
    with caplog.at_level(logging.WARNING, logger="tierproxy.lb"):
        assert stapling.attach(ctx, str(cert_file), str(resp)) is None
        assert stapling.attach(ctx, str(cert_file), str(tmp_path / "absent.der")) is None
    msgs = [(r.getMessage(), r.__dict__.get("error", "")) for r in caplog.records]
    assert msgs[0][0] == "ocsp response not stapled" and msgs[0][1].startswith("for another certificate")
    assert msgs[1][0] == "ocsp response not stapled" and "No such file" in msgs[1][1]
    _handshake(ctx, _client(pki, ask_status=True), "b.test")
    assert stapling.stapled == 0


class _MismatchedLib(SslLib):
    """libssl as if the PySSLContext layout were not the one expected: the getter check fails."""

    def ctx_pointer(self, ctx: ssl.SSLContext) -> int:
        raise StaplingUnavailable("the SSL_CTX read through ctypes says (0, 0, 0), the ssl module (1, 2, 2)")


def test_a_failed_pointer_check_falls_back_to_no_stapling_with_a_warning(tmp_path, pki, caplog):
    ctx, cert_file, cert = _server_context(tmp_path, pki, "c.test")
    resp = tmp_path / "c.der"
    resp.write_bytes(pki.response(cert))
    stapling = OcspStapling("t")
    stapling._lib = _MismatchedLib()
    with caplog.at_level(logging.WARNING, logger="tierproxy.lb"):
        assert stapling.attach(ctx, str(cert_file), str(resp)) is None
        # once given up, later certificates do not try again (and do not log again)
        assert stapling.attach(ctx, str(cert_file), str(resp)) is None
    assert [r.getMessage() for r in caplog.records] == ["ocsp stapling unavailable: serving without it"]
    _handshake(ctx, _client(pki, ask_status=True), "c.test")
    assert stapling.stapled == 0
