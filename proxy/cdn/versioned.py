"""Versioned URLs: a path carrying a content hash (e.g. `/static/app.3f9a1c2e.js`) names content
that never changes, so the cdn stores it for a long time and tells clients `immutable`
(RFC 8246). The operator gives the pattern (`cache.versioned_pattern`, a regular expression
searched in the path, without the query).

Pure: the engine asks `is_versioned` and rewrites the stored response's fields with
`immutable_headers`.
"""

from __future__ import annotations

import re

__all__ = ["compile_pattern", "immutable_headers", "is_versioned"]

Headers = list[tuple[bytes, bytes]]


def compile_pattern(pattern: str | None) -> re.Pattern[bytes] | None:
    """The configured pattern, compiled for request targets (bytes); re.error when invalid."""
    return None if pattern is None else re.compile(pattern.encode("utf-8"))


def is_versioned(target: bytes, pattern: re.Pattern[bytes] | None) -> bool:
    """Does the request target's path (the query is not looked at) match the pattern?"""
    if pattern is None:
        return False
    return pattern.search(target.split(b"?", 1)[0]) is not None


def immutable_headers(headers: Headers, ttl: int) -> Headers:
    """The response's fields with one Cache-Control `public, max-age=TTL, immutable` in place of
    the origin's, and no Expires (max-age would override it anyway, RFC 9111 5.3)."""
    kept = [(n, v) for n, v in headers if n not in (b"cache-control", b"expires")]
    return [*kept, (b"cache-control", b"public, max-age=%d, immutable" % ttl)]
