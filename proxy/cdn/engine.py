"""The cdn's request path: look up, serve fresh hits, revalidate stale objects, coalesce misses,
fetch from the origin pool, store what RFC 9111 allows, serve stale while revalidating in the
background or when the origin fails or is down (RFC 5861, RFC 9111 4.2.4).

Origin bodies are streamed: a storable response within cache.max_object_bytes becomes a fill
(fill.py) that its client and coalesced clients read as it grows and that is stored at its end;
anything else is passed through to its one client as it arrives (`_passthrough`).

Decisions come from rfc9111.py, rfc5861.py and cachestatus.py; bytes move in origin.py and server.py. One
engine per daemon process, owned by its event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.cdn.cachestatus import cache_status
from proxy.cdn.config import CdnConfig
from proxy.cdn.fill import Fill
from proxy.cdn.hit import HitInfo, hit_format, hit_info, hit_wire, plain_request
from proxy.cdn.origin import OriginError, fetch
from proxy.cdn.origin import OriginResponse as StreamedResponse
from proxy.cdn.originpool import OriginPool
from proxy.cdn.ranges import UNSATISFIABLE, byte_range, if_range_ok
from proxy.cdn.rfc5861 import (
    ERROR_STATUSES,
    serve_stale_on_error,
    serve_while_revalidate,
)
from proxy.cdn.rfc9111 import (
    Decision,
    conditional_headers,
    current_age,
    freshness_lifetime,
    merge_304,
    parse_cache_control,
    parse_http_date,
    storable,
    stored_headers,
    vary_key,
    vary_key_for,
)
from proxy.cdn.store import Entry, Store
from proxy.cdn.surrogate import SURROGATE_FIELDS
from proxy.cdn.trace import TraceRecorder
from proxy.cdn.versioned import compile_pattern, immutable_headers, is_versioned
from proxy.core.metrics import Histogram
from proxy.http1 import RequestHead, get_header, strip_hop_by_hop

__all__ = ["Answer", "Engine"]

log = logging.getLogger("tierproxy.cdn")

# Client validators and ranges are evaluated here, against the full object; never forwarded.
_NOT_FORWARDED = frozenset({b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since",
                            b"if-range", b"range", b"content-length", b"host"})
# Recomputed by _finish; surrogate keys are kept in the store but not sent on.
_NOT_TO_CLIENT = frozenset({b"content-length", b"transfer-encoding", *SURROGATE_FIELDS})
# Requests answered from a whole object (validators, ranges), not from a fill as it arrives.
_SPECIAL = frozenset({b"if-none-match", b"if-modified-since", b"range", b"if-range"})


@dataclass(slots=True)
class Answer:
    """An answer for the client: `body`, or with `stream` set, a body sent as it comes (an object
    with `async next_chunk() -> bytes`, b"" at the end, and `close()`), `length` bytes long when
    known (else chunked). A plain hit comes with its whole head already serialised in `wire`
    (`headers` then unused)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    stream: Any = None
    length: int | None = None
    wire: bytes | None = None


@dataclass(slots=True)
class Filling:
    """A storable origin response being filled: the fill and what its stored entry will hold."""

    fill: Fill
    status: int
    headers: list[tuple[bytes, bytes]]
    t_req: float
    t_resp: float
    lifetime: float
    secondary: Any
    length: int | None
    entry: Entry | None = None  # set when the fill ended within the limit
    task: asyncio.Task[None] | None = None


def _etag_match(client: bytes, etag: bytes | None) -> bool:
    """If-None-Match's weak comparison (RFC 9110 13.1.2)."""
    if etag is None:
        return False
    if client.strip() == b"*":
        return True
    bare = etag.removeprefix(b"W/")
    return any(t.strip().removeprefix(b"W/") == bare for t in client.split(b","))


class Engine:
    def __init__(self, cfg: CdnConfig, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.origins = OriginPool(cfg.origin_servers, cfg.origin.health, cfg.origin.max_idle)
        self.store = Store(cfg.cache.max_bytes, cfg.cache.policy, cfg.cache.max_object_bytes)
        # Misses being fetched, by primary key: the leader's response head and fill (None: not shared).
        self._inflight: dict[bytes, asyncio.Future[tuple[Any, Filling | None]]] = {}
        # Revalidations in progress, one per stored key: a stale-while-revalidate answer starts
        # one in the background only when none runs; synchronous revalidations join it.
        self._refreshing: dict[Any, asyncio.Task[Answer]] = {}
        self.counters = {"requests": 0, "hits": 0, "misses": 0, "stale_served": 0, "stale_while_revalidate": 0,
                         "stale_if_error": 0, "background_revalidations": 0, "revalidated": 0, "coalesced": 0,
                         "origin_requests": 0, "origin_errors": 0, "not_stored": 0, "passes": 0}
        self.origin_latency = Histogram()
        self._versioned = compile_pattern(cfg.cache.versioned_pattern)
        self._hit_format = hit_format(cache_status(cfg.cache.name, hit=True))
        # A key trace for `tierproxy cdn whatif` (proxy/cdn/trace.py), when one is being recorded.
        self.trace: TraceRecorder | None = None
        self.evictions_before: dict[str, int] = {}  # by policy, of stores replaced on reload

    def apply(self, cfg: CdnConfig) -> None:
        """A reloaded config: new origins and limits; the store is rebuilt only if its policy changed."""
        c = cfg.cache
        if c.policy != self.store.policy:
            # The old store's evictions stay counted under its policy (/metrics by policy).
            old = self.store.status()
            self.evictions_before[old["policy"]] = self.evictions_before.get(old["policy"], 0) + old["evictions"]
            self.store = Store(c.max_bytes, c.policy, c.max_object_bytes)
        else:
            self.store.resize(c.max_bytes, c.max_object_bytes)
        self._versioned = compile_pattern(c.versioned_pattern)
        self._hit_format = hit_format(cache_status(c.name, hit=True))
        self.origins.apply(cfg.origin_servers, cfg.origin.health, cfg.origin.max_idle)
        self.cfg = cfg

    # -- origin ------------------------------------------------------------------------------

    async def _origin(self, method: bytes, head: RequestHead, extra: list[tuple[bytes, bytes]],
                      body: bytes = b"") -> tuple[StreamedResponse, float, float]:
        """Send the request to the origin pool; the response once its head is in (its body is
        read as it arrives: `next_chunk`)."""
        headers = [(n, v) for n, v in strip_hop_by_hop(head.fields()) if n not in _NOT_FORWARDED]
        headers.insert(0, (b"host", head.host or get_header(head.fields(), b"host") or b"localhost"))
        headers += extra
        self.counters["origin_requests"] += 1
        request_time = self.clock()
        t0 = time.monotonic()
        try:
            resp = await fetch(self.origins, method, head.target, headers, self.cfg.origin_connect_timeout,
                               self.cfg.origin_timeout, body)
        except OriginError:
            self.counters["origin_errors"] += 1
            raise
        self.origin_latency.observe(time.monotonic() - t0)
        return resp, request_time, self.clock()

    async def _read_all(self, resp: StreamedResponse) -> bytes:
        try:
            return await resp.read_all()
        except OriginError:
            self.counters["origin_errors"] += 1
            raise

    # -- entry points ------------------------------------------------------------------------

    def quick(self, head: RequestHead) -> tuple[int, bytes, bytes] | None:
        """The answer to a GET or HEAD that is a fresh plain hit, without waiting for anything
        (the client side calls this first, synchronously, for every request, and `handle` for
        those it returns None for): (status, whole head, body); counted in `requests`."""
        method = head.method
        if (method != b"GET" and method != b"HEAD") or not plain_request(head.raw_fields, head.headers):
            return None
        host = (head.host or get_header(head.fields(), b"host") or b"").lower()
        answer = self._plain_hit(head, host + b" " + head.target)
        if answer is not None:
            self.counters["requests"] += 1
        return answer

    async def handle(self, head: RequestHead, body: bytes = b"", quick_tried: bool = False) -> Answer:
        """Any request. `quick_tried`: `quick` already found it no plain hit (not tried again)."""
        method = head.method
        if method not in (b"GET", b"HEAD"):
            return await self._pass(head, body, "method")
        host = (head.host or get_header(head.fields(), b"host") or b"").lower()
        primary = host + b" " + head.target
        if not quick_tried and plain_request(head.raw_fields, head.headers):
            hit = self._plain_hit(head, primary)
            if hit is not None:
                return Answer(hit[0], [], hit[2], wire=hit[1])
        req = head.fields()
        req_cc = parse_cache_control(req)
        if b"no-store" in req_cc:
            return await self._pass(head, b"", "request-no-store", fwd="request")
        found = self._lookup(primary, req)
        if found is not None:
            key, entry = found
            if self.trace is not None:
                self.trace.record(key, entry.size)
            now = self.clock()
            age = current_age(entry.headers, entry.request_time, entry.response_time, now)
            ttl = entry.lifetime - age
            resp_cc = parse_cache_control(entry.headers)
            must_check = entry.stale or b"no-cache" in resp_cc or b"no-cache" in req_cc
            if ttl > 0 and not must_check:
                self.counters["hits"] += 1
                entry.hits += 1
                self.store.get(key)
                return self._from_entry(head, entry, age, cache_status(self.cfg.cache.name, hit=True, ttl=ttl))
            if not must_check and serve_while_revalidate(entry.headers, req, -ttl):
                # RFC 5861 3: answer now from the stale object; one background revalidation per key.
                self.counters["stale_while_revalidate"] += 1
                self.store.get(key)
                if key not in self._refreshing:
                    self.counters["background_revalidations"] += 1
                    self._start_refresh(head, primary, key, entry, ttl)
                status = cache_status(self.cfg.cache.name, fwd="stale", ttl=ttl, detail="stale-while-revalidate")
                return self._from_entry(head, entry, age, status)
            running = self._refreshing.get(key)
            if running is not None and not running.done():
                # A revalidation of this object is under way: wait for it, then look again.
                try:
                    await asyncio.shield(running)
                except Exception:
                    pass  # logged by its done callback; this request revalidates for itself
                return await self.handle(head, body)
            return await self._revalidate(head, primary, key, entry, ttl)
        fwd = "vary-miss" if self.store.variants(primary) else "uri-miss"
        return await self._miss(head, primary, fwd)

    def _plain_hit(self, head: RequestHead, primary: bytes) -> tuple[int, bytes, bytes] | None:
        """A fresh hit for a request with no Cache-Control, validators or ranges (`plain_request`),
        answered from what was computed when the object was stored: (status, whole head, body);
        None: `handle` decides. The same answer, byte for byte, as `handle`'s general path gives."""
        store = self.store
        for secondary in store.variant_set(primary):
            key = (primary, secondary)
            entry = store.peek(key)
            if entry is None:
                continue
            hot = entry.hot or self._hot(entry)
            names = hot.vary
            if names:
                if vary_key_for(names, head.fields()) != secondary:
                    continue
            elif secondary != (() if names is not None else None):
                continue
            if entry.stale or hot.no_cache:
                return None
            resident = self.clock() - entry.response_time
            age = hot.initial_age + resident if resident > 0 else hot.initial_age  # max(0, ...) without the call
            ttl = entry.lifetime - age
            if ttl <= 0:
                return None
            if self.trace is not None:
                self.trace.record(key, entry.size)
            self.counters["hits"] += 1
            entry.hits += 1
            store.touch(key)
            return entry.status, hit_wire(hot, age, ttl, self._hit_format), b"" if head.method == b"HEAD" else entry.body
        return None

    @staticmethod
    def _hot(entry: Entry) -> HitInfo:
        hot = entry.hot = hit_info(entry.status, entry.headers, len(entry.body), entry.request_time,
                                   entry.response_time, _NOT_TO_CLIENT)
        return hot

    def _lookup(self, primary: bytes, req: list[tuple[bytes, bytes]]) -> tuple[Any, Entry] | None:
        for secondary in self.store.variants(primary):
            entry = self.store.peek((primary, secondary))
            if entry is not None and vary_key(entry.headers, req) == secondary:
                return (primary, secondary), entry
        return None

    async def _pass(self, head: RequestHead, body: bytes, reason: str, fwd: str = "method") -> Answer:
        self.counters["passes"] += 1
        try:
            resp, _, _ = await self._origin(head.method, head, [], body)
        except OriginError as exc:
            return self._error(exc, fwd)
        status = cache_status(self.cfg.cache.name, fwd=fwd, fwd_status=resp.head.status, detail=reason)
        return self._passthrough(resp, status)

    def _passthrough(self, resp: StreamedResponse, status: bytes) -> Answer:
        """The origin's response streamed to the client as it arrives, not stored."""
        headers = [(n, v) for n, v in strip_hop_by_hop(resp.head.headers) if n not in _NOT_TO_CLIENT]
        headers.append((b"cache-status", status))
        return Answer(resp.head.status, headers, b"", stream=resp, length=resp.head.content_length)

    def _error(self, exc: OriginError, fwd: str) -> Answer:
        status = cache_status(self.cfg.cache.name, fwd=fwd, detail=exc.reason)
        body = b"origin unavailable\n" if exc.status == 502 else b"origin timed out\n"
        return Answer(exc.status, [(b"content-type", b"text/plain"), (b"cache-status", status)], body)

    async def _miss(self, head: RequestHead, primary: bytes, fwd: str) -> Answer:
        """One origin GET per primary key at a time: a later miss joins the leader's fill and
        reads its body as it arrives (if the response may be shared with it)."""
        self.counters["misses"] += 1
        req = head.fields()
        fut = self._inflight.get(primary)
        if fut is not None:
            try:
                rhead, filling = await asyncio.shield(fut)
            except OriginError as exc:
                return self._error(exc, fwd)
            # The leader's response serves this request only if it may be shared and its Vary
            # selects this request too; otherwise this request goes to the origin itself.
            ok = self._decide(primary, req, rhead.status, rhead.headers)[0]
            if filling is None or not ok.store or vary_key(rhead.headers, req) != filling.secondary:
                reason = ok.reason if not ok.store else "too-large" if filling is None else "vary"
                return await self._pass(head, b"", "uncacheable-" + reason, fwd=fwd)
            self.counters["coalesced"] += 1
            return await self._answer_filling(head, filling, fwd, collapsed=True)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[primary] = fut
        try:
            resp, t_req, t_resp = await self._origin(b"GET", head, [])
        except BaseException as exc:
            self._inflight.pop(primary, None)
            fut.set_exception(exc)
            fut.exception()  # retrieved: followers may be none
            if isinstance(exc, OriginError):
                return self._error(exc, fwd)
            raise
        filling = self._start_fill(primary, req, resp, t_req, t_resp, fwd, fut)
        fut.set_result((resp.head, filling))
        if filling is None:
            self._inflight.pop(primary, None)
            return self._not_stored(primary, req, resp, fwd)
        return await self._answer_filling(head, filling, fwd)

    def _not_stored(self, primary: bytes, req: list, resp: StreamedResponse, fwd: str) -> Answer:
        decision = self._decide(primary, req, resp.head.status, resp.head.headers)[0]
        reason = decision.reason if not decision.store else "too-large"
        self.counters["not_stored"] += 1
        status = cache_status(self.cfg.cache.name, fwd=fwd, fwd_status=resp.head.status, detail=reason)
        return self._passthrough(resp, status)

    def _start_fill(self, primary: bytes, req: list, resp: StreamedResponse, t_req: float, t_resp: float,
                    fwd: str, fut: asyncio.Future | None = None) -> Filling | None:
        """A storable response within the per-object limit starts a fill (pumped by a task of its
        own, stored at its end); None: it is passed through (not storable, or its Content-Length
        is over cache.max_object_bytes)."""
        decision, headers = self._decide(primary, req, resp.head.status, resp.head.headers)
        length = resp.head.content_length
        if not decision.store or (length is not None and length > self.store.max_object_bytes):
            return None
        c = self.cfg.cache
        lifetime = freshness_lifetime(headers, resp.head.status,
                                      heuristic_fraction=c.heuristic_fraction, heuristic_max=c.heuristic_max)
        filling = Filling(Fill(self.store.max_object_bytes), resp.head.status, stored_headers(headers),
                          t_req, t_resp, lifetime, vary_key(headers, req), length)
        filling.task = asyncio.get_running_loop().create_task(self._pump(resp, filling, primary, fwd, fut))
        return filling

    async def _pump(self, resp: StreamedResponse, filling: Filling, primary: bytes, fwd: str,
                    fut: asyncio.Future | None) -> None:
        """Move the origin's body into the fill; store it at the end if it stayed within the limit."""
        fill = filling.fill
        try:
            while chunk := await resp.next_chunk():
                fill.feed(chunk)
                if not fill.keep:
                    if fut is not None and self._inflight.get(primary) is fut:
                        del self._inflight[primary]  # too large to share with later requests
                    if not fill.readers:
                        resp.abort()  # nobody reads it and it will not be stored
                        fill.fail(OriginError(502, "too-large"))
                        return
                    await fill.room()
        except BaseException as exc:
            if isinstance(exc, OriginError):
                self.counters["origin_errors"] += 1
            fill.fail(exc)
            if not isinstance(exc, (OriginError, asyncio.CancelledError)):
                raise
            return
        finally:
            if fut is not None and self._inflight.get(primary) is fut:
                del self._inflight[primary]
        fill.finish()
        if not fill.keep:
            self.counters["not_stored"] += 1
            return
        key = (primary, filling.secondary)
        entry = Entry(filling.status, filling.headers, fill.body(), filling.t_req, filling.t_resp,
                      filling.lifetime, vary=filling.secondary)
        self._hot(entry)  # what its hits need, computed once now
        filling.entry = entry
        existing = self.store.peek(key)
        if existing is not None and existing.response_time > filling.t_resp:
            return
        self.store.put(key, entry)  # when too large for the store it is served this once and not kept
        if self.trace is not None and fwd != "stale" and key in self.store:
            self.trace.record(key, entry.size)

    async def _answer_filling(self, head: RequestHead, filling: Filling, fwd: str, collapsed: bool = False) -> Answer:
        """A plain GET reads the fill as it arrives; HEAD, Range and conditional requests wait
        for the whole object and are answered from it like a hit."""
        fill = filling.fill
        age = current_age(filling.headers, filling.t_req, filling.t_resp, self.clock())
        status = cache_status(self.cfg.cache.name, fwd=fwd, fwd_status=filling.status, ttl=filling.lifetime - age,
                              stored=not collapsed, collapsed=collapsed)
        req = head.fields()
        if head.method == b"GET" and not any(n in _SPECIAL for n, _ in req):
            if fill.can_join():
                headers = [(n, v) for n, v in filling.headers if n not in _NOT_TO_CLIENT and n != b"age"]
                headers += [(b"age", b"%d" % int(age)), (b"cache-status", status)]
                return Answer(filling.status, headers, b"", stream=fill.reader(), length=filling.length)
        try:
            await fill.finished()
        except OriginError as exc:
            return self._error(exc, fwd)
        if filling.entry is None:  # it grew past the per-object limit: not kept
            return await self._pass(head, b"", "too-large", fwd=fwd)
        return self._from_entry(head, filling.entry, age, status)

    def _decide(self, primary: bytes, req: list, status: int, headers: list) -> tuple[Decision, list]:
        """RFC 9111's storable decision, and the fields to store. A 200 for a versioned path
        (cache.versioned_pattern) is stored even without explicit freshness, with Cache-Control
        `public, max-age=versioned_ttl, immutable`; every other reason not to store still holds."""
        decision = storable(b"GET", req, status, headers)
        if status == 200 and (decision.store or decision.reason == "no-freshness") and is_versioned(
                primary.partition(b" ")[2], self._versioned):
            return Decision(True, "stored"), immutable_headers(headers, self.cfg.cache.versioned_ttl)
        return decision, headers

    def _start_refresh(self, head: RequestHead, primary: bytes, key: Any, entry: Entry, ttl: float) -> None:
        task = asyncio.get_running_loop().create_task(self._revalidate(head, primary, key, entry, ttl, background=True))
        self._refreshing[key] = task

        def done(t: asyncio.Task[Answer]) -> None:
            if self._refreshing.get(key) is t:
                del self._refreshing[key]
            if not t.cancelled() and t.exception() is not None:
                log.error("background revalidation failed", exc_info=t.exception())

        task.add_done_callback(done)

    def _stale_answer(self, head: RequestHead, entry: Entry, ttl: float, detail: str,
                      fwd_status: int | None = None) -> Answer:
        self.counters["stale_served"] += 1
        if detail == "stale-if-error":
            self.counters["stale_if_error"] += 1
        age = current_age(entry.headers, entry.request_time, entry.response_time, self.clock())
        status = cache_status(self.cfg.cache.name, fwd="stale", fwd_status=fwd_status, ttl=ttl, detail=detail)
        return self._from_entry(head, entry, age, status)

    async def _revalidate(self, head: RequestHead, primary: bytes, key: Any, entry: Entry, ttl: float,
                          background: bool = False) -> Answer:
        """Revalidate a stored object and answer with the result. In the background (after a
        stale-while-revalidate answer) only the store's update matters: a failure keeps the
        stale object for the next request to decide on."""
        req = head.fields()
        try:
            resp, t_req, t_resp = await self._origin(b"GET", head, conditional_headers(entry.headers))
            body = None
            if resp.head.status == 304 or resp.head.status in ERROR_STATUSES:
                body = await self._read_all(resp)  # small; the connection goes back to the pool
        except OriginError as exc:
            if background:
                return self._error(exc, "stale")
            # RFC 5861 4 / RFC 9111 4.2.4: stale instead of the error, unless told not to.
            detail = serve_stale_on_error(entry.headers, req, -ttl, unreachable=True)
            if detail is None:
                return self._error(exc, "stale")
            if detail == "origin-unreachable" and exc.down:
                detail = "origin-down"  # the health checks marked every origin server down
            return self._stale_answer(head, entry, ttl, detail)
        if resp.head.status in ERROR_STATUSES and background:
            return Answer(resp.head.status, [], b"")  # the stale object stays; its next request decides
        if resp.head.status in ERROR_STATUSES:
            detail = serve_stale_on_error(entry.headers, req, -ttl, unreachable=False)
            if detail is not None:
                return self._stale_answer(head, entry, ttl, detail, fwd_status=resp.head.status)
        if resp.head.status == 304:
            merged = merge_304(entry.headers, resp.head.headers)
            if merged is not None and entry.status == 200 and is_versioned(primary.partition(b" ")[2], self._versioned):
                merged = immutable_headers(merged, self.cfg.cache.versioned_ttl)
            if merged is not None:
                self.counters["revalidated"] += 1
                c = self.cfg.cache
                lifetime = freshness_lifetime(merged, entry.status, heuristic_fraction=c.heuristic_fraction,
                                              heuristic_max=c.heuristic_max)
                fresh = Entry(entry.status, merged, entry.body, t_req, t_resp, lifetime, vary=entry.vary,
                              hits=entry.hits)
                self._hot(fresh)
                self.store.put(key, fresh)
                age = current_age(merged, t_req, t_resp, self.clock())
                status = cache_status(self.cfg.cache.name, fwd="stale", fwd_status=304, ttl=lifetime - age)
                return self._from_entry(head, fresh, age, status)
            self.store.remove(key)
            return await self._miss(head, primary, "stale")
        self.store.remove(key)
        if body is not None:  # an origin error passed on (not stored)
            reason = self._decide(primary, req, resp.head.status, resp.head.headers)[0].reason
            status = cache_status(self.cfg.cache.name, fwd="stale", fwd_status=resp.head.status, detail=reason)
            headers = strip_hop_by_hop(resp.head.headers) + [(b"cache-status", status)]
            return self._finish(head, resp.head.status, headers, body)
        # Misses for this URL arriving while the new object fills join it (as a miss's followers do).
        fut = None if primary in self._inflight else asyncio.get_running_loop().create_future()
        if fut is not None:
            self._inflight[primary] = fut
        filling = self._start_fill(primary, req, resp, t_req, t_resp, "stale", fut)
        if fut is not None:
            fut.set_result((resp.head, filling))
            if filling is None:
                self._inflight.pop(primary, None)
        if background:
            if filling is None:
                resp.abort()
            return Answer(resp.head.status, [], b"")
        if filling is None:
            return self._not_stored(primary, req, resp, "stale")
        return await self._answer_filling(head, filling, "stale")

    # -- answers -----------------------------------------------------------------------------

    def _from_entry(self, head: RequestHead, entry: Entry, age: float, status: bytes) -> Answer:
        headers = [(n, v) for n, v in entry.headers if n != b"age"]
        headers.append((b"age", b"%d" % int(age)))
        headers.append((b"cache-status", status))
        req = head.fields()
        inm = get_header(req, b"if-none-match")
        if inm is not None:
            if _etag_match(inm, get_header(entry.headers, b"etag")):
                return Answer(304, headers, b"")
        else:
            ims = parse_http_date(get_header(req, b"if-modified-since"))
            lm = parse_http_date(get_header(entry.headers, b"last-modified"))
            if ims is not None and lm is not None and lm <= ims and entry.status == 200:
                return Answer(304, headers, b"")
        if entry.status == 200 and head.method == b"GET" and if_range_ok(
                get_header(req, b"if-range"), get_header(entry.headers, b"etag"),
                get_header(entry.headers, b"last-modified")):
            span = byte_range(get_header(req, b"range"), len(entry.body))
            if span == UNSATISFIABLE:
                return self._finish(head, 416, [*headers, (b"content-range", b"bytes */%d" % len(entry.body))], b"")
            if span is not None:
                first, last = span
                rng = b"bytes %d-%d/%d" % (first, last, len(entry.body))
                return self._finish(head, 206, [*headers, (b"content-range", rng)], entry.body[first:last + 1])
        return self._finish(head, entry.status, headers, entry.body)

    def _finish(self, head: RequestHead, status: int, headers: list, body: bytes) -> Answer:
        # Surrogate keys are for this cache (purge groups), not for clients.
        headers = [(n, v) for n, v in headers if n not in _NOT_TO_CLIENT]
        headers.append((b"content-length", b"%d" % len(body)))
        # HEAD is answered from the GET: same fields, no body (RFC 9110 9.3.2).
        return Answer(status, headers, b"" if head.method == b"HEAD" else body)

    def snapshot(self) -> dict[str, Any]:
        snap = {**self.counters, **self.store.status()}
        by_policy = dict(self.evictions_before)
        by_policy[snap["policy"]] = by_policy.get(snap["policy"], 0) + snap["evictions"]
        snap["evictions_by_policy"] = by_policy
        return snap
