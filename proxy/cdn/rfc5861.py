"""Pure RFC 5861 decisions: may a stale stored response be served while it is revalidated in the
background (stale-while-revalidate), or instead of an origin error (stale-if-error)?

No IO and no clock: callers pass the stored response's fields, the request's fields and how long
the response has been stale (current age minus freshness lifetime, RFC 9111 4.2).

RFC 9111 4.2.4 forbids serving stale when an in-protocol directive prohibits it; for a shared
cache these are the response's `no-cache`, `must-revalidate`, `proxy-revalidate` and `s-maxage`
(which implies proxy-revalidate, 5.2.2.10). They win over both RFC 5861 extensions here.
"""

from __future__ import annotations

from proxy.cdn.rfc9111 import delta_seconds, parse_cache_control

__all__ = ["ERROR_STATUSES", "PROHIBITING", "serve_stale_on_error", "serve_while_revalidate"]

Headers = list[tuple[bytes, bytes]]

# RFC 5861 4: an "error" is anything that would give the client one of these statuses.
ERROR_STATUSES = frozenset({500, 502, 503, 504})
# Response directives that forbid a shared cache to serve the response stale (RFC 9111 4.2.4).
PROHIBITING = (b"no-cache", b"must-revalidate", b"proxy-revalidate", b"s-maxage")


def _window(cc: dict[bytes, bytes | None], name: bytes) -> int | None:
    if name not in cc:
        return None
    return delta_seconds(cc[name])  # an invalid value grants nothing


def _prohibited(resp_cc: dict[bytes, bytes | None]) -> bool:
    return any(d in resp_cc for d in PROHIBITING)


def serve_while_revalidate(response_headers: Headers, request_headers: Headers, staleness: float) -> bool:
    """RFC 5861 3: the stored response's `stale-while-revalidate=N` lets it be served while it
    is stale by at most N seconds, the cache revalidating it in the background. Not for a fresh
    response (nothing to do), not when a directive prohibits stale, not when the client asked
    for a validated answer (`no-cache` or `max-age=0` in the request)."""
    if staleness <= 0:
        return False
    resp_cc = parse_cache_control(response_headers)
    if _prohibited(resp_cc):
        return False
    req_cc = parse_cache_control(request_headers)
    if b"no-cache" in req_cc or (b"max-age" in req_cc and delta_seconds(req_cc[b"max-age"]) == 0):
        return False
    window = _window(resp_cc, b"stale-while-revalidate")
    return window is not None and staleness <= window


def serve_stale_on_error(response_headers: Headers, request_headers: Headers, staleness: float,
                         *, unreachable: bool) -> str | None:
    """What to do with a stale stored response when revalidating it failed: the Cache-Status
    detail to serve it stale with, or None to give the client the error.

    `unreachable` is True when the origin gave no usable response (connect refused, timeout,
    broken response) and False when it answered with a 500, 502, 503 or 504.

    * a prohibiting response directive (RFC 9111 4.2.4) always gives the error;
    * `stale-if-error=N` in the response or the request (RFC 5861 4; the request's applies to
      that request only) allows it while stale by at most N seconds: "stale-if-error";
    * when one is given but the response is staler than every window, the error is given: the
      origin (or client) bounded how stale an answer may be;
    * without any, an unreachable origin still gets the stale object (the cache is
      disconnected, RFC 9111 4.2.4): "origin-unreachable"; an origin's 5xx is passed on.
    """
    resp_cc = parse_cache_control(response_headers)
    if _prohibited(resp_cc):
        return None
    req_cc = parse_cache_control(request_headers)
    windows = [w for w in (_window(resp_cc, b"stale-if-error"), _window(req_cc, b"stale-if-error"))
               if w is not None]
    given = b"stale-if-error" in resp_cc or b"stale-if-error" in req_cc
    if any(staleness <= w for w in windows):
        return "stale-if-error"
    if given:
        return None
    return "origin-unreachable" if unreachable else None
