"""Surrogate keys: the group names an origin gives a response so that a whole group can be purged
at once (Fastly's `Surrogate-Key`, space-separated; Cloudflare's `Cache-Tag`, comma-separated).

Pure: the store indexes the names `surrogate_keys` returns; the engine drops these fields from
what it sends to clients (they are for the cache, as with Fastly and Cloudflare).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["SURROGATE_FIELDS", "surrogate_keys"]

# The response fields holding surrogate keys, with each one's separator (None: any whitespace).
SURROGATE_FIELDS: dict[bytes, bytes | None] = {b"surrogate-key": None, b"cache-tag": b","}


def surrogate_keys(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Every key named by the response's Surrogate-Key and Cache-Tag fields (all lines), exact
    bytes, empty names dropped."""
    out: set[bytes] = set()
    for name, value in headers:
        if name not in SURROGATE_FIELDS:
            continue
        sep = SURROGATE_FIELDS[name]
        parts = value.split() if sep is None else value.split(sep)
        out.update(p.strip() for p in parts if p.strip())
    return frozenset(out)
