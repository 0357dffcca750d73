"""Shard maps: pure functions from a sharding key to a shard name, and the reshard dry run's core.

Theory of operation
-------------------
A key is an `int` (the column is smallint, integer or bigint) or a `str` (text). Each map is an
immutable object built once from config; `shard_for(key)` is pure and gives the same answer in
every process, on every run, on every machine.

* `ModuloMap` -- ``shards[key mod N]`` on integer keys, the classic ``user_id % 4``. The result is
  Python's floor modulo, always in ``0..N-1``: key -7 with N = 4 goes to shard 1. PostgreSQL's
  ``%`` truncates toward zero (``-7 % 4`` is ``-3``); the SQL that finds a row's shard the same
  way as this map is ``((key % N) + N) % N``. Changing N moves almost every key.
* `HashMap` -- ``shards[h mod N]`` where ``h`` is exactly the hash PostgreSQL's
  ``PARTITION BY HASH`` computes for a one-column key (``satisfies_hash_partition``): the
  type's extended hash with seed ``HASH_PARTITION_SEED``, folded with ``hash_combine64`` into 0.
  So a key goes to shard i exactly when PostgreSQL would put it in the hash partition with
  ``MODULUS N, REMAINDER i`` (pgcat's `Sharder` does the same for bigint). Integers use
  ``hashint8extended`` (smallint and integer hash the same as bigint by PostgreSQL's design, so
  the column's integer type does not matter); text uses ``hashtextextended`` for a deterministic
  collation, which is ``hash_any_extended`` (Bob Jenkins' lookup3) over the UTF-8 bytes.
  tests/integration/test_shard_hash_parity.py checks both against a real server.
* `ConsistentMap` -- proxy.core.hashing.HashRing over the shards (`vnodes` points each); an
  integer key is hashed as its 8 bytes big-endian two's complement, a text key as its UTF-8
  bytes. Adding an (N+1)th shard moves about 1/(N+1) of the keys, all to the new shard.
* `RangeMap` -- sorted exclusive upper bounds: shard i holds ``uppers[i-1] <= key < uppers[i]``,
  the last shard everything from the last bound up. Covering by construction.
* `DedicatedMap` -- hot keys pinned to named shards on top of any of the above.

`key_moves(old, new, keys)` says, for a set of keys, which move and from where to where.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from proxy.core.hashing import HashRing

__all__ = [
    "HASH_PARTITION_SEED",
    "INT8_MAX",
    "INT8_MIN",
    "ConsistentMap",
    "DedicatedMap",
    "HashMap",
    "Key",
    "KeyTypeError",
    "ModuloMap",
    "RangeMap",
    "ShardMap",
    "check_key",
    "hash_bytes_extended",
    "hash_combine64",
    "hash_uint32_extended",
    "hashint8extended",
    "hashtextextended",
    "key_moves",
    "partition_hash",
]

Key = int | str

INT8_MIN = -(1 << 63)
INT8_MAX = (1 << 63) - 1
_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF

# src/include/catalog/partition.h: the seed every hash-partitioned table uses.
HASH_PARTITION_SEED = 0x7A5B22367996DCFD


class KeyTypeError(ValueError):
    """A key this map cannot place (text for an integer map, an integer beyond bigint)."""


def check_key(key: object) -> Key:
    """Return ``key`` if it is a valid shard key (a bigint-range int or a str); else raise."""
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise KeyTypeError(f"shard key {key!r} is neither an integer nor text")
    if isinstance(key, int) and not INT8_MIN <= key <= INT8_MAX:
        raise KeyTypeError(f"shard key {key} is out of range for bigint")
    return key


# --- PostgreSQL's hash functions (src/common/hashfn.c, src/backend/access/hash/hashfunc.c) ----


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = (a - c) & _M32; a ^= _rot(c, 4); c = (c + b) & _M32  # noqa: E702
    b = (b - a) & _M32; b ^= _rot(a, 6); a = (a + c) & _M32  # noqa: E702
    c = (c - b) & _M32; c ^= _rot(b, 8); b = (b + a) & _M32  # noqa: E702
    a = (a - c) & _M32; a ^= _rot(c, 16); c = (c + b) & _M32  # noqa: E702
    b = (b - a) & _M32; b ^= _rot(a, 19); a = (a + c) & _M32  # noqa: E702
    c = (c - b) & _M32; c ^= _rot(b, 4); b = (b + a) & _M32  # noqa: E702
    return a, b, c


def _final(a: int, b: int, c: int) -> tuple[int, int, int]:
    c ^= b; c = (c - _rot(b, 14)) & _M32  # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & _M32  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & _M32  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & _M32  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & _M32  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & _M32  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & _M32  # noqa: E702
    return a, b, c


def _seeded(a: int, b: int, c: int, seed: int) -> tuple[int, int, int]:
    seed &= _M64
    if seed:
        a = (a + (seed >> 32)) & _M32
        b = (b + (seed & _M32)) & _M32
        a, b, c = _mix(a, b, c)
    return a, b, c


def hash_uint32_extended(k: int, seed: int) -> int:
    """PostgreSQL's ``hash_bytes_uint32_extended``: lookup3 on one 32-bit word, 64-bit result."""
    a = b = c = (0x9E3779B9 + 4 + 3923095) & _M32
    a, b, c = _seeded(a, b, c, seed)
    a = (a + (k & _M32)) & _M32
    a, b, c = _final(a, b, c)
    return (b << 32) | c


def hash_bytes_extended(data: bytes, seed: int) -> int:
    """PostgreSQL's ``hash_bytes_extended`` (``hash_any_extended``) on a little-endian machine.

    PostgreSQL reads 32-bit words in the machine's byte order; every platform it is commonly
    run on (x86-64, arm64) is little-endian, and so is this function.
    """
    length = len(data)
    a = b = c = (0x9E3779B9 + length + 3923095) & _M32
    a, b, c = _seeded(a, b, c, seed)
    pos = 0
    rest = length
    while rest >= 12:
        a = (a + int.from_bytes(data[pos : pos + 4], "little")) & _M32
        b = (b + int.from_bytes(data[pos + 4 : pos + 8], "little")) & _M32
        c = (c + int.from_bytes(data[pos + 8 : pos + 12], "little")) & _M32
        a, b, c = _mix(a, b, c)
        pos += 12
        rest -= 12
    tail = data[pos:]
    # The last 11 bytes: a takes bytes 0-3, b 4-7, c 8-10 shifted up one byte (the lowest byte
    # of c is reserved for the length in lookup3).
    if rest > 8:
        c = (c + (int.from_bytes(tail[8:rest], "little") << 8)) & _M32
    if rest > 4:
        b = (b + int.from_bytes(tail[4 : min(rest, 8)], "little")) & _M32
    if rest > 0:
        a = (a + int.from_bytes(tail[0 : min(rest, 4)], "little")) & _M32
    a, b, c = _final(a, b, c)
    return (b << 32) | c


def hashint8extended(value: int, seed: int) -> int:
    """PostgreSQL's ``hashint8extended``: fold the high half into the low one, sign-aware."""
    value &= _M64
    lo = value & _M32
    hi = value >> 32
    negative = value >> 63
    lo ^= (~hi & _M32) if negative else hi
    return hash_uint32_extended(lo, seed)


def hashtextextended(value: str, seed: int) -> int:
    """PostgreSQL's ``hashtextextended`` for a deterministic collation (UTF-8 database)."""
    return hash_bytes_extended(value.encode("utf-8"), seed)


def hash_combine64(a: int, b: int) -> int:
    """PostgreSQL's ``hash_combine64`` (boost's hash_combine, 64-bit)."""
    a &= _M64
    a ^= (b + 0x49A0F4DD15E5A8E3 + (a << 54) + (a >> 7)) & _M64
    return a & _M64


def partition_hash(key: Key) -> int:
    """The unsigned 64-bit hash ``PARTITION BY HASH (key)`` takes modulo the partition count."""
    key = check_key(key)
    if isinstance(key, int):
        h = hashint8extended(key, HASH_PARTITION_SEED)
    else:
        h = hashtextextended(key, HASH_PARTITION_SEED)
    return hash_combine64(0, h)


# --- the maps ------------------------------------------------------------------------------------


class ShardMap(Protocol):
    """What the router needs of a map: the shard of a key, and every shard it can name."""

    @property
    def shards(self) -> tuple[str, ...]: ...

    def shard_for(self, key: Key) -> str: ...


def _need_shards(shards: Sequence[str]) -> tuple[str, ...]:
    out = tuple(shards)
    if not out:
        raise ValueError("a shard map needs at least one shard")
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate shard in {list(out)}")
    return out


@dataclass(frozen=True)
class ModuloMap:
    """``shards[key mod N]`` for integer keys (floor modulo: negative keys land in 0..N-1)."""

    shards: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shards", _need_shards(self.shards))

    def shard_for(self, key: Key) -> str:
        key = check_key(key)
        if not isinstance(key, int):
            raise KeyTypeError(f"map 'modulo' needs an integer shard key, got {key!r}")
        return self.shards[key % len(self.shards)]


@dataclass(frozen=True)
class HashMap:
    """``shards[partition_hash(key) mod N]``: PostgreSQL's own hash partitioning."""

    shards: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shards", _need_shards(self.shards))

    def shard_for(self, key: Key) -> str:
        return self.shards[partition_hash(key) % len(self.shards)]


def _ring_bytes(key: Key) -> bytes:
    if isinstance(key, int):
        return key.to_bytes(8, "big", signed=True)
    return key.encode("utf-8")


@dataclass(frozen=True)
class ConsistentMap:
    """A consistent hash ring over the shards, `vnodes` points per shard."""

    shards: tuple[str, ...]
    vnodes: int = 160
    _ring: HashRing = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shards", _need_shards(self.shards))
        ring = HashRing([(name, 1) for name in self.shards], vnodes_per_weight=self.vnodes)
        object.__setattr__(self, "_ring", ring)

    def shard_for(self, key: Key) -> str:
        return self._ring.lookup(_ring_bytes(check_key(key)))


@dataclass(frozen=True)
class RangeMap:
    """Shard i holds ``uppers[i-1] <= key < uppers[i]``; the last shard is unbounded above."""

    shards: tuple[str, ...]
    uppers: tuple[Key, ...]

    def __post_init__(self) -> None:
        shards = tuple(self.shards)  # a shard may hold two ranges: no uniqueness check here
        if not shards:
            raise ValueError("a shard map needs at least one shard")
        uppers = tuple(self.uppers)
        if len(uppers) != len(shards) - 1:
            raise ValueError(f"{len(shards)} ranges need {len(shards) - 1} upper bounds")
        kinds = {type(u) for u in uppers}
        if len(kinds) > 1:
            raise ValueError("range bounds mix integers and text")
        for lo, hi in zip(uppers, uppers[1:], strict=False):
            if not lo < hi:  # type: ignore[operator]
                raise ValueError(f"range bounds must increase: {lo!r} then {hi!r}")
        object.__setattr__(self, "shards", shards)
        object.__setattr__(self, "uppers", uppers)

    def shard_for(self, key: Key) -> str:
        key = check_key(key)
        if self.uppers and type(key) is not type(self.uppers[0]):
            want = "an integer" if isinstance(self.uppers[0], int) else "a text"
            raise KeyTypeError(f"map 'range' needs {want} shard key, got {key!r}")
        return self.shards[bisect_right(self.uppers, key)]  # type: ignore[arg-type]

    def shards_between(self, lo: Key | None, hi: Key | None) -> tuple[str, ...]:
        """The shards whose ranges may hold keys in [lo, hi] (None: unbounded), in map order."""
        out: list[str] = []
        for i, shard in enumerate(self.shards):
            low = self.uppers[i - 1] if i > 0 else None
            high = self.uppers[i] if i < len(self.uppers) else None
            if _between_ok(lo, hi, low, high) and shard not in out:
                out.append(shard)
        return tuple(out)


def _between_ok(lo: Key | None, hi: Key | None, low: Key | None, high: Key | None) -> bool:
    # Whether [lo, hi] (None: unbounded) may meet [low, high) (None: unbounded). Treating strict
    # bounds as inclusive only ever adds a shard that has no matching rows.
    if lo is not None and high is not None and not lo < high:  # type: ignore[operator]
        return False
    if hi is not None and low is not None and hi < low:  # type: ignore[operator]
        return False
    return True


@dataclass(frozen=True)
class DedicatedMap:
    """Hot keys pinned to their own shards; every other key goes through `base`."""

    base: ShardMap
    dedicated: Mapping[Key, str]

    @property
    def shards(self) -> tuple[str, ...]:
        extra = [s for s in dict.fromkeys(self.dedicated.values()) if s not in self.base.shards]
        return tuple(self.base.shards) + tuple(extra)

    def shard_for(self, key: Key) -> str:
        shard = self.dedicated.get(check_key(key))
        return shard if shard is not None else self.base.shard_for(key)

    def is_dedicated(self, key: Key) -> bool:
        return key in self.dedicated

    def shards_between(self, lo: Key | None, hi: Key | None) -> tuple[str, ...] | None:
        """For a range map: the shards keys in [lo, hi] may be on (dedicated ones included);
        None for the other maps, which scatter key ranges."""
        if not isinstance(self.base, RangeMap):
            return None
        out = list(self.base.shards_between(lo, hi))
        for key, shard in self.dedicated.items():
            if shard in out:
                continue
            if (lo is None or (type(key) is type(lo) and lo <= key)) and \
                    (hi is None or (type(key) is type(hi) and key <= hi)):  # type: ignore[operator]
                out.append(shard)
        return tuple(out)


def key_moves(old: ShardMap, new: ShardMap, keys: Iterable[Key]) -> dict[tuple[str, str], list[Key]]:
    """Keys whose shard differs between `old` and `new`, grouped by (source, target) shard."""
    moves: dict[tuple[str, str], list[Key]] = {}
    for key in keys:
        src = old.shard_for(key)
        dst = new.shard_for(key)
        if src != dst:
            moves.setdefault((src, dst), []).append(key)
    return moves
