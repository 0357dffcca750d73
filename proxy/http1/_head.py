"""`RequestHead` (a parsed request line and header section) and `Framing`; both are exported by
proxy/http1/events.py, which holds the other events.

A RequestHead is made for every request and read by every exchange, so it is compiled
(proxy/_native.py): _head.pxd makes it an extension type whose fields are C fields (all public),
so making one costs a `tp_new` and twelve stores instead of a dataclass `__init__` run by the
interpreter (~3.2k instructions of a ~50k compiled lb exchange: docs/perf.md). The class is
written out as `@dataclass(slots=True)` would make it (the same constructor, defaults, equality,
repr, no hash, and `replace` for `dataclasses.replace`), which the pure twin keeps. `simple_head` makes the simple recognisers' heads
(the compiled scanner's: a C function filling the fields).
"""

from __future__ import annotations

import enum

from ._abnf import FIELD_LINE_CRLF_RE

__all__ = ["Framing", "RequestHead", "simple_head"]

Headers = list[tuple[bytes, bytes]]


class Framing(enum.IntEnum):
    """How the body that follows a head is delimited (RFC 9112 6.3)."""

    NONE = 0  # no body at all: request without CL/TE, HEAD/1xx/204/304 responses
    LENGTH = 1  # Content-Length bytes (possibly 0)
    CHUNKED = 2  # chunked transfer coding, decoded by the parser
    UNTIL_CLOSE = 3  # response without CL or TE: body runs until the server closes (6.3 item 8)


# Framing.NONE read once (an enum member's lookup on its class costs ~1.3k instructions).
_NO_BODY = Framing.NONE
_NEW_LIST = object()  # the `headers` default: a new list per head
_FIELDS = ("method", "target", "version", "headers", "keep_alive", "framing", "content_length", "upgrade",
           "expect_continue", "host", "raw_fields", "forward")  # fmt: skip


class RequestHead:
    """A parsed request line plus header section.

    `headers` keeps the wire order and duplicates, names lowercased, values stripped of OWS. It is
    None when the parser's simple path left the field lines unparsed in `raw_fields` (most
    requests never need them one by one): `fields()` gives them either way.
    `target` is always origin-form (or ``*`` for OPTIONS): absolute-form is rewritten and its
    authority put in `host` and in the ``host`` header (RFC 9112 3.2.2).
    `content_length` is the body length when `framing` is LENGTH, else None.
    `raw_fields`: the field lines exactly as received ("name: value\\r\\n" each), set only by the
    parser's simple path (`feed_simple`), which admits no field a proxy must drop or rewrite but
    one "Connection: keep-alive" line. `forward`: where raw_fields is set, those lines less that
    Connection line (hop-by-hop), ready to be forwarded as they came; derived from raw_fields, so
    not compared. Equality is by value (tests compare event lists directly).
    """

    __slots__ = _FIELDS

    def __init__(self, method: bytes, target: bytes, version: bytes, headers: Headers | None | object = _NEW_LIST,
                 keep_alive: bool = True, framing: Framing = _NO_BODY, content_length: int | None = None,
                 upgrade: bool = False, expect_continue: bool = False, host: bytes | None = None,
                 raw_fields: bytes | None = None, forward: bytes | None = None) -> None:  # fmt: skip
        self.method = method
        self.target = target
        self.version = version
        self.headers = [] if headers is _NEW_LIST else headers
        self.keep_alive = keep_alive
        self.framing = framing
        self.content_length = content_length
        self.upgrade = upgrade
        self.expect_continue = expect_continue
        self.host = host
        self.raw_fields = raw_fields
        self.forward = forward

    def _key(self) -> tuple:
        return (self.method, self.target, self.version, self.headers, self.keep_alive, self.framing,
                self.content_length, self.upgrade, self.expect_continue, self.host, self.raw_fields)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() != other._key()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value (as a dataclass)

    def __repr__(self) -> str:
        return (f"RequestHead(method={self.method!r}, target={self.target!r}, version={self.version!r}, "
                f"headers={self.headers!r}, keep_alive={self.keep_alive!r}, framing={self.framing!r}, "
                f"content_length={self.content_length!r}, upgrade={self.upgrade!r}, "
                f"expect_continue={self.expect_continue!r}, host={self.host!r}, raw_fields={self.raw_fields!r}, "
                f"forward={self.forward!r})")  # fmt: skip

    def replace(self, **changes: object) -> RequestHead:
        """A copy with `changes` (what `dataclasses.replace` does for a dataclass)."""
        return RequestHead(**{**{name: getattr(self, name) for name in _FIELDS}, **changes})  # type: ignore[arg-type]

    def fields(self) -> Headers:
        """`headers`, parsed from `raw_fields` on first use where the simple path left them."""
        headers = self.headers
        if headers is None:
            raw = self.raw_fields or b""
            headers = self.headers = [(name.lower(), value) for name, value in FIELD_LINE_CRLF_RE.findall(raw)]
        return headers


def _simple_head(method: bytes, target: bytes, host: bytes, raw_fields: bytes, forward: bytes) -> RequestHead:
    """The head of a simple request (proxy/http1/_simple.py: a bodiless GET or HEAD, HTTP/1.1,
    keep-alive, its field lines unparsed), made without the constructor's argument handling."""
    head = RequestHead.__new__(RequestHead)
    head.method = method
    head.target = target
    head.version = b"1.1"
    head.headers = None
    head.keep_alive = True
    head.framing = _NO_BODY
    head.content_length = None
    head.upgrade = False
    head.expect_continue = False
    head.host = host
    head.raw_fields = raw_fields
    head.forward = forward
    return head


simple_head = _simple_head
