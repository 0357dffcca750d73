"""The web worker's database endpoints (`--database-url`): notes kept in PostgreSQL.

The demo points `--database-url` at `tierproxy dbproxy`, so these requests show the read/write
split: every answer says which server ran the statement (`inet_server_port()`,
`pg_is_in_recovery()`).

  POST /notes        body = the note's text: INSERT on the primary, then read back on the same
                     connection (read-your-writes: a replica that has replayed it, or the primary)
                     -> 201 {"id", "written_on", "read_back", "read_on"}
  GET  /notes/{id}   -> {"note": {...}, "read_on": {...}} or 404
  GET  /notes        the 10 newest notes -> {"notes": [...], "read_on": {...}}
  GET  /db           a bare read -> {"read_on": {"port", "replica"}}

The table is `notes (id bigserial primary key, body text, worker text, created timestamptz)`;
`SCHEMA` creates it (the demo runs it once before starting the workers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp import web

__all__ = ["SCHEMA", "add_note_routes"]

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS notes (id bigserial PRIMARY KEY, body text NOT NULL, "
    "worker text NOT NULL, created timestamptz NOT NULL DEFAULT now())"
)
MAX_NOTE_BYTES = 4096
POOL = web.AppKey("notes_pool", asyncpg.Pool)
WORKER = web.AppKey("notes_worker", str)
_WHERE = "inet_server_port() AS port, pg_is_in_recovery() AS replica"


def _server(row: Any) -> dict[str, Any]:
    return {"port": row["port"], "replica": row["replica"]}


def _note(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "body": row["body"], "worker": row["worker"], "created": row["created"].isoformat()}


async def create_note(request: web.Request) -> web.Response:
    body = await request.content.read(MAX_NOTE_BYTES + 1)
    if len(body) > MAX_NOTE_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_NOTE_BYTES, actual_size=len(body))
    text = body.decode("utf-8", "replace").strip()
    if not text:
        raise web.HTTPBadRequest(text="a note needs a body\n")
    async with request.app[POOL].acquire() as conn:
        written = await conn.fetchrow(
            f"INSERT INTO notes (body, worker) VALUES ($1, $2) RETURNING id, {_WHERE}",
            text, request.app[WORKER],
        )  # fmt: skip
        back = await conn.fetchrow(f"SELECT id, body, worker, created, {_WHERE} FROM notes WHERE id = $1",
                                   written["id"])  # fmt: skip
    return web.json_response(
        {"id": written["id"], "written_on": _server(written),
         "read_back": back is not None, "read_on": _server(back) if back else None},
        status=201,
    )  # fmt: skip


async def get_note(request: web.Request) -> web.Response:
    try:
        note_id = int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    row = await request.app[POOL].fetchrow(
        f"SELECT id, body, worker, created, {_WHERE} FROM notes WHERE id = $1", note_id
    )
    if row is None:
        raise web.HTTPNotFound(text="no such note\n")
    return web.json_response({"note": _note(row), "read_on": _server(row)})


async def list_notes(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        rows = await conn.fetch("SELECT id, body, worker, created FROM notes ORDER BY id DESC LIMIT 10")
        where = await conn.fetchrow(f"SELECT {_WHERE}")
    return web.json_response({"notes": [_note(r) for r in rows], "read_on": _server(where)})


async def db(request: web.Request) -> web.Response:
    return web.json_response({"read_on": _server(await request.app[POOL].fetchrow(f"SELECT {_WHERE}"))})


def add_note_routes(app: web.Application, dsn: str, worker: str) -> None:
    app[WORKER] = worker

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        # Connections are made on first use, so a worker starts (and passes /healthz) even while
        # the database is still coming up.
        app[POOL] = asyncpg.create_pool(dsn, min_size=0, max_size=4)
        await app[POOL]
        yield
        await app[POOL].close()

    app.cleanup_ctx.append(pool_ctx)
    app.router.add_post("/notes", create_note)
    app.router.add_get("/notes", list_notes)
    app.router.add_get("/notes/{id}", get_note)
    app.router.add_get("/db", db)
