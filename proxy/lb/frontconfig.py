"""The balancer's front-door config models: `[[listeners]]` (address, protocol, TLS, routes, PROXY
protocol, redirect, HSTS), TLS to backends (`[pools.NAME.tls]`) and the admin port's TLS
(`[admin.tls]`). `proxy/lb/config.py` puts them into `LbConfig`.

Certificates, keys and CA files are loaded while the config is validated, so `tierproxy
check-config` and a reload report a pair that does not load with its key path.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from proxy.core.config import Address, AdminTlsConfig, StrictModel
from proxy.core.tls import INTERMEDIATE_CIPHERS, certificate_names, client_context, intermediate_context
from proxy.lb.netpolicy import parse_networks

__all__ = [
    "AdminTlsConfig",
    "BackendTlsConfig",
    "CertificateConfig",
    "ListenerConfig",
    "ListenerTlsConfig",
    "RouteConfig",
]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class RouteConfig(StrictModel):
    """Send requests whose Host and path match to a pool; first match wins."""

    pool: str
    host: str | None = None  # exact Host (without port), case-insensitive
    path_prefix: str = Field(default="/", pattern=r"^/")


class CertificateConfig(StrictModel):
    cert_file: str  # PEM chain, leaf first
    key_file: str  # PEM key of the leaf (unencrypted)
    # SNI names this pair answers ("*.example.com" matches one label); default: the
    # certificate's own DNS names (subjectAltName).
    server_names: list[str] | None = None
    # DER OCSP response for this certificate, stapled when a client asks (status_request); read
    # with the pair (start, reload, file change). One that is missing, expired, for another
    # certificate or unparsable is logged and not stapled: it never fails the config
    # (lb/ocspstaple.py); check-config warns of it (lb/ocspcheck.py).
    ocsp_response_file: str | None = None

    @model_validator(mode="after")
    def _loads(self) -> CertificateConfig:
        intermediate_context(self.cert_file, self.key_file)  # TlsError (a ValueError) says why
        return self

    def names(self) -> list[str]:
        if self.server_names is not None:
            return [n.lower().rstrip(".") for n in self.server_names]
        return certificate_names(self.cert_file)


class ListenerTlsConfig(StrictModel):
    """TLS termination on a listener. The first certificate is the default (no SNI, or a name no
    certificate has)."""

    certificates: list[CertificateConfig] = Field(min_length=1)
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    ciphers: str = INTERMEDIATE_CIPHERS  # TLS 1.2 suites, OpenSSL syntax
    session_tickets: bool = True
    # Seconds between new session-ticket keys (the contexts are rebuilt: Python's ssl cannot set
    # keys, see docs/lb.md); 0 keeps one key per process life.
    ticket_key_rotation: float = Field(default=3600.0, ge=0)
    # Seconds between checks of the certificate and key files for changes (0: SIGHUP only).
    watch_interval: float = Field(default=5.0, ge=0)

    @model_validator(mode="after")
    def _ciphers(self) -> ListenerTlsConfig:
        c = self.certificates[0]
        intermediate_context(c.cert_file, c.key_file, min_version=self.min_version, ciphers=self.ciphers)
        return self


class ListenerConfig(StrictModel):
    name: str = Field(pattern=_NAME)  # in metrics and logs
    address: Address  # restart to change
    protocol: Literal["http", "https"] = "http"  # restart to change
    tls: ListenerTlsConfig | None = None  # required for https
    # This listener's routes and default pool; without them the top-level ones apply.
    routes: list[RouteConfig] | None = None
    default_pool: str | None = None
    # http only: answer every request with 308 to https://<host>[:redirect_port]<target>.
    redirect_https: bool = False
    redirect_port: int = Field(default=443, ge=1, le=65535)
    # https only: offer HTTP/2 by ALPN (h2) besides HTTP/1.1 (lb/h2front.py).
    http2: bool = False
    # http only: HTTP/2 without TLS when a client starts with the HTTP/2 preface (prior knowledge).
    h2c: bool = False
    # https only: Strict-Transport-Security on every response (seconds; None: not sent).
    hsts_max_age: int | None = Field(default=None, ge=0)
    hsts_include_subdomains: bool = False
    # Add a Forwarded header (RFC 7239: for=<client>;proto=<http|https>;host=<Host>) for backends.
    forwarded: bool = False
    # Expect a PROXY protocol header (v1 or v2) first on every connection; only connections from
    # `proxy_protocol_from` networks are taken (others are closed). Restart to change.
    proxy_protocol: bool = False
    proxy_protocol_from: list[str] = Field(default_factory=list)

    @field_validator("proxy_protocol_from")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        parse_networks(v)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ListenerConfig:
        if self.protocol == "https" and self.tls is None:
            raise ValueError("tls: protocol 'https' needs a [listeners.tls] table with certificates")
        if self.protocol == "http" and self.tls is not None:
            raise ValueError("tls: only a protocol 'https' listener takes TLS settings")
        if self.redirect_https and self.protocol != "http":
            raise ValueError("redirect_https: only an http listener redirects to https")
        if self.http2 and self.protocol != "https":
            raise ValueError("http2: HTTP/2 is offered by ALPN on https listeners only")
        if self.h2c and (self.protocol != "http" or self.redirect_https):
            raise ValueError("h2c: HTTP/2 prior knowledge is for a plain http listener that serves (no redirect_https)")
        if self.hsts_max_age is not None and self.protocol != "https":
            raise ValueError("hsts_max_age: HSTS is sent only over https (RFC 6797 7.2)")
        if self.proxy_protocol and not self.proxy_protocol_from:
            raise ValueError("proxy_protocol_from: name the networks PROXY headers may come from")
        return self


class BackendTlsConfig(StrictModel):
    """`[pools.NAME.tls]`: connect to this pool's backends over TLS (health checks too)."""

    ca_file: str | None = None  # CAs the backends' certificates must chain to; default: system's
    verify: bool = True  # check the certificate and the backend's name
    # Name checked in the backends' certificates (and sent as SNI); default: each backend's host.
    server_name: str | None = None
    cert_file: str | None = None  # client certificate for backends that ask for one
    key_file: str | None = None

    @model_validator(mode="after")
    def _loads(self) -> BackendTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file: a client certificate needs both cert_file and key_file")
        client_context(self.ca_file, self.cert_file, self.key_file, self.verify)
        return self
