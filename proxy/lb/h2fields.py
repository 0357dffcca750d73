"""Validation of a client's HTTP/2 request header list (RFC 9113 8.2, 8.3), sans-IO, in one pass.

The `h2` library can validate inbound headers itself, through a chain of eight generators per
header block; on the balancer's HTTP/2 path that was about a tenth of the CPU of a request. These
functions check the same rules the library's chain does (h2 4.x `validate_headers`), so the
front end turns the library's check off and calls `request_fields_error` instead:

* field names: not empty, no upper case, no byte 0x00-0x20 or 0x7f-0xff, no ':' except as a
  pseudo-header's first byte (8.2.1); values: no NUL, CR or LF, no leading or trailing SP/HTAB;
* no connection-specific field, `te` only as "trailers" (8.2.2);
* pseudo-header fields: only the request ones, each at most once, all before the regular fields;
  :method always, :scheme and :path unless CONNECT (with :protocol, extended CONNECT, they are
  required again), :protocol only with CONNECT, :path not empty (8.3.1);
* :authority or Host present, equal when both are, Host at most once.

Each returns None, or why the list is malformed (the caller answers PROTOCOL_ERROR).

`simple_response_fields` goes the other way: the header list of a response whose HTTP/1.1 head
`ResponseParser.feed_simple` already took (nothing hop-by-hop in it but the Connection line it
cut), without parsing it again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["request_fields_error", "simple_response_fields", "trailer_fields_error"]

# 0x21-0x7e without ':' (0x3a) and upper case (0x41-0x5a)
_NAME = re.compile(rb"[\x21-\x39\x3b-\x40\x5b-\x7e]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
_CONNECTION = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})


def _regular_error(name: bytes, value: bytes) -> str | None:
    if _NAME.fullmatch(name) is None:
        return f"invalid field name {name[:64]!r}"
    if name in _CONNECTION:
        return f"connection-specific field {name!r}"
    if name == b"te" and value.lower() != b"trailers":
        return "te other than trailers"
    return None


def request_fields_error(fields: Iterable[tuple[bytes, bytes]]) -> str | None:
    seen: set[bytes] = set()
    regular = False
    method = path = authority = host = None
    for name, value in fields:
        if name[:1] == b":":
            if regular:
                return f"pseudo-header field {name!r} after a regular field"
            if name not in _REQUEST_PSEUDO:
                return f"pseudo-header field {name[:64]!r} not allowed in a request"
            if name in seen:
                return f"repeated pseudo-header field {name!r}"
            seen.add(name)
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
        else:
            regular = True
            why = _regular_error(name, value)
            if why is not None:
                return why
            if name == b"host":
                if host is not None:
                    return "more than one host field"
                host = value
        if value and _BAD_VALUE.search(value) is not None:
            return f"invalid value of field {name[:64]!r}"
    if method is None:
        return "no :method"
    if method == b"CONNECT" and b":protocol" not in seen:
        if b":scheme" in seen or path is not None:
            return "CONNECT with :scheme or :path"
    else:
        if b":scheme" not in seen or path is None:
            return "no :scheme or no :path"
        if b":protocol" in seen and method != b"CONNECT":
            return ":protocol without CONNECT"
    if path is not None and not path:
        return "empty :path"
    if authority is None and host is None:
        return "neither :authority nor host"
    if authority is not None and host is not None and authority != host:
        return ":authority and host differ"
    return None


def trailer_fields_error(fields: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in fields:
        if name[:1] == b":":
            return f"pseudo-header field {name[:64]!r} in trailers"
        why = _regular_error(name, value)
        if why is not None:
            return why
        if value and _BAD_VALUE.search(value) is not None:
            return f"invalid value of field {name[:64]!r}"
    return None


def simple_response_fields(head: bytes, status: int) -> list[tuple[bytes, bytes]]:
    """The HTTP/2 header list of a simple response head (status line, field lines, empty line;
    its "Connection: keep-alive" line already cut): what `ResponseParser.feed` and
    `strip_hop_by_hop` would give, names lowercased and values without surrounding SP/HTAB."""
    fields = [(b":status", b"%d" % status)]
    for line in head.split(b"\r\n")[1:-2]:
        name, _, value = line.partition(b":")
        fields.append((name.lower(), value.strip(b" \t")))
    return fields
