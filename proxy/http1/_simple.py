"""The simple case of each parser, recognised by one regex match instead of per-line Python.

Most traffic through a load balancer is a bodiless GET answered by a Content-Length response. For
those, `simple_request` and `simple_response` give what the full parsers would give, without
llhttp callbacks or a loop over header lines; anything else returns None and takes the full path.
Both accept only a strict subset of what the full parsers accept (the tests check, with hypothesis,
that on every input where the simple path answers, the full parser answers the same), so the
smuggling defences stay with the full parsers: nothing unusual ever takes this path.

Shared by `RequestParser.feed_simple` and `ResponseParser.feed_simple`; private to the package.

This file is compiled (proxy/_native.py; _simple.pxd types the scanners) and is also its own
pure-Python twin, and the two want different code for the same recognition: interpreted, one regex
match is cheapest (each Python step costs more than the engine's ~75 instructions a byte); compiled,
one pass over the bytes through a pointer, with a table lookup per byte, is ~10x cheaper than the
engine. So both are here, `simple_request` / `simple_response` are whichever suits how this module
runs, and the scanners (`_scan_request`, `_scan_response`) accept exactly what the regexes accept
with the same results (tests/unit/test_native_scanner.py holds them to it, interpreted and compiled).
"""

from __future__ import annotations

import re

from ._abnf import FIELD_VALUE, HOST_RE, TOKEN, field_names_re
from ._head import simple_head
from .events import Framing, RequestHead

__all__: list[str] = []

# The parsers remember the last simple message of their connection and their verdict on it, so a
# connection that repeats itself is answered without the regex engine; longer heads are not kept
# (a connection must not pin much memory between its messages).
REMEMBER_MAX = 4096
# Framing.NONE read once: an enum member's lookup on its class costs ~1.3k instructions (the
# enum type's __getattr__ hook), more than the scanners' whole pass over a short request.
_NO_BODY = Framing.NONE

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


def _match_request(data: bytes, max_head: int) -> RequestHead | None:
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
            return RequestHead(method, target, b"1.1", None, True, _NO_BODY, None, False, False, host, block, block)
        host = m.group(7)
        start, end = m.span(6)
    else:
        start, end = m.span(5)
    base = m.start(3)
    forward = block[: start - base] + block[end - base :]
    return RequestHead(method, target, b"1.1", None, True, _NO_BODY, None, False, False, host, block, forward)


def _match_response(data: bytes, max_head: int) -> tuple[int, int, int, int, int] | None:
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


# -- the compiled module's scanners -----------------------------------------------------------
# The same grammar as _REQUEST and _RESPONSE, walked byte by byte: each field line is a token
# name, ":", and a value of the line's class up to CRLF; the names the regexes' look-aheads refuse
# are refused here by `_listed`, the Host, Content-Length and "Connection: keep-alive" lines are
# read by their own rules (the regexes' groups). _simple.pxd types `p` and the tables as pointers;
# every read is below `n` (checked), so the same code also runs interpreted, as it does in the
# tests of the pure pass.


def _class(chars: bytes) -> bytes:
    """A 256-byte table: 1 for each byte in `chars`, else 0."""
    return bytes(1 if i in chars else 0 for i in range(256))


_ALPHANUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_TCHAR = _class(_ALPHANUM + b"!#$%&'*+-.^_`|~")  # TOKEN
_TARGET = _class(_ALPHANUM + b"-._~!$&'()*+,;=:@/?%")  # _REQUEST's target, after its "/"
_REQUEST_VALUE = _class(b"\t" + bytes(range(0x20, 0x7F)))  # _REQUEST_OTHER's [\t -~]
_VALUE = _class(b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)))  # FIELD_VALUE
_REG_NAME = _class(_ALPHANUM + b"-._~!$&'()*+,;=%")  # HOST_RE's reg-name
_IP_LITERAL = _class(b"0123456789ABCDEFabcdef:.vV-_~!$&'()*+,;=")  # HOST_RE's IP-literal, inside [ ]


def _names(names: list[bytes]) -> bytes:
    """`names` (lowercase) as one string for `_listed`: each preceded by its length."""
    return b"".join(bytes([len(name)]) + name for name in names)


_REQUEST_NAMES = _names(_REQUEST_SPECIAL.split(b"|"))
_RESPONSE_NAMES = _names(_RESPONSE_SPECIAL)


def _leads(names: list[bytes]) -> bytes:
    """A 1,024-byte filter for `_listed`: at `(k << 5) | (c & 31)` a 1 where some name of `names`
    has length k (< 32) and a first letter c (either case: a letter's low five bits are its case's).
    A name of another length and first byte is none of `names`, so the scanners skip the
    comparisons (a browser's names, User-Agent or Accept-Language, all fail here at once); a 1 only
    says "compare"."""
    table = bytearray(1024)
    for name in names:
        assert len(name) < 32 and name[:1].isalpha()
        table[(len(name) << 5) | (name[0] & 31)] = 1
    return bytes(table)


_REQUEST_LEADS = _leads(_REQUEST_SPECIAL.split(b"|"))
_RESPONSE_LEADS = _leads(_RESPONSE_SPECIAL)


def _at(p: bytes, n: int, i: int, s: bytes, k: int) -> bool:
    """`p[i:i+k] == s[:k]`, within the first `n` bytes."""
    if n - i < k:
        return False
    j = 0
    while j < k:
        if p[i + j] != s[j]:
            return False
        j += 1
    return True


def _ieq(p: bytes, n: int, i: int, s: bytes, o: int, k: int) -> bool:
    """`p[i:i+k]` equals `s[o:o+k]` (lowercase) in ASCII case-insensitively (as `(?i:...)` of a
    bytes pattern), within the first `n` bytes."""
    if n - i < k:
        return False
    j = 0
    while j < k:
        c = p[i + j]
        if 65 <= c <= 90:  # A-Z
            c += 32
        if c != s[o + j]:
            return False
        j += 1
    return True


def _listed(p: bytes, i: int, k: int, names: bytes, size: int) -> bool:
    """`p[i:i+k]` (a token) is one of `names` (`_names`), in any case."""
    j = 0
    while j < size:
        m = names[j]
        if m == k and _ieq(p, i + k, i, names, j + 1, k):
            return True
        j += 1 + m
    return False


def _keep_alive(p: bytes, n: int, i: int) -> int:
    """A Connection value from `i` (just after its colon) that is exactly `keep-alive` in any case,
    between optional spaces and tabs (what both scanners take): the index after it and its
    trailing whitespace, or -1."""
    while i < n and (p[i] == 32 or p[i] == 9):
        i += 1
    if not _ieq(p, n, i, b"keep-alive", 0, 10):
        return -1
    i += 10
    while i < n and (p[i] == 32 or p[i] == 9):
        i += 1
    return i


def _span(p: bytes, i: int, n: int, table: bytes) -> int:
    """The first index from `i` (at most `n`) whose byte is not in `table`: a run of one class.
    Compiled, the scanners call `_span_nul` (_simple.pxd) instead, the same answer without a bounds
    test per byte: `data` is then a bytes, whose byte at `n` is always NUL, which no table holds."""
    while i < n and table[p[i]]:
        i += 1
    return i


def _scan_request(data: bytes, max_head: int) -> RequestHead | None:
    """`simple_request` for the compiled module: `_match_request`'s answer, by one pass over the bytes."""
    if type(data) is not bytes:  # bytearray, memoryview, wrong types: the regex's answers and errors
        return _match_request(data, max_head)
    n = len(data)
    # Compiled, compared in C where `max_head` is an int (_simple.pxd; `n` made an int object and
    # compared through Python before, ~0.15k instructions).
    if _beyond(n, max_head, 0) if _COMPILED else n > max_head:  # noqa: F821
        return None
    p = data
    tchar = _TCHAR
    value = _REQUEST_VALUE
    if _at(p, n, 0, b"GET /", 5):
        method = b"GET"
        i = 5
    elif _at(p, n, 0, b"HEAD /", 6):
        method = b"HEAD"
        i = 6
    else:
        return None
    target_start = i - 1
    table = _TARGET
    i = _span_nul(p, i, table) if _COMPILED else _span(p, i, n, table)  # noqa: F821
    target_end = i
    if not _at(p, n, i, b" HTTP/1.1\r\n", 11):
        return None
    i += 11
    block = i
    host_start = host_end = conn_start = conn_end = -1
    names = _REQUEST_NAMES
    size = len(names)
    leads = _REQUEST_LEADS
    while True:
        if i < n and p[i] == 13:  # CR: the empty line, which must end `data`
            if i + 2 == n and p[i + 1] == 10:
                break
            return None
        line = i
        i = _span_nul(p, i, tchar) if _COMPILED else _span(p, i, n, tchar)  # noqa: F821
        k = i - line
        if k == 0 or i >= n or p[i] != 58:  # ":"
            return None
        i += 1
        is_conn = False
        if k >= 32 or not leads[(k << 5) | (p[line] & 31)]:  # no special name: the commonest
            i = _span_text(p, i, n, value) if _COMPILED else _span(p, i, n, value)  # noqa: F821
        elif k == 4 and _ieq(p, n, line, b"host", 0, 4):
            if host_start >= 0:
                return None
            while i < n and (p[i] == 32 or p[i] == 9):
                i += 1
            host_start = i
            if i < n and p[i] == 91:  # "[": an IP-literal, 1* of its characters then "]"
                i += 1
                table = _IP_LITERAL
                i = _span_nul(p, i, table) if _COMPILED else _span(p, i, n, table)  # noqa: F821
                if i == host_start + 1 or i >= n or p[i] != 93:
                    return None
                i += 1
            else:
                table = _REG_NAME
                i = _span_nul(p, i, table) if _COMPILED else _span(p, i, n, table)  # noqa: F821
            if i < n and p[i] == 58:  # ":" port
                i += 1
                while i < n and 48 <= p[i] <= 57:
                    i += 1
            host_end = i
            while i < n and (p[i] == 32 or p[i] == 9):
                i += 1
        elif k == 10 and _ieq(p, n, line, b"connection", 0, 10):
            if conn_start >= 0:
                return None
            i = _keep_alive(p, n, i)
            if i < 0:
                return None
            is_conn = True
        elif _listed(p, line, k, names, size):
            return None
        else:
            i = _span_text(p, i, n, value) if _COMPILED else _span(p, i, n, value)  # noqa: F821
        if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
            return None
        i += 2
        if is_conn:
            conn_start = line
            conn_end = i
    if host_start < 0:
        return None
    # Slices of `p`, not of `data`: compiled, each is one bytes made from the pointer, where
    # `data[a:b]` would make a slice object and two ints first.
    fields = p[block : n - 2]
    forward = fields if conn_start < 0 else p[block:conn_start] + p[conn_end : n - 2]
    return simple_head(method, p[target_start:target_end], p[host_start:host_end], fields, forward)


def _scan_response(data: bytes, max_head: int) -> tuple[int, int, int, int, int] | None:
    """`simple_response` for the compiled module: `_match_response`'s answer, by one pass over the bytes."""
    if type(data) is not bytes:  # bytearray, memoryview, wrong types: the regex's answers and errors
        return _match_response(data, max_head)
    n = len(data)
    p = data
    if not _at(p, n, 0, b"HTTP/1.1 ", 9) or n < 12:
        return None
    status = p[9] - 48
    d1 = p[10] - 48
    d2 = p[11] - 48
    if status < 2 or status > 5 or d1 < 0 or d1 > 9 or d2 < 0 or d2 > 9:
        return None
    status = status * 100 + d1 * 10 + d2
    tchar = _TCHAR
    value = _VALUE
    i = 12
    if i < n and p[i] == 32:  # the reason phrase
        i = _span_text(p, i + 1, n, value) if _COMPILED else _span(p, i + 1, n, value)  # noqa: F821
    if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
        return None
    i += 2
    length = conn_start = conn_end = -1
    names = _RESPONSE_NAMES
    size = len(names)
    leads = _RESPONSE_LEADS
    while True:
        if i < n and p[i] == 13:  # CR: the empty line
            if i + 1 < n and p[i + 1] == 10:
                i += 2
                break
            return None
        line = i
        i = _span_nul(p, i, tchar) if _COMPILED else _span(p, i, n, tchar)  # noqa: F821
        k = i - line
        if k == 0 or i >= n or p[i] != 58:  # ":"
            return None
        i += 1
        is_conn = False
        if k >= 32 or not leads[(k << 5) | (p[line] & 31)]:  # no special name: the commonest
            i = _span_text(p, i, n, value) if _COMPILED else _span(p, i, n, value)  # noqa: F821
        elif k == 14 and _ieq(p, n, line, b"content-length", 0, 14):
            if length >= 0:
                return None
            while i < n and (p[i] == 32 or p[i] == 9):
                i += 1
            digits = i
            length = 0
            while i < n and 48 <= p[i] <= 57:
                if i - digits < 15:  # 1 to 15 digits: more fail below
                    length = length * 10 + (p[i] - 48)
                i += 1
            if i == digits or i - digits > 15:
                return None
            while i < n and (p[i] == 32 or p[i] == 9):
                i += 1
        elif k == 10 and _ieq(p, n, line, b"connection", 0, 10):
            if conn_start >= 0:
                return None
            i = _keep_alive(p, n, i)
            if i < 0:
                return None
            is_conn = True
        elif _listed(p, line, k, names, size):
            return None
        else:
            i = _span_text(p, i, n, value) if _COMPILED else _span(p, i, n, value)  # noqa: F821
        if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
            return None
        i += 2
        if is_conn:
            conn_start = line
            conn_end = i
    if length < 0:
        return None
    # `_match_response`'s order: its errors too (compiled, the limit compared in C: _simple.pxd).
    if n != i + length or (_beyond(i, max_head, 4) if _COMPILED else i > max_head + 4):  # noqa: F821
        return None
    if status == 204 or status == 304:
        return None
    if conn_start < 0:
        return status, i, length, 0, 0
    return status, i, length, conn_start - 2, conn_end - 2


def _probe() -> None:
    pass


# A compiled module's functions are Cython's, not Python's.
COMPILED = type(_probe).__name__ != "function"
_COMPILED = COMPILED  # the scanners' test (_simple.pxd: a C int)
# `_span_nul` stops at the NUL after a bytes' last byte: no table may hold NUL.
assert not any(t[0] for t in (_TCHAR, _TARGET, _REQUEST_VALUE, _VALUE, _REG_NAME, _IP_LITERAL))
# `_span_text` skips eight bytes at a time where all are printable ASCII: its tables hold them all.
assert all(t[c] for t in (_REQUEST_VALUE, _VALUE) for c in range(0x20, 0x7F))

# simple_request(data, max_head) and simple_response(data, max_head): see _match_request and
# _match_response (the pure twin's, which the compiled twin's scanners equal).
simple_request = _scan_request if COMPILED else _match_request
simple_response = _scan_response if COMPILED else _match_response
