"""The relay's hooks at a ReadyForQuery (proxy/pgfront/relay.py): the session's daemon's
`finished` / `restart_query_timer` and its router's `on_ready_for_query`. Compiled, the relay
calls them in C (cpdef methods of its `RelayBooks` and `RelayRouter`, the bases of the dbproxy's
`Books` and `SessionRouter`), through Python for a daemon or router that does not derive from
them (the shard's); a Python subclass's override must be called either way.

Each test runs on the relay that runs here (compiled where built, the pure twin under
TIERPROXY_PURE=1) and, where that is the compiled one, on its pure twin too: the same server
answer must have the same effect on the real Books and SessionRouter, and call the same overrides.
"""

from __future__ import annotations

import importlib
import time

import pytest

from proxy import _native
from proxy.dbproxy.books import Books
from proxy.dbproxy.session_router import SessionRouter
from proxy.pgwire import encode
from tests.unit.test_native_relay import _classes


def _relays():
    """(relay, Books, SessionRouter): the ones that run here; and where those are compiled, the
    pure twins (a compiled Books types its connections as the compiled relay's)."""
    mod = importlib.import_module("proxy.pgfront.relay")
    out = [(mod, Books, SessionRouter)]
    if mod.COMPILED:
        out.append((_native.load_pure("proxy.pgfront.relay"), _native.load_pure("proxy.dbproxy.books").Books,
                    _native.load_pure("proxy.dbproxy.session_router").SessionRouter))  # fmt: skip
    return out


RELAYS = _relays()
IDS = ["compiled" if m[0].COMPILED else "pure" for m in RELAYS]


class _Metrics:
    def __init__(self) -> None:
        self.latency: dict = {}


class _Timer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def _books(cls):
    d = cls()
    d.metrics = _Metrics()
    d.outstanding = {"primary": 1}
    d._latency_of = {}
    d.query_timeout = 0
    return d


def _setup(mod, d, router, *, pending: int = 0):
    """A session of relay `mod` with daemon `d` and `router`, attached to a server connection to
    the primary that is counted busy with one statement (and `pending` more groups in flight)."""
    session_cls, server_cls = _classes(mod)
    s, conn = session_cls(), server_cls()
    s.d = d
    s.router = router
    conn.backend = "primary"
    conn.counted = True
    conn.sent_at = time.monotonic()
    conn.timer = _Timer()
    for _ in range(1 + pending):
        conn.groups.append(mod.SyncGroup())
    conn.set_attached(s)
    return s, conn


@pytest.mark.parametrize("twins", RELAYS, ids=IDS)
def test_the_books_and_the_router_hear_each_answer(twins):
    """The real Books and SessionRouter, through the relay: the server idle again is uncounted,
    its latency observed and its timer stopped; the router learns the transaction's state."""
    mod, Books, SessionRouter = twins
    commits: list[bool] = []
    d = _books(Books)
    router = SessionRouter(on_commit=lambda ddl: commits.append(ddl) or 1)
    s, conn = _setup(mod, d, router)
    timer = conn.timer
    router._uncommitted_write = True  # a write was routed: its ReadyForQuery b"T" opens a transaction
    conn.data_received(encode.ready_for_query(b"T"))
    assert d.outstanding == {"primary": 0} and not conn.counted and timer.cancelled and conn.timer is None
    assert d.metrics.latency["primary"].count == 1
    assert router.transaction_backend == "primary" and router.in_transaction
    assert s.transport.sent == [encode.ready_for_query(b"T")]
    # COMMIT fails (errored before its ReadyForQuery b"I"): `failed` reaches the router, no commit.
    conn.groups.append(mod.SyncGroup())
    conn.counted, conn.timer = True, None
    conn.errored = True
    d.outstanding["primary"] = 1
    conn.data_received(encode.ready_for_query(b"I"))
    assert commits == [] and not router.in_transaction and not conn.errored
    assert d.metrics.latency["primary"].count == 2
    # The next write commits: on_commit is told (failed=False).
    router._uncommitted_write = True
    conn.groups.append(mod.SyncGroup())
    conn.data_received(encode.ready_for_query(b"I"))
    assert commits == [False]


@pytest.mark.parametrize("twins", RELAYS, ids=IDS)
def test_python_overrides_of_the_hooks_are_called(twins):
    """Subclasses of Books and SessionRouter overriding the hooks in Python: the relay calls the
    overrides (compiled: the cpdef methods find them), with `failed` as the relay worked it out."""
    mod, Books, SessionRouter = twins
    seen: list = []

    class MyBooks(Books):
        def finished(self, conn) -> None:
            seen.append(("finished", conn.backend))
            super().finished(conn)

        def restart_query_timer(self, conn) -> None:
            seen.append(("restart", conn.backend))

    class MyRouter(SessionRouter):
        def on_ready_for_query(self, status: bytes, failed: bool = False) -> None:
            seen.append(("ready", status, failed))
            super().on_ready_for_query(status, failed=failed)

    d, router = _books(MyBooks), MyRouter()
    s, conn = _setup(mod, d, router, pending=1)
    conn.errored = True
    conn.data_received(encode.ready_for_query(b"T"))  # one more group in flight: the timer restarts
    assert seen == [("restart", "primary"), ("ready", b"T", True)]
    assert router.transaction_backend == "primary" and d.outstanding == {"primary": 1}
    s._multi = True  # a multi-statement string's error is not `failed`
    conn.errored = True
    conn.data_received(encode.ready_for_query(b"I"))
    assert seen[2:] == [("finished", "primary"), ("ready", b"I", False)]
    assert d.outstanding == {"primary": 0} and not router.in_transaction


@pytest.mark.parametrize("twins", RELAYS, ids=IDS)
def test_a_daemon_and_router_of_their_own_are_called_through_python(twins):
    """Neither derives from the relay's bases (the shard's daemon and transaction tracker): their
    methods are called by name, `failed` as a keyword (a keyword-only parameter works)."""
    mod = twins[0]
    seen: list = []

    class Daemon:
        def finished(self, conn) -> None:
            seen.append("finished")

        def restart_query_timer(self, conn) -> None:
            seen.append("restart")

    class Tracker:
        def on_ready_for_query(self, status: bytes, *, failed: bool = False) -> None:
            seen.append((status, failed))

    _, conn = _setup(mod, Daemon(), Tracker(), pending=1)
    conn.errored = True
    conn.data_received(encode.ready_for_query(b"T") + encode.ready_for_query(b"I"))
    assert seen == ["restart", (b"T", True), "finished", (b"I", False)]


@pytest.mark.parametrize("twins", RELAYS, ids=IDS)
def test_the_bases_hooks_do_nothing(twins):
    """The bases themselves: a daemon or router that keeps their hooks hears nothing, and the
    answer is relayed."""
    mod = twins[0]
    s, conn = _setup(mod, mod.RelayBooks(), mod.RelayRouter(), pending=1)
    answer = encode.ready_for_query(b"T") + encode.ready_for_query(b"I")
    conn.data_received(answer)
    assert s.transport.sent == [answer] and not conn.groups and conn.status == b"I"
