"""The query cache seen by operators (issue 20): `SHOW CACHE`, `/metrics`, `POST /cache/purge`.

- `cache_snapshot(cache)`: the process's cache counters as plain JSON-able data (totals and, per
  table, entries, bytes, hits, misses, invalidations); `merge_cache` adds up the workers' ones.
- `show_cache(snapshot)`: the console command's rows. The first row, table `*`, holds the totals
  (bytes is the store's own count, with its per-entry overhead; evictions and expirations are
  only counted there); then one row per table that has entries or counts. A statement reading two
  tables counts on both rows, so the table rows do not add up to the total.
- `cache_metrics(snapshot)`: `tierproxy_dbproxy_query_cache_*` metrics.
- `purge_tables(query)`: which tables a `POST /cache/purge` asks for (pure), and
  `add_cache_routes(app, daemon)`: the route itself, behind the admin guard like every admin
  change (JSON content type, no foreign Origin, the bearer token when `admin.token_file` is set).
  A purge is an invalidation: the entries go, and an answer already on its way for those tables
  is not stored.

Table names are compared as PostgreSQL folds them (`fold_table_name`): `Orders` and `orders` are
one table, `"Orders"` another; a schema is dropped (the cache indexes bare names).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from proxy.pgfront.console import Rows

from .qcache_rules import fold_table_name

if TYPE_CHECKING:
    from .daemon import DbProxyDaemon
    from .qcache_session import QueryCache

__all__ = ["TableCounters", "add_cache_routes", "cache_metrics", "cache_snapshot", "merge_cache",
           "purge_local", "purge_tables", "show_cache"]  # fmt: skip

P = "tierproxy_dbproxy_query_cache_"
_TOTALS = ("entries", "bytes", "max_bytes", "hits", "misses", "stored", "not_stored", "evictions",
           "expirations", "invalidations", "coalesced", "purges", "notifications", "listen_connects",
           "listening", "redis_hits", "bypassed", "redis_up", "redis_outages")  # fmt: skip


class TableCounters:
    """Hits and misses per table, counted by the session at each lookup (the store counts only
    totals: a miss has no entry to say which tables it reads)."""

    __slots__ = ("hits", "misses")

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.misses: dict[str, int] = {}

    def count(self, tables: Iterable[str], hit: bool) -> None:
        into = self.hits if hit else self.misses
        for table in tables:
            into[table] = into.get(table, 0) + 1


def cache_snapshot(cache: QueryCache | None) -> dict[str, Any] | None:
    """Counters of the process's cache (None: no cache) as JSON-able data."""
    if cache is None:
        return None
    store = cache.store
    per_table: dict[str, dict[str, int]] = {}

    def row(table: str) -> dict[str, int]:
        return per_table.setdefault(table, {"entries": 0, "bytes": 0, "hits": 0, "misses": 0, "invalidations": 0})

    for table, (entries, size) in store.table_sizes().items():
        r = row(table)
        r["entries"], r["bytes"] = entries, size
    counters: TableCounters = cache.table_counters
    for table, n in counters.hits.items():
        row(table)["hits"] = n
    for table, n in counters.misses.items():
        row(table)["misses"] = n
    for table, n in store.invalidations.items():
        row(table)["invalidations"] = n
    totals = {
        "entries": len(store), "bytes": store.bytes, "max_bytes": store.max_bytes, "hits": store.hits,
        "misses": store.misses, "stored": cache.stored, "not_stored": cache.not_stored,
        "evictions": store.evictions, "expirations": store.expirations,
        "invalidations": sum(store.invalidations.values()) + cache.cleared,
        "coalesced": cache.coalesced, "purges": cache.purges, "notifications": cache.notifications,
        "listen_connects": cache.listen_connects, "listening": cache.listening,
        # the shared level ([cache] redis, qcache_bus.py); redis_up summed over workers: how many reach it
        "redis_hits": cache.l2_hits, "bypassed": cache.bypassed,
        "redis_up": int(cache.shared is not None and cache.shared.up),
        "redis_outages": cache.shared.outages if cache.shared is not None else 0,
    }  # fmt: skip
    return {"totals": totals, "tables": per_table}


def merge_cache(snaps: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The workers' cache snapshots added up (None when no worker has a cache)."""
    present = [s for s in snaps if s is not None]
    if not present:
        return None
    totals = dict.fromkeys(_TOTALS, 0)
    tables: dict[str, dict[str, int]] = {}
    for s in present:
        for name, value in s["totals"].items():
            totals[name] = totals.get(name, 0) + value
        for table, row in s["tables"].items():
            mine = tables.setdefault(table, dict.fromkeys(row, 0))
            for name, value in row.items():
                mine[name] = mine.get(name, 0) + value
    return {"totals": totals, "tables": tables}


SHOW_COLUMNS = ("table", "entries", "bytes", "hits", "misses", "invalidations", "evictions", "expirations",
                "max_bytes")  # fmt: skip


def show_cache(s: Mapping[str, Any]) -> Rows:
    """SHOW CACHE: the totals (table `*`), then per table, by name. No rows: no cache."""
    snap = s.get("qcache")
    if snap is None:
        return SHOW_COLUMNS, []
    t = snap["totals"]
    rows: list[Sequence[Any]] = [("*", t["entries"], t["bytes"], t["hits"], t["misses"], t["invalidations"],
                                  t["evictions"], t["expirations"], t["max_bytes"])]  # fmt: skip
    for table in sorted(snap["tables"]):
        r = snap["tables"][table]
        rows.append((table, r["entries"], r["bytes"], r["hits"], r["misses"], r["invalidations"], None, None,
                     None))  # fmt: skip
    return SHOW_COLUMNS, rows


def cache_metrics(snap: Mapping[str, Any] | None) -> Iterable[Metric]:
    """`tierproxy_dbproxy_query_cache_*`; nothing when the cache is off."""
    if snap is None:
        return
    t = snap["totals"]
    for name, doc in (("hits", "Statements answered from the query cache"),
                      ("misses", "Cacheable statements not found in the query cache (sent to the primary)"),
                      ("stores", "Answers stored in the query cache"),
                      ("evictions", "Entries evicted to stay within cache.max_bytes"),
                      ("expirations", "Entries dropped at the end of their TTL"),
                      ("coalesced", "Misses that waited for another client's identical query instead of running it"),
                      ("purges", "POST /cache/purge requests"),
                      ("notifications", "NOTIFYs received on [cache.listen]'s channel (writes that bypassed the proxy)"),
                      ("listen_connects", "[cache.listen] connections made (each one drops the whole cache)"),
                      ("redis_hits", "Hits whose answer came from Redis (the shared level), counted in hits too"),
                      ("bypassed", "Cacheable statements run without the cache because Redis was unavailable"),
                      ("redis_outages", "Times the shared level found Redis unavailable (then bypassed it)")):  # fmt: skip
        key = "stored" if name == "stores" else name
        yield CounterMetricFamily(P + name, doc, value=t.get(key, 0))
    yield GaugeMetricFamily(P + "bytes", "Bytes held by the query cache's in-process level", value=t["bytes"])
    yield GaugeMetricFamily(P + "max_bytes", "The in-process level's bound (cache.max_bytes)", value=t["max_bytes"])
    yield GaugeMetricFamily(P + "redis_up", "Processes whose shared level reaches Redis now ([cache] redis)",
                            value=t.get("redis_up", 0))
    yield GaugeMetricFamily(P + "listening", "[cache.listen] databases listened to now", value=t.get("listening", 0))
    yield GaugeMetricFamily(P + "entries", "Entries in the query cache's in-process level", value=t["entries"])
    inval = CounterMetricFamily(P + "invalidations", "Entries dropped because a write (or a purge, or a "
                                "NOTIFY) named their table; table=\"*\": everything dropped at once", labels=["table"])  # fmt: skip
    for table in sorted(snap["tables"]):
        inval.add_metric([table], snap["tables"][table]["invalidations"])
    inval.add_metric(["*"], t["invalidations"] - sum(r["invalidations"] for r in snap["tables"].values()))
    yield inval


def purge_tables(query: Mapping[str, Sequence[str]]) -> frozenset[str] | None | str:
    """The tables a purge names (`table=T`, repeatable, or comma-separated), None for `all=1`
    (everything), or an error message (str) for a request that names neither or a bad name."""
    if [v for v in query.get("all", ()) if v in ("1", "true")]:
        return None
    names: set[str] = set()
    for value in query.get("table", ()):
        for part in value.split(","):
            folded = fold_table_name(part.strip())
            if folded is None:
                return f"{part.strip()!r} is not a table name"
            names.add(folded)
    if not names:
        return "table=NAME (repeatable) or all=1 is required"
    return frozenset(names)


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(text=json.dumps(body) + "\n", status=status, content_type="application/json")


def add_cache_routes(app: web.Application, daemon: DbProxyDaemon) -> None:
    """POST /cache/purge?table=T[&table=U]  or  ?all=1: drop the entries of those tables in every
    process (with `workers = N` the supervisor asks each worker)."""

    async def purge(request: web.Request) -> web.Response:
        query = {name: request.query.getall(name) for name in set(request.query.keys())}
        tables = purge_tables(query)
        if isinstance(tables, str):
            return _json(400, {"error": tables})
        if daemon.workers is not None:
            replies = await daemon.workers.ask("cache-purge", {"tables": None if tables is None else sorted(tables)})
            dropped = sum(int(r.get("dropped", 0)) for r in replies)
            enabled = any(r.get("enabled") for r in replies)
        else:
            enabled = daemon.qcache is not None
            dropped = purge_local(daemon, tables)
        if not enabled:
            return _json(409, {"error": "the query cache is off ([cache] enabled = false)"})
        return _json(200, {"purged": dropped, "tables": "*" if tables is None else sorted(tables)})

    app.router.add_post("/cache/purge", purge)


def purge_local(daemon: Any, tables: frozenset[str] | None) -> int:
    """Drop this process's entries for `tables` (None: all); how many entries went."""
    cache = daemon.qcache
    if cache is None:
        return 0
    before = len(cache.store)
    cache.invalidate(tables)
    cache.purges += 1
    if cache.shared is not None:
        cache.shared.spawn(cache.shared.purge(tables))  # Redis's entries too, for every instance
    return before - len(cache.store)
