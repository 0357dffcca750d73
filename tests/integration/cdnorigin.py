"""A real origin for the cdn tests: an aiohttp server in its own process that answers
/obj/NAME with headers chosen by query parameters and counts every request it receives.

    python -m tests.integration.cdnorigin PORT

Parameters: cc (Cache-Control), cookie=1 (Set-Cookie), vary (Vary, the body then names the
request's value of that field), etag (ETag; a matching If-None-Match gets 304), delay (seconds
before answering), size (body bytes), age (an Age field, so an object arrives already old), skey
(Surrogate-Key), tag (Cache-Tag). GET /_count?path=/obj/x gives {"requests": n, "not_modified": n}.
POST /_fail?status=503 makes every /obj/ request (still counted) answer that status until
POST /_fail?status=0. GET /big/NAME?size=N&chunk=C&delay=D[&cl=0][&cc=...] streams N bytes (the
256-byte block 00..ff repeated) in pieces of C bytes, D seconds apart, with a Content-Length (or
chunked with cl=0); /_count's "completed" counts the responses sent to their end.
GET /healthz answers 200, or the status set by POST /_health?status=N (0: back to 200).
GET /_conns gives {"connections": n}: how many distinct client connections
(peers) /obj/ requests came on in total (the cdn's keep-alive reuse).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

from aiohttp import web


def make_app() -> web.Application:
    requests: Counter[str] = Counter()
    not_modified: Counter[str] = Counter()
    failing = {"status": 0}
    peers: set[object] = set()
    completed: Counter[str] = Counter()
    health = {"status": 0}

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(status=health["status"] or 200, text="health\n")

    async def set_health(request: web.Request) -> web.Response:
        health["status"] = int(request.query["status"])
        return web.json_response(health)

    async def big(request: web.Request) -> web.StreamResponse:
        path = request.path
        requests[path] += 1
        q = request.query
        size, piece, delay = int(q["size"]), int(q.get("chunk", 65536)), float(q.get("delay", 0))
        headers = {"Cache-Control": q.get("cc", "max-age=300")}
        resp = web.StreamResponse(headers=headers)
        if q.get("cl", "1") == "1":
            resp.content_length = size
        await resp.prepare(request)
        block = bytes(range(256)) * (piece // 256)
        sent = 0
        while sent < size:
            if delay and sent:
                await asyncio.sleep(delay)
            part = block if size - sent >= len(block) else block[:size - sent]
            await resp.write(part)
            sent += len(part)
        await resp.write_eof()
        completed[path] += 1
        return resp

    async def obj(request: web.Request) -> web.StreamResponse:
        path = request.path
        requests[path] += 1
        peer = request.transport.get_extra_info("peername") if request.transport else None
        peers.add(peer)
        q = request.query
        if "delay" in q:
            await asyncio.sleep(float(q["delay"]))
        if failing["status"]:
            return web.Response(status=failing["status"], text="origin failing\n")
        headers = {}
        if "cc" in q:
            headers["Cache-Control"] = q["cc"]
        for param, field in (("age", "Age"), ("skey", "Surrogate-Key"), ("tag", "Cache-Tag")):
            if param in q:
                headers[field] = q[param]
        if q.get("cookie") == "1":
            headers["Set-Cookie"] = "session=abc"
        etag = q.get("etag")
        if etag:
            headers["ETag"] = f'"{etag}"'
            if request.headers.get("If-None-Match") == f'"{etag}"':
                not_modified[path] += 1
                return web.Response(status=304, headers=headers)
        body = f"{path} #{requests[path]}"
        if "vary" in q:
            headers["Vary"] = q["vary"]
            body += f" {q['vary']}={request.headers.get(q['vary'], '')}"
        if "size" in q:
            body = body.ljust(int(q["size"]), ".")
        return web.Response(text=body, headers=headers)

    async def count(request: web.Request) -> web.Response:
        p = request.query["path"]
        out = {"requests": requests[p], "not_modified": not_modified[p]}
        if p.startswith("/big/"):
            out["completed"] = completed[p]
        return web.json_response(out)

    async def conns(request: web.Request) -> web.Response:
        return web.json_response({"connections": len(peers)})

    async def fail(request: web.Request) -> web.Response:
        failing["status"] = int(request.query["status"])
        return web.json_response(failing)

    app = web.Application()
    app.router.add_get("/_count", count)
    app.router.add_get("/_conns", conns)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/_health", set_health)
    app.router.add_post("/_fail", fail)
    app.router.add_route("*", "/obj/{name}", obj)
    app.router.add_get("/big/{name}", big)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
