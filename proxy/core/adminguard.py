"""Who may use an admin API, and from where: a pure decision per request, applied by the admin app.

The threat is a web page in an operator's browser, not only a hostile network: the browser can
reach a loopback admin port, and a page can make it send requests there.

* DNS rebinding: a page on `evil.example` re-points that name at 127.0.0.1 and then talks to the
  admin port "same-origin"; its requests carry `Host: evil.example:PORT`. Every request (reads
  too: /status shows the topology) must name the admin API by a host it answers to: an IP literal
  (a rebinding needs a name), `localhost` or a `*.localhost` name, the admin address's own host, or
  a name listed in `allowed_hosts`. The port is not compared: a rebound name can use any port, and
  an operator's `ssh -L 8000:localhost:9080` must keep working.
* CSRF: a cross-origin `POST` with `Content-Type: text/plain` is a "simple request" that the
  browser sends without asking. Mutating requests (POST, PUT, PATCH, DELETE) need
  `Content-Type: application/json`, which a cross-origin page can only send after a CORS preflight
  that we never approve (415 otherwise), and a request that carries an `Origin` must come from the
  admin API's own origin (`http://` + its Host) (403 otherwise; curl and scripts send no Origin).
* A token: with one configured, mutating requests need `Authorization: Bearer <token>` (401
  otherwise), compared in constant time. Reads stay open to what the Host check allows, so a
  Prometheus scraper needs no secret; put the admin port on loopback or a private network.
  `token_for_reads` (the lb's admin port bound beyond loopback with a token) asks it of every
  request, reads included.
* Over TLS (`scheme="https"`) the API's own origin is `https://` + its Host.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MUTATING", "AdminGuard", "Refusal", "is_loopback_host", "read_token"]

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Refusal = tuple[int, str]  # (HTTP status, reason)


def read_token(path: str | Path) -> str:
    """The bearer token held in `path` (surrounding whitespace dropped); ValueError if the file
    cannot be read or holds nothing."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8") from None
    if not token:
        raise ValueError(f"{path} is empty")
    if any(c.isspace() for c in token):
        raise ValueError(f"{path}: the token must be one word (no whitespace inside)")
    return token


def _split_host(value: str) -> str:
    """The host part of a Host header or an origin's authority, lowercased, brackets kept off."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback_host(host: str) -> bool:
    host = host.lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AdminGuard:
    """The rules above for one admin API. `token` may be swapped (a reload re-reads its file)."""

    def __init__(self, admin_host: str, token: str | None = None, allowed_hosts: Iterable[str] = (),
                 *, scheme: str = "http", token_for_reads: bool = False) -> None:  # fmt: skip
        self.admin_host = admin_host.lower().strip("[]")
        self.scheme = scheme
        self.token_for_reads = token_for_reads
        self.update(token, allowed_hosts)

    def update(self, token: str | None, allowed_hosts: Iterable[str]) -> None:
        """A reload: the token file may hold a new token, the list of names may change."""
        self.token = token
        self.names = {self.admin_host} | {h.lower() for h in allowed_hosts}

    def host_ok(self, host_header: str | None) -> bool:
        if not host_header:
            return False  # HTTP/1.1 requires Host; a browser always sends one
        host = _split_host(host_header)
        return _is_ip(host) or host == "localhost" or host.endswith(".localhost") or host in self.names

    def check(self, method: str, host: str | None, origin: str | None, content_type: str | None,
              authorization: str | None) -> Refusal | None:  # fmt: skip
        """None if the request may proceed, else the status and reason to answer with."""
        if not self.host_ok(host):
            return 403, f"Host {host!r} is not a name this admin API answers to (DNS rebinding guard)"
        if origin is not None and origin.strip().lower() != f"{self.scheme}://{(host or '').strip().lower()}":
            return 403, f"cross-origin request from {origin!r} refused"
        if method not in MUTATING and not (self.token_for_reads and self.token is not None):
            return None
        if self.token is not None:
            scheme, _, given = (authorization or "").partition(" ")
            # compare_digest on bytes of any length; the length itself is not secret enough to hide
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
                return 401, "this admin API needs 'Authorization: Bearer <token>' (admin.token_file)"
        if method not in MUTATING:
            return None
        mime = (content_type or "").partition(";")[0].strip().lower()
        if mime != "application/json":
            return 415, "changes need 'Content-Type: application/json'"
        return None
