"""What a listener adds to `ClientConn`, chosen once per listener so a plain HTTP listener's
connections run `ClientConn` unchanged:

* `ProxiedConn`: the client's address came in a PROXY protocol header (lb/listeners.py read it
  before the connection existed); it stands for the peer's in X-Forwarded-For, Forwarded, logs,
  hashing and what goes to backends that take the PROXY protocol themselves.
* `HstsConn`: a `Strict-Transport-Security` line on every relayed response (https listeners).
* `TlsConn`: a client's close_notify ends the connection (TLS has no half-close here).
* `RedirectConn`: every request answered 308 to its https:// URL (an http listener's
  `redirect_https`); nothing reaches a backend.
* `ForwardingFrontend`: a `Forwarded` header (RFC 7239) on the request to the backend.

`conn_class` puts the listener's choice together.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from proxy.core.sendnow import send
from proxy.http1 import RequestHead, simple_response
from proxy.http1._simple import cut_connection
from proxy.lb.client import ClientConn, Phase
from proxy.lb.dial import connection_addresses
from proxy.lb.frontend import Frontend

if TYPE_CHECKING:
    from proxy.lb.frontconfig import ListenerConfig
    from proxy.upstream.conn import UpstreamConn

__all__ = ["ForwardingFrontend", "HstsConn", "ProxiedConn", "RedirectConn", "TlsConn", "conn_class",
           "connection_addresses", "forwarded_node"]  # fmt: skip

Address = tuple[str, int]


def forwarded_node(ip: bytes) -> bytes:
    """A Forwarded `for=` value: IPv6 in brackets and quotes (RFC 7239 6)."""
    return b'"[%s]"' % ip if b":" in ip else ip


class ForwardingFrontend(Frontend):
    def upstream_head(self, head: RequestHead, client_ip: bytes) -> bytes:
        data = super().upstream_head(head, client_ip)
        host = head.host
        if host is not None:
            # The parser admits only a valid Host (no quote or backslash); quoted because of ':'.
            value = b'for=%s;proto=%s;host="%s"' % (forwarded_node(client_ip), self.scheme, host)
        else:
            value = b"for=%s;proto=%s" % (forwarded_node(client_ip), self.scheme)
        return data[:-2] + b"forwarded: " + value + b"\r\n\r\n"


class ProxiedConn(ClientConn):
    proxied: tuple[Address | None, Address | None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.proxied is not None and self.proxied[0] is not None:
            self.client_ip = self.proxied[0][0].encode()


class HstsConn(ClientConn):
    hsts_line = b""  # set on the listener's class

    def _response_head(self, rh):  # type: ignore[no-untyped-def]
        data = super()._response_head(rh)
        i = data.index(b"\r\n") + 2
        return data[:i] + self.hsts_line + data[i:]

    def on_simple_response(self, up: UpstreamConn, data: bytes,
                           result: tuple[int, int, int, int, int]) -> None:  # fmt: skip
        status, head_len, body_len, cut_start, cut_end = result
        if cut_start != cut_end:
            data = cut_connection(data, cut_start, cut_end)
        i = data.index(b"\r\n") + 2
        data = data[:i] + self.hsts_line + data[i:]
        super().on_simple_response(up, data, (status, head_len, body_len, 0, 0))


class TlsConn(ClientConn):
    def eof_received(self) -> bool:
        # A TLS transport closes at the client's close_notify whatever we return (asyncio warns
        # when told to keep it half open): answer what came, as over TCP, then let it close.
        super().eof_received()
        return False


class RedirectConn(ClientConn):
    redirect_port = 443  # set on the listener's class

    def _start_request(self, head: RequestHead) -> None:
        fe = self.fe
        self.req = head
        self.phase = Phase.BACKEND
        fe.requests_total += 1
        host = head.host if head.host is not None else fe.listen_authority
        if host.startswith(b"["):
            name = host.partition(b"]")[0] + b"]"
        else:
            name = host.partition(b":")[0]
        port = b"" if self.redirect_port == 443 else b":%d" % self.redirect_port
        location = b"https://" + name + port + head.target
        keep = head.keep_alive and self.req_done and not head.upgrade and not fe.draining and not self.close_after
        hdrs = [(b"location", location)]
        if keep and head.version == b"1.0":
            hdrs.append((b"connection", b"keep-alive"))
        data = simple_response(308, b"moved to https\n", hdrs, close=not keep)
        if head.method == b"HEAD":
            data = data[: data.index(b"\r\n\r\n") + 4]
        if self.transport is not None and not self.closed:
            send(self.transport, self.direct, data)
        self.client_ka = keep
        if keep:
            self._finish_exchange()
        else:
            self._close()


def conn_class(lst: ListenerConfig) -> type[ClientConn]:
    """The connection class for a listener: `ClientConn` itself unless it needs more."""
    bases: list[type[ClientConn]] = []
    attrs: dict[str, object] = {}
    if lst.redirect_https:
        bases.append(RedirectConn)
        attrs["redirect_port"] = lst.redirect_port
    if lst.hsts_max_age is not None:
        bases.append(HstsConn)
        line = b"strict-transport-security: max-age=%d" % lst.hsts_max_age
        if lst.hsts_include_subdomains:
            line += b"; includeSubDomains"
        attrs["hsts_line"] = line + b"\r\n"
    if lst.proxy_protocol:
        bases.append(ProxiedConn)
    if lst.protocol == "https":
        bases.append(TlsConn)
    if not bases:
        return ClientConn
    if len(bases) == 1 and not attrs:
        return bases[0]
    return type(f"ClientConn_{lst.name}", tuple(bases), attrs)
