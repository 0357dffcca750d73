"""The common case of an exchange, on the side: a whole simple response relayed as it came.

`UpstreamConn.data_received` asks `takes_simple_response()`; if the exchange allows it and
`ResponseParser.feed_simple` recognises the bytes (one whole HTTP/1.1 Content-Length response,
nothing unusual: see proxy/http1/_simple.py), `on_simple_response` does in one step what
`ClientConn._response_head` and `on_upstream_events` do for it, without building the head again.
Requests have their counterpart in `ClientConn.data_received` (`RequestParser.feed_simple`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.http1 import Framing, ResponseHead
from proxy.http1._simple import cut_connection
from proxy.lb.outlier import Outcome

if TYPE_CHECKING:
    from proxy.lb.client import ClientConn
    from proxy.upstream.conn import UpstreamConn

__all__ = ["SimpleResponseMixin"]


class SimpleResponseMixin:
    def takes_simple_response(self: ClientConn) -> bool:
        """The response can go out as the backend sent it (less its Connection line): an
        HTTP/1.1 keep-alive exchange whose request has ended and with nothing to add to the head
        (no sticky cookie, no "connection: close")."""
        req = self.req
        return (
            req is not None and self.req_done and self.resp is None and self.set_cookie is None
            and req.keep_alive and req.version == b"1.1" and not req.upgrade and not self.close_after
            and not self.fe.draining
        )  # fmt: skip

    def on_simple_response(self: ClientConn, up: UpstreamConn, data: bytes,
                           result: tuple[int, int, int, int, int]) -> None:  # fmt: skip
        """A whole response that `ResponseParser.feed_simple` took: what `_response_head` and
        `on_upstream_events` do for it, in one step."""
        status, _head_len, body_len, cut_start, cut_end = result
        fe = self.fe
        backend = self.backend
        pool = self.pool
        assert backend is not None and pool is not None and self.transport is not None
        # What the rest of the exchange reads of the head (`keep_alive`); one per status, kept.
        heads = self.fe.simple_heads
        rh = heads.get(status)
        if rh is None:
            rh = heads[status] = ResponseHead(status, b"", b"1.1", [], True, Framing.LENGTH)
        self.resp = rh
        backend.responses[status // 100 - 1] += 1  # 2xx-5xx: feed_simple takes nothing else
        if status >= 500:
            pool.report_failure(backend, Outcome.HTTP_5XX, fe.now)
        elif backend.fail_streak:  # report_success has nothing to do otherwise
            pool.report_success(backend, fe.now)
        self.client_ka = True
        self.xfer += body_len
        self.transport.write(cut_connection(data, cut_start, cut_end) if cut_start != cut_end else data)
        self._response_end(up)
