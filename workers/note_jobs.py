"""The demo's background job: a note's summary, computed off the web request by a queue worker.

`POST /notes` (workers/notes.py, with `--queue-redis`) enqueues a `notes` job with the note's id
and text (idempotency key `note:<id>`); `tierproxy queue worker` runs `summarize` on it, which
writes a `note_summaries` row (words, characters, a thumbnail-sized excerpt) through the dbproxy,
so the write goes to the primary. `GET /notes/<id>` shows it once it is there.

The database URL comes from the worker's environment (`TIERPROXY_NOTES_DATABASE_URL`), not from
the job: credentials do not travel through the queue. The insert is `ON CONFLICT DO NOTHING`, so
a rerun after a worker died between the insert and the acknowledgement changes nothing.
"""

from __future__ import annotations

import os
from typing import Any

import asyncpg

__all__ = ["DATABASE_URL_ENV", "EXCERPT_CHARS", "summarize", "summary_of"]

DATABASE_URL_ENV = "TIERPROXY_NOTES_DATABASE_URL"
EXCERPT_CHARS = 40


def summary_of(body: str) -> tuple[int, int, str]:
    """(words, characters, excerpt): the excerpt is the first EXCERPT_CHARS characters of the
    whitespace-collapsed text, with "..." when it was cut."""
    words = body.split()
    flat = " ".join(words)
    excerpt = flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 3].rstrip() + "..."
    return len(words), len(body), excerpt


async def summarize(job: Any, ctx: Any) -> None:
    """Handler of the demo's `notes` queue: payload {"note": id, "body": text}."""
    note_id, body = int(job.payload["note"]), str(job.payload["body"])
    words, chars, excerpt = summary_of(body)
    conn = await asyncpg.connect(os.environ[DATABASE_URL_ENV], timeout=10)
    try:
        await conn.execute(
            "INSERT INTO note_summaries (note_id, words, chars, excerpt, worker) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (note_id) DO NOTHING",
            note_id, words, chars, excerpt, ctx.consumer,
        )  # fmt: skip
    finally:
        await conn.close()
