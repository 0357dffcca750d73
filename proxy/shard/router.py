"""One config's routing in one object: maps and groups built once, analyses cached (pure).

`ShardRouter(config)` is what a session of the future daemon will hold (a reload builds a new one
and swaps it): `plan(sql, params=..., session_key=...)` gives the plan of one statement (the
extended protocol's Parse text, with the Bind's decoded parameters), `plan_query(sql)` the plan of
a simple-protocol query string, which may hold several statements. Analyses are cached per
statement text in a bounded LRU owned by the router (no global state): parsing is the expensive
part and prepared statements repeat.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from .config import ShardConfig
from .keys import Analysis, GroupSpec, Plan, analyze, plan, plan_sql
from .maps import DedicatedMap, Key

__all__ = ["ShardRouter"]

ANALYSIS_CACHE_SIZE = 4096  # statements; a few MB at most


class ShardRouter:
    """Routing decisions of one `ShardConfig`; build a new one on reload."""

    def __init__(self, config: ShardConfig, cache_size: int = ANALYSIS_CACHE_SIZE) -> None:
        self.config = config
        self.shards: tuple[str, ...] = tuple(config.shards)
        self.groups: list[GroupSpec] = config.group_specs()
        self.specs: dict[str, GroupSpec] = {g.name: g for g in self.groups}
        self.maps: dict[str, DedicatedMap] = config.maps()
        self._cache: OrderedDict[str, Analysis] = OrderedDict()
        self._cache_size = cache_size

    def analyze(self, sql: str) -> Analysis:
        cached = self._cache.get(sql)
        if cached is not None:
            self._cache.move_to_end(sql)
            return cached
        result = analyze(sql, self.groups, self.shards)
        self._cache[sql] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    def plan(self, sql: str, *, params: Sequence[Key | None] | None = None,
             session_key: str | None = None) -> Plan:
        """The plan of one statement, with its bound parameters already decoded."""
        return plan(self.analyze(sql), self.maps, self.specs, params=params,
                    session_key=session_key, scatter=self.config.scatter, all_shards=self.shards)

    def plan_query(self, sql: str, *, session_key: str | None = None) -> Plan:
        """The plan of a simple-protocol query string (one or more statements)."""
        return plan_sql(sql, self.groups, self.maps, session_key=session_key,
                        scatter=self.config.scatter, all_shards=self.shards)

    def shard_for(self, group: str, key: Key) -> str:
        return self.maps[group].shard_for(key)
