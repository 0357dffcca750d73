"""TLS contexts for the daemons, built from certificates and keys on disk.

* `server_context`: dbproxy's `[tls]` (a certificate chain and its key, `min_version` or newer).
* `intermediate_context`: the balancer's listeners and admin port: TLS 1.2 and 1.3 only, Mozilla's
  "intermediate" cipher list for TLS 1.2 (TLS 1.3 keeps OpenSSL's three AEAD suites, which are the
  same list), no renegotiation, no compression, session tickets on or off, client certificates
  checked against a CA file when asked.
* `client_context`: a daemon's connections to its backends: the backends' names verified against
  a CA file (or the system's), an optional client certificate.
* `certificate_names`: the DNS names a certificate is for (its subjectAltName), for SNI tables.

Built once at start and again on reload (a renewed certificate takes effect for new connections
without a restart). A file that cannot be read or a key that does not match its certificate is a
config error: `TlsError`, with the file named.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = [
    "INTERMEDIATE_CIPHERS",
    "TlsError",
    "certificate_names",
    "client_context",
    "intermediate_context",
    "server_context",
]

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}

# Mozilla's "intermediate" server configuration (ssl-config.mozilla.org, guidelines 5.7), the
# TLS 1.2 part in OpenSSL's syntax. The DHE suites take effect only with DH parameters, which
# Python loads only when asked (`load_dh_params`); ECDHE covers every client of that list.
INTERMEDIATE_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
])  # fmt: skip


class TlsError(ValueError):
    """The certificate or key cannot be used."""


def server_context(cert_file: Path, key_file: Path, min_version: str = "TLSv1.2") -> ssl.SSLContext:
    """A server-side context: the chain in `cert_file` and its key, no client certificates,
    `min_version` or newer, no compression or renegotiation (the `ssl` defaults)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[min_version]
    try:
        _load_pair(ctx, cert_file, key_file)
    except TlsError as exc:
        raise TlsError(f"tls: {exc}") from exc
    return ctx


def _load_pair(ctx: ssl.SSLContext, cert_file: str | Path, key_file: str | Path) -> None:
    try:
        ctx.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot use cert_file {cert_file} with key_file {key_file}: {exc}") from exc


def intermediate_context(cert_file: str | Path, key_file: str | Path, *, min_version: str = "TLSv1.2",
                         ciphers: str = INTERMEDIATE_CIPHERS, session_tickets: bool = True,
                         client_ca_file: str | Path | None = None,
                         alpn: list[str] | None = None) -> ssl.SSLContext:  # fmt: skip
    """A server context per Mozilla "intermediate": TLS 1.2+ only, its ciphers, the client's
    cipher preference (both sides' lists are strong), no renegotiation; tickets as asked.
    With `client_ca_file`, a client certificate signed by that CA is required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[min_version]
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.set_ciphers(ciphers)
    except ssl.SSLError as exc:
        raise TlsError(f"ciphers: no usable cipher in {ciphers!r}") from exc
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if not session_tickets:
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    _load_pair(ctx, cert_file, key_file)
    if client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"cannot use client_ca_file {client_ca_file}: {exc}") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def client_context(ca_file: str | Path | None = None, cert_file: str | Path | None = None,
                   key_file: str | Path | None = None, verify: bool = True) -> ssl.SSLContext:  # fmt: skip
    """A client context for backend connections: TLS 1.2+, the peer's certificate and name
    verified against `ca_file` (the system's CAs without one) unless `verify` is off; a client
    certificate when `cert_file`/`key_file` are given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        try:
            if ca_file is not None:
                ctx.load_verify_locations(cafile=str(ca_file))
            else:
                ctx.load_default_certs()
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"cannot use ca_file {ca_file}: {exc}") from exc
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        _load_pair(ctx, cert_file, key_file or cert_file)
    return ctx


def certificate_names(cert_file: str | Path) -> list[str]:
    """The DNS names of the leaf certificate in `cert_file` (subjectAltName; the subject's
    commonName only when there is no DNS name), lowercased."""
    try:
        # The ssl module decodes a PEM file only through this helper (it backs the test suite
        # and `ssl.get_server_certificate` users); there is no public equivalent without a
        # connection.
        info = ssl._ssl._test_decode_cert(str(cert_file))  # type: ignore[attr-defined]
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot read certificate {cert_file}: {exc}") from exc
    names = [v.lower() for k, v in info.get("subjectAltName", ()) if k == "DNS"]
    if not names:
        for rdn in info.get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    names.append(v.lower())
    return names
