"""TLS for the daemons' client side: an `ssl.SSLContext` from a certificate and key on disk.

Built once at start and again on SIGHUP (a renewed certificate takes effect for new connections
without a restart). A file that cannot be read or a key that does not match its certificate is a
config error: `TlsError`, with the file named.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["TlsError", "server_context"]

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class TlsError(ValueError):
    """The certificate or key cannot be used."""


def server_context(cert_file: Path, key_file: Path, min_version: str = "TLSv1.2") -> ssl.SSLContext:
    """A server-side context: the chain in `cert_file` and its key, no client certificates,
    `min_version` or newer, no compression or renegotiation (the `ssl` defaults)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[min_version]
    try:
        ctx.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"tls: cannot use cert_file {cert_file} with key_file {key_file}: {exc}") from exc
    return ctx
