"""The simple case of each parser, recognised by one regex match instead of per-line Python.

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

from ._abnf import FIELD_VALUE, HOST_RE, TOKEN, field_names_re
from .events import Framing, RequestHead

__all__: list[str] = []

# The parsers remember the last simple message of their connection and their verdict on it, so a
# connection that repeats itself is answered without the regex engine; longer heads are not kept
# (a connection must not pin much memory between its messages).
REMEMBER_MAX = 4096

# Field names whose presence needs the full parser's rules (framing, connection management,
# 100-continue), or that a proxy drops or rewrites (hop-by-hop, X-Forwarded-*, X-Request-ID): a
# simple request's field lines can then be forwarded as they came (`RequestHead.forward`), less a
# "Connection: keep-alive" line (below).
_REQUEST_SPECIAL = (
    rb"host|content-length|transfer-encoding|connection|upgrade|expect|te|trailer|keep-alive"
    rb"|proxy-connection|http2-settings|x-forwarded-for|x-forwarded-proto"
    rb"|x-forwarded-host|x-request-id"
)
# A field line that is none of those: a token name, no space before the colon (so no obs-fold),
# a value of visible ASCII, spaces and tabs (one class repeat: the engine's fast loop).
# Repeats are possessive ("*+"): no line can be matched another way, so the engine need not keep
# the state to backtrack into them.
# The names are one trie of character classes (`field_names_re`), not `(?i:a|b|...)`: half the
# cost of a browser's request was this look-ahead, case-folding each name in turn.
_REQUEST_OTHER = rb"(?:(?!" + field_names_re(_REQUEST_SPECIAL.split(b"|")) + rb")" + TOKEN + rb"+:[\t -~]*+\r\n)"
# The one Connection line the simple path takes: "keep-alive" alone (any case, OWS around it), as
# browsers, python-requests, OkHttp and Java's clients send on every request. On HTTP/1.1 it says
# what the absence of the line says (RFC 9112 9.3), names no field but "keep-alive" (which
# _REQUEST_SPECIAL refuses anyway), and is hop-by-hop: the backend gets the lines without it.
_KEEP_ALIVE_REQUEST_LINE = rb"((?i:connection):[ \t]*+(?i:keep-alive)[ \t]*+\r\n)"
_HOST_LINE = rb"(?i:host):[ \t]*(" + HOST_RE.pattern + rb")[ \t]*\r\n"
# The whole request in one match, because each call into the regex engine costs more than the
# matching itself: a request-line with a GET or HEAD of an origin-form target made of unreserved,
# sub-delims, ":", "@", "/", "?" and "%" only (RFC 3986: no "#" fragment, nothing llhttp could take
# another way), HTTP/1.1; then field lines with exactly one Host (a valid one, RFC 9110 7.2: none
# or two is the full parser's 400), at most one "Connection: keep-alive" before or after it, and
# none of the names above; then the empty line. Nothing may follow: a body or a pipelined request
# goes the full way. Groups: method, target, field block, then host and Connection line (4, 5) when
# Host comes first, else Connection line and host (6, 7).
_REQUEST = re.compile(
    rb"(GET|HEAD) (/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*) HTTP/1\.1\r\n("
    + _REQUEST_OTHER + rb"*+(?:" + _HOST_LINE + _REQUEST_OTHER + rb"*+(?:" + _KEEP_ALIVE_REQUEST_LINE
    + _REQUEST_OTHER + rb"*+)?+|" + _KEEP_ALIVE_REQUEST_LINE + _REQUEST_OTHER + rb"*+" + _HOST_LINE
    + _REQUEST_OTHER + rb"*+))\r\n"
)

# Response fields that need the full parser: any framing or hop-by-hop field except one
# Content-Length and one "Connection: keep-alive", which the simple path handles.
_RESPONSE_SPECIAL = [b"content-length", b"connection", b"transfer-encoding", b"upgrade", b"te", b"trailer",
                     b"keep-alive", b"proxy-connection"]  # fmt: skip
_RESPONSE_OTHER = rb"(?:(?!" + field_names_re(_RESPONSE_SPECIAL) + rb")" + TOKEN + rb"+:" + FIELD_VALUE + rb"+\r\n)*+"
_LENGTH_LINE = rb"(?i:content-length):[ \t]*([0-9]{1,15})[ \t]*\r\n"
_KEEP_ALIVE_LINE = rb"((?i:connection):[ \t]*(?i:keep-alive)[ \t]*\r\n)"
# The whole head in one match: an HTTP/1.1 status line with a status of 200-599, then field lines
# with one Content-Length and at most one "Connection: keep-alive", in either order, then the
# empty line. Groups: status, length (2 or 5), the Connection line (3 or 4).
_RESPONSE = re.compile(
    rb"HTTP/1\.1 ([2-5][0-9][0-9])(?: " + FIELD_VALUE + rb")?\r\n" + _RESPONSE_OTHER
    + rb"(?:" + _LENGTH_LINE + _RESPONSE_OTHER + rb"(?:" + _KEEP_ALIVE_LINE + _RESPONSE_OTHER + rb")?"
    + rb"|" + _KEEP_ALIVE_LINE + _RESPONSE_OTHER + _LENGTH_LINE + _RESPONSE_OTHER + rb")\r\n"
)


def simple_request(data: bytes, max_head: int) -> RequestHead | None:
    """`data` as one whole simple request (see the module docstring), or None. Its field lines
    stay unparsed in `raw_fields` (`RequestHead.fields()` parses them when asked), and those to
    forward (all but a "Connection: keep-alive" line) in `forward`."""
    if len(data) > max_head:
        return None
    m = _REQUEST.fullmatch(data)
    if m is None:
        return None
    method, target, block, host, conn = m.group(1, 2, 3, 4, 5)
    if conn is None:
        if host is not None:  # the commonest: Host, no Connection line
            return RequestHead(method, target, b"1.1", None, True, Framing.NONE, None, False, False, host, block, block)
        host = m.group(7)
        start, end = m.span(6)
    else:
        start, end = m.span(5)
    base = m.start(3)
    forward = block[: start - base] + block[end - base :]
    return RequestHead(method, target, b"1.1", None, True, Framing.NONE, None, False, False, host, block, forward)


def simple_response(data: bytes, max_head: int) -> tuple[int, int, int, int, int] | None:
    """`data` as one whole HTTP/1.1 response with a Content-Length body, all of it in `data`
    and nothing after it: (status, head length including the empty line, body length, start and
    end of a "Connection: keep-alive" line to cut, equal when there is none), or None. 1xx, 204
    and 304 take the full path."""
    m = _RESPONSE.match(data)
    if m is None:
        return None
    end = m.end()
    status, length, length2 = m.group(1, 2, 5)
    body = int(length if length is not None else length2)
    if len(data) != end + body or end > max_head + 4:
        return None
    status = int(status)
    if status == 204 or status == 304:
        return None
    start, stop = m.span(3)
    if start < 0:
        start, stop = m.span(4)
        if start < 0:
            return status, end, body, 0, 0
    # Cut from the CRLF before the line to the CRLF that ends it (exclusive): the head stays whole.
    return status, end, body, start - 2, stop - 2


def cut_connection(data: bytes, start: int, end: int) -> bytes:
    """`data` without bytes [start, end): the Connection line `simple_response` found."""
    return data[:start] + data[end:]
