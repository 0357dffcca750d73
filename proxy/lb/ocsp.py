"""OCSP responses for stapling (RFC 6960, RFC 6066 section 8), read without a crypto library.

`staple_for` decides whether a DER response file may be stapled to a certificate: it must be a
successful basic response holding a SingleResponse whose CertID names this certificate (its
serial, the hash of its issuer's name and, when the chain file carries the issuer, the hash of
the issuer's public key), and the time must be inside its thisUpdate..nextUpdate window. It
answers a `Staple` or raises `OcspError` saying why not (expired, for another certificate,
unparsable...). The response's signature is not checked here: the client checks it (as HAProxy
does with its `.ocsp` files); this check only keeps a stale or wrong file from being sent.

Everything here is pure: bytes and a clock value in, a decision out. The DER reader knows just
enough of X.509 and OCSP to find those fields (definite lengths, one-byte tags).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "CertInfo",
    "OcspError",
    "OcspResponse",
    "SingleResponse",
    "Staple",
    "cert_info",
    "parse_ocsp_response",
    "pem_certificates",
    "staple_for",
]

# A response may be up to this much "from the future" (the responder's clock runs ahead).
CLOCK_SKEW = 300.0

_OID_BASIC = "1.3.6.1.5.5.7.48.1.1"  # id-pkix-ocsp-basic
_HASHES = {  # CertID hashAlgorithm OIDs (RFC 6960 uses SHA-1; responders may use SHA-2)
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
_RESPONSE_STATUS = {0: "successful", 1: "malformedRequest", 2: "internalError", 3: "tryLater",
                    5: "sigRequired", 6: "unauthorized"}  # fmt: skip
_CERT_STATUS = {0x80: "good", 0xA1: "revoked", 0x82: "unknown"}  # [0] NULL, [1] RevokedInfo, [2] NULL

# DER tags used here
_INTEGER, _BIT_STRING, _OCTET_STRING, _OID, _ENUMERATED = 0x02, 0x03, 0x04, 0x06, 0x0A
_GENERALIZED_TIME, _SEQUENCE = 0x18, 0x30


class OcspError(ValueError):
    """This response cannot be stapled to this certificate; the message says why."""


@dataclass(frozen=True)
class SingleResponse:
    hash_name: str  # of the CertID: "sha1", "sha256", ...
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int
    status: str  # "good", "revoked" or "unknown"
    this_update: float  # Unix seconds
    next_update: float | None


@dataclass(frozen=True)
class OcspResponse:
    status: str  # responseStatus: "successful" or why not
    produced_at: float | None
    responses: tuple[SingleResponse, ...]


@dataclass(frozen=True)
class CertInfo:
    """What a CertID is made of, from a certificate (and its issuer's, when known)."""

    serial: int
    issuer_name: bytes  # DER of the issuer Name
    issuer_key: bytes | None  # the issuer's subjectPublicKey bits; None: issuer not in the chain


@dataclass(frozen=True)
class Staple:
    der: bytes = field(repr=False)  # what is sent, byte for byte
    status: str  # the certificate's: "good", "revoked", "unknown"
    this_update: float
    next_update: float | None  # after this the response is no longer stapled

    def fresh(self, now: float) -> bool:
        return self.next_update is None or now < self.next_update


# -- DER --------------------------------------------------------------------------------------


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at `pos`, which must end by `end`."""
    if pos + 2 > end:
        raise OcspError("unparsable: truncated DER")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise OcspError("unparsable: multi-byte DER tag")
    first = buf[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > end:
            raise OcspError("unparsable: bad DER length")
        length = int.from_bytes(buf[pos : pos + n], "big")
        pos += n
    if pos + length > end:
        raise OcspError("unparsable: DER element runs past its parent")
    return tag, pos, pos + length


def _children(buf: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """The elements inside a constructed element: (tag, content start, content end, element start)."""
    out = []
    pos = start
    while pos < end:
        tag, cs, ce = _tlv(buf, pos, end)
        out.append((tag, cs, ce, pos))
        pos = ce
    return out


def _expect(buf: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    got, cs, ce = _tlv(buf, pos, end)
    if got != tag:
        raise OcspError(f"unparsable: {what}: DER tag 0x{got:02x}, expected 0x{tag:02x}")
    return cs, ce


def _oid(content: bytes) -> str:
    if not content or content[-1] & 0x80:
        raise OcspError("unparsable: OID")
    arcs = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


_GENTIME = re.compile(rb"^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?:\.\d+)?Z$")


def _time(content: bytes) -> float:
    m = _GENTIME.match(content)
    if m is None:
        raise OcspError(f"unparsable: GeneralizedTime {content!r}")
    y, mo, d, h, mi, s = (int(x) for x in m.groups())
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
        raise OcspError(f"unparsable: GeneralizedTime {content!r}")
    return float(calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)))


# -- OCSP response ------------------------------------------------------------------------------


def parse_ocsp_response(der: bytes) -> OcspResponse:
    """The parts of a DER OCSPResponse that decide stapling (OcspError if it is not one)."""
    end = len(der)
    cs, ce = _expect(der, 0, end, _SEQUENCE, "OCSPResponse")
    if ce != end:
        raise OcspError("unparsable: bytes after the OCSPResponse")
    parts = _children(der, cs, ce)
    if not parts or parts[0][0] != _ENUMERATED:
        raise OcspError("unparsable: no responseStatus")
    code = int.from_bytes(der[parts[0][1] : parts[0][2]], "big")
    status = _RESPONSE_STATUS.get(code, f"status {code}")
    if code != 0:
        return OcspResponse(status, None, ())
    if len(parts) < 2 or parts[1][0] != 0xA0:
        raise OcspError("unparsable: a successful response without responseBytes")
    rb_s, rb_e = _expect(der, parts[1][1], parts[1][2], _SEQUENCE, "ResponseBytes")
    rb = _children(der, rb_s, rb_e)
    if len(rb) != 2 or rb[0][0] != _OID or rb[1][0] != _OCTET_STRING:
        raise OcspError("unparsable: ResponseBytes")
    kind = _oid(der[rb[0][1] : rb[0][2]])
    if kind != _OID_BASIC:
        raise OcspError(f"unparsable: response type {kind} is not id-pkix-ocsp-basic")
    basic = der[rb[1][1] : rb[1][2]]
    b_s, b_e = _expect(basic, 0, len(basic), _SEQUENCE, "BasicOCSPResponse")
    tbs = _children(basic, b_s, b_e)
    if not tbs or tbs[0][0] != _SEQUENCE:
        raise OcspError("unparsable: no ResponseData")
    fields = _children(basic, tbs[0][1], tbs[0][2])
    if fields and fields[0][0] == 0xA0:  # version [0] EXPLICIT, v1 by default
        fields = fields[1:]
    # responderID ([1] Name or [2] KeyHash), producedAt, responses, [1] extensions
    if len(fields) < 3 or fields[1][0] != _GENERALIZED_TIME or fields[2][0] != _SEQUENCE:
        raise OcspError("unparsable: ResponseData")
    produced = _time(basic[fields[1][1] : fields[1][2]])
    singles = tuple(_single(basic, cs2, ce2) for tag, cs2, ce2, _ in _children(basic, fields[2][1], fields[2][2])
                    if tag == _SEQUENCE)  # fmt: skip
    if not singles:
        raise OcspError("unparsable: no SingleResponse")
    return OcspResponse("successful", produced, singles)


def _single(buf: bytes, start: int, end: int) -> SingleResponse:
    parts = _children(buf, start, end)
    if len(parts) < 3 or parts[0][0] != _SEQUENCE or parts[2][0] != _GENERALIZED_TIME:
        raise OcspError("unparsable: SingleResponse")
    cert_id = _children(buf, parts[0][1], parts[0][2])
    if [p[0] for p in cert_id] != [_SEQUENCE, _OCTET_STRING, _OCTET_STRING, _INTEGER]:
        raise OcspError("unparsable: CertID")
    alg = _children(buf, cert_id[0][1], cert_id[0][2])
    if not alg or alg[0][0] != _OID:
        raise OcspError("unparsable: CertID hashAlgorithm")
    oid = _oid(buf[alg[0][1] : alg[0][2]])
    hash_name = _HASHES.get(oid)
    if hash_name is None:
        raise OcspError(f"unparsable: CertID hash algorithm {oid} unknown")
    status = _CERT_STATUS.get(parts[1][0])
    if status is None:
        raise OcspError(f"unparsable: certStatus tag 0x{parts[1][0]:02x}")
    next_update = None
    for tag, cs, ce, _ in parts[3:]:
        if tag == 0xA0:  # nextUpdate [0] EXPLICIT GeneralizedTime
            ns, ne = _expect(buf, cs, ce, _GENERALIZED_TIME, "nextUpdate")
            next_update = _time(buf[ns:ne])
    return SingleResponse(
        hash_name=hash_name,
        issuer_name_hash=buf[cert_id[1][1] : cert_id[1][2]],
        issuer_key_hash=buf[cert_id[2][1] : cert_id[2][2]],
        serial=int.from_bytes(buf[cert_id[3][1] : cert_id[3][2]], "big", signed=True),
        status=status,
        this_update=_time(buf[parts[2][1] : parts[2][2]]),
        next_update=next_update,
    )


# -- certificates -------------------------------------------------------------------------------

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)


def pem_certificates(pem: bytes) -> list[bytes]:
    """The DER certificates of a PEM file, in file order (leaf first in a chain file)."""
    return [base64.b64decode(b"".join(m.group(1).split())) for m in _PEM.finditer(pem)]


def _tbs_fields(der: bytes) -> tuple[list[tuple[int, int, int, int]], bytes]:
    cs, ce = _expect(der, 0, len(der), _SEQUENCE, "Certificate")
    top = _children(der, cs, ce)
    if not top or top[0][0] != _SEQUENCE:
        raise OcspError("unparsable: certificate without tbsCertificate")
    fields = _children(der, top[0][1], top[0][2])
    if fields and fields[0][0] == 0xA0:  # version [0] EXPLICIT
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
    if len(fields) < 6 or fields[0][0] != _INTEGER or fields[2][0] != _SEQUENCE or fields[4][0] != _SEQUENCE:
        raise OcspError("unparsable: tbsCertificate")
    return fields, der


def _public_key_bits(der: bytes) -> bytes:
    fields, _ = _tbs_fields(der)
    spki = _children(der, fields[5][1], fields[5][2])
    if len(spki) != 2 or spki[1][0] != _BIT_STRING:
        raise OcspError("unparsable: subjectPublicKeyInfo")
    return der[spki[1][1] + 1 : spki[1][2]]  # past the unused-bits byte (RFC 6960 4.1.1)


def cert_info(leaf: bytes, chain: Sequence[bytes] = ()) -> CertInfo:
    """The CertID parts of `leaf`; its issuer's key comes from the first certificate of `chain`
    whose subject is the leaf's issuer."""
    fields, der = _tbs_fields(leaf)

    issuer_name = der[fields[2][3] : fields[2][2]]  # the whole Name element, tag and length too
    issuer_key = None
    for other in chain:
        o_fields, o_der = _tbs_fields(other)
        if o_der[o_fields[4][3] : o_fields[4][2]] == issuer_name:
            issuer_key = _public_key_bits(other)
            break
    return CertInfo(
        serial=int.from_bytes(der[fields[0][1] : fields[0][2]], "big", signed=True),
        issuer_name=issuer_name,
        issuer_key=issuer_key,
    )


def _is_for(single: SingleResponse, cert: CertInfo) -> bool:
    if single.serial != cert.serial:
        return False
    if hashlib.new(single.hash_name, cert.issuer_name).digest() != single.issuer_name_hash:
        return False
    if cert.issuer_key is not None:
        return hashlib.new(single.hash_name, cert.issuer_key).digest() == single.issuer_key_hash
    return True


def staple_for(response: bytes, chain_pem: bytes, now: float) -> Staple:
    """The staple for the leaf of `chain_pem` (a cert_file: leaf first), or OcspError saying
    why `response` must not be sent at `now` (Unix seconds)."""
    certs = pem_certificates(chain_pem)
    if not certs:
        raise OcspError("no certificate in the cert_file")
    cert = cert_info(certs[0], certs[1:])
    parsed = parse_ocsp_response(response)
    if parsed.status != "successful":
        raise OcspError(f"the responder answered {parsed.status}, not a certificate status")
    for single in parsed.responses:
        if not _is_for(single, cert):
            continue
        if single.this_update > now + CLOCK_SKEW:
            raise OcspError(f"not yet valid (thisUpdate {_iso(single.this_update)})")
        if single.next_update is not None and now >= single.next_update:
            raise OcspError(f"expired (nextUpdate {_iso(single.next_update)})")
        return Staple(response, single.status, single.this_update, single.next_update)
    serials = ", ".join(f"{s.serial:X}" for s in parsed.responses)
    raise OcspError(f"for another certificate (serial {serials}; this one is {cert.serial:X})")


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
