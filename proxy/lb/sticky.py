"""Signed session-affinity cookies: which backend a client is pinned to, tamper-evident.

Theory of operation
-------------------
A sticky cookie's value is ``<backend>.<tag>``: the backend name in clear (so an operator can
read it in a browser) and ``tag = base64url(HMAC-SHA256(secret, DOMAIN || backend)[:16])``
without padding (always 22 characters). Backend names may themselves contain '.', so `verify`
splits on the *last* '.'. The tag stops a client from choosing its backend (steering load onto
one host, or probing hosts that are not meant to be addressed); it does not hide the name.

* 128-bit tags: forging one by guessing takes ~2^128 tries; truncation of HMAC-SHA256 is
  allowed by RFC 2104 section 5 and NIST SP 800-107 down to far fewer bits.
* ``DOMAIN`` (a fixed prefix) separates these MACs from anything else signed with the same key.
* Comparison is `hmac.compare_digest`, so the time taken does not leak how many leading
  characters of a forged tag were right.
* Only RFC 6265 ``cookie-octet`` characters are allowed in backend names, so the value is safe
  in ``Set-Cookie`` without quoting; `sign` refuses others with ValueError.
* `verify` takes any ``str`` and returns the backend name or None; it never raises (a garbled
  cookie is the client's problem, not a 500). Values over `MAX_VALUE_LEN` are refused before
  any hashing, so a huge header costs nothing.

`StickyCodec` binds a secret and a cookie name and remembers verified values in a small
size-capped dict: a browser sends the same cookie with every request, so the HMAC is computed
once per distinct value, not per request. Only *valid* values are cached, so a flood of forged
cookies cannot push the real ones out; eviction is oldest-first (insertion order), which is
enough because hot values are re-inserted soon after eviction at the cost of one HMAC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

__all__ = ["sign", "verify", "StickyCodec", "MAX_VALUE_LEN", "MIN_SECRET_LEN"]

TAG_BYTES = 16
TAG_CHARS = 22  # len(base64url(16 bytes)) without the "==" padding
DOMAIN = b"tierproxy/sticky/v1\x00"

# Browsers cap a cookie (name + value) at 4096 bytes (RFC 6265 section 6.1 minimum); a backend
# name plus a tag is far shorter, so anything longer is garbage and is dropped unhashed.
MAX_VALUE_LEN = 256
# 128 bits of key, matching the tag length; shorter secrets make the HMAC guessable offline.
MIN_SECRET_LEN = 16
DEFAULT_CACHE_SIZE = 1024

# RFC 6265 section 4.1.1: cookie-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
_COOKIE_OCTETS = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]+")
# RFC 7230 token, which RFC 6265 requires of a cookie name.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _tag(backend: str, secret: bytes) -> str:
    mac = hmac.new(secret, DOMAIN + backend.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:TAG_BYTES]).rstrip(b"=").decode("ascii")


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, (bytes, bytearray)) or len(secret) < MIN_SECRET_LEN:
        raise ValueError(f"sticky secret must be at least {MIN_SECRET_LEN} bytes")


def sign(backend: str, secret: bytes) -> str:
    """Cookie value pinning a client to ``backend``: ``"<backend>.<tag>"``."""
    _check_secret(secret)
    if not isinstance(backend, str) or _COOKIE_OCTETS.fullmatch(backend) is None:
        raise ValueError(f"backend name {backend!r} is not made of RFC 6265 cookie-octets")
    value = f"{backend}.{_tag(backend, secret)}"
    if len(value) > MAX_VALUE_LEN:
        raise ValueError(f"backend name {backend!r} too long for a sticky cookie")
    return value


def verify(value: str, secret: bytes) -> str | None:
    """The backend name in ``value`` if its tag is genuine, else None. Never raises on input."""
    if not isinstance(value, str) or len(value) > MAX_VALUE_LEN:
        return None
    backend, dot, tag = value.rpartition(".")
    if not dot or not backend or len(tag) != TAG_CHARS:
        return None
    # Both checks before any hashing; isascii() also makes compare_digest safe (it rejects
    # non-ASCII str) and encode("ascii") below infallible.
    if not value.isascii() or _COOKIE_OCTETS.fullmatch(backend) is None:
        return None
    if hmac.compare_digest(_tag(backend, secret), tag):
        return backend
    return None


class StickyCodec:
    """Signs and verifies one pool's affinity cookie, caching verified values."""

    __slots__ = ("_secret", "cookie_name", "_cache", "_cache_size", "_signed")

    def __init__(
        self, secret: bytes, cookie_name: str, *, cache_size: int = DEFAULT_CACHE_SIZE
    ) -> None:
        _check_secret(secret)
        if not isinstance(cookie_name, str) or _TOKEN.fullmatch(cookie_name) is None:
            raise ValueError(f"cookie name {cookie_name!r} is not an RFC 7230 token")
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self._secret = bytes(secret)
        self.cookie_name = cookie_name
        self._cache: dict[str, str] = {}
        self._cache_size = cache_size
        # backend -> signed value; bounded by the configured backends, which sign() is for.
        self._signed: dict[str, str] = {}

    def encode(self, backend: str) -> str:
        """Signed cookie value for ``backend`` (memoised: a pool has few backends)."""
        value = self._signed.get(backend)
        if value is None:
            value = sign(backend, self._secret)
            if len(self._signed) >= self._cache_size:
                self._signed.clear()  # only reachable if callers sign arbitrary names
            self._signed[backend] = value
        return value

    def decode(self, value: str) -> str | None:
        """Backend named by a cookie value, or None if forged/garbled. Never raises."""
        cache = self._cache
        try:
            return cache[value]
        except (KeyError, TypeError):  # TypeError: unhashable garbage passed by a caller
            pass
        backend = verify(value, self._secret)
        if backend is not None:
            if len(cache) >= self._cache_size:
                del cache[next(iter(cache))]  # oldest first
            cache[value] = backend
        return backend

    def from_header(self, cookie_header: str) -> str | None:
        """Find our cookie in a ``Cookie:`` header value and decode it; None if absent/bad."""
        name = self.cookie_name
        if name not in cookie_header:  # the common miss costs one substring scan
            return None
        for part in cookie_header.split(";"):
            k, eq, v = part.partition("=")
            if eq and k.strip() == name:
                v = v.strip()
                if len(v) >= 2 and v[0] == v[-1] == '"':
                    v = v[1:-1]  # RFC 6265 allows a DQUOTE-wrapped value
                backend = self.decode(v)
                if backend is not None:
                    # Browsers send the most specific path first; a stale duplicate from
                    # another path or an old secret should not hide a good one.
                    return backend
        return None

    def set_cookie(self, backend: str, *, path: str = "/", max_age: int | None = None,
                   secure: bool = False) -> str:
        """A ``Set-Cookie`` header value pinning the client to ``backend``."""
        if not path.startswith("/") or not path.isprintable() or ";" in path:
            raise ValueError(f"cookie path {path!r} must start with '/' and contain no ';'")
        parts = [f"{self.cookie_name}={self.encode(backend)}", f"Path={path}"]
        if max_age is not None:
            parts.append(f"Max-Age={int(max_age)}")
        if secure:
            parts.append("Secure")
        # HttpOnly: scripts have no business with routing; Lax: sent on top-level navigations.
        parts += ["HttpOnly", "SameSite=Lax"]
        return "; ".join(parts)

    @property
    def cached(self) -> int:
        return len(self._cache)
