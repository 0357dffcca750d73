"""The listeners of one balancer process: binding, handing connections over, the shared sweeper.

Each `[[listeners]]` entry (or the one `listen` stands for) is a `Frontend` (lb/frontend.py) with
its routes, scheme and counters; they share the pools, the reject log and one sweeper, which
advances every listener's coarse clock, fires deadlines, judges transfer rates, retires idle
backend connections and renews TLS certificates (lb/tlsterm.py).

A connection is handed over once accepted (`_hand_over`), before any protocol object exists:
on a PROXY protocol listener the peer must be in `proxy_protocol_from` and the header is read off
the socket (exactly the header: what follows stays for TLS or HTTP); on an https listener the TLS
handshake runs (`connect_accepted_socket(ssl=...)`) with the listener's current certificates.
A bad header or a failed handshake closes that connection only, counted by reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from proxy.core.accept import Acceptor, listen_sockets
from proxy.core.config import parse_hostport
from proxy.core.proxyproto import ProxyHeader, ProxyProtocolError, parse_proxy_header
from proxy.lb.client import ClientConn
from proxy.lb.config import LbConfig
from proxy.lb.frontconn import ForwardingFrontend, conn_class
from proxy.lb.frontend import Frontend
from proxy.lb.h2front import AlpnSwitch, H2cConn
from proxy.lb.netpolicy import parse_networks
from proxy.lb.reject import RejectLog
from proxy.lb.tlsterm import TlsTerminator

if TYPE_CHECKING:
    from proxy.lb.pool import Backend, Pool

__all__ = ["HANDSHAKE_REASONS", "Listeners", "handshake_reason", "read_proxy_header"]

log = logging.getLogger("tierproxy.lb")

# How often deadlines are checked and the coarse clock advanced. Timeouts fire up to this late.
SWEEP_INTERVAL = 0.25
# Transfer rates are judged once a second (every this many sweeps): an O(connections) scan.
RATE_CHECK_TICKS = 4

# Handshake failures by reason: a fixed set, so label values never come from the wire.
HANDSHAKE_REASONS = ("timeout", "reset", "protocol_version", "no_shared_cipher", "http_request",
                     "bad_certificate", "other")  # fmt: skip


def handshake_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        r = (exc.reason or "").lower()
        if "version" in r or "protocol" in r:
            return "protocol_version"
        if "cipher" in r:
            return "no_shared_cipher"
        if "http" in r:
            return "http_request"
        if "certificate" in r or "unknown_ca" in r:
            return "bad_certificate"
        return "other"
    if isinstance(exc, ConnectionError | EOFError):
        return "reset"
    return "other"


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    fut = loop.create_future()
    fd = sock.fileno()
    loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
    try:
        await fut
    finally:
        loop.remove_reader(fd)


async def read_proxy_header(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> ProxyHeader:
    """Take exactly one PROXY header off `sock` (bytes after it stay in the socket). Peeks,
    then consumes only bytes that belong to the header, so it never waits on data it holds."""
    buf = b""
    while True:
        want = parse_proxy_header(buf)
        if not isinstance(want, int):
            return want
        try:
            peek = sock.recv(want, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            await _readable(loop, sock)
            continue
        if not peek:
            raise ProxyProtocolError("connection closed inside the PROXY header")
        got = parse_proxy_header(buf + peek)
        take = got.length - len(buf) if isinstance(got, ProxyHeader) else len(peek)
        buf += sock.recv(take)


class Listeners:
    """Every listener of this process."""

    def __init__(self, cfg: LbConfig, pools: dict[str, Pool]) -> None:
        self.cfg = cfg
        self.pools = pools
        self.reject_log = RejectLog()
        self.frontends: list[Frontend] = []
        self.tls: dict[str, TlsTerminator] = {}
        self.loop = asyncio.get_running_loop()
        self._sweeper: asyncio.Task[None] | None = None
        for lst in cfg.all_listeners:
            cls = ForwardingFrontend if lst.forwarded else Frontend
            fe = cls(cfg, pools, lst.name, self.reject_log)
            self.frontends.append(fe)
            if lst.tls is not None:
                alpn = ["h2", "http/1.1"] if lst.http2 else None
                self.tls[lst.name] = TlsTerminator(lst.name, lst.tls, alpn)

    @property
    def by_name(self) -> dict[str, Frontend]:
        return {fe.name: fe for fe in self.frontends}

    @property
    def draining(self) -> bool:
        return any(fe.draining for fe in self.frontends)

    async def start(self, reuse_port: bool = False) -> None:
        """Bind every listener (all or none) and serve."""
        bound: list[tuple[Frontend, list[socket.socket]]] = []
        try:
            for fe in self.frontends:
                host, port = parse_hostport(fe.listener.address)
                bound.append((fe, listen_sockets(host, port, reuse_port=reuse_port, backlog=4096)))
        except OSError:
            for _fe, socks in bound:
                for s in socks:
                    s.close()
            raise
        for fe, socks in bound:
            hand_over = self._hand_over_for(fe)
            fe.acceptors = [Acceptor(self.loop, s, lambda fe=fe: ClientConn(fe), hand_over) for s in socks]
            for acceptor in fe.acceptors:
                acceptor.start()
        self._sweeper = self.loop.create_task(self._sweep())

    def _hand_over_for(self, fe: Frontend) -> Callable[[socket.socket], Any] | None:
        lst = fe.listener
        cls = conn_class(lst)
        if lst.h2c:
            cls = type(f"H2c_{cls.__name__}", (H2cConn, cls), {"h2_stream_base": cls})
        term = self.tls.get(lst.name)
        trusted = parse_networks(lst.proxy_protocol_from) if lst.proxy_protocol else ()
        if term is None and not lst.proxy_protocol and cls is ClientConn:
            return None  # the acceptor's own plain hand-over
        loop = self.loop

        async def hand_over(conn: socket.socket) -> None:
            proxied = None
            try:
                if lst.proxy_protocol:
                    peer = ipaddress.ip_address(conn.getpeername()[0])
                    if peer.version == 6 and peer.ipv4_mapped is not None:  # type: ignore[union-attr]
                        peer = peer.ipv4_mapped  # type: ignore[union-attr]
                    if not any(peer in net for net in trusted):
                        fe.proxy_refused += 1
                        conn.close()
                        return
                    async with asyncio.timeout(fe.timeouts.client_header):
                        header = await read_proxy_header(loop, conn)
                    if header.source is not None:
                        proxied = (header.source, header.dest)
            except (ProxyProtocolError, TimeoutError, OSError) as exc:
                fe.proxy_bad += 1
                log.debug("bad PROXY header", extra={"listener": fe.name, "error": str(exc)})
                conn.close()
                return

            def make() -> Any:
                if lst.http2:
                    return AlpnSwitch(fe, cls, proxied)
                c = cls(fe)
                if proxied is not None:
                    c.proxied = proxied
                return c

            try:
                if term is None:
                    await loop.connect_accepted_socket(make, conn)
                    return
                tr, _p = await loop.connect_accepted_socket(
                    make, conn, ssl=term.context, ssl_handshake_timeout=fe.timeouts.client_header)
            except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
                if term is not None:
                    reason = handshake_reason(exc)
                    fails = fe.handshake_failures
                    fails[reason] = fails.get(reason, 0) + 1
                conn.close()
                return
            sslobj = tr.get_extra_info("ssl_object")
            version = sslobj.version() if sslobj is not None else None
            if version is not None:
                versions = fe.tls_versions
                versions[version] = versions.get(version, 0) + 1

        return hand_over

    def set_config(self, cfg: LbConfig) -> None:
        """A reload: routes, options and TLS files (a pair that fails keeps the old one)."""
        self.cfg = cfg
        for fe in self.frontends:
            fe.set_config(cfg)
            term = self.tls.get(fe.name)
            if term is not None and fe.listener.tls is not None:
                term.reload(fe.listener.tls, why="reload")

    async def _sweep(self) -> None:
        """Advance the coarse clock; fire passed deadlines; retire old idle backend conns."""
        loop = self.loop
        ticks = 0
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            ticks += 1
            now = loop.time()
            for fe in self.frontends:
                fe.sweep(now)
                idle = fe.timeouts.client_idle
                for h2conn in list(fe.h2_conns):
                    h2conn.check_idle(now, idle)
            self.reject_log.flush(now)
            limits = self.cfg.limits
            if limits.min_transfer_rate and ticks % RATE_CHECK_TICKS == 0:
                for fe in self.frontends:
                    fe.check_rates(now)
            idle_limit = now - self.cfg.timeouts.backend_idle
            for pool in self.pools.values():
                pool.tick(now)
                for b in pool.backends.values():
                    while b.idle and b.idle[0].idle_since < idle_limit:
                        b.idle.popleft().close()
            if ticks % RATE_CHECK_TICKS == 0:
                for term in self.tls.values():
                    term.tick()

    @property
    def conns(self) -> int:
        return sum(len(fe.conns) + len(fe.h2_conns) for fe in self.frontends)

    async def drain(self, timeout: float) -> None:
        """Stop accepting, let in-flight exchanges finish, close the rest at the deadline."""
        for fe in self.frontends:
            fe.stop_accepting()
            for h2conn in list(fe.h2_conns):
                h2conn.drain()  # GOAWAY; closed once its streams are done
        try:
            async with asyncio.timeout(timeout):
                while self.conns:
                    await asyncio.sleep(0.05)
        except TimeoutError:
            log.warning("drain deadline passed", extra={"open_connections": self.conns})
            for fe in self.frontends:
                for conn in list(fe.conns):
                    conn._close()
                for h2conn in list(fe.h2_conns):
                    h2conn._close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for pool in self.pools.values():
            for b in pool.backends.values():
                b.close_idle()

    def backend_marked_down(self, backend: Backend) -> tuple[int, int]:
        resent = failed = 0
        for fe in self.frontends:
            r, f = fe.backend_marked_down(backend)
            resent += r
            failed += f
        return resent, failed

    @property
    def port(self) -> int:
        return self.frontends[0].port
