"""The relay (proxy/pgfront/relay.py), compiled against its pure-Python twin: the same server
bytes, cut into the same reads, must give the client the same bytes and leave the same state.

Hypothesis builds a server's output from the messages the relay acts on (ReadyForQuery,
ParseComplete/CloseComplete with the sync groups' flags, ErrorResponse of both severities,
CopyInResponse, ParameterStatus) and ones it passes on (RowDescription, DataRow, CommandComplete,
NoticeResponse, large rows cut across reads), and headers with any length word (the protocol's
errors must match); each twin's `RelayServer.data_received` gets the same reads. What is compared:
what the client was sent, the session's calls to its router and daemon (plain objects, or
deriving from the relay's `RelayBooks`/`RelayRouter`, whose hooks the compiled relay calls in C:
their Python overrides must be called just the same), the server connection's relay fields and
the protocol errors. Skipped where the module is not compiled (the pure pass)."""

from __future__ import annotations

import struct
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.pgwire import encode
from tests.unit.test_native_differential import _twins


class _Router:
    in_transaction = False

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bool]] = []

    def on_ready_for_query(self, status: bytes, failed: bool = False) -> None:
        self.calls.append((status, failed))


class _Daemon:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def finished(self, conn) -> None:
        self.calls.append("finished")

    def restart_query_timer(self, conn) -> None:
        self.calls.append("restart")


class _Client:
    """The client's side of the session: what it was sent, in order."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))


def _classes(mod, based: bool = False):
    # based: the daemon and router derive from the relay's bases (compiled: the relay calls their
    # hooks in C, which finds these Python overrides); else plain objects (called through Python).
    daemon_cls, router_cls = _Daemon, _Router
    if based:
        daemon_cls = type("BasedDaemon", (_Daemon, mod.RelayBooks), {})
        router_cls = type("BasedRouter", (_Router, mod.RelayRouter), {})

    class Session(mod.RelaySession):
        def __init__(self) -> None:
            self.ending = None
            self.terminating = False
            self._multi = False
            self.d = daemon_cls()
            self.router = router_cls()
            self.transport = _Client()
            self.phase = "ready"
            self.statements: dict = {"old": (b"P-old", "d-old"), "gone": (b"P-gone", "d")}

        def forward_raw(self, data: bytes) -> None:
            self.transport.write(data)

        def answers_due(self) -> bool:
            return False

        def close(self) -> None:
            self.phase = "closed"

    class Server(mod.RelayServer):
        def __init__(self) -> None:
            self.groups = deque()
            self.open_group = None
            self.status = b"I"
            self.copy = False
            self.errored = False
            self.replay = ["a read"]
            self.prepared: dict = {"x": b"P-x"}
            self.params: dict = {}
            self.fatal = None
            self.session = None
            self._owner = None
            self._rest = b""
            self._skip = 0
            self.received = 0
            self._internal = True
            self.timer = None
            self.errors: list[str] = []

        def _bad_protocol(self, exc) -> None:
            self.errors.append(exc.message)

    return Session, Server


def _msg(t: bytes, body: bytes) -> bytes:
    return t + struct.pack("!i", len(body) + 4) + body


MESSAGES = st.one_of(
    st.sampled_from([b"I", b"T", b"E"]).map(encode.ready_for_query),
    st.just(_msg(b"1", b"")),
    st.just(_msg(b"3", b"")),
    st.binary(max_size=40).map(lambda b: _msg(b"T", b)),
    st.binary(max_size=300).map(lambda b: _msg(b"D", b)),
    st.just(_msg(b"C", b"SELECT 1\0")),
    st.sampled_from(["ERROR", "FATAL"]).map(lambda s: encode.error_response(s, "42P01", "no such table")),
    st.just(_msg(b"G", b"\0\0\0")),
    st.just(encode.parameter_status("TimeZone", "UTC")),
    st.just(_msg(b"N", b"SNOTICE\0\0")),
    # A header with any length word (negative, under 4, over 1 GiB: the protocol's error).
    st.tuples(st.sampled_from([b"D", b"Z", b"E", b"S"]), st.binary(min_size=4, max_size=4)).map(lambda p: p[0] + p[1]),
)
FLAGS = st.lists(st.sampled_from([True, False, "new", "gone", ("old", b"P-old2", "d-new")]), max_size=3)


@settings(max_examples=300, deadline=None)
@given(st.lists(MESSAGES, max_size=12), st.lists(st.integers(0, 4000), max_size=5),
       st.lists(st.tuples(FLAGS, st.booleans()), max_size=3), st.booleans(), st.booleans(), st.booleans(),
       st.booleans())  # fmt: skip
def test_relay_compiled_is_pure(messages, cuts, groups, open_group, multi, based, timer):
    compiled, pure = _twins("proxy.pgfront.relay")
    stream = b"".join(messages)
    bounds = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    reads = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]

    def run(mod):
        session_cls, server_cls = _classes(mod, based)
        s, conn = session_cls(), server_cls()
        s._multi = multi
        conn.timer = "a query timer" if timer else None  # restart_query_timer: with more in flight
        for flags, by_query in groups:
            g = mod.SyncGroup()
            g.flags.extend(flags)
            g.names.extend(["x", "new"])
            g.by_query = by_query
            conn.groups.append(g)
        if open_group:
            conn.open_group = mod.SyncGroup()
        conn.set_attached(s)
        for data in reads:
            if not conn.errors:
                conn.data_received(data)
        return (b"".join(s.transport.sent), s.router.calls, s.d.calls, s.statements, conn.status, conn.copy,
                conn.errored, conn.replay, conn.prepared, conn.params, conn.fatal, conn._skip, conn._rest,
                conn.received, [(list(g.flags), g.names, g.by_query) for g in conn.groups],
                conn.open_group is None, conn.errors)  # fmt: skip

    assert run(compiled) == run(pure)


def test_relay_attaches_directly_unless_overridden():
    """A session that keeps the relay gets it by a direct call; an override is called instead."""
    compiled, pure = _twins("proxy.pgfront.relay")
    for mod in (compiled, pure):
        session_cls, server_cls = _classes(mod)
        seen = []

        class Overriding(session_cls):
            def relay_from_server(self, conn, data):
                seen.append(bytes(data))
                return super().relay_from_server(conn, data)

        plain, over, conn = session_cls(), Overriding(), server_cls()
        conn.set_attached(plain)
        assert conn._owner is plain
        conn.set_attached(over)
        assert conn._owner is None
        answer = encode.ready_for_query(b"I")
        conn.data_received(answer)
        assert seen == [answer] and over.transport.sent == [answer]
        conn.set_attached(None)
        assert conn._owner is None and conn._internal
