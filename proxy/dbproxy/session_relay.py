"""The server-to-client half of a `ClientSession`: relaying a server's bytes, losing a server.

`relay_from_server` is the dbproxy's hottest loop: it scans message headers in place and forwards
whole chunks, acting only on the few message types that matter (`_SPECIAL`). `on_server_lost`
decides what a client sees when one of its server connections goes away. Kept apart from
session.py so each file holds one direction of the relay.
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import TYPE_CHECKING

from proxy.pgfront.server import ServerConn, error_fields
from proxy.pgwire import encode
from proxy.pgwire.errors import ADMIN_SHUTDOWN, CONNECTION_FAILURE, QUERY_CANCELED, PgProtocolError
from proxy.pgwire.framing import DEFAULT_MAX_MESSAGE_LENGTH as MAX_MESSAGE_LENGTH
from proxy.pgwire.framing import Message
from proxy.pgwire.messages import decode_backend

from .faults import restart_query_timer
from .router import PRIMARY

if TYPE_CHECKING:
    from .session import ClientSession

    _Base = ClientSession
else:
    _Base = object

__all__ = ["RelayMixin"]

_INT32 = struct.Struct("!i")
# Server message types the relay looks at: ParseComplete '1', CloseComplete '3', ReadyForQuery
# 'Z', ErrorResponse 'E', CopyInResponse 'G', ParameterStatus 'S'. Everything else passes through.
_SPECIAL = bytes(1 if i in b"13ZEGS" else 0 for i in range(256))
ENDING_SECONDS = 3.0  # a half-forwarded message that does not end by then: close without our FATAL


class RelayMixin(_Base):
    """ClientSession's methods that act on what its servers send (see the module docstring)."""

    # -- from a server --------------------------------------------------------------------------

    def relay_from_server(self, conn: ServerConn, data: bytes) -> int:
        """Forward a server's bytes to the client, acting on the few message types that matter
        (see `_SPECIAL`); returns how many bytes were used (the rest is an incomplete message).
        A large message of any other type is forwarded as it arrives (`conn._skip`), so a big
        row or COPY chunk is never held whole in memory."""
        if self.ending is not None:
            # The message our FATAL was waiting for has been forwarded whole: now the FATAL.
            sqlstate, message = self.ending
            self.ending = None
            self.fatal(sqlstate, message)
            return len(data)
        n = len(data)
        pos = start = 0
        pieces: list[bytes] = []
        special = _SPECIAL
        while n - pos >= 5:
            t = data[pos]
            length = _INT32.unpack_from(data, pos + 1)[0]
            if length < 4 or length > MAX_MESSAGE_LENGTH:
                raise PgProtocolError(f"invalid message length {length} from server")
            end = pos + 1 + length
            if not special[t]:
                if end > n:
                    conn._skip = end - n
                    pos = n
                    break
                pos = end
                continue
            if end > n:
                break
            if t == 0x5A:  # ReadyForQuery
                status = data[pos + 5 : pos + 6]
                conn.status = status
                if conn.groups:
                    conn.groups.popleft()
                conn.copy = False
                if not conn.busy:
                    self.d.finished(conn)
                elif conn.timer is not None:
                    restart_query_timer(self.d, conn)  # timeouts.query is per statement (faults.py)
                failed, conn.errored = conn.errored and not self._multi, False
                self.router.on_ready_for_query(status, failed=failed)
            elif t == 0x31 or t == 0x33:  # ParseComplete, CloseComplete
                g = conn.groups[0] if conn.groups else conn.open_group
                if g is not None and g.flags:
                    flag = g.flags.popleft()
                    if flag is True:
                        pieces.append(data[start:pos])  # injected by us: not for the client
                        start = end
                    elif flag.__class__ is tuple:  # a Parse expected to fail (42P05) succeeded
                        name, raw, decision = flag  # type: ignore[misc]
                        self.statements[name] = (raw, decision)
                        conn.prepared[name] = raw  # type: ignore[assignment]
            elif t == 0x45:  # ErrorResponse
                err = decode_backend(Message(b"E", data[pos:end], 5))
                if err.severity in ("FATAL", "PANIC"):
                    conn.fatal = err.fields  # reported when the connection closes
                    pieces.append(data[start:pos])
                    start = end
                else:
                    conn.errored = True
                    g = conn.groups[0] if conn.groups else conn.open_group
                    if g is not None:
                        for flag in g.flags:
                            if flag.__class__ is str:  # the client's Parse of it never completed
                                self.statements.pop(flag, None)  # type: ignore[arg-type]
                        g.flags.clear()  # the server skips the rest of the group
                        for name in g.names:
                            if name in conn.prepared:
                                conn.prepared[name] = None  # type: ignore[assignment]
            elif t == 0x47:  # CopyInResponse
                conn.copy = True
                if conn.groups and not conn.groups[0].by_query:
                    # Extended-protocol COPY: the server ignores Syncs during copy-in, so the
                    # group stays open until the Sync after CopyDone.
                    conn.open_group = conn.groups.popleft()
                    conn.groups.clear()
            elif t == 0x53:  # ParameterStatus
                ps = decode_backend(Message(b"S", data[pos:end], 5))
                conn.params[ps.name] = ps.value
            pos = end
        if start == 0 and pos == n:
            chunk = data
        else:
            chunk = data[start:pos]
        if pieces:
            pieces.append(chunk)
            chunk = b"".join(pieces)
        if chunk:
            conn.replay = None
            if self.transport is not None and self.phase != "closed":
                self.transport.write(chunk)
        if self.terminating and not self.answers_due():
            self.close()
        return pos

    def on_server_lost(self, conn: ServerConn) -> None:
        backend = conn.backend
        if self.servers.get(backend) is conn:
            del self.servers[backend]
        was_busy = conn.busy
        in_txn = self.router.transaction_backend == backend
        self.d.server_lost(conn)
        if self.phase == "closed":
            return
        if self.terminating and not self.answers_due():
            self.close()
            return
        if self.phase == "login" and not was_busy:
            return  # the login task sees the failure itself
        if conn._skip and self.phase == "ready":
            self.close()  # lost in the middle of a large message: the client's stream is cut
            return
        if backend == PRIMARY and self.phase == "ready":
            # The client's own server connection (its BackendKeyData is this server's): when it
            # goes (pg_terminate_backend, a crash, idle_session_timeout), the session ends with
            # the server's own error, as it would direct.
            self.end_with_server_error(conn)
            return
        keep_state = backend == PRIMARY and self.router.pinned
        if not was_busy and not in_txn and not keep_state:
            return
        if conn.replay is not None and not in_txn and self.phase == "ready" and not self.waiting:
            # A read that got no answer yet: run it on another backend instead.
            batch, conn.replay = conn.replay, None
            conn.groups.clear()
            conn.open_group = None
            if self.current is conn:
                self.current = None
            self._avoid[backend] = time.monotonic() + self.d.cfg.monitor.interval
            self.d.metrics.retried += 1
            decision = self._decision(batch)
            self.router.on_ready_for_query(b"I")
            if decision is None:
                self._start_async(self._route_async(batch, None, PRIMARY))
            else:
                self._start_async(self._route_async(batch, decision, None))
            return
        sqlstate = CONNECTION_FAILURE
        message = f"server connection to {backend} was lost"
        if conn.fatal is not None:
            sqlstate = conn.fatal.get("C", sqlstate)
            message = conn.fatal.get("M", message)
        if in_txn or keep_state or conn.copy or self.phase != "ready":
            if sqlstate not in (ADMIN_SHUTDOWN, CONNECTION_FAILURE):
                sqlstate = CONNECTION_FAILURE
            self.fatal(sqlstate, message)
            return
        # 57014: the proxy dropped a server that ignored a timeouts.query cancel (faults.py).
        code = QUERY_CANCELED if sqlstate == QUERY_CANCELED else CONNECTION_FAILURE
        self.send_error(error_fields("ERROR", code, f"{message}; the statement may not have completed"))
        pending = len(conn.groups)
        if conn.open_group is not None:
            self.skip_until_sync = True
        conn.groups.clear()
        conn.open_group = None
        if pending:
            self.router.on_ready_for_query(b"I")
            self.forward_raw(encode.ready_for_query(b"I") * pending)

    def end_after_message(self, sqlstate: str, message: str) -> None:
        """A FATAL of ours (drain deadline, bad client input) while a server's message is half
        forwarded (`ServerConn._skip`: relayed as it arrives): written now it would land inside
        that message and the client would read it as the message's bytes, then see a bare close.
        Run nothing more from the client, let the message end (relay_from_server sends the
        FATAL at the next message boundary), or close without it after ENDING_SECONDS."""
        self.ending = (sqlstate, message)
        self.waiting = True
        if self.transport is not None:
            self.transport.pause_reading()
        self.d.closing.add(self)  # the drain waits for it
        asyncio.get_running_loop().call_later(ENDING_SECONDS, self._ending_timeout)

    def _ending_timeout(self) -> None:
        if self.ending is not None and self.phase != "closed":
            self.ending = None
            self.d.closing.discard(self)
            self.close()

    def end_with_server_error(self, conn: ServerConn) -> None:
        """Forward the FATAL `conn` sent before closing (all its fields) or 08006, and close."""
        fields = conn.fatal
        if fields is None:
            fields = error_fields("FATAL", CONNECTION_FAILURE, f"server connection to {conn.backend} was lost")
        self.send_error(fields)
        self.close(linger=True)

    # -- cancel ---------------------------------------------------------------------------------

    def cancel_targets(self) -> list[ServerConn]:
        return [c for c in self.servers.values() if c.busy and not c.closed]
