"""The simple case of each parser, recognised in a few regex calls instead of per-line Python.

Most traffic through a load balancer is a bodiless GET answered by a Content-Length response. For
those, `simple_request` and `simple_response` give what the full parsers would give, without
llhttp callbacks or a loop over header lines; anything else returns None and takes the full path.
Both accept only a strict subset of what the full parsers accept (the tests check, with hypothesis,
that on every input where the simple path answers, the full parser answers the same), so the
smuggling defences stay with the full parsers: nothing unusual ever takes this path.

Shared by `RequestParser.feed_simple` and `ResponseParser.feed_simple`; private to the package.
"""

from __future__ import annotations

import re

from ._abnf import FIELD_BLOCK_RE, FIELD_VALUE, HOST_RE, TOKEN
from .events import Framing, RequestHead

__all__: list[str] = []

# request-line with a GET or HEAD of an origin-form target made of unreserved, sub-delims, ":",
# "@", "/", "?" and "%" only (RFC 3986: no "#" fragment, nothing llhttp could take another way),
# HTTP/1.1, then field lines of visible ASCII with single spaces or tabs inside, then the empty
# line. Nothing may follow: a body or a pipelined request goes the full way.
_REQUEST = re.compile(
    rb"(GET|HEAD) (/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*) HTTP/1\.1\r\n"
    rb"((?:" + TOKEN + rb":[ \t]*(?:[!-~]+(?:[ \t]+[!-~]+)*)?[ \t]*\r\n)*)\r\n"
)
_REQUEST_FIELD = re.compile(rb"(" + TOKEN + rb"):[ \t]*([^\r\n]*?)[ \t]*\r\n")
# Fields whose presence needs the full parser's rules (framing, connection management,
# 100-continue), or that a proxy drops or rewrites (hop-by-hop, X-Forwarded-*, X-Request-ID): a
# simple request's field lines can then be forwarded as they came (`RequestHead.raw_fields`).
_REQUEST_SPECIAL = re.compile(
    rb"(?:^|\n)(?:content-length|transfer-encoding|connection|upgrade|expect|te|trailer|keep-alive"
    rb"|proxy-connection|proxy-authorization|http2-settings|x-forwarded-for|x-forwarded-proto"
    rb"|x-forwarded-host|x-request-id):",
    re.IGNORECASE,
)

# Response fields that need the full parser: any framing or hop-by-hop field except Content-Length
# and a "Connection: keep-alive", which the simple path handles. Matched on the lowercased head.
_RESPONSE_SPECIAL = re.compile(
    rb"\n(?:transfer-encoding|upgrade|te|trailer|keep-alive|proxy-connection|proxy-authenticate):"
)
# status-line (HTTP/1.1 only) CRLF, then at least one field line (a Content-Length must be there).
_RESPONSE_HEAD = re.compile(
    rb"HTTP/1\.1 ([0-9]{3})(?: " + FIELD_VALUE + rb")?\r\n" + FIELD_BLOCK_RE.pattern
)
_LENGTH_VALUE = re.compile(rb"[ \t]*([0-9]{1,15})[ \t]*\r")
_KEEP_ALIVE_VALUE = re.compile(rb"[ \t]*keep-alive[ \t]*\r")


def simple_request(data: bytes, max_head: int) -> RequestHead | None:
    """`data` as one whole simple request (see the module docstring), or None."""
    if len(data) > max_head or not data.endswith(b"\r\n\r\n"):
        return None
    m = _REQUEST.fullmatch(data)
    if m is None:
        return None
    block = m.group(3)
    if _REQUEST_SPECIAL.search(block) is not None:
        return None
    headers = [(name.lower(), value) for name, value in _REQUEST_FIELD.findall(block)]
    host = None
    for name, value in headers:
        if name == b"host":
            if host is not None:
                return None  # the full parser's 400
            host = value
    if host is None or HOST_RE.fullmatch(host) is None:
        return None
    return RequestHead(m.group(1), m.group(2), b"1.1", headers, True, Framing.NONE, None, False, False, host, block)


def simple_response(data: bytes, max_head: int) -> tuple[int, int, int, int, int] | None:
    """`data` as one whole HTTP/1.1 response with a Content-Length body, all of it in `data`
    and nothing after it: (status, head length including the empty line, body length, start and
    end of a "Connection: keep-alive" line to cut, equal when there is none), or None. 1xx, 204
    and 304 take the full path."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end > max_head:
        return None
    m = _RESPONSE_HEAD.fullmatch(data, 0, end)  # status line and field lines, validated at once
    if m is None:
        return None
    status = int(m.group(1))
    if status < 200 or status == 204 or status == 304:
        return None
    low = data[: end + 2].lower()  # each field line starts after a "\n" and ends with "\r\n"
    if _RESPONSE_SPECIAL.search(low) is not None:
        return None
    i = low.find(b"\ncontent-length:")
    if i < 0 or low.find(b"\ncontent-length:", i + 1) >= 0:
        return None
    length = _LENGTH_VALUE.match(low, i + 16)
    if length is None:
        return None
    body = int(length.group(1))
    if len(data) != end + 4 + body:
        return None
    j = low.find(b"\nconnection:")
    if j < 0:
        return status, end + 4, body, 0, 0
    if low.find(b"\nconnection:", j + 1) >= 0 or _KEEP_ALIVE_VALUE.match(low, j + 12) is None:
        return None
    # Cut from the CRLF before the line to the CRLF that ends it (exclusive): the head stays whole.
    return status, end + 4, body, j - 1, low.find(b"\r", j + 12)


def cut_connection(data: bytes, start: int, end: int) -> bytes:
    """`data` without bytes [start, end): the Connection line `simple_response` found."""
    return data[:start] + data[end:]
