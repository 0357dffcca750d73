"""Header-list helpers shared by the parsers and the proxy: hop-by-hop stripping and lookups.

Header lists are the parsers' form: ``list[tuple[bytes, bytes]]`` with lowercase names and
OWS-stripped values, in wire order. Functions here assume that form (they do not lowercase names).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["HOP_BY_HOP", "strip_hop_by_hop", "get_header", "connection_tokens", "split_tokens"]

Headers = list[tuple[bytes, bytes]]

# RFC 9110 7.6.1 names connection, proxy-connection, keep-alive, te, transfer-encoding, upgrade;
# trailer is hop-by-hop by RFC 2616 13.5.1. Proxy-Authorization and Proxy-Authenticate are not
# here: they are consumed only by a proxy that authenticates its clients (RFC 9110 11.7), which
# this one does not, so like nginx and HAProxy it passes them on (a backend may be such a proxy).
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Fields a client must not be able to delete from the forwarded request by naming them as a
# connection option ("Connection: close, host" is a known trick to strip routing or auth data).
_NEVER_CONNECTION_OPTION = frozenset({b"host", b"content-length"})


def split_tokens(value: bytes) -> list[bytes]:
    """Lowercased elements of a comma list (RFC 9110 5.6.1: empty elements are ignored)."""
    if b"," not in value:
        v = value.strip(b" \t").lower()
        return [v] if v else []
    return [t for t in (p.strip(b" \t").lower() for p in value.split(b",")) if t]


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """All connection options from every Connection header, lowercased (RFC 9110 7.6.1)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(split_tokens(value))
    return tokens


def get_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """Value of the first header called `name` (lowercase), or None."""
    for n, v in headers:
        if n == name:
            return v
    return None


def strip_hop_by_hop(headers: Iterable[tuple[bytes, bytes]], keep_upgrade: bool = False) -> Headers:
    """Headers a proxy may forward: drops HOP_BY_HOP and every field named in Connection.

    RFC 9110 7.6.1: a proxy MUST remove the listed connection options before forwarding. With
    `keep_upgrade`, ``upgrade`` survives so a websocket handshake can be relayed; the caller adds
    ``connection: upgrade`` back. ``host`` and ``content-length`` are never dropped through a
    Connection token (the proxy re-frames bodies itself, and Host must reach the backend).
    """
    headers = list(headers)
    # Fast path: without any hop-by-hop field there is no Connection header naming others either.
    for name, _ in headers:
        if name in HOP_BY_HOP:
            break
    else:
        return headers
    drop = connection_tokens(headers) - _NEVER_CONNECTION_OPTION
    drop.update(HOP_BY_HOP)
    if keep_upgrade:
        drop.discard(b"upgrade")
    return [(n, v) for n, v in headers if n not in drop]
