"""Client statements too large to classify, and messages over `max_message_bytes`.

The classifier parses SQL with pglast on the event loop: fine for the statements applications
send, but a 200 MiB statement would hold every other client for seconds and take several copies
of its text (the string, pglast's parse tree). A Query or Parse over `LARGE_SQL_BYTES` is therefore
not parsed: it goes to the primary (`LARGE_DECISION`, a write: read-your-writes applies after it)
and its bytes are forwarded as the framer's view, not copied. The cost of this shortcut: a large
read runs on the primary, and session state set inside a large string (SET, temp tables) does not
pin the session.

A message over the config's `max_message_bytes` (below PostgreSQL's own 1 GiB) is refused with
FATAL 54000 as soon as its header arrives; `refuse_large_message` then reads and drops the rest of
that message (for up to `DRAIN_SECONDS`) before closing, so that a client busy writing it gets to
read the error instead of a connection reset.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from proxy.pgfront.server import error_fields
from proxy.pgwire.errors import PROTOCOL_VIOLATION, PgProtocolError

from .classify_types import Decision, Reason, Target

if TYPE_CHECKING:
    from .session import ClientSession

__all__ = ["LARGE_DECISION", "LARGE_SQL_BYTES", "large_parse_name", "large_query_aux", "refuse_large_message"]

LARGE_SQL_BYTES = 1 << 20
LARGE_DECISION = Decision(Target.PRIMARY, Reason.WRITE, detail="large-statement")
_NAME_SCAN = 1024  # a statement name is far shorter (NAMEDATALEN); where to look for its NUL
DRAIN_SECONDS = 10.0


def large_query_aux(raw: Any) -> tuple[str, Decision]:
    """The batch entry of a large Query message (the text must end with its NUL, as usual)."""
    if raw[len(raw) - 1] != 0:
        raise PgProtocolError("invalid message format: unterminated string", PROTOCOL_VIOLATION)
    return ("query", LARGE_DECISION)


def large_parse_name(raw: Any) -> str:
    """The statement name of a large Parse message, read from its first bytes only."""
    head = bytes(raw[5 : 5 + _NAME_SCAN])
    end = head.find(b"\0")
    if end < 0:
        raise PgProtocolError("invalid message format: unterminated string", PROTOCOL_VIOLATION)
    return head[:end].decode("utf-8", "replace")


def refuse_large_message(session: ClientSession, exc: PgProtocolError) -> None:
    """FATAL 54000; then the rest of the message is read and dropped (`_Drain`) and the
    connection closed, so a client still writing it reads the error, not a reset."""
    if session.phase == "closed":
        return
    session.send_error(error_fields("FATAL", exc.sqlstate, f"{exc.message} (max_message_bytes)"))
    transport = session.transport
    session._end()
    if transport is None:
        return
    drain = _Drain(transport, getattr(exc, "unread", 0))
    transport.set_protocol(drain)
    if drain.left <= 0:
        transport.close()


class _Drain(asyncio.Protocol):
    """Reads and drops `left` bytes, then closes; closes anyway after DRAIN_SECONDS."""

    def __init__(self, transport: asyncio.Transport, left: int) -> None:
        self.transport = transport
        self.left = left
        self.timer = asyncio.get_running_loop().call_later(DRAIN_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        self.left -= len(data)
        if self.left <= 0:
            self.transport.close()

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()
