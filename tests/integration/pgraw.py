"""A raw PostgreSQL protocol client for differential tests: the same bytes to a server directly and
through `tierproxy dbproxy`, the answers compared message by message.

`RawPg(host, port, user, password)` logs in (SCRAM-SHA-256, md5, cleartext or trust, whatever the
other end asks) and keeps the BackendKeyData; `send(bytes)`; `recv(timeout)` returns the next
decoded message or None at a deadline or close; `until(cls)` collects messages up to one of type
`cls`. `shape(msgs)` is a comparable summary: message class names, with an ErrorResponse's
SQLSTATE and message, a CommandComplete's tag and a DataRow's values.
"""

from __future__ import annotations

import select
import socket
import time

from proxy.pgwire import encode
from proxy.pgwire.auth import ScramClient, md5_password
from proxy.pgwire.framing import BackendFramer
from proxy.pgwire.messages import (
    AuthenticationCleartextPassword,
    AuthenticationMD5Password,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    BackendKeyData,
    CommandComplete,
    DataRow,
    ErrorResponse,
    ReadyForQuery,
    decode_backend,
)

__all__ = ["RawPg", "shape"]

TIMEOUT = 10.0


class RawPg:
    def __init__(self, host: str, port: int, user: str, password: str, database: str = "postgres") -> None:
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.framer = BackendFramer()
        self.pending: list[object] = []
        self.closed = False
        self.key: tuple[int, int] | None = None
        self._login(user, password, database)

    def _login(self, user: str, password: str, database: str) -> None:
        self.send(encode.startup_message({"user": user, "database": database}))
        scram: ScramClient | None = None
        while True:
            m = self.recv()
            assert m is not None, "closed during login"
            assert not isinstance(m, ErrorResponse), f"login refused: {m.fields}"
            if isinstance(m, AuthenticationSASL):
                scram = ScramClient(user, password)
                self.send(encode.sasl_initial_response("SCRAM-SHA-256", scram.client_first()))
            elif isinstance(m, AuthenticationSASLContinue):
                assert scram is not None
                self.send(encode.sasl_response(scram.handle_server_first(m.data)))
            elif isinstance(m, AuthenticationSASLFinal):
                assert scram is not None
                scram.handle_server_final(m.data)
            elif isinstance(m, AuthenticationMD5Password):
                self.send(encode.password_message(md5_password(user, password, m.salt)))
            elif isinstance(m, AuthenticationCleartextPassword):
                self.send(encode.password_message(password))
            elif isinstance(m, BackendKeyData):
                self.key = (m.pid, m.secret)
            elif isinstance(m, ReadyForQuery):
                return

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float = TIMEOUT) -> object | None:
        """The next message; None if the other end closed or nothing came within `timeout`."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return None
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.closed = True
                return None
            self.pending.extend(decode_backend(m) for m in self.framer.feed(chunk))
        return self.pending.pop(0)

    def until(self, cls: type, timeout: float = TIMEOUT) -> list[object]:
        """Messages up to and including the first of type `cls`; AssertionError if none comes."""
        out = []
        while True:
            m = self.recv(timeout)
            assert m is not None, f"no {cls.__name__} within {timeout}s (closed={self.closed}); got {shape(out)}"
            out.append(m)
            if isinstance(m, cls):
                return out

    def close(self) -> None:
        try:
            self.sock.sendall(encode.terminate())
        except OSError:
            pass
        self.sock.close()


def shape(msgs: list[object]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for m in msgs:
        if isinstance(m, ErrorResponse):
            out.append(("ErrorResponse", m.fields.get("C"), m.fields.get("M")))
        elif isinstance(m, CommandComplete):
            out.append(("CommandComplete", m.tag))
        elif isinstance(m, DataRow):
            out.append(("DataRow", *m.values))
        else:
            out.append((type(m).__name__,))
    return out
