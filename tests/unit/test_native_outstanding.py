"""The outstanding queries per backend (proxy/dbproxy/outstanding.py's `Outstanding`) against the
plain dict they replace: as a mapping (both twins, the same writes give the same reads), as the
compiled books count them (`Books.started`/`finished` with an Outstanding against the pure books
with a dict: the same counts, histograms, connection flags and errors) and as the compiled
router reads them (the least-outstanding choice with an Outstanding against the same router with
the dict). Backend names come as equal strings that are not always the same object, so a slot
found by identity only would count in the wrong place (or make a second slot)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import _native
from proxy.dbproxy import outstanding as outstanding_mod
from tests.unit.test_native_books import _books, _Conn, _outcome, _state
from tests.unit.test_native_differential import _twins
from tests.unit.test_native_router import events, settings_, view_sets

_NAMES = ["primary", "replica1", "replica2", "r1", "r2"]


def _copy(name: str) -> str:
    """An equal str that is another object (the slot must be found by equality too)."""
    return "".join(list(name))


_name = st.tuples(st.sampled_from(_NAMES), st.booleans()).map(lambda t: _copy(t[0]) if t[1] else t[0])


def _mods():
    mods = [outstanding_mod]
    if outstanding_mod.COMPILED:
        mods.append(_native.load_pure("proxy.dbproxy.outstanding"))
    return mods


def _view(m) -> tuple:
    return (sorted(m.items()), len(m), sorted(m), sorted(m.keys()), sorted(m.values()), dict(m))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "add", "get", "item", "in", "count_of"]), _name,
                          st.integers(-2, 5)), max_size=40))  # fmt: skip
def test_outstanding_is_the_dict(ops):
    """Both twins' Outstanding against a dict: the same writes give the same reads."""
    for mod in _mods():
        want: dict[str, int] = {}
        got = mod.Outstanding()
        for op, name, n in ops:
            if op == "set":
                want[name] = n
                got[name] = n
            elif op == "add":  # the daemon's `_forget`: `outstanding[backend] -= 1`
                results = [_outcome(lambda m, k=name, d=n: m.__setitem__(k, m[k] + d), m) for m in (want, got)]
                assert results[0] == results[1]
            elif op == "get":
                assert got.get(name) == want.get(name) and got.get(name, 0) == want.get(name, 0)
            elif op == "item":
                assert _outcome(got.__getitem__, name) == _outcome(want.__getitem__, name)
            elif op == "in":
                assert (name in got) == (name in want)
            else:
                assert got.count_of(name) == want.get(name, 0)
            assert _view(got) == _view(want) and got == want and not got != want
            assert all(type(v) is int for v in got.values())


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([0.0, 0.0, 0.5, 30.0]), st.lists(st.sampled_from(["primary", "replica1", "replica2"]), max_size=3),
       st.lists(st.tuples(st.sampled_from(["started", "finished", "sent long ago", "sent ahead"]), st.integers(0, 6)),
                max_size=30))  # fmt: skip
def test_books_count_in_outstanding_as_in_the_dict(query_timeout, known, calls):
    """The compiled books with an Outstanding (the daemon's) against the pure books with the dict
    they kept before: the same calls leave the same counts, histograms and flags, and raise the
    same errors (a backend never counted). The connections of a backend have equal names, not
    always the same object."""
    compiled, pure = _twins("proxy.dbproxy.books")

    async def run() -> None:
        books = [_books(mod, query_timeout, known) for mod in (compiled, pure)]
        slots = outstanding_mod.Outstanding()
        for name in known:
            slots[_copy(name)] = 0
        books[0].outstanding = slots
        names = ["primary", "replica1", "replica2", "elsewhere"]
        conns = [[_Conn(b) for b in names] + [_Conn(_copy(b)) for b in names[:3]] for _ in books]
        for name, i in calls:
            if name.startswith("sent"):
                for cs in conns:
                    cs[i].sent_at = -1e9 if name == "sent long ago" else 1e9
                continue
            got = [_outcome(getattr(d, name), cs[i]) for d, cs in zip(books, conns)]
            assert got[0] == got[1], (name, i)
            assert _state(books[0], conns[0]) == _state(books[1], conns[1]), (name, i)
            assert type(books[0].outstanding) is outstanding_mod.Outstanding
        for cs in conns:
            for c in cs:
                if c.timer is not None:
                    c.timer.cancel()

    asyncio.run(run())


@settings(max_examples=200, deadline=None)
@given(settings_, st.lists(view_sets, min_size=1, max_size=3), st.lists(events, min_size=5, max_size=40))
def test_the_router_reads_outstanding_as_the_dict(kw, view_pool, evs):
    """The compiled router's least-outstanding choice given an Outstanding (the daemon's) against
    the same router given the dict with the same counts: the same routes, in the same order."""
    compiled, _ = _twins("proxy.dbproxy.session_router")
    made = [_outcome(lambda: compiled.SessionRouter(**kw)) for _ in range(2)]
    if made[0][0] == "raised":
        return
    routers = (made[0][1], made[1][1])
    for ev in evs:
        if ev[0] == "route":
            _, d, now, which, as_list, primary_lsn, out, floor = ev
            v = view_pool[which % len(view_pool)]
            slots = None
            if out is not None:
                slots = outstanding_mod.Outstanding()
                for name, n in out.items():
                    slots[_copy(name)] = n
            got = [_outcome(lambda r, o: r.route(d, now, list(v) if as_list else v, primary_lsn=primary_lsn,
                                                 outstanding=o, floor_lsn=floor), r, o)
                   for r, o in zip(routers, (out, slots))]  # fmt: skip
        elif ev[0] == "ready":
            got = [_outcome(r.on_ready_for_query, ev[1]) for r in routers]
        else:
            got = [_outcome(r.on_commit_lsn, ev[1]) for r in routers]
        assert got[0] == got[1], ev



def test_the_router_balances_by_the_outstanding_counts():
    """Balance "statement" over two and three replicas, every count from 0 to 2 each: the
    compiled router given an Outstanding picks the replica the dict's counts pick (the least
    loaded), statement after statement."""
    import itertools

    from proxy.dbproxy.classify_types import Decision, Reason, Target
    from proxy.dbproxy.route_types import ReplicaView

    compiled, _ = _twins("proxy.dbproxy.session_router")
    read = Decision(Target.REPLICA, Reason.READ, detail="select")
    for names in (("r1", "r2"), ("r1", "r2", "r3")):
        views = tuple(ReplicaView(name=n) for n in names)
        for counts in itertools.product(range(3), repeat=len(names)):
            out = dict(zip(names, counts))
            slots = outstanding_mod.Outstanding()
            for name, n in out.items():
                slots[_copy(name)] = n
            least = [n for n in names if out[n] == min(counts)]
            routers = [compiled.SessionRouter(balance="statement") for _ in range(2)]
            for _ in range(3):
                got = [r.route(read, 0.0, views, outstanding=o).target for r, o in zip(routers, (out, slots))]
                assert got[0] == got[1] and got[0] in least, (out, got)
