"""The balancers' base and the two rotations, the picks the commonest pools make per request.

`Balancer` (the base of every algorithm: the configured membership and the identity cache of the
candidates), `RoundRobin` and `WeightedRoundRobin` (nginx's smooth weighted round robin). The
algorithms, their contract and the others (least_conn, random_two, consistent_hash) are in
proxy/lb/balancer.py, which re-exports these.

This file is compiled (proxy/_native.py) and is also its own pure-Python twin: rotation.pxd makes
the three extension types, so the pool's pick (lb/clientcore.py's `PoolCore.pick`, compiled) calls
`pick` in C through the base's vtable (interpreted, round robin's pick was 24 bytecodes and a
Python call per request, the weighted one's 48: docs/perf.md, "The lb exchange, fourth pass").
The other algorithms are Python subclasses of the compiled base (Cython's dispatch calls their
`pick`). The base's object fields are member descriptors (proxy/_members.pxd), so those
subclasses read `_last` and `members` as the slots they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from proxy.core.hashing import check_members

__all__ = ["Balancer", "RoundRobin", "WeightedRoundRobin"]

C = TypeVar("C")

_EMPTY: tuple[Any, ...] = ()


class Balancer:
    """Base class: holds the configured membership and the identity cache of candidates."""

    __slots__ = ("_last", "members")
    name = ""

    def __init__(self, members: Sequence[tuple[str, int]], **options: Any) -> None:
        if options:
            # Keep misspelt options from being silently ignored.
            raise TypeError(f"{self.name or type(self).__name__}: unknown option(s) {sorted(options)}")
        check_members(members)
        self.members: tuple[tuple[str, int], ...] = tuple((n, w) for n, w in members)
        self._last: Sequence[Any] = _EMPTY

    def pick(self, candidates: Sequence[C], key: bytes | None = None) -> C | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.members)} members)"


class RoundRobin(Balancer):
    """Plain rotation over the candidates; weights are ignored."""

    __slots__ = ("_next",)
    name = "round_robin"

    def __init__(self, members: Sequence[tuple[str, int]], **options: Any) -> None:
        super().__init__(members, **options)
        self._next = 0

    def pick(self, candidates: Sequence[C], key: bytes | None = None) -> C | None:
        n = len(candidates)
        if not n:
            return None
        i = self._next
        if i >= n:
            # The set shrank (a host went down or a retry excluded one): restart the cycle
            # rather than skewing with a modulo of an unrelated counter.
            i = 0
        self._next = i + 1
        return candidates[i]


class WeightedRoundRobin(Balancer):
    """nginx's smooth weighted round robin (ngx_http_upstream_get_peer), exactly.

    Each pick adds every candidate's weight to its ``current``, picks the largest ``current``
    (first in config order on ties) and subtracts the total weight from the winner. For
    {a:5, b:1, c:1} this yields ``a a b a c a a`` and repeats, interleaving rather than
    bursting. ``current`` values persist per name across eligibility changes: a host that
    drops out and comes back resumes where it was, as in nginx where peers keep their state.
    """

    __slots__ = ("_current", "_names", "_saved", "_total", "_weights")
    name = "weighted_round_robin"

    def __init__(self, members: Sequence[tuple[str, int]], **options: Any) -> None:
        super().__init__(members, **options)
        self._saved: dict[str, int] = {}
        # Aligned with self._last: current weights kept in a list while the tuple is stable.
        self._names: list[str] = []
        self._weights: list[int] = []
        self._current: list[int] = []
        self._total = 0

    def _rebind(self, candidates: Sequence[C]) -> None:
        saved = self._saved
        for name, cur in zip(self._names, self._current):
            saved[name] = cur
        self._names = [c.name for c in candidates]  # type: ignore[attr-defined]
        self._weights = [c.weight for c in candidates]  # type: ignore[attr-defined]
        self._current = [saved.get(name, 0) for name in self._names]
        self._total = sum(self._weights)
        self._last = candidates

    def current_weights(self) -> dict[str, int]:
        """Current weight of every name seen so far (for tests and the status page)."""
        out = dict(self._saved)
        out.update(zip(self._names, self._current))
        return out

    def pick(self, candidates: Sequence[C], key: bytes | None = None) -> C | None:
        if not candidates:
            return None
        if candidates is not self._last:
            self._rebind(candidates)
        cur = self._current
        weights = self._weights
        if len(weights) == 1 and type(weights[0]) is int and type(cur[0]) is int:
            # One candidate wins, its current weight gaining its weight and losing the total,
            # the same int: nothing changes (the loop and two additions cost ~0.25k compiled).
            return candidates[0]
        best = 0
        best_v = cur[0] = cur[0] + weights[0]
        for i in range(1, len(weights)):
            v = cur[i] = cur[i] + weights[i]
            if v > best_v:  # strict: the first in config order wins ties, as in nginx
                best, best_v = i, v
        cur[best] = best_v - self._total
        return candidates[best]


def _probe() -> None:
    pass


# Compiled, the base's object fields are member descriptors, not Cython's getsets
# (proxy/_members.pxd): the interpreted subclasses (balancer.py) read and set them as slots.
if type(_probe).__name__ != "function":
    as_members(Balancer, Balancer.__slots__)  # noqa: F821
