"""Events the HTTP/1.1 parsers emit: one head, zero or more bodies, one end-of-message per message.

They are slotted, mutable-by-convention-only dataclasses: `frozen=True` would route every field
assignment in `__init__` through `object.__setattr__`, which costs real time at 40k req/s. Equality
is by value so tests compare event lists directly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ._abnf import FIELD_LINE_CRLF_RE

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


class Framing(enum.IntEnum):
    """How the body that follows a head is delimited (RFC 9112 6.3)."""

    NONE = 0  # no body at all: request without CL/TE, HEAD/1xx/204/304 responses
    LENGTH = 1  # Content-Length bytes (possibly 0)
    CHUNKED = 2  # chunked transfer coding, decoded by the parser
    UNTIL_CLOSE = 3  # response without CL or TE: body runs until the server closes (6.3 item 8)


@dataclass(slots=True)
class RequestHead:
    """A parsed request line plus header section.

    `headers` keeps the wire order and duplicates, names lowercased, values stripped of OWS. It is
    None when the parser's simple path left the field lines unparsed in `raw_fields` (most
    requests never need them one by one): `fields()` gives them either way.
    `target` is always origin-form (or ``*`` for OPTIONS): absolute-form is rewritten and its
    authority put in `host` and in the ``host`` header (RFC 9112 3.2.2).
    `content_length` is the body length when `framing` is LENGTH, else None.
    """

    method: bytes
    target: bytes
    version: bytes
    headers: Headers | None = field(default_factory=list)
    keep_alive: bool = True
    framing: Framing = Framing.NONE
    content_length: int | None = None
    upgrade: bool = False
    expect_continue: bool = False
    host: bytes | None = None
    # The field lines exactly as received ("name: value\r\n" each), set only by the parser's
    # simple path (`feed_simple`), which admits no field a proxy must drop or rewrite but one
    # "Connection: keep-alive" line.
    raw_fields: bytes | None = None
    # Where raw_fields is set: those lines less that Connection line (hop-by-hop), ready to be
    # forwarded as they came. Derived from raw_fields, so not compared.
    forward: bytes | None = field(default=None, compare=False)

    def fields(self) -> Headers:
        """`headers`, parsed from `raw_fields` on first use where the simple path left them."""
        headers = self.headers
        if headers is None:
            raw = self.raw_fields or b""
            headers = self.headers = [(name.lower(), value) for name, value in FIELD_LINE_CRLF_RE.findall(raw)]
        return headers


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
