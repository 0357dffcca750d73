"""The RFC 9211 Cache-Status field value this cache adds to every response it answers."""

from __future__ import annotations

__all__ = ["FWD_REASONS", "cache_status"]

# RFC 9211 2.2: the fwd parameter's registered values.
FWD_REASONS = frozenset({"bypass", "method", "uri-miss", "vary-miss", "miss", "request", "stale", "partial"})


def _sf_string(value: str) -> str:
    """A structured-field string (RFC 8941 3.3.3): printable ASCII, quotes and backslashes escaped."""
    clean = "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in value)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cache_status(name: str = "tierproxy", *, hit: bool = False, fwd: str | None = None,
                 fwd_status: int | None = None, ttl: float | None = None, stored: bool = False,
                 collapsed: bool = False, detail: str | None = None) -> bytes:
    """One Cache-Status list member: `name; hit; ttl=12` or `name; fwd=miss; stored`, and so on.

    `ttl` is the remaining freshness in whole seconds (negative once stale, RFC 9211 2.5);
    `detail` is free text, sent as a string.
    """
    if fwd is not None and fwd not in FWD_REASONS:
        raise ValueError(f"fwd={fwd!r} is not an RFC 9211 value")
    parts = [name]
    if hit:
        parts.append("hit")
    if fwd is not None:
        parts.append(f"fwd={fwd}")
    if fwd_status is not None:
        parts.append(f"fwd-status={int(fwd_status)}")
    if ttl is not None:
        parts.append(f"ttl={int(ttl // 1) if ttl >= 0 else -int(-ttl // 1)}")
    if stored:
        parts.append("stored")
    if collapsed:
        parts.append("collapsed")
    if detail:
        parts.append(f"detail={_sf_string(detail)}")
    return "; ".join(parts).encode("ascii")
