"""The route counts (proxy/dbproxy/books.py's RouteCounts, the metrics' `routes`) against the dict
keyed by route they replace: the same statements counted give the same mapping (items, get, [],
len, iteration, ==), compiled and pure; and the session counts a route where the router's Route
objects change between statements, or the counts object does (its slot cache must not follow a
stale slot)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import _native
from proxy.dbproxy import books
from proxy.dbproxy.router import PRIMARY, Route, RouteReason

BACKENDS = st.sampled_from([PRIMARY, "r1", "r2", "replica-three"])
REASONS = st.sampled_from(list(RouteReason))
# A route as the router gives it: a Route, or a plain (target, reason) tuple of the same pair.
ROUTES = st.tuples(BACKENDS, REASONS, st.booleans()).map(lambda a: Route(a[0], a[1]) if a[2] else (a[0], a[1]))


def _key(pair) -> tuple:
    return (pair[0], pair[1].value)


def _modules():
    mods = [books]
    if books.COMPILED:
        mods.append(_native.load_pure("proxy.dbproxy.books"))
    return mods


def _counted(cls, routes, adds):
    counts = cls()
    for route, n in zip(routes, adds):
        counts.add(counts.slot(route), n)
    return counts


@settings(max_examples=200, deadline=None)
@given(st.lists(ROUTES, max_size=60), st.lists(st.integers(1, 3), min_size=60, max_size=60))
def test_counts_are_the_dict_they_replace(routes, adds):
    want: dict = {}
    for route, n in zip(routes, adds):
        want[route] = want.get(route, 0) + n
    for mod in _modules():
        got = _counted(mod.RouteCounts, routes, adds)
        assert got == want and dict(got.items()) == want
        assert len(got) == len(want) and sorted(got, key=_key) == sorted(want, key=_key)
        for backend in (PRIMARY, "r1", "r2", "replica-three", "nope"):
            for reason in RouteReason:
                key = (backend, reason)
                assert got.get(key) == want.get(key)
                assert got.get(key, 0) == want.get(key, 0)
                assert (key in got) == (key in want)
                if key in want:
                    assert got[key] == want[key] and got[Route(backend, reason)] == want[key]


def test_slots_are_stable_and_rows_sorted():
    for mod in _modules():
        counts = mod.RouteCounts()
        first = counts.slot(Route("r1", RouteReason.READ))
        assert counts.slot(("r1", RouteReason.READ)) == first  # the same pair, whatever tuple
        assert counts.get(("r1", RouteReason.READ)) is None  # a slot alone counts nothing
        for i in range(100):  # past the C array's first capacity
            counts.add(counts.slot((f"b{i}", RouteReason.WRITE)), i + 1)
        counts.add(first, 5)
        assert counts[("r1", RouteReason.READ)] == 5
        assert counts[("b99", RouteReason.WRITE)] == 100 and len(counts) == 101
        assert counts != {}
        empty = mod.RouteCounts()
        assert empty == {} and len(empty) == 0 and not list(empty)


def _route_rows(counts) -> list:
    # DbMetrics.route_rows (daemon.py) over these counts: what /status, /metrics and SHOW read.
    named = {(backend, reason.value): n for (backend, reason), n in counts.items()}
    return [[b, r, n] for (b, r), n in sorted(named.items())]


def test_the_rows_the_metrics_show():
    from proxy.dbproxy.daemon import DbMetrics

    m = DbMetrics()
    m.routes.add(m.routes.slot(Route("r2", RouteReason.READ)), 3)
    m.routes.add(m.routes.slot(Route(PRIMARY, RouteReason.WRITE)), 2)
    m.routes.add(m.routes.slot(Route("r1", RouteReason.HINT)), 1)
    assert m.route_rows() == [["primary", "write", 2], ["r1", "hint", 1], ["r2", "read", 3]]
    assert m.route_rows() == _route_rows(m.routes)


_R1 = Route("r1", RouteReason.READ)
_W = Route(PRIMARY, RouteReason.WRITE)


def test_the_session_counts_each_route_where_it_is_told():
    """The session's cache of its last route's slot: the router's same Route objects statement
    after statement, other objects of the same pairs, and the daemon's counts replaced midway."""
    from proxy.dbproxy import sessioncore
    from tests.unit.test_native_session import READ, WRITE, _session_class

    mods = [sessioncore]
    if sessioncore.COMPILED:
        mods.append(_native.load_pure("proxy.dbproxy.sessioncore"))
    state = {"phase": "ready", "buffered": 0, "waiting": False, "lost": False, "pending": False, "avoid": False,
             "txn": None, "pinned": False, "lsn": False, "global": False}  # fmt: skip
    for mod in mods:
        s = _session_class(mod)(state)
        given = iter([_R1, _R1, _W, _R1, ("r1", RouteReason.READ), _W, _W, _R1, _R1, _W])
        s.router.route_at = lambda *a: next(given)  # noqa: ARG005
        first = s.d.route_counts
        for dec in (READ, READ, WRITE, READ, READ, WRITE):
            s._route(dec)
        assert first == {_R1: 4, _W: 2}
        second = s.d.route_counts = books.RouteCounts()
        second.add(second.slot(("r2", RouteReason.READ)), 7)  # other pairs first: other slots
        second.slot(("r1", RouteReason.HINT))  # _W's slot in `first`
        for dec in (WRITE, READ, READ, WRITE):
            s._route(dec)
        assert first == {_R1: 4, _W: 2}, mod
        assert second == {("r2", RouteReason.READ): 7, _W: 2, _R1: 2}, mod
        assert s.last_route is _W


def test_a_daemon_without_route_counts_counts_in_its_metrics():
    """A daemon that never set `route_counts` (DbProxyDaemon does): the metrics' counts are used
    (compiled, a None there would be a C call on None)."""
    from proxy.dbproxy import sessioncore
    from tests.unit.test_native_session import READ, _session_class

    mods = [sessioncore]
    if sessioncore.COMPILED:
        mods.append(_native.load_pure("proxy.dbproxy.sessioncore"))
    state = {"phase": "ready", "buffered": 0, "waiting": False, "lost": False, "pending": False, "avoid": False,
             "txn": None, "pinned": False, "lsn": False, "global": False}  # fmt: skip
    for mod in mods:
        s = _session_class(mod)(state)
        s.router.route_at = lambda *a: _R1  # noqa: ARG005
        s.d.route_counts = None
        s._route(READ)
        s._route(READ)
        assert s.d.metrics.routes == {_R1: 2}, mod
