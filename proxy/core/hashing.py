"""Key hashing shared by the daemons: a stable 64-bit hash, modulo-N, a ketama ring and HRW.

Theory of operation
-------------------
Everything here must give the same answer in every process, on every run and on every
machine, because two load-balancer workers (or a restarted one) must send the same key to the
same backend. Python's ``hash()`` is salted per process (PYTHONHASHSEED), so it is never used;
`hash64` is BLAKE2b with an 8-byte digest, read big-endian. BLAKE2b is in hashlib everywhere,
is fast for short keys and has no bias we would need to correct for.

Three ways to map a key onto members:

* `mod_n` -- ``hash64(key) % n``. Cheapest, but changing ``n`` remaps almost every key. Use it
  only where ``n`` is fixed (shard counts).
* `HashRing` -- a ketama-style consistent hash ring. Each member gets ``vnodes_per_weight *
  weight`` points, the point of vnode ``i`` of member ``m`` being ``hash64(b"m-i")``; the points
  are sorted once, at construction, and a key is placed with one ``bisect``. Adding or removing a
  member moves only the keys whose first point changes owner, about ``1/N`` of them. `walk`
  yields the distinct members clockwise from the key, which is the failover order and what the
  bounded-load balancer walks.
* `rendezvous` -- weighted highest-random-weight hashing (Schindelhauer & Schomaker's
  logarithmic method: score ``-weight / ln(u)`` with ``u`` uniform in (0, 1) from
  ``hash64(name, key)``). It is O(members) per lookup with no precomputation and gives exactly
  weight-proportional shares; it suits small member sets that change often.

Ring points collide with probability ~ (vnodes^2 / 2^65); ties are broken by member name so the
ring is still deterministic.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from collections.abc import Iterator, Sequence

__all__ = ["hash64", "mod_n", "HashRing", "rendezvous", "check_members", "DEFAULT_VNODES_PER_WEIGHT"]

# ketama (libmemcached) uses 160 points per server: 40 MD5 digests x 4 points each. With 160 the
# standard deviation of a member's share is about 1/sqrt(160) ~ 8% of its fair share.
DEFAULT_VNODES_PER_WEIGHT = 160

# 53 bits fit a float mantissa exactly, so (h53 + 0.5) / 2**53 is strictly inside (0, 1).
_TWO_53 = float(1 << 53)


def hash64(data: bytes) -> int:
    """Stable unsigned 64-bit hash of ``data`` (BLAKE2b-64, big-endian)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def mod_n(key: bytes, n: int) -> int:
    """Bucket ``key`` into ``range(n)``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return hash64(key) % n


def check_members(members: Sequence[tuple[str, int]]) -> None:
    """ValueError unless every (name, weight) has its own name and a weight of at least 1."""
    seen: set[str] = set()
    for name, weight in members:
        if name in seen:
            raise ValueError(f"duplicate member {name!r}")
        seen.add(name)
        if weight < 1:
            raise ValueError(f"member {name!r}: weight must be >= 1, got {weight}")


class HashRing:
    """A consistent hash ring over weighted members; immutable once built."""

    __slots__ = ("_points", "_owners", "_names", "_size")

    def __init__(
        self,
        members: Sequence[tuple[str, int]],
        vnodes_per_weight: int = DEFAULT_VNODES_PER_WEIGHT,
    ) -> None:
        if vnodes_per_weight < 1:
            raise ValueError(f"vnodes_per_weight must be >= 1, got {vnodes_per_weight}")
        check_members(members)
        pairs: list[tuple[int, str]] = []
        for name, weight in members:
            prefix = name.encode("utf-8") + b"-"
            for i in range(vnodes_per_weight * weight):
                pairs.append((hash64(prefix + str(i).encode("ascii")), name))
        pairs.sort()
        # Two parallel lists: bisect runs on plain ints, the owner is one index away.
        self._points = [p for p, _ in pairs]
        self._owners = [n for _, n in pairs]
        self._names = tuple(name for name, _ in members)
        self._size = len(self._names)

    @property
    def members(self) -> tuple[str, ...]:
        return self._names

    def __len__(self) -> int:
        return self._size

    def index(self, key: bytes) -> int:
        """Ring position of ``key``: the first point clockwise from its hash (wrapping)."""
        i = bisect_right(self._points, hash64(key))
        return 0 if i == len(self._points) else i

    def owner_at(self, i: int) -> str:
        return self._owners[i]

    @property
    def points(self) -> list[int]:
        """Sorted ring points (read-only by convention; for hot loops that bisect themselves)."""
        return self._points

    @property
    def owners(self) -> list[str]:
        """Owner of every ring point, in ring order (read-only by convention; for hot loops)."""
        return self._owners

    def lookup(self, key: bytes) -> str:
        """The member owning ``key``; LookupError on an empty ring."""
        if not self._owners:
            raise LookupError("empty hash ring")
        return self._owners[self.index(key)]

    def walk(self, key: bytes) -> Iterator[str]:
        """Yield every member once, in ring order starting at ``key``'s point."""
        owners = self._owners
        n = len(owners)
        if not n:
            return
        start = self.index(key)
        seen: set[str] = set()
        want = self._size
        for step in range(n):
            name = owners[(start + step) % n]
            if name not in seen:
                seen.add(name)
                yield name
                if len(seen) == want:
                    return


def rendezvous(key: bytes, members: Sequence[tuple[str, int]]) -> str:
    """Weighted highest-random-weight choice of a member for ``key``; LookupError if empty."""
    best_name = ""
    best_score = -1.0
    for name, weight in members:
        if weight < 1:
            raise ValueError(f"member {name!r}: weight must be >= 1, got {weight}")
        # NUL separates name and key so ("ab", b"c") and ("a", b"bc") hash differently.
        h = hash64(name.encode("utf-8") + b"\x00" + key)
        u = ((h >> 11) + 0.5) / _TWO_53  # ln(u) is finite and negative
        score = -weight / math.log(u)
        # Equal scores are (practically) impossible; the name breaks them deterministically.
        if score > best_score or (score == best_score and name < best_name):
            best_name, best_score = name, score
    if best_score < 0:
        raise LookupError("rendezvous over no members")
    return best_name
