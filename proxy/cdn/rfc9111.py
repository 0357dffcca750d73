"""Pure RFC 9111 decisions for a shared cache: may a response be stored, how long it is fresh,
how old it is, which request fields select it (Vary), how to revalidate it and how a 304 updates it.

No IO and no clock: every function takes the times it needs. Header lists are the HTTP/1.1
codec's form (proxy/http1): ``list[tuple[bytes, bytes]]``, names lowercase.
"""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import Iterable
from dataclasses import dataclass

from proxy.http1.headers import HOP_BY_HOP, get_header, split_tokens

__all__ = [
    "DELTA_MAX",
    "HEURISTIC_STATUSES",
    "Directives",
    "Decision",
    "parse_cache_control",
    "parse_http_date",
    "storable",
    "stored_headers",
    "freshness_lifetime",
    "initial_age",
    "current_age",
    "vary_names",
    "vary_key_for",
    "vary_key",
    "conditional_headers",
    "merge_304",
]

Headers = list[tuple[bytes, bytes]]

# RFC 9111 1.2.2: a delta-seconds too large to represent is taken as 2^31.
DELTA_MAX = 2147483648
# RFC 9110 15.1: status codes that are heuristically cacheable.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
# Methods this cache stores responses to (HEAD is answered from a stored GET).
CACHEABLE_METHODS = frozenset({b"GET"})

Directives = dict[bytes, bytes | None]


def _split_directives(value: bytes) -> list[bytes]:
    """Split a Cache-Control value on commas outside quoted strings."""
    out, cur, quoted, i = [], bytearray(), False, 0
    while i < len(value):
        c = value[i:i + 1]
        if c == b'"':
            quoted = not quoted
        elif c == b"\\" and quoted and i + 1 < len(value):
            cur += value[i:i + 2]
            i += 2
            continue
        elif c == b"," and not quoted:
            out.append(bytes(cur))
            cur = bytearray()
            i += 1
            continue
        cur += c
        i += 1
    out.append(bytes(cur))
    return out


def parse_cache_control(headers: Iterable[tuple[bytes, bytes]]) -> Directives:
    """Every Cache-Control directive, names lowercased, values unquoted (None without '=').

    RFC 9111 4.2.1: with a directive given twice the first occurrence is used.
    """
    out: Directives = {}
    for name, value in headers:
        if name != b"cache-control":
            continue
        for part in _split_directives(value):
            part = part.strip(b" \t")
            if not part:
                continue
            key, eq, arg = part.partition(b"=")
            key = key.strip(b" \t").lower()
            if not key or key in out:
                continue
            if not eq:
                out[key] = None
                continue
            arg = arg.strip(b" \t")
            if len(arg) >= 2 and arg[:1] == b'"' and arg[-1:] == b'"':
                arg = arg[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
            out[key] = arg
    return out


def delta_seconds(value: bytes | None) -> int | None:
    """RFC 9111 1.2.2 delta-seconds: digits only; too large -> 2^31; anything else None."""
    if value is None or not value or not value.isdigit():
        return None
    return min(int(value), DELTA_MAX)


def parse_http_date(value: bytes | None) -> float | None:
    """An HTTP-date (RFC 9110 5.6.7, the three formats) as a POSIX time, None when invalid."""
    if not value:
        return None
    try:
        dt = email.utils.parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    if dt.tzinfo is None:  # RFC 850 / asctime forms carry no zone: they are GMT.
        return dt.replace(tzinfo=datetime.timezone.utc).timestamp()
    return dt.timestamp()


def _field_names(arg: bytes | None) -> set[bytes]:
    return set(split_tokens(arg)) if arg else set()


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a response may be stored, and the reason (a token for Cache-Status `detail`)."""

    store: bool
    reason: str


def storable(method: bytes, request_headers: Headers, status: int, response_headers: Headers,
             *, heuristic_ok: bool = True) -> Decision:
    """RFC 9111 section 3 for a shared cache, plus this cache's rule for Set-Cookie.

    Set-Cookie: a response carrying one is stored only when Cache-Control explicitly lets a
    shared cache drop that field (`private="set-cookie"` or `no-cache="set-cookie"`, RFC 9111
    5.2.2.4 and 5.2.2.7); `stored_headers` then leaves it out.
    """
    if method not in CACHEABLE_METHODS:
        return Decision(False, "method")
    req_cc = parse_cache_control(request_headers)
    if b"no-store" in req_cc:
        return Decision(False, "request-no-store")
    if status < 200 or status in (206, 304) or status >= 600:
        # 206 and 304 are never stored as new entries here (partial content is not combined).
        return Decision(False, "status")
    cc = parse_cache_control(response_headers)
    if b"no-store" in cc:
        return Decision(False, "no-store")
    if b"private" in cc and cc[b"private"] is None:
        return Decision(False, "private")
    if get_header(request_headers, b"authorization") is not None and not (
        b"public" in cc or b"s-maxage" in cc or b"must-revalidate" in cc
    ):
        return Decision(False, "authorization")
    if get_header(response_headers, b"set-cookie") is not None:
        allowed = _field_names(cc.get(b"private")) | _field_names(cc.get(b"no-cache"))
        if b"set-cookie" not in allowed:
            return Decision(False, "set-cookie")
    if b"*" in split_tokens(_all_values(response_headers, b"vary")):
        return Decision(False, "vary-star")
    if (
        b"public" in cc
        or b"s-maxage" in cc
        or b"max-age" in cc
        or get_header(response_headers, b"expires") is not None
        or (heuristic_ok and status in HEURISTIC_STATUSES)
    ):
        return Decision(True, "stored")
    return Decision(False, "no-freshness")


def _all_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes:
    return b", ".join(v for n, v in headers if n == name)


def stored_headers(response_headers: Headers) -> Headers:
    """The header fields kept in the cache: no hop-by-hop fields, none a qualified `private` or
    `no-cache` names (RFC 9111 5.2.2.4, 5.2.2.7), never Set-Cookie."""
    cc = parse_cache_control(response_headers)
    drop = set(HOP_BY_HOP) | {b"set-cookie"}
    drop |= _field_names(cc.get(b"private")) | _field_names(cc.get(b"no-cache"))
    return [(n, v) for n, v in response_headers if n not in drop]


def freshness_lifetime(response_headers: Headers, status: int, *, heuristic_fraction: float = 0.1,
                       heuristic_max: float = 86400.0) -> float:
    """RFC 9111 4.2.1 for a shared cache: s-maxage, else max-age, else Expires - Date, else a
    heuristic (4.2.2) only where no explicit expiration is given and the status is heuristically
    cacheable or the response is `public`: a fraction of (Date - Last-Modified), capped.
    Invalid values make the response stale (lifetime 0)."""
    cc = parse_cache_control(response_headers)
    if b"s-maxage" in cc:
        d = delta_seconds(cc[b"s-maxage"])
        return float(d) if d is not None else 0.0
    if b"max-age" in cc:
        d = delta_seconds(cc[b"max-age"])
        return float(d) if d is not None else 0.0
    expires_raw = get_header(response_headers, b"expires")
    if expires_raw is not None:
        expires = parse_http_date(expires_raw)
        date = parse_http_date(get_header(response_headers, b"date"))
        if expires is None or date is None:
            return 0.0
        return max(0.0, expires - date)
    if status not in HEURISTIC_STATUSES and b"public" not in cc:
        return 0.0
    last_modified = parse_http_date(get_header(response_headers, b"last-modified"))
    date = parse_http_date(get_header(response_headers, b"date"))
    if last_modified is None or date is None or date <= last_modified:
        return 0.0
    return min(heuristic_max, (date - last_modified) * heuristic_fraction)


def initial_age(response_headers: Headers, request_time: float, response_time: float) -> float:
    """RFC 9111 4.2.3's corrected_initial_age: how old the response was when it arrived (from
    its Date and Age fields and the request's round trip). Fixed once stored: a hit adds only the
    time resident in this cache (`current_age`)."""
    date = parse_http_date(get_header(response_headers, b"date"))
    age_value = delta_seconds(get_header(response_headers, b"age")) or 0
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = age_value + response_delay
    return max(apparent_age, corrected_age_value)


def current_age(response_headers: Headers, request_time: float, response_time: float, now: float) -> float:
    """RFC 9111 4.2.3: corrected initial age plus the time resident in this cache."""
    return initial_age(response_headers, request_time, response_time) + max(0.0, now - response_time)


def _normalise(value: bytes) -> bytes:
    return b" ".join(value.split())


def vary_names(response_headers: Headers) -> tuple[bytes, ...] | None:
    """The field names a response's Vary lists (sorted, each once; lowercase as the codec gives
    them), None for `Vary: *`: what `vary_key_for` needs, fixed once the response is stored."""
    names = split_tokens(_all_values(response_headers, b"vary"))
    if b"*" in names:
        return None
    return tuple(sorted(set(names)))


def vary_key_for(names: tuple[bytes, ...] | None,
                 request_headers: Headers) -> tuple[tuple[bytes, bytes | None], ...] | None:
    """`vary_key` from a response's `vary_names`."""
    if names is None:
        return None
    out = []
    for name in names:
        present = [v for n, v in request_headers if n == name]
        out.append((name, _normalise(b", ".join(present)) if present else None))
    return tuple(out)


def vary_key(response_headers: Headers, request_headers: Headers) -> tuple[tuple[bytes, bytes | None], ...] | None:
    """The secondary key (RFC 9111 4.1): each field Vary names with the request's value
    (all lines joined, whitespace normalised; None when absent). None for `Vary: *`, which
    matches no later request."""
    return vary_key_for(vary_names(response_headers), request_headers)


def conditional_headers(stored: Headers) -> Headers:
    """Validators for revalidating a stored response (RFC 9111 4.3.1): If-None-Match from its
    ETag, If-Modified-Since from its Last-Modified."""
    out: Headers = []
    etag = get_header(stored, b"etag")
    if etag is not None:
        out.append((b"if-none-match", etag))
    last_modified = get_header(stored, b"last-modified")
    if last_modified is not None:
        out.append((b"if-modified-since", last_modified))
    return out


def merge_304(stored: Headers, not_modified: Headers) -> Headers | None:
    """Freshen a stored response with a 304's fields (RFC 9111 4.3.4): every field the 304
    carries replaces the stored ones of that name, except Content-Length and hop-by-hop fields.
    None when the 304 carries a strong ETag other than the stored one (it does not select
    this response: the caller fetches it anew)."""
    new_etag = get_header(not_modified, b"etag")
    old_etag = get_header(stored, b"etag")
    if new_etag is not None and not new_etag.startswith(b"W/") and old_etag != new_etag:
        return None
    skip = set(HOP_BY_HOP) | {b"content-length", b"set-cookie"}
    update = [(n, v) for n, v in not_modified if n not in skip]
    names = {n for n, _ in update}
    return [(n, v) for n, v in stored if n not in names] + update
