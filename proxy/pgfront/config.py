"""Config models of the shared PostgreSQL front end: `[auth]`, `[backend_auth]` and `[tls]`.

Both `tierproxy dbproxy` (proxy/dbproxy/config.py) and `tierproxy shard` (proxy/shard/config.py)
use these sections in their config files; the semantics are documented in the dbproxy's config
module docstring and docs/dbproxy.md. The shard router narrows `[backend_auth]` to mode
"service" with its own model.
"""

from __future__ import annotations

import re
import ssl
from typing import Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator

from proxy.core.config import StrictModel
from proxy.core.tls import server_context
from proxy.pgwire.auth import parse_scram_verifier

__all__ = ["AuthConfig", "BackendAuthConfig", "TlsConfig", "UserConfig", "tls_context"]

# PostgreSQL role names can be anything quoted; we only refuse what cannot be a startup-packet
# string (NUL) or is surely a typo (empty, longer than NAMEDATALEN - 1 = 63 bytes).
_MAX_IDENT = 63
_MD5_HASH = re.compile(r"md5[0-9a-f]{32}\Z")


class UserConfig(StrictModel):
    """One client login: exactly one of `password` (plaintext) or `secret` (stored form)."""

    password: SecretStr | None = None
    secret: SecretStr | None = None  # "SCRAM-SHA-256$..." or "md5" + 32 hex digits

    @field_validator("secret")
    @classmethod
    def _secret_form(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return v
        text = v.get_secret_value()
        if text.startswith("SCRAM-SHA-256$"):
            parse_scram_verifier(text)
        elif not _MD5_HASH.match(text):
            raise ValueError("expected a SCRAM-SHA-256 verifier or an md5 hash ('md5' + 32 hex)")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> UserConfig:
        if (self.password is None) == (self.secret is None):
            raise ValueError("give exactly one of password or secret")
        return self

    @property
    def is_md5_hash(self) -> bool:
        return self.secret is not None and self.secret.get_secret_value().startswith("md5")


class AuthConfig(StrictModel):
    method: Literal["scram-sha-256", "md5", "trust"] = "scram-sha-256"
    trust_loopback_only: bool = True  # "trust" accepts only 127.0.0.0/8 and ::1 clients
    users: dict[str, UserConfig] = Field(default_factory=dict)
    # A wrong password is answered (28P01) after this many milliseconds (PostgreSQL's
    # auth_delay); other clients are not slowed. 0 = at once.
    failed_login_delay_ms: int = Field(default=500, ge=0, le=60_000)
    # Failed logins per client address within a minute; beyond it that address's logins are
    # refused at once (53300) until older failures are a minute old. 0 = no limit. Per worker.
    max_failed_logins_per_minute: int = Field(default=20, ge=0, le=1_000_000)

    @field_validator("users")
    @classmethod
    def _user_names(cls, v: dict[str, UserConfig]) -> dict[str, UserConfig]:
        for name in v:
            if not name or "\0" in name or len(name.encode()) > _MAX_IDENT:
                raise ValueError(f"user name {name!r} must be 1-{_MAX_IDENT} bytes without NUL")
        return v

    @model_validator(mode="after")
    def _usable(self) -> AuthConfig:
        if self.method != "trust" and not self.users:
            raise ValueError(f"users: method {self.method!r} needs at least one user")
        if self.method == "scram-sha-256":
            for name, user in self.users.items():
                if user.is_md5_hash:
                    raise ValueError(
                        f"users.{name}.secret: an md5 hash cannot be used for scram-sha-256"
                    )
        return self


class BackendAuthConfig(StrictModel):
    """How the proxy logs in to the servers (SCRAM-SHA-256, md5 or cleartext, as they ask)."""

    mode: Literal["service", "passthrough"] = "service"
    user: str | None = None  # mode "service": the server-side user for every connection
    password: SecretStr | None = None  # mode "service"; None when the servers trust the proxy

    @model_validator(mode="after")
    def _mode_fields(self) -> BackendAuthConfig:
        if self.mode == "service" and not self.user:
            raise ValueError("user: mode 'service' needs the user the proxy logs in as")
        if self.mode == "passthrough" and (self.user is not None or self.password is not None):
            raise ValueError(
                "mode 'passthrough' uses each client's own credentials; drop user/password"
            )
        return self


class TlsConfig(StrictModel):
    """`[tls]`: TLS for clients (the proxy answers SSLRequest with 'S' and takes the handshake).
    Server connections are not encrypted: the proxy and the servers share a trusted network."""

    cert_file: FilePath  # PEM certificate chain, leaf first
    key_file: FilePath  # PEM private key of the leaf (unencrypted)
    # "allow": TLS when the client asks for it (libpq's default sslmode=prefer does); "require":
    # a client that does not is refused (28000), except a CancelRequest, which libpq sends in clear.
    mode: Literal["allow", "require"] = "allow"
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"

    @model_validator(mode="after")
    def _loads(self) -> TlsConfig:
        # A certificate that does not load (bad PEM, a key of another certificate) is a config
        # error here, located, rather than a failure at start or on reload.
        server_context(self.cert_file, self.key_file, self.min_version)
        return self


def tls_context(tls: TlsConfig | None) -> ssl.SSLContext | None:
    """The client-side TLS context of a daemon's `[tls]` (None without one): built at start and
    again on reload, so a renewed certificate applies to new clients."""
    if tls is None:
        return None
    return server_context(tls.cert_file, tls.key_file, tls.min_version)
