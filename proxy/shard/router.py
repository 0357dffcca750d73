"""One config's routing in one object: maps and groups built once, analyses cached (pure).

`ShardRouter(config)` is what a session of the future daemon will hold (a reload builds a new one
and swaps it): `plan(sql, params=..., session_key=...)` gives the plan of one statement (the
extended protocol's Parse text, with the Bind's decoded parameters), `plan_query(sql)` the plan of
a simple-protocol query string, which may hold several statements. Analyses are cached in bounded
caches owned by the router (no global state): parsing is the expensive part. Two caches:

* by exact text (prepared statements repeat their text);
* by shape (shape.py): statements that differ only in their literals (``WHERE user_id = 4711``,
  then ``= 4712``) share one analysis, made once from the shape text with ``$n`` for the literals
  and given each statement's values. A shape whose analysis could depend on the values is
  remembered as such and its statements go by exact text, as before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from .config import ShardConfig
from .keys import Analysis, GroupSpec, Plan, analyze, plan, plan_sql
from .maps import DedicatedMap, Key
from .shape import Found, Template, instantiate, lex, template

__all__ = ["ShardRouter"]

ANALYSIS_CACHE_SIZE = 4096  # statements; a few MB at most
SHAPE_CACHE_SIZE = 4096  # shapes, each with its analysis or None (not shareable)


class ShardRouter:
    """Routing decisions of one `ShardConfig`; build a new one on reload."""

    def __init__(self, config: ShardConfig, cache_size: int = ANALYSIS_CACHE_SIZE,
                 shape_cache_size: int = SHAPE_CACHE_SIZE) -> None:
        self.config = config
        self.shards: tuple[str, ...] = tuple(config.shards)
        self.groups: list[GroupSpec] = config.group_specs()
        self.specs: dict[str, GroupSpec] = {g.name: g for g in self.groups}
        self.maps: dict[str, DedicatedMap] = config.maps()
        self._cache: OrderedDict[str, Analysis] = OrderedDict()
        self._cache_size = cache_size
        self._shapes: dict[str, Template | None] = {}
        self._shape_cache_size = shape_cache_size
        # The last statement planned by shape: the session asks for its analysis again (hot
        # keys, count_plan) right after planning it.
        self._last: tuple[str, Analysis] | None = None
        self.shape_hits = 0  # statements analysed from a cached shape (no parse)
        self.parses = 0  # full analyses (each parses the statement)

    def _full(self, sql: str) -> Analysis:
        cached = self._cache.get(sql)
        if cached is not None:
            self._cache.move_to_end(sql)
            return cached
        self.parses += 1
        result = analyze(sql, self.groups, self.shards)
        self._cache[sql] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    def _learn(self, sql: str, found: Found, full: Analysis) -> Template | None:
        """Decide once whether `found`'s shape has a shareable analysis (shape.template)."""
        t = template(sql, found, full, self.groups, self.shards)
        shapes = self._shapes
        if len(shapes) >= self._shape_cache_size:
            del shapes[next(iter(shapes))]  # the oldest; a hot shape costs one parse to return
        shapes[found.key] = t
        return t

    def _by_shape(self, sql: str) -> tuple[Analysis | None, Found | None, bool]:
        """(the analysis from a cached shape or None, the shape, whether the shape is new)."""
        last = self._last
        if last is not None and last[0] == sql:
            return last[1], None, False
        found = lex(sql)
        if found is None:
            return None, None, False
        t = self._shapes.get(found.key, False)
        if t is False:
            return None, found, True
        if t is None:
            return None, found, False
        self.shape_hits += 1
        a = instantiate(t, sql, found.values)  # type: ignore[arg-type]
        self._last = (sql, a)
        return a, found, False

    def analyze(self, sql: str) -> Analysis:
        cached = self._cache.get(sql)
        if cached is not None:
            self._cache.move_to_end(sql)
            return cached
        a, found, new = self._by_shape(sql)
        if a is not None:
            return a
        full = self._full(sql)
        if new:
            assert found is not None
            self._learn(sql, found, full)
        return full

    def _plan(self, sql: str, a: Analysis, params: Sequence[Key | None] | None,
              session_key: str | None) -> Plan:
        if a.kind == "insert" and a._stmt is None and len(a.row_keys) > 1 and a.group in self.maps:
            # From a shape, without the tree to split the rows: split from a full analysis.
            m = self.maps[a.group]
            if None not in a.row_keys and len({m.shard_for(k) for k in a.row_keys}) > 1:  # type: ignore[arg-type]
                a = self._full(sql)
        return plan(a, self.maps, self.specs, params=params, session_key=session_key,
                    scatter=self.config.scatter, all_shards=self.shards)

    def plan(self, sql: str, *, params: Sequence[Key | None] | None = None,
             session_key: str | None = None) -> Plan:
        """The plan of one statement, with its bound parameters already decoded."""
        return self._plan(sql, self.analyze(sql), params, session_key)

    def plan_query(self, sql: str, *, session_key: str | None = None) -> Plan:
        """The plan of a simple-protocol query string (one or more statements)."""
        a, found, new = self._by_shape(sql)
        if new:
            assert found is not None
            t = self._learn(sql, found, self._full(sql))
            if t is not None:
                a = instantiate(t, sql, found.values)
        if a is not None:  # one statement (a shape's text parses to one), as plan_sql plans it
            return self._plan(sql, a, None, session_key)
        return plan_sql(sql, self.groups, self.maps, session_key=session_key,
                        scatter=self.config.scatter, all_shards=self.shards)

    def shard_for(self, group: str, key: Key) -> str:
        return self.maps[group].shard_for(key)
