"""TLS termination for one listener: certificates chosen by SNI, reloaded without dropping
connections, session-ticket keys renewed.

`CertSet` is one loaded generation: an `ssl.SSLContext` per certificate, a table from server name
(exact, or "*.example.com" for one label) to context, and the default (the first certificate),
whose `sni_callback` moves each handshake to the context of the name the client asked for.
`TlsTerminator` holds the current generation; the listener reads `context` for every new
connection, so a new generation serves new handshakes while established connections keep theirs.

A new generation is built on SIGHUP (`reload`), when a certificate or key file changes on disk
(`tick`, every `watch_interval` seconds) and every `ticket_key_rotation` seconds: Python's ssl
module cannot set session-ticket keys, and OpenSSL makes a fresh random key for each new
context, so a rebuilt context is how keys are renewed (tickets issued under the old key then
take a full handshake). A pair that does not load leaves the current generation serving; the
failure is logged and counted.

A certificate with an `ocsp_response_file` gets that response stapled (lb/ocspstaple.py) when it
is fresh and for that certificate; the file is re-read with the pair, and a change to it is a
file change like the pair's.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from dataclasses import dataclass, field

from proxy.core.tls import TlsError, intermediate_context
from proxy.lb.frontconfig import ListenerTlsConfig
from proxy.lb.ocsp import Staple
from proxy.lb.ocspstaple import OcspStapling

__all__ = ["CertSet", "TlsTerminator", "build_cert_set", "match_name"]

log = logging.getLogger("tierproxy.lb")


def match_name(names: dict[str, int], server_name: str | None) -> int | None:
    """Index of the certificate for `server_name`: an exact name first, then a wildcard for its
    first label (RFC 6125 6.4.3: "*" stands for one whole label). None: the default."""
    if not server_name:
        return None
    name = server_name.lower().rstrip(".")
    hit = names.get(name)
    if hit is not None:
        return hit
    _, dot, parent = name.partition(".")
    if dot and parent:
        return names.get("*." + parent)
    return None


@dataclass
class CertSet:
    contexts: list[ssl.SSLContext]
    names: dict[str, int]
    built_at: float
    stamps: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    staples: list[Staple | None] = field(default_factory=list)  # per certificate

    @property
    def default(self) -> ssl.SSLContext:
        return self.contexts[0]

    def for_name(self, server_name: str | None) -> ssl.SSLContext:
        i = match_name(self.names, server_name)
        return self.contexts[0] if i is None else self.contexts[i]


def _stamp(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def build_cert_set(cfg: ListenerTlsConfig, alpn: list[str] | None = None,
                   stapling: OcspStapling | None = None) -> CertSet:  # fmt: skip
    """Load every pair of `cfg` (TlsError names the one that fails), and with `stapling` their
    OCSP responses (one that does not serve is logged and left out)."""
    contexts = []
    names: dict[str, int] = {}
    stamps = {}
    staples: list[Staple | None] = []
    for i, cert in enumerate(cfg.certificates):
        ctx = intermediate_context(cert.cert_file, cert.key_file, min_version=cfg.min_version,
                                   ciphers=cfg.ciphers, session_tickets=cfg.session_tickets,
                                   alpn=alpn)  # fmt: skip
        contexts.append(ctx)
        for name in cert.names():
            names.setdefault(name, i)  # the first certificate naming it wins
        stamps[cert.cert_file] = _stamp(cert.cert_file)
        stamps[cert.key_file] = _stamp(cert.key_file)
        staple = None
        if cert.ocsp_response_file is not None:
            stamps[cert.ocsp_response_file] = _stamp(cert.ocsp_response_file)
            if stapling is not None:
                staple = stapling.attach(ctx, cert.cert_file, cert.ocsp_response_file)
        staples.append(staple)
    certs = CertSet(contexts, names, time.monotonic(), stamps, staples)

    def sni(sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        chosen = certs.for_name(server_name)
        if chosen is not sslobj.context:
            sslobj.context = chosen
        return None

    contexts[0].sni_callback = sni  # type: ignore[assignment]
    return certs


class TlsTerminator:
    """The current certificates of one listener, and their renewal."""

    def __init__(self, listener: str, cfg: ListenerTlsConfig, alpn: list[str] | None = None) -> None:
        self.listener = listener
        self.cfg = cfg
        self.alpn = alpn  # ["h2", "http/1.1"] on an http2 listener
        self.ocsp = OcspStapling(listener)
        self.certs = build_cert_set(cfg, alpn, self.ocsp)
        self.reloads_ok = 0
        self.reloads_failed = 0
        self._checked = time.monotonic()

    @property
    def context(self) -> ssl.SSLContext:
        return self.certs.default

    def reload(self, cfg: ListenerTlsConfig | None = None, why: str = "reload") -> bool:
        """Build a new generation from `cfg` (default: the current settings, files re-read).
        On failure the current one stays and the error is logged."""
        cfg = cfg or self.cfg
        try:
            certs = build_cert_set(cfg, self.alpn, self.ocsp)
        except (TlsError, ssl.SSLError, OSError) as exc:
            self.reloads_failed += 1
            log.error("tls certificates not reloaded: keeping the ones in use",
                      extra={"listener": self.listener, "why": why, "error": str(exc)})  # fmt: skip
            return False
        self.cfg = cfg
        self.certs = certs
        self.reloads_ok += 1
        if why != "ticket key rotation":
            log.info("tls certificates loaded", extra={"listener": self.listener, "why": why})
        return True

    def files_changed(self) -> bool:
        return any(_stamp(path) != stamp for path, stamp in self.certs.stamps.items())

    def tick(self) -> None:
        """From the sweeper: reload on changed files, renew ticket keys when due."""
        now = time.monotonic()
        cfg = self.cfg
        if cfg.watch_interval and now - self._checked >= cfg.watch_interval:
            self._checked = now
            if self.files_changed():
                if not self.reload(why="files changed"):
                    # Do not retry the same broken files every interval: wait for them to change.
                    self.certs.stamps = {p: _stamp(p) for p in self.certs.stamps}
                return
        if cfg.ticket_key_rotation and now - self.certs.built_at >= cfg.ticket_key_rotation:
            if not self.reload(why="ticket key rotation"):
                self.certs.built_at = now
