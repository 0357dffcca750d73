"""The request parser's hot half: its state between messages and its simple entry, `feed_simple`.

`RequestCore` is the base of `RequestParser` (proxy/http1/parser.py, which adds the full path:
llhttp, pipelining, bodies, upgrades, recovery). It holds the fields `feed_simple` reads (the
parser's state, whether a message is open, the partial line kept, the head limit) and the
per-connection memo of the last simple request, and `feed_simple` itself: per simple request the
lb's client connection (proxy/lb/clientcore.py) calls it first.

This file is compiled (proxy/_native.py) and is also its own pure-Python twin: _request.pxd makes
`RequestCore` an extension type (its fields C fields, `feed_simple` a C method the compiled client
connection calls through its vtable, the scanner called in C). Its fields are objects made member
descriptors at import (proxy/_members.pxd), so parser.py's interpreted full path reads and sets
them as fast as the slots they were. Interpreted, the same method ran ~40 bytecodes per request
(docs/perf.md, "The lb exchange, fourth pass").
"""

from __future__ import annotations

from ._simple import REMEMBER_MAX, simple_request
from .events import RequestHead

__all__ = ["OPEN", "RequestCore"]

# RequestParser's states (parser.py): _OPEN, _TUNNEL, _CLOSED, _DEAD = range(4). Only OPEN (0)
# takes `feed_simple`, so "not open" is the state's truth value.
OPEN = 0


class RequestCore:
    """What `feed_simple` reads and sets of a request parser (see the module docstring)."""

    __slots__ = ("_in_msg", "_last_head", "_last_simple", "_max_head", "_pending", "_state")

    def feed_simple(self, data: bytes) -> RequestHead | None:
        """`feed` for the commonest input, all of `data` one bodiless GET/HEAD with nothing
        unusual (see `_simple.py`): its RequestHead (the EndOfMessage is implied), or None
        when `data` needs `feed`. Only between messages; llhttp is not involved."""
        # The state is OPEN (0) exactly when it is false.
        if self._state or self._in_msg or self._pending:
            return None
        if data == self._last_simple:
            return self._last_head
        head = simple_request(data, self._max_head)
        if head is not None and len(data) <= REMEMBER_MAX:
            self._last_simple = data
            self._last_head = head
        return head


def _probe() -> None:
    pass


# Compiled, the fields are member descriptors, not Cython's getsets (proxy/_members.pxd): the full
# parser's interpreted code reads and sets them as fast as a Python class's slots.
if type(_probe).__name__ != "function":
    as_members(RequestCore, RequestCore.__slots__)  # noqa: F821
