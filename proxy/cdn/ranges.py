"""Range requests answered from a stored full object (RFC 9110 14): pure.

One byte range per request; a request with several ranges gets the whole object (a server may
ignore Range, RFC 9110 14.2), as does an invalid Range header or a failed If-Range.
"""

from __future__ import annotations

__all__ = ["UNSATISFIABLE", "byte_range", "if_range_ok"]

UNSATISFIABLE = (-1, -1)


def byte_range(value: bytes | None, length: int) -> tuple[int, int] | None:
    """(first, last) inclusive for a single `bytes=` range over `length` bytes, UNSATISFIABLE
    when no byte of it exists (416), None when the header is absent, invalid or multi-range."""
    if value is None:
        return None
    unit, eq, spec = value.partition(b"=")
    if not eq or unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition(b"-")
    if not dash:
        return None
    if not first_s:  # suffix range: the last N bytes
        if not last_s.isdigit():
            return None
        n = int(last_s)
        if n == 0 or length == 0:
            return UNSATISFIABLE
        return max(0, length - n), length - 1
    if not first_s.isdigit() or (last_s and not last_s.isdigit()):
        return None
    first = int(first_s)
    last = int(last_s) if last_s else max(first, length - 1)
    if last < first:
        return None
    if first >= length:
        return UNSATISFIABLE
    return first, min(last, length - 1)


def if_range_ok(if_range: bytes | None, etag: bytes | None, last_modified: bytes | None) -> bool:
    """If-Range (RFC 9110 13.1.5): absent, or a strong ETag equal to the stored one, or a date
    equal to the stored Last-Modified."""
    if if_range is None:
        return True
    if if_range.startswith(b'"'):
        return etag is not None and not etag.startswith(b"W/") and etag == if_range
    return last_modified is not None and last_modified == if_range
