"""Resharding's I/O on the shards themselves (asyncpg): read keys, digest ranges, copy, delete.

Every function takes open connections and moves bytes; what to read, copy or delete is decided by
reshard.py. The SQL:

* keys: ``SELECT key, count(*) FROM t WHERE key IS NOT NULL GROUP BY key``, read with a cursor
  in a read-only transaction (streamed, `FETCH_ROWS` at a time);
* digests: per key range, computed by PostgreSQL on each side: the range's row count and the md5
  of its rows' text (``t::text``, the whole row as PostgreSQL prints it) joined in code-point
  order; the keys and their range numbers go in as two arrays
  (``JOIN unnest($1, $2) AS m(k, r) ON t.key = m.k ... GROUP BY m.r``). Both sides' sessions use
  the same output settings (`SESSION_SETTINGS`) so equal rows print the same;
* copy: ``COPY (SELECT cols FROM t WHERE key = ANY(...)) TO STDOUT`` on the source, its bytes
  piped through a bounded queue into ``COPY t (cols) FROM STDIN`` on the target, inside a target
  transaction that first deletes the target's rows of those keys (so copying a range again
  replaces it: a rerun after a stop is safe);
* delete: ``DELETE FROM t WHERE key = ANY($1)``, one transaction per batch of keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import asyncpg

from proxy.core.config import parse_hostport

from .maps import Key
from .reshard import Digest, KeyRange

__all__ = [
    "SESSION_SETTINGS",
    "connect",
    "copy_keys",
    "delete_keys",
    "digests",
    "key_counts",
    "quote_table",
    "table_columns",
]

FETCH_ROWS = 10_000  # keys per cursor fetch
PIPE_CHUNKS = 64  # COPY chunks buffered between source and target
# The same text for the same row on every shard (the digests compare rows' text).
SESSION_SETTINGS = {"DateStyle": "ISO, MDY", "TimeZone": "UTC", "IntervalStyle": "postgres",
                    "extra_float_digits": "3", "bytea_output": "hex",
                    "application_name": "tierproxy shard reshard"}  # fmt: skip


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_table(table: str) -> str:
    """A configured table name (``name`` or ``schema.name``, lower-case) as SQL."""
    return ".".join(quote_ident(part) for part in table.split("."))


def _array_type(key_type: str) -> str:
    return "bigint[]" if key_type == "integer" else "text[]"


async def connect(address: str, user: str, password: str | None, database: str,
                  timeout: float = 10.0) -> asyncpg.Connection:  # fmt: skip
    host, port = parse_hostport(address)
    return await asyncpg.connect(host=host, port=port, user=user, password=password, database=database,
                                 timeout=timeout, server_settings=SESSION_SETTINGS)  # fmt: skip


async def key_counts(conn: asyncpg.Connection, table: str, key: str) -> dict[Key, int]:
    """Each key's row count in `table` on this shard (streamed)."""
    out: dict[Key, int] = {}
    sql = f"SELECT {quote_ident(key)}, count(*) FROM {quote_table(table)} WHERE {quote_ident(key)} IS NOT NULL " \
          f"GROUP BY 1"  # fmt: skip
    async with conn.transaction(readonly=True):
        async for k, n in conn.cursor(sql, prefetch=FETCH_ROWS):
            out[k] = n
    return out


async def table_columns(conn: asyncpg.Connection, table: str) -> list[str]:
    """The table's stored columns in order (generated columns are computed by the target)."""
    rows = await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
        "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", quote_table(table))
    if not rows:
        raise LookupError(f"table {table} has no columns")
    return [r[0] for r in rows]


async def digests(conn: asyncpg.Connection, table: str, key: str, key_type: str,
                  ranges: Sequence[KeyRange]) -> dict[int, Digest]:  # fmt: skip
    """Per key range: (row count, md5 of the rows' text in code-point order), by range number;
    ranges with no rows are absent."""
    keys: list[Key] = []
    numbers: list[int] = []
    for r in ranges:
        keys.extend(r.keys)
        numbers.extend([r.number] * len(r.keys))
    if not keys:
        return {}
    sql = (f"SELECT m.r, count(*), md5(string_agg(t::text, E'\\n' ORDER BY t::text COLLATE \"C\")) "
           f"FROM {quote_table(table)} AS t JOIN unnest($1::{_array_type(key_type)}, $2::int[]) AS m(k, r) "
           f"ON t.{quote_ident(key)} = m.k GROUP BY m.r")
    return {r: (n, h) for r, n, h in await conn.fetch(sql, keys, numbers)}


async def copy_keys(source: asyncpg.Connection, target: asyncpg.Connection, table: str, key: str,
                    key_type: str, columns: Sequence[str], keys: Sequence[Key]) -> int:  # fmt: skip
    """Replace the target's rows of `keys` in `table` by the source's; the rows copied."""
    cols = ", ".join(quote_ident(c) for c in columns)
    where = f"{quote_ident(key)} = ANY($1::{_array_type(key_type)})"
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(PIPE_CHUNKS)

    async def sink(chunk: bytes) -> None:
        await queue.put(bytes(chunk))

    async def produce() -> None:
        try:
            await source.copy_from_query(f"SELECT {cols} FROM {quote_table(table)} WHERE {where}", list(keys),
                                         output=sink)  # fmt: skip
        finally:
            await queue.put(None)

    async def chunks():  # type: ignore[no-untyped-def]
        while (chunk := await queue.get()) is not None:
            yield chunk

    async with target.transaction():
        await target.execute(f"DELETE FROM {quote_table(table)} WHERE {where}", list(keys))
        producer = asyncio.get_running_loop().create_task(produce())
        try:
            status = await target.copy_to_table(table.split(".")[-1], schema_name=_schema(table), source=chunks(),
                                                columns=list(columns))  # fmt: skip
            await producer  # a failed COPY TO raises here: the target's transaction rolls back
        finally:
            if not producer.done():
                producer.cancel()
    return int(status.split()[-1])


def _schema(table: str) -> str | None:
    return table.split(".")[0] if "." in table else None


async def delete_keys(conn: asyncpg.Connection, table: str, key: str, key_type: str, keys: Sequence[Key]) -> int:
    """Delete the rows of `keys` from `table` on this shard (one transaction); the rows deleted."""
    status = await conn.execute(f"DELETE FROM {quote_table(table)} WHERE {quote_ident(key)} = "
                                f"ANY($1::{_array_type(key_type)})", list(keys))  # fmt: skip
    return int(status.split()[-1])


def rows_of(counts: Mapping[Key, int], keys: Sequence[Key]) -> int:
    return sum(counts.get(k, 0) for k in keys)
