"""Bytes out: request/response heads, chunk framing and small complete responses.

Heads are joined in one ``b"".join`` over a flat list. Values are not escaped; instead one
pass of ``bytes.count`` checks that no CR or LF slipped into a name or value (header injection),
which costs far less than validating each field in Python.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

__all__ = [
    "REASONS",
    "LAST_CHUNK",
    "write_request_head",
    "write_response_head",
    "encode_chunk",
    "simple_response",
]

# RFC 9110 15: reason phrases are optional and ignored by clients; we send the registered ones.
REASONS: dict[int, bytes] = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}

# RFC 9112 7.1: last-chunk = 1*("0") [ chunk-ext ] CRLF, then an empty trailer section and CRLF.
LAST_CHUNK = b"0\r\n\r\n"

# RFC 9110 8.6 / 6.4.1: these responses never carry content, nor (1xx, 204) a Content-Length.
_NO_CONTENT = frozenset({204, 304})


def _join_head(parts: list[bytes], headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    count = 2  # the start line's CRLF and the final empty line
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
        count += 1
    parts.append(b"\r\n")
    head = b"".join(parts)
    # Every CR and LF must be one of ours; anything else means a field smuggles a line.
    if head.count(b"\n") != count or head.count(b"\r") != count:
        raise ValueError("CR or LF inside a start-line element or header field")
    return head


def write_request_head(
    method: bytes,
    target: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    version: bytes = b"1.1",
) -> bytes:
    """RFC 9112 3: request-line = method SP request-target SP HTTP-version, then field lines."""
    return _join_head([method, b" ", target, b" HTTP/", version, b"\r\n"], headers)


def write_response_head(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    reason: bytes | None = None,
    version: bytes = b"1.1",
) -> bytes:
    """RFC 9112 4: status-line = HTTP-version SP status-code SP [ reason-phrase ]."""
    if not 100 <= status <= 999:
        raise ValueError(f"invalid status code {status}")
    if reason is None:
        reason = REASONS.get(status, b"")
    return _join_head([b"HTTP/", version, b" %d " % status, reason, b"\r\n"], headers)


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 7.1). Empty data gives b"": the last chunk is
    LAST_CHUNK, written deliberately, never by accident."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


def simple_response(
    status: int,
    body: bytes = b"",
    headers: Iterable[tuple[bytes, bytes]] = (),
    close: bool = False,
) -> bytes:
    """A complete response, for errors and the admin endpoints.

    Adds ``content-type: text/plain; charset=utf-8`` unless `headers` has one, and always computes
    ``content-length`` (given content-length / transfer-encoding headers are dropped so the framing
    cannot disagree with the body). 1xx/204/304 get no body and no Content-Length.
    """
    out: list[tuple[bytes, bytes]] = []
    has_type = False
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-length" or lname == b"transfer-encoding":
            continue
        if lname == b"content-type":
            has_type = True
        out.append((name, value))
    if status < 200 or status in _NO_CONTENT:
        if body:
            raise ValueError(f"a {status} response cannot have a body")
    else:
        if not has_type:
            out.append((b"content-type", b"text/plain; charset=utf-8"))
        out.append((b"content-length", b"%d" % len(body)))
    if close:
        out.append((b"connection", b"close"))
    return write_response_head(status, out) + body
