"""The load balancer's listener state: config snapshot, pools, routes, live client connections.

`Frontend` is what every `ClientConn` reads: the current config (swapped whole on reload), the
pools, the coarse clock `now` that the sweeper advances, and the counters that /metrics reports.
It also holds the small per-request decisions that need config but no I/O: which pool a request
goes to, its hashing key, its sticky target, and the rewritten head for the backend.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

from proxy.core.accept import Acceptor
from proxy.http1 import HOP_BY_HOP, Framing, RequestHead, ResponseHead, strip_hop_by_hop
from proxy.lb.client import ClientConn
from proxy.core.sendnow import SendBatch
from proxy.lb.clientcore import FrontendCore, SimpleHeads
from proxy.lb.config import LbConfig, RouteConfig
from proxy.lb.markdown import FAILED, REDISPATCHED
from proxy.lb.reject import RejectLog

if TYPE_CHECKING:
    from proxy.lb.pool import Backend, Pool

__all__ = ["Frontend", "cookie_value"]

log = logging.getLogger("tierproxy.lb")

_DROP_FROM_CLIENT = frozenset({b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-for"})


def cookie_value(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The value of cookie `name` from the request's Cookie headers (RFC 6265 5.4)."""
    for k, v in headers:
        if k == b"cookie":
            for part in v.split(b";"):
                n, sep, val = part.strip().partition(b"=")
                if sep and n == name:
                    return val
    return None


class Frontend(FrontendCore):
    """One listener's state. The listeners of a process share the pools, the reject log and
    one sweeper (`proxy/lb/listeners.py`, which also binds the sockets and hands connections
    over). What the exchange reads per request is in FrontendCore's fields (lb/clientcore.py:
    C fields when compiled); everything else is in the instance dict."""

    def __init__(self, cfg: LbConfig, pools: dict[str, Pool], name: str = "default",
                 reject_log: RejectLog | None = None) -> None:  # fmt: skip
        self.name = name
        self.cfg = cfg
        self.pools = pools
        self.routes: list[tuple[RouteConfig, bytes | None, bytes]] = []
        # The simple path's backend heads and the request-ID counter (X-Request-ID) of every head.
        self.heads = SimpleHeads(b"http", os.urandom(4).hex().encode())
        # What a client connection makes its heads with itself: none where a subclass's
        # upstream_head adds to Frontend's (lb/frontconn.py's ForwardingFrontend).
        self.core_heads = self.heads if type(self).upstream_head is Frontend.upstream_head else None
        self.set_config(cfg)
        self.loop = asyncio.get_running_loop()
        self.batch = SendBatch(self.loop)  # sends held to the loop round's end (proxy/core/sendnow.py)
        self.now = self.loop.time()
        self.conns: set[ClientConn] = set()
        self.draining = False
        self.acceptors: list[Acceptor] = []
        # Response heads of simple responses, one per status (lb/simple.py): shared, never changed.
        self.simple_heads: dict[int, ResponseHead] = {}
        # counters for /metrics
        self.accepted_total = 0
        self.refused_total = 0
        self.slow_clients_total = 0  # cut for moving under limits.min_transfer_rate
        self.requests_total = 0
        self.client_errors: dict[int, int] = {}  # protocol errors answered, by status
        self.proxy_errors: dict[int, int] = {}  # 502/503/504 answered by us, by status
        # client_errors logged, at most so many lines a second (one log for all listeners)
        self.reject_log = reject_log if reject_log is not None else RejectLog()
        # Listener-level counters (lb/listeners.py, lb/h2front.py; exported by lb/stats.py)
        self.tls_versions: dict[str, int] = {}  # completed handshakes by version
        self.handshake_failures: dict[str, int] = {}  # by listeners.HANDSHAKE_REASONS
        self.proxy_refused = 0  # PROXY header from an untrusted network
        self.proxy_bad = 0  # malformed or missing PROXY header
        self.h2_conns: set[Any] = set()  # open HTTP/2 connections (H2Conn)
        self.h2_requests = 0
        self.h2_abuse: dict[str, int] = {}  # HTTP/2 connections cut, by reason

    def set_config(self, cfg: LbConfig) -> None:
        self.cfg = cfg
        lst = self.listener = next(x for x in cfg.all_listeners if x.name == self.name)
        routes = lst.routes if lst.routes is not None else cfg.routes
        self.routes = [
            (r, r.host.lower().encode() if r.host else None, r.path_prefix.encode())
            for r in routes
        ]
        self.fallback = lst.default_pool or cfg.fallback_pool
        self.listen_authority = lst.address.encode()
        # X-Forwarded-Proto: a listener's attribute, not a per-request decision.
        self.scheme = self.heads.scheme = b"https" if lst.protocol == "https" else b"http"
        # Read per request: one attribute load instead of a chain.
        self.timeouts = cfg.timeouts
        self.limits = cfg.limits
        self.first_byte_timeout = cfg.timeouts.connect + cfg.timeouts.backend_response
        self.backend_response_timeout = cfg.timeouts.backend_response
        self.client_idle_timeout = cfg.timeouts.client_idle
        self.max_idle_per_backend = cfg.limits.max_idle_per_backend

    @property
    def port(self) -> int:
        return self.acceptors[0].address[1]

    def sweep(self, now: float) -> None:
        """The shared sweeper's visit (lb/listeners.py): fire passed deadlines."""
        self.now = now
        for conn in [c for c in self.conns if c.deadline and c.deadline <= now]:
            try:
                conn.on_deadline()
            except Exception:
                log.exception("deadline handling failed")
                conn._close()

    def check_rates(self, now: float) -> None:
        limits = self.cfg.limits
        rate, grace = limits.min_transfer_rate, limits.min_rate_grace
        for conn in [c for c in self.conns if c.too_slow(now, rate, grace)]:
            self.slow_clients_total += 1
            conn.on_too_slow()

    def stop_accepting(self) -> None:
        self.draining = True
        for acceptor in self.acceptors:
            acceptor.close()
        for conn in list(self.conns):
            conn.drain()

    def backend_marked_down(self, backend: Backend) -> tuple[int, int]:
        """`backend` went down (health check or ejection): requests waiting on it are re-sent
        elsewhere or answered 502 now (lb/markdown.py). One scan of the client connections, only
        on this rare event. Returns (re-sent, answered 502)."""
        resent = failed = 0
        for conn in [c for c in self.conns if c.backend is backend]:
            try:
                done = conn.on_backend_marked_down(backend)
            except Exception:
                log.exception("moving a request off a backend that went down failed")
                conn._close()
                continue
            if done == REDISPATCHED:
                resent += 1
            elif done == FAILED:
                failed += 1
        return resent, failed

    # -- per-request decisions -------------------------------------------------------------

    def route(self, head: RequestHead) -> Pool:
        if self.routes:
            host = (head.host or b"").lower()
            if host.startswith(b"["):
                host = host.partition(b"]")[0] + b"]"
            else:
                host = host.partition(b":")[0]
            for _r, rhost, prefix in self.routes:
                if (rhost is None or rhost == host) and head.target.startswith(prefix):
                    return self.pools[_r.pool]
        return self.pools[self.fallback]

    def hash_key(self, pool: Pool, head: RequestHead, client_ip: bytes) -> bytes | None:
        kind = pool.hash_key_kind()
        if kind == "client_ip":
            return client_ip
        if kind == "header":
            name = pool.hash_name
            for k, v in head.fields():
                if k == name:
                    return v
            return None
        return cookie_value(head.fields(), pool.hash_name)

    def sticky_target(self, pool: Pool, head: RequestHead, now: float) -> Backend | None:
        """The backend named by a valid sticky cookie, if it can still take requests."""
        codec = pool.sticky
        assert codec is not None
        raw = cookie_value(head.fields(), codec.cookie_name.encode())
        if raw is None:
            return None
        name = codec.decode(raw.decode("latin-1"))
        if name is None:
            return None
        backend = pool.backends.get(name)
        if backend is None or not pool.is_eligible(backend, now):
            return None  # replaced transparently; the new pick re-issues the cookie
        return backend

    def sticky_cookie(self, pool: Pool, backend: Backend) -> bytes:
        codec = pool.sticky
        assert codec is not None and pool.cfg.sticky is not None
        return codec.set_cookie(backend.name, max_age=pool.cfg.sticky.max_age).encode()

    def upstream_head(self, head: RequestHead, client_ip: bytes) -> bytes:
        """The request head as the backend sees it: hop-by-hop headers removed, framing made
        explicit, X-Forwarded-For/-Proto/-Host and X-Request-ID added.

        Built in one pass straight into bytes: this runs for every request. Names and values come
        from the request parser, which rejects CR, LF and other CTLs; the line count check below
        still guards against a field that would smuggle a line."""
        if head.raw_fields is not None:
            # The parser's simple path: no X-Forwarded-* or X-Request-ID field, no hop-by-hop
            # field but a "Connection: keep-alive" already left out of `forward`, a valid Host,
            # every line checked; forward the lines as they came and add ours (SimpleHeads; a
            # ClientConn calls it itself where this method is not overridden).
            data = self.heads.simple(head, client_ip)
            assert data is not None
            return data
        headers = head.fields()
        for k, _ in headers:
            if k in HOP_BY_HOP:
                headers = strip_hop_by_hop(headers, keep_upgrade=head.upgrade)
                break
        out = [head.method, b" ", head.target, b" HTTP/1.1\r\n"]
        lines = 1
        xff = None
        has_rid = False
        for k, v in headers:
            if k in _DROP_FROM_CLIENT:
                if k == b"x-forwarded-for":
                    xff = v if xff is None else xff + b", " + v
                continue
            if k == b"x-request-id":
                has_rid = True
            out += (k, b": ", v, b"\r\n")
            lines += 1
        out += (b"x-forwarded-for: ", client_ip if xff is None else xff + b", " + client_ip,
                b"\r\nx-forwarded-proto: ", self.scheme, b"\r\n")
        lines += 2
        if head.host is not None:
            out += (b"x-forwarded-host: ", head.host, b"\r\n")
            lines += 1
        else:
            # An HTTP/1.0 request may lack Host; HTTP/1.1 upstream requires one (RFC 9112 3.2).
            out += (b"host: ", self.listen_authority, b"\r\n")
            lines += 1
        if not has_rid:
            heads = self.heads
            heads.rid += 1
            out.append(b"x-request-id: %s-%x\r\n" % (heads.rid_prefix, heads.rid))
            lines += 1
        if head.upgrade:
            out.append(b"connection: upgrade\r\n")
            lines += 1
        elif head.framing == Framing.CHUNKED:  # re-chunked by us, whatever the client sent
            out.append(b"transfer-encoding: chunked\r\n")
            lines += 1
        out.append(b"\r\n")
        data = b"".join(out)
        if data.count(b"\n") != lines + 1:
            raise ValueError("CR or LF inside a request field")
        return data
