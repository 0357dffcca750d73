"""Events the HTTP/1.1 parsers emit: one head, zero or more bodies, one end-of-message per message.

They are slotted, mutable-by-convention-only dataclasses: `frozen=True` would route every field
assignment in `__init__` through `object.__setattr__`, which costs real time at 40k req/s. Equality
is by value so tests compare event lists directly. `RequestHead` and `Framing` are defined in
_head.py (RequestHead is compiled as an extension type: proxy/_native.py) and exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._head import Framing, RequestHead

__all__ = [
    "Framing",
    "RequestHead",
    "ResponseHead",
    "Body",
    "EndOfMessage",
    "END_OF_MESSAGE",
    "Tunnel",
]

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class ResponseHead:
    """A parsed status line plus header section; 1xx heads are emitted too (without a body).

    `content_length` is the parsed Content-Length header (even where framing says there is no
    body, e.g. a HEAD response), None when absent or overridden by chunked.
    """

    status: int
    reason: bytes
    version: bytes
    headers: Headers = field(default_factory=list)
    keep_alive: bool = True
    framing: Framing = Framing.NONE
    content_length: int | None = None
    upgrade: bool = False


@dataclass(slots=True)
class Body:
    """A piece of decoded body (chunk framing removed); splits carry no meaning."""

    data: bytes


@dataclass(slots=True)
class EndOfMessage:
    """The current message is complete; use the `END_OF_MESSAGE` instance."""


END_OF_MESSAGE = EndOfMessage()


@dataclass(slots=True)
class Tunnel:
    """Raw bytes after an upgrade (request with upgrade=True, or a 101 response): not HTTP."""

    data: bytes
