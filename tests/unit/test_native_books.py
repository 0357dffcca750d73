"""The dbproxy's per-statement books (proxy/dbproxy/books.py), compiled against their pure-Python
twin: the same `started`/`finished` calls on the same server connections, in the same order,
must leave the same outstanding counts, histograms, connection flags and timers, and raise the
same errors (a connection counted against a backend the books do not know).

The connections are the relay's `RelayServer` (compiled, the books type them so: their
`counted`, `backend`, `sent_at` and `timer` are C fields) with nothing else set, as the relay's
differential test records its session's calls; the timers are the running loop's own. What
latency a statement took depends on the clock, so the histograms are compared by their counts,
not their sums; a connection sent long ago or in the future lands in the last or the first bucket
in both twins. Skipped where the module is not compiled (the pure pass)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.metrics import Histogram
from proxy.pgfront.relay import RelayServer
from tests.unit.test_native_differential import _twins


class _Conn(RelayServer):
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.counted = False
        self.sent_at = 0.0
        self.timer = None


class _Metrics:
    def __init__(self) -> None:
        self.latency: dict[str, Histogram] = {}


def _books(mod, query_timeout: float, known: list[str]):
    class Daemon(mod.Books):
        def __init__(self) -> None:
            self.metrics = _Metrics()
            self.outstanding = {name: 0 for name in known}
            self._latency_of = {}
            self.query_timeout = query_timeout

    return Daemon()


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        return ("raised", type(exc).__name__, str(exc))


def _state(d, conns) -> tuple:
    # The +Inf bucket holds exactly the connections sent "long ago" (no statement here takes 30 s).
    hists = {role: (h.count, sum(h.counts), len(h.counts), h.counts[-1]) for role, h in d.metrics.latency.items()}
    return (dict(d.outstanding), hists, sorted(d._latency_of),
            [(c.counted, c.timer is None, c.sent_at > 0) for c in conns])  # fmt: skip


_BACKENDS = ["primary", "replica1", "replica2"]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([0.0, 0.0, 0.5, 30.0]), st.lists(st.sampled_from(_BACKENDS), min_size=1, max_size=3),
       st.lists(st.tuples(st.sampled_from(["started", "finished", "sent long ago", "sent ahead"]), st.integers(0, 3)),
                max_size=30))  # fmt: skip
def test_books_twins_agree(query_timeout, known, calls):
    compiled, pure = _twins("proxy.dbproxy.books")

    async def run() -> None:
        books = [_books(mod, query_timeout, known) for mod in (compiled, pure)]
        conns = [[_Conn(b) for b in ("primary", "replica1", "replica2", "elsewhere")] for _ in books]
        for name, i in calls:
            if name.startswith("sent"):
                # The clock's far past or future: the slowest bucket (+Inf), or the first.
                for cs in conns:
                    cs[i].sent_at = -1e9 if name == "sent long ago" else 1e9
                continue
            got = [_outcome(getattr(d, name), cs[i]) for d, cs in zip(books, conns)]
            assert got[0] == got[1], (name, i)
            assert _state(books[0], conns[0]) == _state(books[1], conns[1]), (name, i)
        for cs in conns:
            for c in cs:
                if c.timer is not None:
                    c.timer.cancel()

    asyncio.run(run())


def test_the_daemon_keeps_the_compiled_books():
    """The daemon's class derives from the compiled Books where the module is built."""
    compiled, _ = _twins("proxy.dbproxy.books")
    from proxy.dbproxy.daemon import DbProxyDaemon

    assert issubclass(DbProxyDaemon, compiled.Books)
    assert compiled.COMPILED


_VALUES = st.one_of(st.floats(0, 100, allow_nan=False), st.sampled_from([0.0005, 0.001, 30.0, 0.0, 1e9, -1.0]))


@settings(max_examples=200, deadline=None)
@given(st.lists(_VALUES, max_size=40))
def test_query_histogram_is_the_histogram(values):
    """The books' histogram (QueryHistogram: compiled, its counts a C array) against core/metrics.py's
    Histogram, which it stands for in /metrics and /status: the same values observed give the
    same bounds, counts, sum, count and buckets, in both twins; its `counts` a list of ints."""
    from proxy import _native
    from proxy.dbproxy import books

    mods = [books] + ([_native.load_pure("proxy.dbproxy.books")] if books.COMPILED else [])
    want = Histogram()
    for v in values:
        want.observe(v)
    for mod in mods:
        got = mod.QueryHistogram()
        for v in values:
            got.observe(v)
        assert got.bounds == tuple(want.bounds) and type(got.counts) is list
        assert got.counts == want.counts and all(type(n) is int for n in got.counts)
        assert got.count == want.count and got.sum == want.sum
        assert got.buckets() == want.buckets()
