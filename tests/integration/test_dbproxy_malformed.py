"""Malformed PostgreSQL protocol input against `tierproxy dbproxy`, from raw sockets.

The proxy must answer the protocol's own error (ErrorResponse 08P01, or a close) and keep serving
everyone else: after every example a real client still works and the process is alive. Replies
are decoded with the project's codec, so a reply that is not valid protocol fails the test.
"""

from __future__ import annotations

import socket
import struct

import psycopg
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.pgwire import encode
from proxy.pgwire.auth import ScramClient
from proxy.pgwire.errors import PgProtocolError
from proxy.pgwire.framing import BackendFramer
from proxy.pgwire.messages import (
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    ErrorResponse,
    ReadyForQuery,
    decode_backend,
)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TIMEOUT = 10.0


class Raw:
    """A raw protocol client: send bytes (optionally one at a time), read decoded messages."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.framer = BackendFramer()
        self.pending: list[object] = []
        self.closed = False

    def send(self, data: bytes, *, bytewise: bool = False) -> None:
        try:
            if bytewise:
                for i in range(len(data)):
                    self.sock.sendall(data[i : i + 1])
            else:
                self.sock.sendall(data)
        except OSError:
            self.closed = True  # the proxy closed on us: allowed

    def recv(self) -> object | None:
        """The next message, or None once the proxy has closed the connection."""
        while not self.pending:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.closed = True
                return None
            self.pending.extend(decode_backend(m) for m in self.framer.feed(chunk))  # must be valid
        return self.pending.pop(0)

    def drain(self) -> list[object]:
        out = []
        while (m := self.recv()) is not None:
            out.append(m)
        return out

    def login(self, *, bytewise: bool = False) -> None:
        self.send(encode.startup_message({"user": "app", "database": "postgres"}), bytewise=bytewise)
        scram = ScramClient("app", "app-secret")
        while True:
            m = self.recv()
            assert m is not None, "closed during login"
            assert not isinstance(m, ErrorResponse), f"login refused: {m.fields}"
            if isinstance(m, AuthenticationSASL):
                self.send(encode.sasl_initial_response("SCRAM-SHA-256", scram.client_first()), bytewise=bytewise)
            elif isinstance(m, AuthenticationSASLContinue):
                self.send(encode.sasl_response(scram.handle_server_first(m.data)), bytewise=bytewise)
            elif isinstance(m, AuthenticationSASLFinal):
                scram.handle_server_final(m.data)
            elif isinstance(m, ReadyForQuery):
                return
            # AuthenticationOk, ParameterStatus, BackendKeyData: nothing to answer

    def close(self) -> None:
        self.sock.close()


def _healthy(dbproxy) -> None:
    assert dbproxy.process.running, dbproxy.process.log_tail()
    with psycopg.connect(dbproxy.dsn(), autocommit=True, connect_timeout=10) as conn:
        assert conn.execute("SELECT 7").fetchone() == (7,)


def _errors_are_protocol_violations(messages: list[object]) -> None:
    for m in messages:
        if isinstance(m, ErrorResponse):
            # 08P01 for framing and sequence errors; 28P01/28000/0A000 where the bytes happened to
            # parse as an auth or startup message; 42601 etc. when they made a valid query; 54000
            # (and only for that reason) when a header declared more than max_message_bytes.
            if m.sqlstate == "54000":
                assert "max_message_bytes" in m.fields.get("M", ""), m.fields
                continue
            assert m.sqlstate[:2] in ("08", "28", "0A", "42", "22", "26", "34", "3D"), m.fields


@SETTINGS
@given(st.binary(min_size=1, max_size=300))
def test_random_bytes_instead_of_a_startup_packet(dbproxy, data):
    raw = Raw(dbproxy.port)
    try:
        raw.send(data)
        raw.sock.shutdown(socket.SHUT_WR)
        _errors_are_protocol_violations(raw.drain())
    finally:
        raw.close()
    _healthy(dbproxy)


@SETTINGS
@given(st.sampled_from([b"Q", b"P", b"B", b"E", b"S", b"X", b"d", b"p", b"z", b"\x00"]),
       st.sampled_from([-1, 0, 3, 0x7FFFFFFF, 1 << 30 | 1, 5]), st.binary(max_size=40))
@example(type_=b"B", length=5, body=b"\x00")  # a Bind too short for its two names: was XX000
@example(type_=b"B", length=4, body=b"")
def test_bad_lengths_and_types_after_login(dbproxy, type_, length, body):
    raw = Raw(dbproxy.port)
    try:
        raw.login()
        raw.send(type_ + struct.pack("!i", length) + body)
        raw.sock.shutdown(socket.SHUT_WR)
        messages = raw.drain()
        _errors_are_protocol_violations(messages)
        complete = 4 <= length <= 4 + len(body)
        # A bad length or type is refused as soon as the header is seen; a 'p' (password message)
        # after login is refused once complete. A message cut short by EOF just ends the session.
        if length < 4 or length > 1 << 30 or type_ in (b"z", b"\x00") or (type_ == b"p" and complete):
            codes = [m.sqlstate for m in messages if isinstance(m, ErrorResponse)]
            assert codes == ["08P01"], codes
    finally:
        raw.close()
    _healthy(dbproxy)


@SETTINGS
@given(st.binary(min_size=1, max_size=200))
@example(b"B\x10\x00\x00\x01")  # declares 256 MiB + 1: 54000 over max_message_bytes (found by hypothesis)
def test_garbage_after_a_valid_query(dbproxy, data):
    raw = Raw(dbproxy.port)
    try:
        raw.login()
        raw.send(encode.query("SELECT 1") + data)
        raw.sock.shutdown(socket.SHUT_WR)
        _errors_are_protocol_violations(raw.drain())
    finally:
        raw.close()
    _healthy(dbproxy)


def test_every_message_split_into_single_bytes(dbproxy):
    raw = Raw(dbproxy.port)
    try:
        raw.login(bytewise=True)
        stream = (encode.query("SELECT 40 + 2") + encode.parse("", "SELECT $1::int * 2") + encode.bind("", "", [b"21"])
                  + encode.execute() + encode.sync() + encode.terminate())  # fmt: skip
        raw.send(stream, bytewise=True)
        rows = [m for m in raw.drain() if type(m).__name__ == "DataRow"]
        assert [r.values for r in rows] == [(b"42",), (b"42",)]
    finally:
        raw.close()
    _healthy(dbproxy)


def test_a_huge_declared_length_is_refused_before_it_is_buffered(dbproxy):
    raw = Raw(dbproxy.port)
    try:
        raw.login()
        raw.send(b"Q" + struct.pack("!i", 0x7FFFFFF0) + b"SELECT ")
        messages = raw.drain()
        assert [m.sqlstate for m in messages if isinstance(m, ErrorResponse)] == ["08P01"]
    finally:
        raw.close()
    _healthy(dbproxy)


def test_decoder_itself_rejects_garbage_replies():
    # The helper above relies on BackendFramer/decode_backend raising on invalid replies.
    try:
        BackendFramer().feed(b"Z\x00\x00\x00\x02")
    except PgProtocolError:
        return
    raise AssertionError("a length of 2 must not frame")
