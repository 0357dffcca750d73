"""The dbproxy's per-statement books (proxy/dbproxy/books.py), compiled against their pure-Python
twin: the same `started`/`finished` calls on the same server connections, in the same order,
must leave the same outstanding counts, histograms, connection flags and timers, and raise the
same errors (a connection counted against a backend the books do not know).

The connections are plain objects with the fields the books read and write (`counted`,
`backend`, `sent_at`, `timer`), as the relay's differential test records its session's calls;
the timers are the running loop's own. What latency a statement took depends on the clock, so
the histograms are compared by their counts, not their sums. Skipped where the module is not
compiled (the pure pass)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.metrics import Histogram
from tests.unit.test_native_differential import _twins


class _Conn:
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
    hists = {role: (h.count, sum(h.counts), len(h.counts)) for role, h in d.metrics.latency.items()}
    return (dict(d.outstanding), hists, sorted(d._latency_of),
            [(c.counted, c.timer is None, c.sent_at > 0) for c in conns])  # fmt: skip


_BACKENDS = ["primary", "replica1", "replica2"]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([0.0, 0.0, 0.5, 30.0]), st.lists(st.sampled_from(_BACKENDS), min_size=1, max_size=3),
       st.lists(st.tuples(st.sampled_from(["started", "finished"]), st.integers(0, 3)), max_size=30))  # fmt: skip
def test_books_twins_agree(query_timeout, known, calls):
    compiled, pure = _twins("proxy.dbproxy.books")

    async def run() -> None:
        books = [_books(mod, query_timeout, known) for mod in (compiled, pure)]
        conns = [[_Conn(b) for b in ("primary", "replica1", "replica2", "elsewhere")] for _ in books]
        for name, i in calls:
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
