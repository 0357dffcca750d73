"""The web worker's database endpoints (`--database-url`): notes kept in PostgreSQL.

The demo points `--database-url` at `tierproxy dbproxy`, so these requests show the read/write
split: every answer says which server ran the statement (`inet_server_port()`,
`pg_is_in_recovery()`).

  POST /notes        body = the note's text: INSERT on the primary, then read back on the same
                     connection (read-your-writes: a replica that has replayed it, or the primary)
                     -> 201 {"id", "written_on", "read_back", "read_on", "job"}; with a queue
                     (`--queue-redis`) it also enqueues a `notes` job (workers/note_jobs.py) whose
                     worker writes the note's summary; "job" is its id (null without a queue).
                     The job is enqueued before the note's COMMIT: when the queue refuses it the
                     note is not saved and the answer is 429 (queue at its length limit) or 503
                     (Redis unreachable), with Retry-After and {"error", "saved": false}
  GET  /notes/{id}   -> {"note": {...}, "summary": {...} | null, "read_on": {...}} or 404
  GET  /notes        the 10 newest notes -> {"notes": [...], "read_on": {...}}; the statement carries
                     the dbproxy's cache hint (`LISTING`: answered from its query cache when on)
  GET  /db           a bare read -> {"read_on": {"port", "replica"}}

The tables are `notes (id bigserial primary key, body text, worker text, created timestamptz)` and
`note_summaries` (written by the queue worker); `SCHEMA` creates them (the demo runs it once before
starting the workers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workers.queue.client import QueueClient, QueueFull

__all__ = ["NOTES_QUEUE", "SCHEMA", "add_note_routes"]

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS notes (id bigserial PRIMARY KEY, body text NOT NULL, "
    "worker text NOT NULL, created timestamptz NOT NULL DEFAULT now()); "
    "CREATE TABLE IF NOT EXISTS note_summaries (note_id bigint PRIMARY KEY REFERENCES notes (id), "
    "words int NOT NULL, chars int NOT NULL, excerpt text NOT NULL, worker text NOT NULL, "
    "created timestamptz NOT NULL DEFAULT now())"
)
NOTES_QUEUE = "notes"
MAX_NOTE_BYTES = 4096
POOL = web.AppKey("notes_pool", asyncpg.Pool)
WORKER = web.AppKey("notes_worker", str)
QUEUE = web.AppKey("notes_queue", QueueClient)
# Redis unreachable or too slow: the producer's errors that mean "try again later" (503).
QUEUE_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
QUEUE_FULL_RETRY_AFTER = 5  # seconds: workers need a while to make room
QUEUE_DOWN_RETRY_AFTER = 10  # seconds: a restarting Redis
# A Redis that does not answer must not hold the request (and its database transaction) for long.
QUEUE_TIMEOUT = 5.0
_WHERE = "inet_server_port() AS port, pg_is_in_recovery() AS replica"
LISTING = "/* tierproxy:cache ttl=30 */ SELECT id, body, worker, created FROM notes ORDER BY id DESC LIMIT 10"


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
    job = None
    async with request.app[POOL].acquire() as conn:
        # The job is enqueued inside the note's transaction, before COMMIT: if the queue refuses it
        # (full, Redis down) the note is rolled back and the client is told to retry (429/503),
        # so a retried POST does not leave a note without its summary job. A worker that picks
        # the job up before the COMMIT is visible fails on the foreign key and retries after its
        # backoff. The idempotency key makes a producer retry after a Redis error run once.
        try:
            async with conn.transaction():
                written = await conn.fetchrow(
                    f"INSERT INTO notes (body, worker) VALUES ($1, $2) RETURNING id, {_WHERE}",
                    text, request.app[WORKER],
                )  # fmt: skip
                if QUEUE in request.app:
                    job = await _enqueue(request.app[QUEUE], written["id"], text)
        except _Refused as refused:  # raised inside the transaction: the note was rolled back
            return refused.response
        back = await conn.fetchrow(f"SELECT id, body, worker, created, {_WHERE} FROM notes WHERE id = $1",
                                   written["id"])  # fmt: skip
    return web.json_response(
        {"id": written["id"], "written_on": _server(written),
         "read_back": back is not None, "read_on": _server(back) if back else None, "job": job},
        status=201,
    )  # fmt: skip


class _Refused(Exception):
    """The queue refused the note's job; `response` is the client's answer."""

    def __init__(self, status: int, error: str, retry_after: int) -> None:
        super().__init__(error)
        self.response = web.json_response({"error": error, "saved": False}, status=status,
                                          headers={"Retry-After": str(retry_after)})


async def _enqueue(queue: QueueClient, note_id: int, text: str) -> str:
    try:
        return await queue.enqueue(NOTES_QUEUE, {"note": note_id, "body": text}, key=f"note:{note_id}")
    except QueueFull as exc:
        raise _Refused(429, f"{exc}; the note was not saved", QUEUE_FULL_RETRY_AFTER) from None
    except QUEUE_DOWN as exc:
        raise _Refused(503, f"job queue unavailable ({type(exc).__name__}: {exc}); the note was not saved",
                       QUEUE_DOWN_RETRY_AFTER) from None


async def get_note(request: web.Request) -> web.Response:
    try:
        note_id = int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    row = await request.app[POOL].fetchrow(
        f"SELECT n.id, n.body, n.worker, n.created, s.words, s.chars, s.excerpt, s.worker AS summarized_by, "
        f"{_WHERE} FROM notes n LEFT JOIN note_summaries s ON s.note_id = n.id WHERE n.id = $1", note_id
    )
    if row is None:
        raise web.HTTPNotFound(text="no such note\n")
    summary = None if row["words"] is None else {
        "words": row["words"], "chars": row["chars"], "excerpt": row["excerpt"], "worker": row["summarized_by"]}
    return web.json_response({"note": _note(row), "summary": summary, "read_on": _server(row)})


async def list_notes(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        # Read through the dbproxy's query cache (docs/dbproxy.md): a write through the proxy (or,
        # with its trigger, any write) invalidates it; otherwise an answer is at most 30 s old.
        rows = await conn.fetch(LISTING)
        where = await conn.fetchrow(f"SELECT {_WHERE}")
    return web.json_response({"notes": [_note(r) for r in rows], "read_on": _server(where)})


async def db(request: web.Request) -> web.Response:
    return web.json_response({"read_on": _server(await request.app[POOL].fetchrow(f"SELECT {_WHERE}"))})


def add_note_routes(app: web.Application, dsn: str, worker: str, queue_redis: str | None = None) -> None:
    app[WORKER] = worker
    if queue_redis is not None:
        async def queue_ctx(app: web.Application) -> AsyncIterator[None]:
            client = aioredis.from_url(queue_redis, socket_timeout=QUEUE_TIMEOUT,
                                       socket_connect_timeout=QUEUE_TIMEOUT)
            app[QUEUE] = QueueClient(client)
            yield
            await client.aclose()

        app.cleanup_ctx.append(queue_ctx)

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
