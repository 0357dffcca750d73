"""Password authentication as PostgreSQL speaks it: SCRAM-SHA-256 (both roles) and md5, sans-IO.

SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash), as PostgreSQL implements it:
https://www.postgresql.org/docs/15/sasl-authentication.html
The state machines take and return the SASL payloads only; wrapping them in
AuthenticationSASL/SASLInitialResponse/SASLContinue/SASLResponse/SASLFinal is `encode.py`'s job.

    client                                          server
    ScramClient.client_first()          ------>     ScramServer.handle_client_first(data)
    ScramClient.handle_server_first(d)  <------     (returns server-first)
    (returns client-final)              ------>     ScramServer.handle_client_final(data)
    ScramClient.handle_server_final(d)  <------     (returns server-final, or raises 28P01)

Channel binding (SCRAM-SHA-256-PLUS) is not supported: the client sends the GS2 header "n,,", and
the server accepts "n,," and "y,," (the client could bind but the server offered no -PLUS, which is
exactly our case) and refuses "p=". PostgreSQL ignores the user name in client-first (it uses the
StartupMessage's "user"); so do we, but it is kept in `ScramServer.user` for logging.

SASLprep (RFC 4013): PostgreSQL applies it leniently (src/common/saslprep.c, called from
scram_build_secret and friends): an all-ASCII password is used as is, with no check at all; a
password that is not valid UTF-8, or that SASLprep prohibits, is used as raw bytes instead of
being rejected. `saslprep()` implements that policy with the stdlib `stringprep` tables
(Unicode 3.2, as RFC 3454 requires; PostgreSQL's own tables are newer, so for code points
unassigned in 3.2 we fall back to raw bytes where PostgreSQL might normalize: a known gap that
only affects non-ASCII passwords using post-3.2 characters).

md5 (https://www.postgresql.org/docs/15/protocol-flow.html#id-1.10.6.7.3, AuthenticationMD5Password):
the client sends "md5" + hex(md5(hex(md5(password + user)) + salt)); the server stores
"md5" + hex(md5(password + user)).

Peer faults raise `PgProtocolError`: 08P01 for malformed SCRAM messages, 0A000 for unsupported
SCRAM features, 28P01 for a wrong password. Bad stored verifiers (our config) raise ValueError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass

from .errors import FEATURE_NOT_SUPPORTED, INVALID_PASSWORD, PROTOCOL_VIOLATION, PgProtocolError

__all__ = [
    "SCRAM_SHA_256",
    "DEFAULT_SCRAM_ITERATIONS",
    "ScramVerifier",
    "ScramClient",
    "ScramServer",
    "saslprep",
    "make_scram_verifier",
    "parse_scram_verifier",
    "verify_scram_password",
    "md5_password",
    "make_md5_hash",
    "verify_md5_response",
]

SCRAM_SHA_256 = "SCRAM-SHA-256"
# PostgreSQL's defaults: scram_iterations = 4096, SCRAM_DEFAULT_SALT_LEN = 16,
# SCRAM_RAW_NONCE_LEN = 18 (src/include/common/scram-common.h).
DEFAULT_SCRAM_ITERATIONS = 4096
_SALT_LEN = 16
_NONCE_LEN = 18
_KEY_LEN = 32  # SHA-256 digest size
# The GS2 headers we accept and their base64, which must come back in client-final's c= attribute.
_GS2_HEADERS = {"n": "n,,", "y": "y,,"}
_MD5_HASH_RE = re.compile(r"md5[0-9a-f]{32}\Z")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        msg = f"malformed SCRAM message: invalid base64 in {what}"
        raise PgProtocolError(msg, PROTOCOL_VIOLATION) from exc


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


# --- SASLprep ------------------------------------------------------------------------------


def _prohibited(ch: str) -> bool:
    # RFC 4013 section 2.3 plus unassigned code points (RFC 4013 section 2.5, "stored strings").
    return (
        stringprep.in_table_a1(ch) or stringprep.in_table_c12(ch) or stringprep.in_table_c21_c22(ch)
        or stringprep.in_table_c3(ch) or stringprep.in_table_c4(ch) or stringprep.in_table_c5(ch)
        or stringprep.in_table_c6(ch) or stringprep.in_table_c7(ch) or stringprep.in_table_c8(ch)
        or stringprep.in_table_c9(ch)
    )  # fmt: skip


def saslprep(password: str | bytes) -> bytes:
    """The bytes PostgreSQL hashes for `password` (lenient SASLprep, see the module docstring)."""
    if isinstance(password, str):
        raw = password.encode("utf-8", "surrogatepass")
        text = password
    else:
        raw = bytes(password)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    if text.isascii():
        return raw
    # 2.1 mapping: non-ASCII spaces (C.1.2) to SPACE, "commonly mapped to nothing" (B.1) removed.
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    # 2.2 normalization: NFKC of Unicode 3.2, the version stringprep is defined against.
    norm = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    if not norm or any(_prohibited(c) for c in norm):
        return raw
    # 2.4 / RFC 3454 section 6: bidi. With any RandALCat, no LCat, and RandALCat at both ends.
    if any(stringprep.in_table_d1(c) for c in norm):
        if any(stringprep.in_table_d2(c) for c in norm):
            return raw
        if not (stringprep.in_table_d1(norm[0]) and stringprep.in_table_d1(norm[-1])):
            return raw
    return norm.encode("utf-8")


# --- Stored verifiers ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScramVerifier:
    """What the server stores instead of the password (pg_authid.rolpassword)."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def __str__(self) -> str:
        # SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> (src/common/scram-common.c)
        return (
            f"{SCRAM_SHA_256}${self.iterations}:{_b64(self.salt)}"
            f"${_b64(self.stored_key)}:{_b64(self.server_key)}"
        )

    @classmethod
    def from_password(cls, password: str | bytes, salt: bytes, iterations: int) -> ScramVerifier:
        if iterations < 1:
            raise ValueError("iterations must be positive")
        salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
        return cls(
            iterations,
            bytes(salt),
            hashlib.sha256(_hmac(salted, b"Client Key")).digest(),
            _hmac(salted, b"Server Key"),
        )


def make_scram_verifier(
    password: str | bytes, salt: bytes | None = None, iterations: int = DEFAULT_SCRAM_ITERATIONS
) -> str:
    """PostgreSQL's stored form of a SCRAM-SHA-256 password (random 16-byte salt by default)."""
    salt = secrets.token_bytes(_SALT_LEN) if salt is None else salt
    return str(ScramVerifier.from_password(password, salt, iterations))


_B64 = r"([A-Za-z0-9+/=]+)"
_VERIFIER_RE = re.compile(rf"SCRAM-SHA-256\$([0-9]{{1,10}}):{_B64}\${_B64}:{_B64}\Z")


def parse_scram_verifier(text: str) -> ScramVerifier:
    """Parse `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`; ValueError if it is not one."""
    m = _VERIFIER_RE.match(text)
    if m is None:
        raise ValueError("not a SCRAM-SHA-256 verifier")
    try:
        salt, stored, server = (binascii.a2b_base64(g, strict_mode=True) for g in m.group(2, 3, 4))
    except binascii.Error as exc:
        raise ValueError(f"invalid base64 in SCRAM verifier: {exc}") from None
    iterations = int(m.group(1))
    if iterations < 1 or len(stored) != _KEY_LEN or len(server) != _KEY_LEN or not salt:
        raise ValueError("invalid SCRAM verifier fields")
    return ScramVerifier(iterations, salt, stored, server)


def verify_scram_password(verifier: str | ScramVerifier, password: str | bytes) -> bool:
    """Whether `password` matches the stored verifier (PostgreSQL's scram_verify_plain_password)."""
    v = parse_scram_verifier(verifier) if isinstance(verifier, str) else verifier
    other = ScramVerifier.from_password(password, v.salt, v.iterations)
    stored_ok = hmac.compare_digest(other.stored_key, v.stored_key)
    server_ok = hmac.compare_digest(other.server_key, v.server_key)
    return stored_ok and server_ok


# --- SCRAM message parsing ----------------------------------------------------------------


def _text(data: bytes) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PgProtocolError("malformed SCRAM message: not UTF-8", PROTOCOL_VIOLATION) from exc


def _attr(part: str, name: str) -> str:
    """The value of `name=value`, as RFC 5802 section 5.1 orders the attributes."""
    if not part.startswith(name + "="):
        raise PgProtocolError(f"malformed SCRAM message: expected attribute {name!r}", PROTOCOL_VIOLATION)
    return part[len(name) + 1 :]


def _check_nonce(nonce: str) -> str:
    # RFC 5802: printable = %x21-2B / %x2D-7E (printable ASCII except ',').
    if not nonce or not all(0x21 <= ord(c) <= 0x7E and c != "," for c in nonce):
        raise PgProtocolError("malformed SCRAM message: invalid nonce", PROTOCOL_VIOLATION)
    return nonce


def _check_extensions(parts: list[str]) -> None:
    # RFC 5802 "extensions": attr-val pairs with a one-letter name; PostgreSQL reads and ignores
    # them (read_any_attr in src/backend/libpq/auth-scram.c) but refuses malformed ones.
    for part in parts:
        if len(part) < 2 or part[1] != "=" or not (part[0].isascii() and part[0].isalpha()):
            raise PgProtocolError("malformed SCRAM message: invalid attribute", PROTOCOL_VIOLATION)


def _escape_saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _new_nonce() -> str:
    return _b64(secrets.token_bytes(_NONCE_LEN))


# --- Client --------------------------------------------------------------------------------


class ScramClient:
    """The client role (what the proxy uses towards PostgreSQL). `nonce` is for test vectors."""

    __slots__ = ("_user", "_password", "_nonce", "_first_bare", "_server_signature", "_state")

    def __init__(self, user: str, password: str | bytes, *, nonce: str | None = None) -> None:
        self._user = user
        self._password = password
        self._nonce = _check_nonce(nonce) if nonce is not None else _new_nonce()
        self._first_bare = f"n={_escape_saslname(user)},r={self._nonce}"
        self._server_signature = b""
        self._state = "first"

    @property
    def done(self) -> bool:
        return self._state == "done"

    def client_first(self) -> bytes:
        """client-first-message: GS2 header "n,," then n=<user>,r=<client nonce>."""
        return ("n,," + self._first_bare).encode("utf-8")

    def handle_server_first(self, data: bytes) -> bytes:
        """Take server-first (r=,s=,i=), return client-final (c=biws,r=,p=)."""
        if self._state != "first":
            raise PgProtocolError("unexpected SCRAM server-first message", PROTOCOL_VIOLATION)
        self._state = "failed"
        server_first = _text(data)
        parts = server_first.split(",")
        if len(parts) < 3:
            raise PgProtocolError("malformed SCRAM message: short server-first", PROTOCOL_VIOLATION)
        if parts[0].startswith("m="):
            raise PgProtocolError("server requires an unsupported SCRAM extension", FEATURE_NOT_SUPPORTED)
        nonce = _check_nonce(_attr(parts[0], "r"))
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise PgProtocolError("invalid SCRAM server nonce", PROTOCOL_VIOLATION)
        salt = _unb64(_attr(parts[1], "s"), "salt")
        iterations_text = _attr(parts[2], "i")
        _check_extensions(parts[3:])
        if not iterations_text.isdigit() or not iterations_text.isascii() or len(iterations_text) > 10:
            raise PgProtocolError("malformed SCRAM message: invalid iteration count", PROTOCOL_VIOLATION)
        iterations = int(iterations_text)
        if iterations < 1 or not salt:
            msg = "malformed SCRAM message: invalid salt or iteration count"
            raise PgProtocolError(msg, PROTOCOL_VIOLATION)
        salted = hashlib.pbkdf2_hmac("sha256", saslprep(self._password), salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        without_proof = f"c={_b64(b'n,,')},r={nonce}"
        auth_message = f"{self._first_bare},{server_first},{without_proof}".encode("utf-8")
        proof = _xor(client_key, _hmac(hashlib.sha256(client_key).digest(), auth_message))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        self._state = "final"
        return f"{without_proof},p={_b64(proof)}".encode("ascii")

    def handle_server_final(self, data: bytes) -> None:
        """Check server-final's v= signature: proof that the server knew the verifier."""
        if self._state != "final":
            raise PgProtocolError("unexpected SCRAM server-final message", PROTOCOL_VIOLATION)
        self._state = "failed"
        text = _text(data)
        if text.startswith("e="):
            raise PgProtocolError(f"SCRAM authentication failed: {text[2:]}", INVALID_PASSWORD)
        signature = _unb64(_attr(text.split(",")[0], "v"), "server signature")
        if not hmac.compare_digest(signature, self._server_signature):
            raise PgProtocolError("invalid SCRAM server signature", PROTOCOL_VIOLATION)
        self._state = "done"


# --- Server --------------------------------------------------------------------------------


class ScramServer:
    """The server role (what the proxy uses towards its clients).

    `secret` is a stored verifier (`SCRAM-SHA-256$...` or a `ScramVerifier`), or a plaintext
    password, or None for an unknown user: like PostgreSQL's mock authentication, the exchange
    then runs to the end with made-up parameters and fails, so clients cannot probe for roles.
    `nonce` (the server's part) and `salt` (for a plaintext secret) are for test vectors.
    """

    __slots__ = ("_verifier", "_mock", "_nonce", "_gs2", "_first_bare", "_server_first", "_state", "user")

    def __init__(
        self, secret: str | ScramVerifier | None, *, nonce: str | None = None, salt: bytes | None = None,
        iterations: int = DEFAULT_SCRAM_ITERATIONS,
    ) -> None:  # fmt: skip
        self._mock = secret is None
        if isinstance(secret, ScramVerifier):
            self._verifier = secret
        elif secret is None:
            rnd = secrets.token_bytes(_KEY_LEN)
            self._verifier = ScramVerifier(iterations, salt or secrets.token_bytes(_SALT_LEN), rnd, rnd)
        elif secret.startswith(SCRAM_SHA_256 + "$"):
            self._verifier = parse_scram_verifier(secret)
        elif _MD5_HASH_RE.match(secret):
            # PostgreSQL cannot do SCRAM against an md5 hash either.
            raise ValueError("an md5 password hash cannot be used for SCRAM")
        else:
            salt = salt or secrets.token_bytes(_SALT_LEN)
            self._verifier = ScramVerifier.from_password(secret, salt, iterations)
        self._nonce = _check_nonce(nonce) if nonce is not None else _new_nonce()
        self._gs2 = ""
        self._first_bare = ""
        self._server_first = ""
        self._state = "first"
        self.user = ""

    @property
    def done(self) -> bool:
        return self._state == "done"

    def handle_client_first(self, data: bytes) -> bytes:
        """Take client-first (gs2 header, n=, r=), return server-first (r=, s=, i=)."""
        if self._state != "first":
            raise PgProtocolError("unexpected SCRAM client-first message", PROTOCOL_VIOLATION)
        self._state = "failed"
        text = _text(data)
        flag, sep, rest = text.partition(",")
        if flag.startswith("p"):
            raise PgProtocolError("SCRAM channel binding is not supported", PROTOCOL_VIOLATION)
        if flag not in _GS2_HEADERS or not sep:
            raise PgProtocolError("malformed SCRAM message: invalid GS2 header", PROTOCOL_VIOLATION)
        authzid, sep, bare = rest.partition(",")
        if authzid or not sep:
            msg = "client uses authorization identity, but it is not supported"
            raise PgProtocolError(msg, FEATURE_NOT_SUPPORTED)
        parts = bare.split(",")
        if parts[0].startswith("m="):
            raise PgProtocolError("client requires an unsupported SCRAM extension", FEATURE_NOT_SUPPORTED)
        if len(parts) < 2:
            raise PgProtocolError("malformed SCRAM message: short client-first", PROTOCOL_VIOLATION)
        self.user = _attr(parts[0], "n").replace("=2C", ",").replace("=3D", "=")
        client_nonce = _check_nonce(_attr(parts[1], "r"))
        _check_extensions(parts[2:])
        self._gs2 = _GS2_HEADERS[flag]
        self._first_bare = bare
        self._nonce = client_nonce + self._nonce
        v = self._verifier
        self._server_first = f"r={self._nonce},s={_b64(v.salt)},i={v.iterations}"
        self._state = "final"
        return self._server_first.encode("ascii")

    def handle_client_final(self, data: bytes) -> bytes:
        """Take client-final (c=, r=, p=), verify the proof, return server-final (v=)."""
        if self._state != "final":
            raise PgProtocolError("unexpected SCRAM client-final message", PROTOCOL_VIOLATION)
        self._state = "failed"
        text = _text(data)
        without_proof, sep, proof_text = text.rpartition(",p=")
        if not sep:
            raise PgProtocolError("malformed SCRAM message: no proof", PROTOCOL_VIOLATION)
        parts = without_proof.split(",")
        if len(parts) < 2:
            raise PgProtocolError("malformed SCRAM message: short client-final", PROTOCOL_VIOLATION)
        if _unb64(_attr(parts[0], "c"), "channel binding") != self._gs2.encode("ascii"):
            raise PgProtocolError("SCRAM channel binding check failed", PROTOCOL_VIOLATION)
        if _attr(parts[1], "r") != self._nonce:
            raise PgProtocolError("SCRAM nonce does not match", PROTOCOL_VIOLATION)
        _check_extensions(parts[2:])
        proof = _unb64(proof_text, "proof")
        if len(proof) != _KEY_LEN:
            raise PgProtocolError("malformed SCRAM message: invalid proof length", PROTOCOL_VIOLATION)
        v = self._verifier
        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode("utf-8")
        client_key = _xor(proof, _hmac(v.stored_key, auth_message))
        ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), v.stored_key)
        if not ok or self._mock:
            raise PgProtocolError("password authentication failed", INVALID_PASSWORD)
        self._state = "done"
        return f"v={_b64(_hmac(v.server_key, auth_message))}".encode("ascii")


# --- md5 -----------------------------------------------------------------------------------


def _b(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def make_md5_hash(user: str | bytes, password: str | bytes) -> str:
    """PostgreSQL's stored md5 form: "md5" + hex(md5(password + user))."""
    return "md5" + hashlib.md5(_b(password) + _b(user)).hexdigest()


def md5_password(user: str | bytes, password: str | bytes, salt: bytes) -> bytes:
    """The PasswordMessage payload answering AuthenticationMD5Password(salt)."""
    inner = hashlib.md5(_b(password) + _b(user)).hexdigest().encode("ascii")
    return b"md5" + hashlib.md5(inner + bytes(salt)).hexdigest().encode("ascii")


def verify_md5_response(stored: str, user: str | bytes, salt: bytes, response: bytes) -> bool:
    """Check a client's md5 response against a stored "md5<hex>" hash or a plaintext password.

    A SCRAM verifier cannot answer md5 (PostgreSQL switches such roles to SCRAM instead), so it
    never matches here.
    """
    if stored.startswith(SCRAM_SHA_256 + "$"):
        return False
    if _MD5_HASH_RE.match(stored):
        digest = hashlib.md5(stored[3:].encode("ascii") + bytes(salt)).hexdigest()
        expected = b"md5" + digest.encode("ascii")
    else:
        expected = md5_password(user, stored, salt)
    return hmac.compare_digest(expected, bytes(response))
