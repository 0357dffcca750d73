"""What a cache hit needs from a stored object, computed once when it is stored rather than on
every hit: the corrected initial age (RFC 9111 4.2.3), whether its Cache-Control says no-cache,
the field names its Vary lists, and its response head serialised up to where Age and
Cache-Status go.

A hit then costs a key lookup, a freshness check on numbers and one bytes formatting
(`hit_wire`). Pure functions, no IO and no clock; an object's stored fields and body never
change once it is stored (a revalidation stores a new object), so neither does its `HitInfo`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxy.cdn.rfc9111 import initial_age, parse_cache_control, vary_names
from proxy.http1 import write_response_head

__all__ = ["HitInfo", "hit_format", "hit_info", "hit_wire", "plain_request"]


@dataclass(frozen=True, slots=True)
class HitInfo:
    initial_age: float  # corrected_initial_age: the age is this plus the time resident here
    no_cache: bool  # the stored Cache-Control has no-cache: every use is revalidated
    vary: tuple[bytes, ...] | None  # `vary_names` (None: Vary: *)
    prefix: bytes  # status line and the fields sent to clients, less Age, without the empty line
    length: bytes  # the Content-Length line, which follows Age and Cache-Status, and the empty line


def hit_info(status: int, headers: list[tuple[bytes, bytes]], body_length: int, request_time: float,
             response_time: float, not_to_client: Iterable[bytes]) -> HitInfo:
    """`not_to_client`: fields kept in the store but never sent (framing, surrogate keys)."""
    drop = {b"age", *not_to_client}
    sent = [(n, v) for n, v in headers if n not in drop]
    head = write_response_head(status, sent)  # validates every field: no CR or LF inside
    return HitInfo(initial_age(headers, request_time, response_time), b"no-cache" in parse_cache_control(headers),
                   vary_names(headers), head[:-2], b"content-length: %d\r\n\r\n" % body_length)


def hit_format(hit_status: bytes) -> bytes:
    """`hit_wire`'s format for a cache whose Cache-Status for a hit is `hit_status` ("<name>; hit")."""
    return b"%sage: %d\r\ncache-status: " + hit_status.replace(b"%", b"%%") + b"; ttl=%d\r\n%s"


def hit_wire(info: HitInfo, age: float, ttl: float, fmt: bytes) -> bytes:
    """The whole response head for a hit (`fmt`: `hit_format`'s), with its final empty line (a
    client side closing the connection puts its "connection: close" line before that): the same
    bytes as the stored fields less Age, then Age, Cache-Status (ttl > 0: "%d" truncates, the
    floor `cache_status` gives) and Content-Length, in one formatting."""
    return fmt % (info.prefix, age, ttl, info.length)


# Request fields that make a hit more than a plain hit: its own Cache-Control (no-store,
# no-cache, stale-while-revalidate limits), validators and ranges (304, 206, 416).
_NOT_PLAIN = (b"\ncache-control:", b"\nif-", b"\nrange:")
_NOT_PLAIN_NAMES = frozenset({b"cache-control", b"if-none-match", b"if-modified-since", b"if-match",
                              b"if-unmodified-since", b"if-range", b"range"})


def plain_request(raw_fields: bytes | None, headers: list[tuple[bytes, bytes]] | None) -> bool:
    """True when the request has none of the fields above, from the simple parser's unparsed
    field lines (`raw_fields`: each "name: value\\r\\n", no space before a colon) when it left
    them so, else from the parsed `headers`."""
    if raw_fields is not None:
        low = b"\n" + raw_fields.lower()
        # find(), not `in`: bytes.__contains__ tries its argument as an int first and raises
        # (and clears) a TypeError for a bytes one, some 1.8k instructions each time.
        return low.find(_NOT_PLAIN[0]) < 0 and low.find(_NOT_PLAIN[1]) < 0 and low.find(_NOT_PLAIN[2]) < 0
    return not any(n in _NOT_PLAIN_NAMES for n, _ in headers or ())
