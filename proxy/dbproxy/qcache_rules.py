"""Which statements the query cache takes, and for how long: the hint, then `[[cache.rules]]`.

Pure (issue 20). A statement is cached with the TTL of the first of:

1. its leading `/* tierproxy:cache ttl=N */` hint (qcache_policy.cache_hint);
2. the first `[[cache.rules]]` entry it matches, in config order. A rule names `tables`, a
   statement `fingerprint` (or an example `statement` whose fingerprint is taken at load), or
   both; a statement matches when every condition given holds:
   - `tables`: every relation the statement reads is one of them (a join with a table not
     listed does not match, so a rule never caches data from a table nobody named);
   - `fingerprint`: PostgreSQL's query fingerprint (libpg_query's, through pglast) equals it:
     the parse tree with constants, parameter numbers, comments, spacing and IN-list lengths
     left out, so `WHERE id = 1` and `WHERE id = $1` share one.
   A rule's `ttl` is in seconds (1..86400).

and only then if `qcache_policy.cacheable` says it is safe: a rule never makes an unsafe statement
cacheable (a volatile function, FOR UPDATE, a write, a transaction that wrote...).

`CachePlanner.plan(sql)` memoises (ttl, shape) per statement text, and `normalise(sql)` the key's
normalised text, so a statement seen before costs dict lookups (the parse and the fingerprint are the expensive parts); the memo is
bounded (`MEMO_SIZE` texts, oldest dropped first).

Table names in the config (and in `POST /cache/purge`) are folded as PostgreSQL folds them:
`Orders` is `orders`, `"Orders"` stays `Orders`; a schema is dropped (`shop.orders` is `orders`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pglast.parser import ParseError, fingerprint

from .qcache_policy import Shape, cache_hint, normalise, statement_shape

__all__ = ["MEMO_SIZE", "CachePlanner", "Rule", "fold_table_name", "statement_fingerprint"]

MEMO_SIZE = 4096
_IDENT = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
_QUALIFIED = re.compile(rf"^(?:{_IDENT}\.)?({_IDENT})$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")


def fold_table_name(name: str) -> str | None:
    """`name` (optionally `schema.`-qualified) as PostgreSQL folds it, schema dropped; None if it is
    not an identifier."""
    m = _QUALIFIED.match(name)
    if m is None:
        return None
    bare = m.group(1)
    if bare.startswith('"'):
        return bare[1:-1].replace('""', '"')
    return bare.lower()


def statement_fingerprint(sql: str) -> str | None:
    """PostgreSQL's fingerprint of `sql` (16 hex digits); None if it does not parse."""
    if "\x00" in sql:
        return None
    try:
        return fingerprint(sql)
    except (ParseError, ValueError, RecursionError):
        return None


@dataclass(frozen=True, slots=True)
class Rule:
    """A config rule, validated and folded (config.py builds these from `[[cache.rules]]`)."""

    ttl: int
    tables: frozenset[str] | None = None
    fingerprint: str | None = None

    def matches(self, shape: Shape, fp: str | None) -> bool:
        if self.tables is not None and (not shape.tables or not shape.tables <= self.tables):
            return False
        return self.fingerprint is None or fp == self.fingerprint


class CachePlanner:
    """The TTL a statement text is cached with (None: not by hint nor rule) and its shape."""

    def __init__(self, rules: Sequence[Rule] = ()) -> None:
        self.rules = tuple(rules)
        self._need_fp = any(r.fingerprint is not None for r in self.rules)
        self._memo: dict[str, tuple[int | None, Shape | None]] = {}
        self._texts: dict[str, bytes | None] = {}
        self.parses: dict[bytes, Any] = {}  # Parse message bytes -> decoded (qcache_extended.py)

    def plan(self, sql: str) -> tuple[int | None, Shape | None]:
        """(ttl, shape): the hint's or the first matching rule's TTL; the shape is None when the
        TTL is None (not parsed then unless a rule needed it) or the text does not parse."""
        memo = self._memo
        found = memo.get(sql)
        if found is not None:
            return found
        found = self._plan(sql)
        if len(memo) >= MEMO_SIZE:
            del memo[next(iter(memo))]
        memo[sql] = found
        return found

    def normalise(self, sql: str) -> bytes | None:
        """qcache_policy.normalise, memoised like `plan` (a scan per lookup would cost every hit)."""
        texts = self._texts
        if sql in texts:
            return texts[sql]
        text = normalise(sql)
        if len(texts) >= MEMO_SIZE:
            del texts[next(iter(texts))]
        texts[sql] = text
        return text

    def _plan(self, sql: str) -> tuple[int | None, Shape | None]:
        ttl = cache_hint(sql)
        if ttl is None and not self.rules:
            return None, None
        shape = statement_shape(sql)
        if shape is None:
            return None, None
        if ttl is not None:
            return ttl, shape
        fp = statement_fingerprint(sql) if self._need_fp else None
        for rule in self.rules:
            if rule.matches(shape, fp):
                return rule.ttl, shape
        return None, None
