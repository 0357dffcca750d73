"""The stateless demo web app that sits behind `tierproxy lb` (demo, tests, benchmarks).

Run: `python -m workers.web --host 127.0.0.1 --port N --name web1 [--sessions memory|redis://...]
[--static DIR]`. Readiness is `GET /healthz`. Every response carries `X-Served-By: <name>` so a
client of the load balancer can see which backend answered.

Endpoints:
  GET  /               HTML page naming the instance (name, pid)
  GET  /whoami         {"instance", "pid"}
  GET  /healthz        200 "ok", or 503 "failing" after `POST /admin/health` with body `fail`
  POST /admin/health   body `fail` | `ok`: flips what /healthz answers (the process keeps serving)
  GET  /session        per-user visit counter keyed by cookie `sid`: {"instance", "sid", "count"}
  GET  /headers        the request as received: method, path, query, remote, headers
  POST|PUT /echo       streams the request body back, chunked, in bounded memory
  POST|PUT /sink       reads the body in bounded memory, answers {"bytes", "sha256"}; /echo takes ?delay_ms=N
  GET  /bytes?n=N      N pattern bytes (byte i is i % 256) with Content-Length; &chunked=1 for chunked
  GET  /status/{code}  answers with that status
  GET  /slow?ms=N      answers after N milliseconds
  GET  /count          {"instance", "pid", "count"}: requests served, not counting /healthz,
                       /count and /admin/* (an LB's health checks would make balancing tests flaky)
  GET  /ws             websocket echo (text and binary)
  GET  /static/...     files from --static DIR, when given
  /notes, /db          with --database-url: notes in PostgreSQL (see workers/notes.py); with
                       --queue-redis URL, POST /notes enqueues a summary job (workers/note_jobs.py)

Sessions: "memory" keeps counters in this process, so they are lost when it dies (the reason sticky
balancing exists); a Redis URL keeps them in a hash `session:<sid>` with an expiry, updated with
HINCRBY in a MULTI block, so any worker sharing that Redis continues the same counter.

State lives on the Application (AppKey), never in module globals, so tests may build several apps
in one process with `build_app`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import html
import os
import re
import secrets
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from aiohttp import WSMsgType, web

__all__ = [
    "MemorySessionStore",
    "RedisSessionStore",
    "SessionStoreUnavailable",
    "WebConfig",
    "WorkerState",
    "build_app",
    "main",
]

# Streaming piece size: large enough that per-write overhead is small, small enough that a 1 GiB
# body never holds more than a few pieces in memory (aiohttp's StreamReader also pauses the socket
# at its own high-water mark, so a slow writer throttles the sender).
CHUNK_SIZE = 64 * 1024
# One period of the /bytes pattern; byte i of the body is i % 256.
_PATTERN = bytes(range(256)) * (CHUNK_SIZE // 256)
# Upper bounds on query parameters, so a typo cannot park a handler for days or stream forever.
MAX_BYTES = 1 << 40
MAX_SLOW_MS = 10 * 60 * 1000
# The memory store evicts the oldest sessions past this many, so a load test minting a new cookie
# per request cannot grow the process without bound.
MEMORY_SESSION_LIMIT = 100_000
# Session ids we mint are token_urlsafe(16); accept only that alphabet and a sane length from the
# client, and mint a new id for anything else (it becomes part of a Redis key).
_SID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
SID_COOKIE = "sid"
# Paths that do not count as "served" for /count: probes and the counter itself.
_UNCOUNTED_PREFIXES = ("/healthz", "/count", "/admin/")


class SessionStoreUnavailable(Exception):
    """The session store could not be reached; /session answers 503."""


class SessionStore(Protocol):
    async def incr(self, sid: str) -> int: ...

    async def close(self) -> None: ...


class MemorySessionStore:
    """Counters in a dict inside this process; lost when the process exits."""

    def __init__(self, limit: int = MEMORY_SESSION_LIMIT) -> None:
        self._counts: dict[str, int] = {}
        self._limit = limit

    async def incr(self, sid: str) -> int:
        count = self._counts.pop(sid, 0) + 1
        # Re-inserting keeps dict order = recency, so eviction below drops the least recent.
        self._counts[sid] = count
        if len(self._counts) > self._limit:
            del self._counts[next(iter(self._counts))]
        return count

    async def close(self) -> None:
        self._counts.clear()


class RedisSessionStore:
    """Counters in Redis hashes `session:<sid>` with a sliding expiry."""

    def __init__(self, url: str, ttl_seconds: int) -> None:
        import redis.asyncio as aioredis  # imported here so memory mode starts without it

        self._errors = (aioredis.RedisError, OSError)
        self._client = aioredis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=2.0, health_check_interval=0
        )
        self._ttl = ttl_seconds

    async def incr(self, sid: str) -> int:
        key = f"session:{sid}"
        try:
            # MULTI/EXEC: the increment and the expiry land together, and HINCRBY itself is atomic
            # across workers, so concurrent requests for one session never lose a visit.
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hincrby(key, "count", 1)
                pipe.expire(key, self._ttl)
                count, _ = await pipe.execute()
        except self._errors as exc:
            raise SessionStoreUnavailable(str(exc)) from exc
        return int(count)

    async def close(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True)
class WebConfig:
    name: str
    sessions: str = "memory"  # "memory" or a redis:// URL
    static_dir: Path | None = None
    session_ttl: int = 1800
    database_url: str | None = None  # enables the /notes and /db endpoints (workers/notes.py)
    queue_redis: str | None = None  # POST /notes enqueues a summary job there (workers/note_jobs.py)


@dataclass
class WorkerState:
    """Mutable per-app state: health flag, served-request counter, the session store."""

    config: WebConfig
    pid: int = field(default_factory=os.getpid)
    healthy: bool = True
    served: int = 0
    sessions: SessionStore | None = None


STATE = web.AppKey("state", WorkerState)


def _state(request: web.Request) -> WorkerState:
    return request.app[STATE]


@web.middleware
async def _count_requests(request: web.Request, handler):  # type: ignore[no-untyped-def]
    if not request.path.startswith(_UNCOUNTED_PREFIXES):
        _state(request).served += 1
    return await handler(request)


async def _add_served_by(request: web.Request, response: web.StreamResponse) -> None:
    # on_response_prepare runs for every response, streamed and websocket ones included, which a
    # middleware cannot reach once a handler has called prepare().
    response.headers["X-Served-By"] = request.app[STATE].config.name


def _identity(state: WorkerState) -> dict[str, object]:
    return {"instance": state.config.name, "pid": state.pid}


async def index(request: web.Request) -> web.Response:
    state = _state(request)
    name = html.escape(state.config.name)
    body = (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>tierproxy web worker "
        f"{name}</title></head>\n<body><h1>Served by {name}</h1>\n"
        f"<p>instance <b id=\"instance\">{name}</b>, pid <b id=\"pid\">{state.pid}</b></p>"
        "</body></html>\n"
    )
    return web.Response(text=body, content_type="text/html")


async def whoami(request: web.Request) -> web.Response:
    return web.json_response(_identity(_state(request)))


async def healthz(request: web.Request) -> web.Response:
    if _state(request).healthy:
        return web.Response(text="ok")
    return web.Response(status=503, text="failing")


async def admin_health(request: web.Request) -> web.Response:
    state = _state(request)
    # Bounded read: this endpoint takes one word, never a stream.
    word = (await request.content.read(64)).decode("ascii", "replace").strip().lower()
    if word not in ("ok", "fail"):
        return web.Response(status=400, text="body must be 'ok' or 'fail'\n")
    state.healthy = word == "ok"
    return web.Response(text=f"{word}\n")


async def session(request: web.Request) -> web.Response:
    state = _state(request)
    assert state.sessions is not None  # set by the cleanup context before serving
    sid = request.cookies.get(SID_COOKIE, "")
    fresh = not _SID_RE.match(sid)
    if fresh:
        sid = secrets.token_urlsafe(16)
    try:
        count = await state.sessions.incr(sid)
    except SessionStoreUnavailable as exc:
        return web.json_response(
            {**_identity(state), "error": f"session store unavailable: {exc}"}, status=503
        )
    response = web.json_response({"instance": state.config.name, "sid": sid, "count": count})
    if fresh:
        response.set_cookie(SID_COOKIE, sid, path="/", httponly=True, samesite="Lax")
    return response


async def headers(request: web.Request) -> web.Response:
    joined: dict[str, str] = {}
    for name, value in request.headers.items():
        # Repeated headers are joined as RFC 9110 5.3 allows for list-valued fields; raw_headers
        # keeps each line, in order, for tests that care about repetition.
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    raw = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in request.raw_headers]
    return web.json_response(
        {
            **_identity(_state(request)),
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "version": f"{request.version.major}.{request.version.minor}",
            "remote": request.remote,
            "headers": joined,
            "raw_headers": raw,
        }
    )


async def echo(request: web.Request) -> web.StreamResponse:
    # ?delay_ms=N holds the answer back, so tests can make a non-idempotent request time out.
    delay_ms = _int_param(request, "delay_ms", 0, 600_000)
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
    response = web.StreamResponse()
    response.content_type = request.headers.get("Content-Type", "application/octet-stream")
    response.enable_chunked_encoding()
    await response.prepare(request)
    # One piece in, one piece out: memory stays at a few CHUNK_SIZE pieces whatever the body size,
    # and write() waits for the client to drain, which in turn pauses reading from the client.
    async for piece in request.content.iter_chunked(CHUNK_SIZE):
        await response.write(piece)
    await response.write_eof()
    return response


async def sink(request: web.Request) -> web.Response:
    """Read the whole body in pieces (bounded memory) and report its size and SHA-256, so a test
    can push 1 GiB through the balancer without getting 1 GiB back."""
    digest = hashlib.sha256()
    size = 0
    async for piece in request.content.iter_chunked(CHUNK_SIZE):
        digest.update(piece)
        size += len(piece)
    return web.json_response({"bytes": size, "sha256": digest.hexdigest()})


def _int_param(request: web.Request, name: str, default: int, upper: int) -> int:
    raw = request.query.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer, got {raw!r}\n") from None
    if not 0 <= value <= upper:
        raise web.HTTPBadRequest(text=f"{name} must be in 0..{upper}, got {value}\n")
    return value


async def _pattern(n: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < n:
        size = min(CHUNK_SIZE, n - sent)
        # The pattern period (256) divides CHUNK_SIZE, so every piece starts at offset 0 of it.
        yield _PATTERN[:size]
        sent += size


async def bytes_(request: web.Request) -> web.StreamResponse:
    n = _int_param(request, "n", 0, MAX_BYTES)
    response = web.StreamResponse()
    response.content_type = "application/octet-stream"
    if request.query.get("chunked") in ("1", "true", "yes"):
        response.enable_chunked_encoding()
    else:
        response.content_length = n
    await response.prepare(request)
    # aiohttp answers HEAD through GET handlers but does not stop a StreamResponse's writes: a
    # body after a HEAD response would corrupt the keep-alive connection, so send none.
    if request.method != "HEAD":
        async for piece in _pattern(n):
            await response.write(piece)
    await response.write_eof()
    return response


async def status(request: web.Request) -> web.Response:
    try:
        code = int(request.match_info["code"])
    except ValueError:
        raise web.HTTPBadRequest(text="status code must be an integer\n") from None
    # 1xx are interim responses a handler cannot send as final answers.
    if not 200 <= code <= 599:
        raise web.HTTPBadRequest(text=f"status code must be in 200..599, got {code}\n")
    if code in (204, 304):
        return web.Response(status=code)
    return web.Response(status=code, text=f"{code}\n")


async def slow(request: web.Request) -> web.Response:
    ms = _int_param(request, "ms", 0, MAX_SLOW_MS)
    await asyncio.sleep(ms / 1000)
    return web.json_response({**_identity(_state(request)), "slept_ms": ms})


async def count(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response({**_identity(state), "count": state.served})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
        else:  # ERROR: the iterator ends on CLOSE by itself
            break
    return ws


async def _session_store_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    if state.config.sessions == "memory":
        state.sessions = MemorySessionStore()
    else:
        state.sessions = RedisSessionStore(state.config.sessions, state.config.session_ttl)
    yield
    await state.sessions.close()


def build_app(config: WebConfig) -> web.Application:
    """The web worker as an aiohttp Application; all state hangs off `app[STATE]`."""
    app = web.Application(middlewares=[_count_requests])
    app[STATE] = WorkerState(config=config)
    app.on_response_prepare.append(_add_served_by)
    app.cleanup_ctx.append(_session_store_ctx)
    app.router.add_get("/", index)
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/admin/health", admin_health)
    app.router.add_get("/session", session)
    app.router.add_get("/headers", headers)
    app.router.add_post("/echo", echo)
    app.router.add_put("/echo", echo)
    app.router.add_post("/sink", sink)
    app.router.add_put("/sink", sink)
    app.router.add_get("/bytes", bytes_)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/slow", slow)
    app.router.add_get("/count", count)
    app.router.add_get("/ws", websocket)
    if config.static_dir is not None:
        app.router.add_static("/static/", config.static_dir)
    if config.database_url is not None:
        from workers.notes import add_note_routes

        add_note_routes(app, config.database_url, config.name, config.queue_redis)
    return app


def _sessions_arg(value: str) -> str:
    if value == "memory" or value.startswith(("redis://", "rediss://", "unix://")):
        return value
    raise argparse.ArgumentTypeError(f"expected 'memory' or a redis:// URL, got {value!r}")


def _redis_url_arg(value: str) -> str:
    if value.startswith(("redis://", "rediss://", "unix://")):
        return value
    raise argparse.ArgumentTypeError(f"expected a redis:// URL, got {value!r}")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers.web", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True, help="instance name, echoed in X-Served-By")
    parser.add_argument("--sessions", type=_sessions_arg, default="memory")
    parser.add_argument("--session-ttl", type=int, default=1800, help="Redis session expiry, s")
    parser.add_argument("--static", type=Path, default=None, help="serve DIR under /static/")
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL URL (e.g. tierproxy dbproxy) for /notes and /db")
    parser.add_argument("--queue-redis", type=_redis_url_arg, default=None,
                        help="redis:// URL of the job queue: POST /notes enqueues a summary job")
    parser.add_argument("--shutdown-timeout", type=float, default=5.0,
                        help="SIGTERM: seconds to let in-flight requests finish")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--access-log", action="store_true", help="log each request (off: hot path)")
    args = parser.parse_args(argv)
    if args.static is not None and not args.static.is_dir():
        parser.error(f"--static: {args.static} is not a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    config = WebConfig(
        name=args.name, sessions=args.sessions, static_dir=args.static, session_ttl=args.session_ttl,
        database_url=args.database_url, queue_redis=args.queue_redis,
    )
    loop: asyncio.AbstractEventLoop | None = None
    if args.loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    kwargs: dict[str, object] = {"access_log": None}
    if args.access_log:
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
        kwargs = {}
    # run_app maps SIGTERM/SIGINT to a graceful shutdown: stop accepting, let in-flight requests
    # finish up to shutdown_timeout, run cleanup contexts (closes the Redis client).
    web.run_app(
        build_app(config),
        host=args.host,
        port=args.port,
        shutdown_timeout=args.shutdown_timeout,
        print=None,
        loop=loop,
        **kwargs,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
