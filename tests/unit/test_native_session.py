"""The dbproxy session's client side (proxy/dbproxy/sessioncore.py), compiled against its
pure-Python twin: the same client bytes, in the same session state, must give the servers the
same bytes and leave the same state.

Hypothesis builds a client's reads from whole simple Queries (reads and writes), the unnamed
statement's whole Parse/Bind/[Describe]/Execute/Sync (its Parse classified before or not), their
near misses (a named statement or portal, a byte flipped, cut short, another message after) and
any bytes; between reads a server may answer (its sync groups end) and the session's state
(a batch pending, waiting, the framer holding bytes, a transaction on a backend, a lost server)
varies. Both twins' `data_received` get the same reads, with the same daemon, router and server
connections (recording ones); `_send` also gets framed batches directly (statements to re-create,
Closes, duplicates, large Parses). What is compared: the bytes each server was sent, the calls
to the router and the daemon, what went to the framer and the slow paths, each server's sync
groups and statements, and the session's fields. Skipped where the module is not compiled."""

from __future__ import annotations

import struct
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.dbproxy.books import Books, MonitorViews, RouteCounts
from proxy.dbproxy.classify_cache import ClassifierCache
from proxy.dbproxy.classify_types import Decision, Reason, Target
from proxy.dbproxy.router import PRIMARY, Route, RouteReason
from proxy.dbproxy.session_router import SessionRouter
from proxy.pgfront import relay
from proxy.pgwire.errors import PgProtocolError
from proxy.pgwire.framing import FrontendFramer, Message
from tests.unit.test_native_differential import _twins

READ = Decision(Target.REPLICA, Reason.READ, detail="select")
CATALOG = Decision(Target.REPLICA, Reason.READ, detail="show", reads_catalog=True)
WRITE = Decision(Target.PRIMARY, Reason.WRITE, detail="update")
MULTI = Decision(Target.PRIMARY, Reason.WRITE, detail="multi-statement")


def _msg(t: bytes, body: bytes) -> bytes:
    return t + struct.pack("!i", len(body) + 4) + body


def query(sql: bytes) -> bytes:
    return _msg(b"Q", sql + b"\0")


def parse(sql: bytes, name: bytes = b"") -> bytes:
    return _msg(b"P", name + b"\0" + sql + b"\0\0\0")


def packet(sql: bytes, describe: bool, portal: bytes = b"", stmt: bytes = b"") -> bytes:
    out = parse(sql, stmt) + _msg(b"B", portal + b"\0" + stmt + b"\0\0\0\0\0\0\0")
    if describe:
        out += _msg(b"D", b"P" + portal + b"\0")
    return out + _msg(b"E", portal + b"\0\0\0\0\0") + _msg(b"S", b"")


def _decide(sql: bytes) -> Decision:
    if sql.startswith(b"SELECT"):
        return CATALOG if b"pg_class" in sql else READ
    return MULTI if b";" in sql else WRITE


class _Transport:
    def __init__(self, log: list) -> None:
        self.log = log

    def write(self, data) -> None:
        self.log.append(bytes(data))


class _Cache(ClassifierCache):
    """The classifier's cache (compiled, the session types it so) with a recording `get_bytes`."""

    def __init__(self, calls: list) -> None:
        super().__init__()
        self.calls = calls

    def get_bytes(self, sql: bytes) -> Decision:
        self.calls.append(("classify", sql))
        if sql.startswith(b"BAD"):
            raise PgProtocolError("bad statement")
        return _decide(sql)


class _Monitor(MonitorViews):
    """The monitor: its shared views built at the first `views()` and kept (as its polls do)."""

    def __init__(self) -> None:
        self._views = None

    def views(self) -> tuple:
        self._views = ("view-r1",)
        return self._views


class _Clock:
    def __init__(self, calls: list) -> None:
        self.calls = calls
        self.global_mode = False

    def owed(self, router, decision) -> bool:
        self.calls.append(("owed", decision.detail))
        return decision.detail == "select" and router.needs_commit_lsn

    def floor(self, decision) -> int:
        self.calls.append(("floor", decision.detail))
        return 42


class _Metrics:
    def __init__(self) -> None:
        self.routes = RouteCounts()


class _Daemon(Books):
    """The daemon's books (compiled, the session types its daemon so) with a recording `started`."""

    def __init__(self) -> None:
        self.outstanding = {}
        self._latency_of = {}
        self.query_timeout = None
        self.calls: list = []
        self.cache = _Cache(self.calls)
        self.parse_cache: dict = {}
        for sql in (b"SELECT 1", b"UPDATE t SET a = 1"):
            self.parse_cache[parse(sql)] = ("", _decide(sql))
        self.parse_cache[parse(b"SELECT 2", b"named")] = ("named", READ)
        self.follower = None
        self.clock = _Clock(self.calls)
        self.monitor = _Monitor()
        self.outstanding: dict = {}
        self.metrics = _Metrics()
        self.route_counts = self.metrics.routes

    def started(self, conn) -> None:
        self.calls.append(("started", conn.backend))

    def replica_views(self, avoid) -> tuple:
        self.calls.append(("replica_views", dict(avoid)))
        return ()


class _Router(SessionRouter):
    """The session router (compiled, the session types its router so) with a recording `route_at`
    (what the session calls)."""

    def __init__(self, calls: list) -> None:
        super().__init__()
        self.calls = calls
        self.transaction_backend = None
        self.pinned = False
        self.needs_commit_lsn = False

    def route_at(self, decision, replica, detail, now, views, outstanding, floor_lsn) -> Route:
        self.calls.append(("route", decision.detail, views, floor_lsn))
        if decision.target is Target.REPLICA and self.transaction_backend is None:
            return Route("r1", RouteReason.READ)
        return Route(self.transaction_backend or PRIMARY, RouteReason.WRITE)


class Server(relay.RelayServer):
    def __init__(self, backend: str, log: list) -> None:
        self.backend = backend
        self.closed = False
        self.transport = _Transport(log)
        self.groups = deque()
        self.open_group = None
        self.copy = False
        self.replay = None
        self.prepared = {"": b"old-unnamed", "kept": b"P-kept"}
        self.log = log

    def write(self, data) -> None:
        self.log.append(bytes(data))


def _session_class(mod):
    class Session(mod.SessionCore):
        def __init__(self, state: dict) -> None:
            self.log: list = []
            self.d = _Daemon()
            self.router = _Router(self.d.calls)
            self.phase = state["phase"]
            self.framer = FrontendFramer()
            self.framer._have = state["buffered"]
            self.inbox = deque()
            self.waiting = state["waiting"]
            self.skip_until_sync = False
            self.admin = False
            self.servers = {PRIMARY: Server(PRIMARY, self.log), "r1": Server("r1", self.log)}
            if state["lost"]:
                del self.servers["r1"]
            self.current = None
            self.statements = {}
            self.statements_run = 0
            self.batch = [(Message(b"H", b"H\0\0\0\x04", 5), None)] if state["pending"] else []
            self.batch_bytes = 5 if state["pending"] else 0
            self.last_route = None
            self._count_route = self._count_in = None
            self._count_slot = 0
            self._avoid = {"r2": 1.0} if state["avoid"] else {}
            self.aborted = None
            self.inflight = None
            self._resend = None
            self._plain = True
            self._unnamed = None
            self._multi = False
            self.ending = None
            self.terminating = False
            self.router.transaction_backend = state["txn"]
            self.router.pinned = state["pinned"]
            self.router.needs_commit_lsn = state["lsn"]
            self.d.clock.global_mode = state["global"]

        def _feed(self, data) -> None:
            self.log.append(("feed", bytes(data)))

        def fatal(self, sqlstate: str, message: str) -> None:
            self.log.append(("fatal", sqlstate, message))

        def _internal_error(self) -> None:
            self.log.append("internal error")

        def _start_async(self, coro) -> None:
            coro.close()
            self.log.append("async")

        async def _route_async(self, batch, decision, target) -> None:
            pass

    return Session


def _state(s) -> tuple:
    servers = {
        name: ([(list(g.flags), g.names, g.by_query) for g in c.groups], c.open_group is not None,
               c.prepared, c.replay is not None)
        for name, c in s.servers.items()
    }  # fmt: skip
    return (s.log, s.d.calls, servers, s.d.metrics.routes, s.current.backend if s.current else None,
            s.last_route, s._multi, s.statements, s.statements_run, [(m.type, bytes(m.raw), a) for m, a in s.batch],
            s.batch_bytes, s.inflight)  # fmt: skip


SQL = st.sampled_from([b"SELECT 1", b"UPDATE t SET a = 1", b"SELECT 9", b"BAD", b"SELECT 1; UPDATE t SET a = 2",
                       b"SELECT relname FROM pg_class"])


def _mutate(data: bytes, at: int, byte: int) -> bytes:
    if not data:
        return data
    at %= len(data)
    return data[:at] + bytes((byte,)) + data[at + 1 :]


READS = st.one_of(
    SQL.map(query),
    st.tuples(SQL, st.booleans()).map(lambda a: packet(*a)),
    st.tuples(SQL, st.booleans()).map(lambda a: packet(a[0], a[1], portal=b"p")),
    st.just(packet(b"SELECT 2", False, stmt=b"named")),
    st.tuples(st.tuples(SQL, st.booleans()).map(lambda a: packet(*a)), st.integers(0, 80), st.integers(0, 255))
    .map(lambda a: _mutate(*a)),
    st.tuples(SQL, st.integers(1, 30)).map(lambda a: query(a[0])[: -a[1]]),
    st.tuples(SQL, SQL).map(lambda a: query(a[0]) + query(a[1])),
    st.tuples(SQL, st.booleans()).map(lambda a: packet(*a) + query(b"SELECT 1")),
    st.binary(min_size=1, max_size=30),
).filter(len)  # a transport never delivers an empty read
STATES = st.fixed_dictionaries({
    "phase": st.sampled_from(["ready", "ready", "ready", "login", "closed"]),
    "buffered": st.sampled_from([0, 0, 0, 3]),
    "waiting": st.sampled_from([False, False, True]),
    "pending": st.sampled_from([False, False, True]),
    "lost": st.sampled_from([False, False, True]),
    "avoid": st.booleans(),
    "txn": st.sampled_from([None, None, PRIMARY]),
    "pinned": st.sampled_from([False, False, True]),
    "lsn": st.booleans(),
    "global": st.booleans(),
})  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(STATES, st.lists(st.tuples(READS, st.booleans()), min_size=1, max_size=6))
def test_session_compiled_is_pure(state, reads):
    compiled, pure = _twins("proxy.dbproxy.sessioncore")

    def run(mod):
        s = _session_class(mod)(state)
        for data, answered in reads:
            s.data_received(data)
            if answered:  # the server answered all it had: its groups end (the relay's ReadyForQuery)
                for c in s.servers.values():
                    c.groups.clear()
        return _state(s)

    assert run(compiled) == run(pure)


def _batches():
    p1 = parse(b"SELECT 1", b"s1")
    big = parse(b"SELECT '" + b"x" * 70000 + b"'", b"big")
    aux = st.sampled_from([
        (Message(b"P", p1, 5), ("parse", "s1", p1, READ)),
        (Message(b"P", big, 5), ("parse", "big", big, READ)),
        (Message(b"P", p1, 5), ("dup", "kept", b"P-kept", READ, p1, READ)),
        (Message(b"P", p1, 5), ("dup", "s1", p1, READ, p1, READ)),
        (Message(b"B", b"B-s1", 5), ("use", "s1", p1, READ)),
        (Message(b"B", b"B-kept", 5), ("use", "kept", b"P-kept", READ)),
        (Message(b"B", b"B-x", 5), None),
        (Message(b"C", b"C-s1", 5), ("close", "s1")),
        (Message(b"C", b"C-p", 5), None),
        (Message(b"D", b"D-p", 5), None),
        (Message(b"E", b"E", 5), None),
        (Message(b"S", b"S", 5), None),
        (Message(b"Q", b"Q", 5), ("query", WRITE)),
        (Message(b"F", b"F", 5), ("query", WRITE)),
        (Message(b"H", b"H", 5), None),
    ])  # fmt: skip
    return st.lists(aux, min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_batches(), st.sampled_from([PRIMARY, "r1"]), st.booleans()), min_size=1, max_size=4))
def test_send_compiled_is_pure(sends):
    """The framed path's `_send` (and `_decision`): statements re-created, Closes, duplicates, large Parses."""
    compiled, pure = _twins("proxy.dbproxy.sessioncore")
    state = {"phase": "ready", "buffered": 0, "waiting": False, "pending": False, "lost": False, "avoid": False,
             "txn": None, "pinned": False, "lsn": False, "global": False}  # fmt: skip

    def run(mod):
        s = _session_class(mod)(state)
        out = []
        for batch, backend, answered in sends:
            out.append(s._decision(batch))
            s._send(s.servers[backend], batch)
            if answered:
                for c in s.servers.values():
                    c.groups.clear()
        return out, _state(s)

    assert run(compiled) == run(pure)


def test_dispatch_override_is_honoured():
    """A subclass overriding `_dispatch` (the query cache's session) gets every batch of the whole-packet paths
    through it when it clears `_plain`, in both twins."""
    compiled, pure = _twins("proxy.dbproxy.sessioncore")
    for mod in (compiled, pure):
        base = _session_class(mod)
        seen = []

        class Overriding(base):
            def _dispatch(self) -> None:
                seen.append([(m.type, a) for m, a in self.batch])
                super()._dispatch()

        state = {"phase": "ready", "buffered": 0, "waiting": False, "pending": False, "lost": False, "avoid": False,
                 "txn": None, "pinned": False, "lsn": False, "global": False}  # fmt: skip
        s = Overriding(state)
        s._plain = type(s)._dispatch is mod.SessionCore._dispatch
        assert not s._plain
        s.data_received(query(b"SELECT 1"))
        assert seen == [[(b"Q", ("query", READ))]]
        assert s.log == [query(b"SELECT 1")] and s.servers["r1"].groups
        s.servers["r1"].groups.clear()
        s.data_received(packet(b"SELECT 1", True))  # not plain: framed
        assert s.log[-1] == ("feed", packet(b"SELECT 1", True))


def test_unnamed_parse_follows_the_classifier():
    """The unnamed statement's packets of one session: each routed by its own Parse's decision, the same Parse
    again as before, and after a reload that replaced the classifier (and with it the parse cache) by the new
    one's decision, in both twins (`_unnamed_packet` keeps the session's last Parse)."""
    compiled, pure = _twins("proxy.dbproxy.sessioncore")
    state = {"phase": "ready", "buffered": 0, "waiting": False, "pending": False, "lost": False, "avoid": False,
             "txn": None, "pinned": False, "lsn": False, "global": False}  # fmt: skip
    for mod in (compiled, pure):
        s = _session_class(mod)(state)

        def run(data: bytes) -> str:
            s.data_received(data)
            assert s.log[-1] == data  # written whole, not framed
            for c in s.servers.values():
                c.groups.clear()
            return s.current.backend

        assert run(packet(b"SELECT 1", True)) == "r1"
        assert run(packet(b"SELECT 1", False)) == "r1"
        assert run(packet(b"UPDATE t SET a = 1", True)) == PRIMARY
        assert run(packet(b"SELECT 1", True)) == "r1"
        assert s.statements[""] == (parse(b"SELECT 1"), READ)
        # A reload with other write functions: a new classifier, a new parse cache (daemon.py).
        s.d.cache = _Cache(s.d.calls)
        s.d.parse_cache = {parse(b"SELECT 1"): ("", WRITE)}
        assert run(packet(b"SELECT 1", True)) == PRIMARY
        assert s.statements[""] == (parse(b"SELECT 1"), WRITE)
        assert s.servers[PRIMARY].prepared[""] == parse(b"SELECT 1")


def test_each_query_carries_its_own_decision():
    """Whole Queries of one session, some of the same decision object (the compiled `_query` then shares their
    ("query", decision) entry), others not: the batch a `_dispatch` override sees and the one a replica keeps to
    replay each carry their own statement's decision, and each goes where it must, in both twins."""
    compiled, pure = _twins("proxy.dbproxy.sessioncore")
    state = {"phase": "ready", "buffered": 0, "waiting": False, "pending": False, "lost": False, "avoid": False,
             "txn": None, "pinned": False, "lsn": False, "global": False}  # fmt: skip
    statements = [(b"SELECT 1", READ, "r1"), (b"SELECT 9", READ, "r1"), (b"UPDATE t SET a = 1", WRITE, PRIMARY),
                  (b"SELECT 1", READ, "r1"), (b"SELECT relname FROM pg_class", CATALOG, "r1"),
                  (b"UPDATE t SET a = 1", WRITE, PRIMARY)]  # fmt: skip
    for mod in (compiled, pure):
        base = _session_class(mod)
        seen = []

        class Overriding(base):
            def _dispatch(self) -> None:
                seen.append([a for _, a in self.batch])
                super()._dispatch()

        plain, framed = base(state), Overriding(state)
        framed._plain = False
        for sql, decision, backend in statements:
            for s in (plain, framed):
                s.data_received(query(sql))
                assert s.current.backend == backend, (mod.__name__, sql)
                replay = s.current.replay
                if backend != PRIMARY:
                    assert [(m.type, bytes(m.raw), a) for m, a in replay] == [(b"Q", query(sql), ("query", decision))]
                for c in s.servers.values():
                    c.groups.clear()
            assert seen[-1] == [("query", decision)], (mod.__name__, sql)


def test_statements_run_counts_as_an_int():
    """`statements_run` (compiled a C field) counts each statement sent, past the small ints, and reads and
    writes from Python as the pure twin's int does (the daemon's /status reads it, FrontendSession sets it)."""
    compiled, pure = _twins("proxy.dbproxy.sessioncore")
    state = {"phase": "ready", "buffered": 0, "waiting": False, "pending": False, "lost": False, "avoid": False,
             "txn": None, "pinned": False, "lsn": False, "global": False}  # fmt: skip
    for mod in (compiled, pure):
        s = _session_class(mod)(state)
        s.statements_run = 1000
        for _ in range(3):
            s.data_received(query(b"SELECT 1"))
            for c in s.servers.values():
                c.groups.clear()
        assert s.statements_run == 1003 and type(s.statements_run) is int, mod.__name__
        s.statements_run = 0
        assert s.statements_run == 0, mod.__name__
