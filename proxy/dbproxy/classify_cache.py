"""The classifier's cache (`ClassifierCache`, classify.py re-exports it): `classify` memoised by
SQL text, or by its shape (classify_key.py's `literal_key`), for one `write_functions` set.

Every simple Query's route starts here (`get_bytes`, from the dbproxy session's `_query`): an
exact-bytes lookup, the key, a lookup by the key. This module is compiled (proxy/_native.py) and
is also its own pure-Python twin. Compiled, `ClassifierCache` is an extension type
(classify_cache.pxd): its dicts are typed (a lookup is a C call, not a method call), the hit
counters are C integers, the key is classify_key.py's scanner called in C (`_key_typed`), and
the session calls `get_bytes` as a C method (interpreted, this method cost the compiled session
~4k instructions a statement, most of it entering the interpreter: docs/perf.md, "The
per-statement path, fourth pass"). A miss decodes the text and classifies it (classify.py),
as before. Compiled, `get_bytes` also keeps a memo in front of its dict: 64 slots, each the last
key found there with its decision, looked up by the key's bytes as the scanner wrote them into a
C array, so a hit on a statement seen before (pgbench's, every transaction) makes no bytes object
and hashes nothing; a key evicted from the dict leaves the memo (`_forget`), so the memo only
answers what the dict would, and the counts stay the pure twin's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .classify_functions import DEFAULT_WRITE_FUNCTIONS
from .classify_key import _key_typed, literal_key, literal_key_bytes
from .classify_types import Decision

__all__ = ["COMPILED", "DEFAULT_CACHE_SIZE", "MAX_CACHED_SQL_LENGTH", "ClassifierCache"]

DEFAULT_CACHE_SIZE = 10_000
# Longer texts are classified but not kept: they are mostly one-off (inlined IN-lists, bulk
# VALUES), and 10,000 of them would pin hundreds of megabytes of keys.
MAX_CACHED_SQL_LENGTH = 16_384
_MAX_CACHED = MAX_CACHED_SQL_LENGTH  # compiled: a C global (classify_cache.pxd)
# Compiled, `get_bytes` remembers the last key found in each of 64 slots (the memo, below) for texts
# up to this long (the size of its key buffer, classify_cache.pxd's `small`).
_MEMO_TEXT = 512
_NO_KEY = b"\0" * (_MEMO_TEXT + 1)  # an empty slot: no key is this long


def _probe() -> None:
    pass


# A compiled module's functions are Cython's, not Python's.
_COMPILED = type(_probe).__name__ != "function"
COMPILED = _COMPILED


# Statements that differ only in their literals and comments share one entry: see classify_key.py.
# A text is keyed only if it starts with whitespace, a comment or a DML keyword (classify_key.py's
# _KEYABLE): any other first byte (BEGIN, END, COMMIT, SET, an empty text) makes it its own key.
# The pure twin tests that before calling the regexes (~0.8k instructions interpreted for the call
# that fails at the first character: tpcb-like's BEGIN and END); compiled, the scanner is as quick.
_MAY_KEY = frozenset(bytes([c]) for c in b" \t\n\r\x0b\x0c-/SsIiUuDdVvWwTt")


class ClassifierCache:
    """`classify` memoised by SQL text, or by its shape (`literal_key`), for one `write_functions` set.

    Bounded, evicting the oldest entry first (FIFO over the dict's insertion order): a hit is one
    dict lookup and a counter increment, with no reordering; a hot statement evicted by a burst of
    one-off texts costs one `classify` to come back. `hits` and `misses` are for metrics.
    """

    __slots__ = ("_by_bytes", "_classify", "_entries", "_maxsize", "_memo_decisions", "_memo_keys", "_write_functions",
                 "hits", "misses")  # fmt: skip

    def __init__(
        self,
        maxsize: int = DEFAULT_CACHE_SIZE,
        *,
        write_functions: frozenset[str] = DEFAULT_WRITE_FUNCTIONS,
    ) -> None:
        # classify.py imports this module (to re-export the cache), so its `classify` is
        # imported here, when a cache is made, not when this module is.
        from .classify import classify

        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self._entries: dict[str, Decision] = {}
        self._by_bytes: dict[bytes, Decision] = {}  # `get_bytes`'s entries
        self._maxsize = maxsize
        self._write_functions = write_functions
        self._classify: Callable[..., Decision] = classify
        self.hits = 0
        self.misses = 0
        # Compiled only (the pure twin never reads them): the memo in front of `_by_bytes`.
        self._memo_keys = [_NO_KEY] * 64
        self._memo_decisions: list[Decision | None] = [None] * 64

    def get(self, sql: str) -> Decision:
        entries = self._entries
        if type(sql) is str:
            # By the key alone (see get_bytes).
            key = literal_key(sql)
            decision = entries.get(key)
            if decision is not None:
                self.hits += 1
                return decision
        else:  # the errors the exact lookup, then the key, raise
            decision = entries.get(sql)
            if decision is not None:
                self.hits += 1
                return decision
            key = literal_key(sql)
            if key is not sql:
                decision = entries.get(key)
                if decision is not None:
                    self.hits += 1
                    return decision
        self.misses += 1
        decision = self._classify(sql, write_functions=self._write_functions)
        self._remember(entries, key, decision)
        return decision

    def _remember(self, entries: dict[Any, Decision], key: Any, decision: Decision) -> None:
        if len(key) <= _MAX_CACHED:
            if len(entries) >= self._maxsize:
                old = next(iter(entries))  # the oldest (see the class docstring)
                del entries[old]
                if _COMPILED and entries is self._by_bytes:
                    self._forget(old)
            entries[key] = decision

    def _forget(self, key: Any) -> None:
        """Compiled: the memo's slot for `key` emptied, as `key` leaves `_by_bytes` (the memo holds
        only keys `_by_bytes` holds, with its decisions, so a memo hit is the hit the pure twin's
        lookup makes)."""
        if isinstance(key, bytes) and len(key) <= _MEMO_TEXT:
            self._memo_keys[_slot(key, len(key))] = _NO_KEY  # noqa: F821 (classify_cache.pxd)

    def get_bytes(self, sql: bytes) -> Decision:
        """`get` for SQL as the client sent it (UTF-8), keyed by those bytes (`literal_key_bytes`),
        so a hit costs no decoding; a miss decodes it and goes through `get`."""
        entries = self._by_bytes
        if type(sql) is bytes:
            # By the key alone, one lookup. A text is never looked up by its exact bytes first:
            # the entries are keys, and a key is not always its own key (`SELECT 1e+5.`, which
            # PostgreSQL refuses, keys to `SELECT 1e+0`, a valid statement whose own key is
            # `SELECT 0`), so the exact text of an earlier statement's key found that statement's
            # decision (the primary, for the refused one) instead of its own. Keyed texts
            # (pgbench's, an ORM's) also saved a hash and a probe of fresh bytes that never hit
            # (~0.5k instructions compiled); a text that is its own key is found all the same.
            if _COMPILED:
                b = sql
                n = len(b)
                if n > _MEMO_TEXT:
                    key = _key_typed(sql)  # literal_key_bytes, called in C (classify_key.pxd)
                else:
                    # The key made in a C array (`small`), looked for in the memo: the key last
                    # found in its slot, by length and bytes. A memo hit makes no bytes object,
                    # hashes nothing and probes no dict (~0.7k instructions for pgbench's
                    # statement); a memo miss makes the key's bytes and looks in `_by_bytes`.
                    w = _key_in(b, n, small)  # noqa: F821 (classify_cache.pxd: cimported; a C array)
                    own = w < 0
                    if own:  # the text is its own key
                        k = b
                        w = n
                    else:
                        k = small  # noqa: F821
                    slot = _slot(k, w)  # noqa: F821 (classify_cache.pxd)
                    if _memo_is(self._memo_keys[slot], k, w):  # noqa: F821 (classify_cache.pxd)
                        self.hits += 1
                        return self._memo_decisions[slot]
                    key = sql if own else k[:w]
                    decision = entries.get(key)
                    if decision is not None:
                        self.hits += 1
                        self._memo_keys[slot] = key
                        self._memo_decisions[slot] = decision
                        return decision
                    decision = self.get(sql.decode("utf-8", "replace"))
                    self._remember(entries, key, decision)
                    return decision
            elif sql[:1] in _MAY_KEY:
                key = literal_key_bytes(sql)
            else:  # BEGIN, END, COMMIT, SET...: their own key, without calling the regexes
                key = sql
            decision = entries.get(key)
            if decision is not None:
                self.hits += 1
                return decision
        else:  # the errors the exact lookup, then the key, raise
            decision = entries.get(sql)
            if decision is not None:
                self.hits += 1
                return decision
            key = literal_key_bytes(sql)
            if key is not sql:
                decision = entries.get(key)
                if decision is not None:
                    self.hits += 1
                    return decision
        decision = self.get(sql.decode("utf-8", "replace"))
        self._remember(entries, key, decision)
        return decision

    def __len__(self) -> int:
        return len(self._entries)
