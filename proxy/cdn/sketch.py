"""A count-min sketch of access frequencies with aging: W-TinyLFU's admission filter.

Sans-IO and deterministic: a key's four counter positions come from a keyed BLAKE2b digest of
its repr, so a replayed trace (`tierproxy cdn whatif`) gives the same answer on every run and
in every process (Python's own `hash` of bytes is salted per process). Counters are 4 bits
(saturate at 15) as in Caffeine's FrequencySketch: TinyLFU only needs to tell "more popular
than the victim", not exact counts. After `sample_size` increments every counter is halved
(the "reset" of the TinyLFU paper), so yesterday's popular objects lose their advantage and the
filter follows a shifting working set.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

__all__ = ["FrequencySketch"]

DEPTH = 4
MAX_COUNT = 15
# Odd 64-bit multipliers (Caffeine's seeds): each row picks its counter from the same digest
# multiplied differently, which spreads one 64-bit hash into DEPTH independent-enough indexes.
_SEEDS = (0xC3A5C85C97CB3127, 0xB492B66FBE98F273, 0x9AE16A3B2F90404F, 0xCBF29CE484222325)
_MASK64 = (1 << 64) - 1
_HALF = bytes(i >> 1 for i in range(256))  # translate table: every counter halved at once


def key_hash(key: Any) -> int:
    """A stable 64-bit hash of a store key (bytes and tuples of bytes/str)."""
    return int.from_bytes(blake2b(repr(key).encode(), digest_size=8).digest(), "little")


class FrequencySketch:
    """Approximate access counts for an unbounded key space in `DEPTH` rows of `width` counters."""

    def __init__(self, width: int, sample_size: int | None = None) -> None:
        w = 16
        while w < width:
            w <<= 1
        self.width = w
        self._shift = 64 - (w.bit_length() - 1)
        self.sample_size = sample_size if sample_size is not None else 10 * w
        self.additions = 0
        self.resets = 0
        self._rows = [bytearray(w) for _ in range(DEPTH)]

    def indexes(self, key: Any) -> tuple[int, int, int, int]:
        """The key's counter in each row; a policy keeps them for resident keys (hashing is the
        expensive part of a sketch operation)."""
        h = key_hash(key)
        shift = self._shift
        s0, s1, s2, s3 = _SEEDS
        return (((h * s0) & _MASK64) >> shift, ((h * s1) & _MASK64) >> shift,
                ((h * s2) & _MASK64) >> shift, ((h * s3) & _MASK64) >> shift)

    def frequency(self, key: Any) -> int:
        return self.frequency_at(self.indexes(key))

    def increment(self, key: Any) -> None:
        self.increment_at(self.indexes(key))

    def frequency_at(self, ix: tuple[int, int, int, int]) -> int:
        r0, r1, r2, r3 = self._rows
        return min(r0[ix[0]], r1[ix[1]], r2[ix[2]], r3[ix[3]])

    def increment_at(self, ix: tuple[int, int, int, int]) -> None:
        added = False
        for row, i in zip(self._rows, ix, strict=True):
            if row[i] < MAX_COUNT:
                row[i] += 1
                added = True
        if added:
            self.additions += 1
            if self.additions >= self.sample_size:
                self.reset()

    def reset(self) -> None:
        """Halve every counter (aging); the sample count is halved too, as in the paper."""
        self._rows = [bytearray(row.translate(_HALF)) for row in self._rows]
        self.additions //= 2
        self.resets += 1
