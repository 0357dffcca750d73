"""Catalog-only statements: the ones that read nothing but PostgreSQL's own catalogs (pure).

Every shard has the same schema, so a statement that names only relations of `pg_catalog` or
`information_schema` (psql's `\\d`, `\\dt`, `\\d users`; a driver's type introspection, such as
asyncpg's; `SELECT * FROM pg_settings`) gets the same answer from any shard: it goes to ONE shard
(keys.py treats it as a statement naming no table: the first shard, or the transaction's) and
is answered exactly as that shard answers, instead of being scattered, merged or refused.

A bare name counts as a catalog relation when it starts with ``pg_`` (the catalog's tables and
views; `pg_catalog` is searched first unless search_path says otherwise). Statistics that differ
per shard (`pg_stat_user_tables`, `pg_class.reltuples`) are therefore one shard's: to see
another's, send the query with ``/* tierproxy:shard=NAME */``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pglast import ast

__all__ = ["CATALOG_SCHEMAS", "catalog_only"]

CATALOG_SCHEMAS = frozenset({"pg_catalog", "information_schema"})


def catalog_only(tables: Sequence[ast.RangeVar]) -> bool:
    """True when every relation in `tables` (at least one) is a catalog relation."""
    if not tables:
        return False
    for rv in tables:
        schema = (rv.schemaname or "").lower()
        if schema:
            if schema not in CATALOG_SCHEMAS or rv.catalogname:
                return False
        elif not rv.relname.lower().startswith("pg_"):
            return False
    return True
