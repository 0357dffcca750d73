"""Load-balancing algorithms: choose one upstream host for one request.

Theory of operation
-------------------
This is our ``LoadBalancer::chooseHost`` (Envoy): a pure decision over data the caller hands
in. A `Balancer` is built once from the pool's full configured membership, ``(name, weight)``
pairs, and rebuilt by the caller when that membership or a weight changes (Envoy's
``ThreadAwareLoadBalancer`` rebuild; no locks, the old object is simply dropped).

Per request the caller calls ``pick(candidates, key)``:

* ``candidates`` is the eligible subset right now (healthy, not ejected, not draining, not
  already tried by this request), a tuple in config order. Each element is any object with
  ``name: str``, ``weight: int`` (>= 1) and ``inflight: int`` (requests in progress on it). The
  caller reuses the *same tuple object* until eligibility changes, so each balancer derives what
  it needs from it (weights, cumulative sums, name maps) once and re-derives only when
  ``candidates is not self._last``. A retry passes a different, smaller tuple; the cost of that
  is one O(n) rebind, not a rebuild of anything built from ``members``.
* ``key`` is the affinity key (client address, header or cookie value) or None. Following
  Envoy's rule -- "assume that context information is missing and use sensible defaults" --
  algorithms that do not hash ignore it, and ``consistent_hash`` falls back to round robin.

``pick`` returns an element of ``candidates``, or None iff ``candidates`` is empty; it never
raises for a well-formed candidate. Mutable state (rotation counters, smooth-WRR current
weights) lives on the balancer instance; there is no module-level state. Comparisons of
``inflight / weight`` are done by cross-multiplication, exact integers and no division.

`Balancer`, `RoundRobin` and `WeightedRoundRobin` are proxy/lb/rotation.py's (compiled: the
pool's pick calls theirs in C), re-exported here; the other algorithms derive from that Balancer.

Costs per pick (n = len(candidates)): round_robin O(1); weighted_round_robin O(n) (as nginx);
least_conn O(n) (inflight changes every request, so there is nothing to precompute);
random_two O(log n); consistent_hash O(n) for the total-inflight sum plus one BLAKE2b hash,
one bisect and usually one ring step.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from math import ceil
from typing import Any, Protocol, TypeVar

from proxy.core.hashing import DEFAULT_VNODES_PER_WEIGHT, HashRing, hash64
from proxy.lb.rotation import Balancer, RoundRobin, WeightedRoundRobin

__all__ = [
    "Candidate",
    "Balancer",
    "RoundRobin",
    "WeightedRoundRobin",
    "LeastConn",
    "RandomTwo",
    "ConsistentHash",
    "ALGORITHMS",
    "make_balancer",
]


class Candidate(Protocol):
    """What a balancer reads from a host. The upstream's Host object satisfies this."""

    @property
    def name(self) -> str: ...
    @property
    def weight(self) -> int: ...
    @property
    def inflight(self) -> int: ...


C = TypeVar("C", bound=Candidate)


class LeastConn(Balancer):
    """Lowest ``inflight / weight``; ties go to the next in rotation so idle equals alternate."""

    name = "least_conn"

    def __init__(self, members: Sequence[tuple[str, int]], **options: Any) -> None:
        super().__init__(members, **options)
        self._start = 0

    def pick(self, candidates: Sequence[C], key: bytes | None = None) -> C | None:
        n = len(candidates)
        if not n:
            return None
        start = self._start
        if start >= n:
            start = 0
        self._start = start + 1
        best = candidates[start]
        bi, bw = best.inflight, best.weight
        # Scan in rotated order from `start`; only a strictly smaller load displaces the
        # incumbent, so among equals the one nearest the rotation point wins.
        for j in range(start + 1 - n, start):  # negative indices wrap around the tuple
            c = candidates[j]
            ci = c.inflight
            cw = c.weight
            if ci * bw < bi * cw:
                best, bi, bw = c, ci, cw
        return best


class RandomTwo(Balancer):
    """Power of two choices: two distinct weighted-random candidates, the less loaded wins.

    Mitzenmacher's result: two random choices cut the maximum load from O(log n / log log n)
    to O(log log n) while needing no global scan, and unlike least_conn it does not stampede
    onto one host that just became idle when many balancers share stale inflight counts.

    The second choice is drawn from the weight distribution with the first removed, by
    drawing in ``[0, total - w_first)`` and skipping over the first's interval of the
    cumulative weights; no rejection loop, so a dominant-weight host cannot make it spin.
    Option ``rng``: a ``random.Random`` (tests pass a seeded one); default a private instance.
    """

    name = "random_two"

    def __init__(
        self,
        members: Sequence[tuple[str, int]],
        *,
        rng: random.Random | None = None,
        **options: Any,
    ) -> None:
        super().__init__(members, **options)
        self._random = (rng if rng is not None else random.Random()).random
        self._cum: list[int] = []
        self._total = 0

    def pick(self, candidates: Sequence[C], key: bytes | None = None) -> C | None:
        n = len(candidates)
        if n < 2:
            return candidates[0] if n else None
        if candidates is not self._last:
            self._cum = list(accumulate(c.weight for c in candidates))
            self._total = self._cum[-1]
            self._last = candidates
        cum = self._cum
        rand = self._random
        i = bisect_right(cum, int(rand() * self._total))
        lo = cum[i - 1] if i else 0
        hi = cum[i]
        r = int(rand() * (self._total - (hi - lo)))
        if r >= lo:
            r += hi - lo
        j = bisect_right(cum, r)
        a = candidates[i]
        b = candidates[j]
        # inflight_b / weight_b < inflight_a / weight_a, cross-multiplied; ties keep `a`.
        if b.inflight * a.weight < a.inflight * b.weight:
            return b
        return a


class ConsistentHash(Balancer):
    """Ketama ring over the configured members with Google's bounded loads.

    Mirrokni, Thorup & Zadimoghaddam, "Consistent Hashing with Bounded Loads" (2016/2018): a
    host may take a new request only while ``inflight < ceil(c * (total + 1) / n)``, ``total``
    being the inflight sum over the candidates and ``n`` their count, ``c = load_factor``. The
    key's ring walk takes the first candidate under that cap, so a hot key spills to its ring
    successors instead of melting one host, and keys return home as load drains. If no
    candidate on the walk is under the cap (only possible when the candidates are not all on
    the ring), the first eligible one on the walk is taken; if none of them is on the ring at
    all (the caller passed hosts outside ``members``) or ``key`` is None, round robin.

    Option ``load_factor`` (default 1.25, >= 1.0; the paper's ``1 + epsilon``; 1.25 is
    Vimeo's HAProxy setting, ``hash-balance-factor 125``); ``vnodes_per_weight`` (160).
    """

    name = "consistent_hash"

    def __init__(
        self,
        members: Sequence[tuple[str, int]],
        *,
        load_factor: float = 1.25,
        vnodes_per_weight: int = DEFAULT_VNODES_PER_WEIGHT,
        **options: Any,
    ) -> None:
        super().__init__(members, **options)
        # Below 1.0 the cap can sit under the average load and every host is "over" it.
        if not load_factor >= 1.0:
            raise ValueError(f"load_factor must be >= 1.0, got {load_factor}")
        self.load_factor = float(load_factor)
        self.ring = HashRing(self.members, vnodes_per_weight)
        self._points = self.ring.points
        self._owners = self.ring.owners
        self._by_name: dict[str, Any] = {}
        self._fallback = RoundRobin(())

    def pick(self, candidates: Sequence[C], key: bytes | None = None) -> C | None:
        n = len(candidates)
        if not n:
            return None
        if key is None:
            return self._fallback.pick(candidates)
        if candidates is not self._last:
            self._by_name = {c.name: c for c in candidates}
            self._last = candidates
        by_name = self._by_name
        total = 0
        for c in candidates:
            total += c.inflight
        # ceil() of the float product: the paper's cap is ceil(c * average), with the request
        # being placed counted in (total + 1).
        limit = ceil(self.load_factor * (total + 1) / n)
        owners = self._owners
        size = len(owners)
        if not size:
            return self._fallback.pick(candidates)
        start = bisect_right(self._points, hash64(key))
        if start == size:
            start = 0
        # Fast path: the key's own host is eligible and under the cap.
        c = by_name.get(owners[start])
        if c is not None and c.inflight < limit:
            return c
        first = c
        tried = {owners[start]}
        found = 0 if c is None else 1
        for step in range(start + 1 - size, start):  # negative indices wrap around the ring
            name = owners[step]
            if name in tried:
                continue
            tried.add(name)
            c = by_name.get(name)
            if c is None:
                continue
            if c.inflight < limit:
                return c
            if first is None:
                first = c
            found += 1
            if found == n:  # every candidate checked; the rest of the ring cannot help
                break
        if first is not None:
            return first
        return self._fallback.pick(candidates)


ALGORITHMS: dict[str, type[Balancer]] = {
    cls.name: cls
    for cls in (RoundRobin, WeightedRoundRobin, LeastConn, RandomTwo, ConsistentHash)
}


def make_balancer(algorithm: str, members: Sequence[tuple[str, int]], **options: Any) -> Balancer:
    """Build the balancer named ``algorithm``; ValueError names the known ones."""
    try:
        cls = ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(
            f"unknown load-balancing algorithm {algorithm!r}; expected one of {sorted(ALGORITHMS)}"
        ) from None
    return cls(members, **options)
