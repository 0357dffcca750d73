"""The one exception the HTTP/1.1 codec raises when the peer breaks the protocol.

Contract (h11's): a parser's `feed`/`feed_eof` either returns events or raises `ProtocolError`.
Any other exception escaping them is a bug in this package, not a fault of the peer.
"""

from __future__ import annotations

__all__ = ["ProtocolError"]


class ProtocolError(Exception):
    """The peer sent bytes that are not acceptable HTTP/1.1.

    `status_hint` is the status to answer with: 400/413/414/431/501/505 from the request parser,
    502 from the response parser (the upstream is the one at fault, RFC 9110 15.6.3).
    `events` holds events completed earlier in the same `feed()` call, before the bad bytes, so a
    caller may still answer pipelined requests that arrived intact; ignoring it is always safe.
    """

    def __init__(self, msg: str, status_hint: int = 400) -> None:
        super().__init__(msg)
        self.status_hint = status_hint
        self.events: list[object] = []
