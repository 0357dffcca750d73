"""Framing pieces shared by the request and response parsers: limits, the header names that
decide framing, and Content-Length parsing."""

from __future__ import annotations

from ._abnf import MAX_CL_DIGITS
from .errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "MAX_CHUNK_LINE_BYTES",
    "SPECIAL_HEADERS",
    "CL",
    "TE",
    "HOST",
    "CONN",
    "EXPECT",
    "parse_content_length",
]

# Same default as h11 (64 KiB); nginx allows 4 x 8 KiB, node 16 KiB, Apache 8 KiB per line.
DEFAULT_MAX_HEADER_BYTES = 65536

# A chunk-size line with extensions. Nothing legitimate sends more than a few dozen bytes;
# this only bounds what we buffer while waiting for its LF.
MAX_CHUNK_LINE_BYTES = 4096

# Header names whose values decide framing/routing; everything else is passed through untouched.
CL, TE, HOST, CONN, EXPECT = range(5)
SPECIAL_HEADERS = {
    b"content-length": CL,
    b"transfer-encoding": TE,
    b"host": HOST,
    b"connection": CONN,
    b"expect": EXPECT,
}


def parse_content_length(values: list[bytes], hint: int) -> int:
    """RFC 9110 8.6 / RFC 9112 6.3 item 5: digits only; a list or repeats must all agree."""
    result = -1
    for value in values:
        for item in value.split(b",") if b"," in value else (value,):
            item = item.strip(b" \t")
            # bytes.isdigit is ASCII-only, and rejects "+5", "-5", " 5", "5_0" that int() takes.
            if not item.isdigit() or len(item) > MAX_CL_DIGITS:
                raise ProtocolError("invalid Content-Length", hint)
            n = int(item)
            if result != -1 and n != result:
                raise ProtocolError("conflicting Content-Length values", hint)
            result = n
    if result == -1:
        raise ProtocolError("empty Content-Length", hint)
    return result
