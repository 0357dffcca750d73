"""Authenticating clients to the proxy: a sans-IO state machine over `[auth]` of the config.

The session feeds it the StartupMessage's user and the bodies of the client's 'p' messages; it
answers with the bytes to send (Authentication* messages) and finally says `done`. Failures raise
`PgProtocolError` with the SQLSTATE PostgreSQL would use: 28P01 for a wrong password (and, as in
PostgreSQL, for an unknown user: SCRAM runs a mock exchange so a client cannot probe for role
names), 28000 for trust refused to a non-loopback address, 08P01 for malformed messages.

Verifiers for users configured with a plaintext password are computed once per daemon
(`Credentials`), not per login: PBKDF2 with 4096 iterations costs milliseconds of CPU, which a
burst of connecting clients would otherwise pay again and again.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass

from proxy.pgwire import encode
from proxy.pgwire.auth import (
    SCRAM_SHA_256,
    ScramServer,
    ScramVerifier,
    make_md5_hash,
    make_scram_verifier,
    parse_scram_verifier,
    verify_md5_response,
)
from proxy.pgwire.errors import (
    INVALID_AUTHORIZATION_SPECIFICATION,
    INVALID_PASSWORD,
    PROTOCOL_VIOLATION,
    PgProtocolError,
)
from proxy.pgwire.messages import (
    decode_password_message,
    decode_sasl_initial_response,
    decode_sasl_response,
)

from .config import AuthConfig

__all__ = ["ClientAuth", "Credentials", "is_loopback"]


@dataclass(frozen=True, slots=True)
class _User:
    scram: ScramVerifier | None  # None: only an md5 hash is stored (method md5 only)
    md5: str | None  # "md5..." stored hash, when known (plaintext password or md5 secret)


class Credentials:
    """The users of one `[auth]` section, with SCRAM verifiers computed once."""

    def __init__(self, cfg: AuthConfig) -> None:
        self.method = cfg.method
        self.trust_loopback_only = cfg.trust_loopback_only
        self._users: dict[str, _User] = {}
        for name, user in cfg.users.items():
            if user.password is not None:
                pw = user.password.get_secret_value()
                scram = parse_scram_verifier(make_scram_verifier(pw))
                self._users[name] = _User(scram, make_md5_hash(name, pw))
            else:
                assert user.secret is not None
                secret = user.secret.get_secret_value()
                if secret.startswith(SCRAM_SHA_256 + "$"):
                    self._users[name] = _User(parse_scram_verifier(secret), None)
                else:
                    self._users[name] = _User(None, secret)

    def knows(self, user: str) -> bool:
        return user in self._users

    def get(self, user: str) -> _User | None:
        return self._users.get(user)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _failed(user: str) -> PgProtocolError:
    return PgProtocolError(f'password authentication failed for user "{user}"', INVALID_PASSWORD)


class ClientAuth:
    """One client's login. `start()` gives the first message; `handle(body)` each answer."""

    __slots__ = ("_creds", "_peer", "_salt", "_scram", "_state", "_user", "done")

    def __init__(self, creds: Credentials, user: str, peer_host: str | None) -> None:
        self._creds = creds
        self._user = user
        self._peer = peer_host
        self._state = "new"
        self._scram: ScramServer | None = None
        self._salt = b""
        self.done = False

    def start(self) -> bytes:
        """The first Authentication* message (AuthenticationOk itself for trust)."""
        creds, user = self._creds, self._creds.get(self._user)
        if creds.method == "trust":
            if creds.trust_loopback_only and not is_loopback(self._peer):
                raise PgProtocolError(
                    f'no trust entry for host "{self._peer}", user "{self._user}"',
                    INVALID_AUTHORIZATION_SPECIFICATION,
                )
            self.done = True
            return encode.authentication_ok()
        # As in PostgreSQL, "md5" with a SCRAM-only user runs SCRAM; unknown users run a mock SCRAM.
        if creds.method == "md5" and user is not None and user.md5 is not None:
            self._state = "md5"
            self._salt = secrets.token_bytes(4)
            return encode.authentication_md5_password(self._salt)
        self._state = "sasl-first"
        self._scram = ScramServer(user.scram if user is not None else None)
        return encode.authentication_sasl()

    def handle(self, body: bytes | memoryview) -> bytes:
        """A 'p' message's body; returns what to send. Raises PgProtocolError on failure."""
        if self._state == "md5":
            resp = decode_password_message(body).password
            user = self._creds.get(self._user)
            assert user is not None and user.md5 is not None
            if not verify_md5_response(user.md5, self._user, self._salt, resp):
                raise _failed(self._user)
            self._state, self.done = "ok", True
            return encode.authentication_ok()
        assert self._scram is not None
        if self._state == "sasl-first":
            initial = decode_sasl_initial_response(body)
            if initial.mechanism != SCRAM_SHA_256:
                raise PgProtocolError(
                    "client selected an invalid SASL authentication mechanism", PROTOCOL_VIOLATION
                )
            if initial.data is None:
                raise PgProtocolError("malformed SCRAM message: no data", PROTOCOL_VIOLATION)
            self._state = "sasl-final"
            return encode.authentication_sasl_continue(self._scram.handle_client_first(initial.data))
        if self._state == "sasl-final":
            data = decode_sasl_response(body).data
            try:
                final = self._scram.handle_client_final(data)
            except PgProtocolError as exc:
                if exc.sqlstate == INVALID_PASSWORD:
                    raise _failed(self._user) from None
                raise
            if not self._creds.knows(self._user):  # the mock exchange cannot succeed; be sure
                raise _failed(self._user)
            self._state, self.done = "ok", True
            return encode.authentication_sasl_final(final) + encode.authentication_ok()
        raise PgProtocolError("unexpected password message", PROTOCOL_VIOLATION)
