"""workers.web driven as a real subprocess (started by the `web_worker_factory` fixture)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from proxy.devstack.poll import wait_until_async
from proxy.devstack.ports import allocate_port
from proxy.devstack.web import WebWorker

MiB = 1024 * 1024
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=30)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
        yield session


def _proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def _pattern(n: int) -> bytes:
    return bytes(i % 256 for i in range(256)) * (n // 256) + bytes(range(n % 256))


async def test_whoami_and_index_name_the_instance(web_worker_factory, http) -> None:
    worker = web_worker_factory("web-a")
    async with http.get(f"{worker.url}/whoami") as resp:
        assert resp.status == 200
        assert resp.headers["X-Served-By"] == "web-a"
        assert await resp.json() == {"instance": "web-a", "pid": worker.process.pid}
    async with http.get(f"{worker.url}/") as resp:
        assert resp.headers["X-Served-By"] == "web-a"
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert "web-a" in page and str(worker.process.pid) in page


async def test_memory_sessions_count_and_die_with_the_process(web_worker_factory) -> None:
    worker = web_worker_factory("web-mem")
    # A cookie jar that accepts cookies for IP hosts: the client behaves like one browser.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        counts = []
        for _ in range(3):
            async with browser.get(f"{worker.url}/session") as resp:
                body = await resp.json()
                counts.append(body["count"])
        assert counts == [1, 2, 3]
        sid = body["sid"]
        old_pid = worker.process.pid

        await worker.restart_async(kill=True)
        assert worker.process.pid != old_pid

        async with browser.get(f"{worker.url}/session") as resp:
            body = await resp.json()
        # Same browser, same cookie, but the counter lived only in the killed process.
        assert body["sid"] == sid
        assert body["count"] == 1


async def test_redis_sessions_survive_a_worker_dying(web_worker_factory, redis_server) -> None:
    first = web_worker_factory("web-r1", sessions="redis")
    second = web_worker_factory("web-r2", sessions="redis")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(f"{first.url}/session") as resp:
            one = await resp.json()
        async with browser.get(f"{first.url}/session") as resp:
            assert (await resp.json())["count"] == 2
        first.process.kill()
        async with browser.get(f"{second.url}/session") as resp:
            two = await resp.json()
    assert one["instance"] == "web-r1" and two["instance"] == "web-r2"
    assert two["sid"] == one["sid"]
    assert two["count"] == 3

    client = aioredis.Redis.from_url(redis_server.url)
    try:
        key = f"session:{one['sid']}"
        assert await client.hget(key, "count") == b"3"
        assert 0 < await client.ttl(key) <= 1800
    finally:
        await client.aclose()


async def test_redis_down_fails_sessions_not_health(web_worker_factory, http) -> None:
    # A locked port nobody listens on: the worker's Redis is "down" from the start.
    with allocate_port() as dead:
        worker = web_worker_factory("web-noredis", sessions=f"redis://127.0.0.1:{dead.port}/0")
        async with http.get(f"{worker.url}/session") as resp:
            assert resp.status == 503
            assert "session store unavailable" in (await resp.json())["error"]
        async with http.get(f"{worker.url}/healthz") as resp:
            assert resp.status == 200


async def test_redis_session_counter_is_atomic_under_concurrency(web_worker_factory) -> None:
    workers = [web_worker_factory(f"web-c{i}", sessions="redis") for i in range(2)]
    sid = "concurrency-test-sid-0001"

    async def visit(session: aiohttp.ClientSession, worker: WebWorker) -> int:
        async with session.get(f"{worker.url}/session", cookies={"sid": sid}) as resp:
            return (await resp.json())["count"]

    async with aiohttp.ClientSession() as session:
        counts = await asyncio.gather(*(visit(session, workers[i % 2]) for i in range(40)))
    assert sorted(counts) == list(range(1, 41))


async def test_echo_streams_50_mib_in_bounded_memory(web_worker_factory, http) -> None:
    worker = web_worker_factory("web-echo")
    pid = worker.process.pid
    size, piece = 50 * MiB, MiB
    rss_before = _proc_status_kib(pid, "VmRSS")
    block = bytes(range(256)) * (piece // 256)
    sent_digest = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for i in range(size // piece):
            # Vary each piece so a dropped or repeated piece changes the digest.
            data = i.to_bytes(4, "big") + block[4:]
            sent_digest.update(data)
            yield data

    received = 0
    got_digest = hashlib.sha256()
    async with http.post(f"{worker.url}/echo", data=body()) as resp:
        assert resp.status == 200
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        async for chunk in resp.content.iter_chunked(256 * 1024):
            received += len(chunk)
            got_digest.update(chunk)
    assert received == size
    assert got_digest.hexdigest() == sent_digest.hexdigest()
    # VmHWM is the peak RSS over the process's life: had the worker buffered the body, the peak
    # would be at least rss_before + 50 MiB.
    peak = _proc_status_kib(pid, "VmHWM")
    assert peak - rss_before < 16 * 1024, f"RSS grew {(peak - rss_before) // 1024} MiB for a 50 MiB echo"


async def test_echo_accepts_put_and_small_bodies(web_worker_factory, http) -> None:
    worker = web_worker_factory("web-put")
    async with http.put(f"{worker.url}/echo", data=b"hello") as resp:
        assert resp.status == 200
        assert await resp.read() == b"hello"
    async with http.post(f"{worker.url}/echo", data=b"") as resp:
        assert await resp.read() == b""


@pytest.mark.parametrize("n", [0, 1, 255, 65535, 65536, 3 * 65536 + 7, 5 * MiB + 3])
async def test_bytes_returns_exact_length_and_pattern(web_worker_factory, http, n: int) -> None:
    worker = web_worker_factory("web-bytes")
    async with http.get(f"{worker.url}/bytes", params={"n": n}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(n)
        assert "Transfer-Encoding" not in resp.headers
        data = await resp.read()
    assert data == _pattern(n)
    async with http.get(f"{worker.url}/bytes", params={"n": n, "chunked": "1"}) as resp:
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in resp.headers
        assert await resp.read() == data


async def test_bytes_rejects_bad_n(web_worker_factory, http) -> None:
    worker = web_worker_factory("web-bad")
    for bad in ("-1", "abc", str((1 << 40) + 1)):
        async with http.get(f"{worker.url}/bytes", params={"n": bad}) as resp:
            assert resp.status == 400


async def test_websocket_echoes_text_and_binary(web_worker_factory, http) -> None:
    worker = web_worker_factory("web-ws")
    async with http.ws_connect(f"{worker.url}/ws") as ws:
        await ws.send_str("ping ü")
        assert await ws.receive_str(timeout=5) == "ping ü"
        await ws.send_bytes(b"\x00\x01\xff" * 1000)
        assert await ws.receive_bytes(timeout=5) == b"\x00\x01\xff" * 1000


async def test_admin_health_flips_healthz(web_worker_factory, http) -> None:
    worker = web_worker_factory("web-health")
    async with http.get(f"{worker.url}/healthz") as resp:
        assert (resp.status, await resp.text()) == (200, "ok")
    async with http.post(f"{worker.url}/admin/health", data=b"fail") as resp:
        assert resp.status == 200
    async with http.get(f"{worker.url}/healthz") as resp:
        assert resp.status == 503
    # Failing its health check does not stop it serving.
    async with http.get(f"{worker.url}/whoami") as resp:
        assert resp.status == 200
    async with http.post(f"{worker.url}/admin/health", data=b"maybe") as resp:
        assert resp.status == 400
    async with http.post(f"{worker.url}/admin/health", data=b"ok") as resp:
        assert resp.status == 200
    async with http.get(f"{worker.url}/healthz") as resp:
        assert resp.status == 200


async def test_headers_status_slow_and_count(web_worker_factory, http) -> None:
    worker = web_worker_factory("web-misc")
    async with http.get(f"{worker.url}/headers?x=1", headers={"X-Request-ID": "abc123"}) as resp:
        seen = await resp.json()
    assert seen["method"] == "GET" and seen["path"] == "/headers" and seen["query"] == "x=1"
    assert seen["headers"]["X-Request-ID"] == "abc123"
    assert ["X-Request-ID", "abc123"] in seen["raw_headers"]

    for code in (201, 204, 418, 503):
        async with http.get(f"{worker.url}/status/{code}") as resp:
            assert resp.status == code
            assert resp.headers["X-Served-By"] == "web-misc"
    async with http.get(f"{worker.url}/status/99") as resp:
        assert resp.status == 400

    async with http.get(f"{worker.url}/slow", params={"ms": "50"}) as resp:
        assert (await resp.json())["slept_ms"] == 50

    async with http.get(f"{worker.url}/count") as resp:
        before = (await resp.json())["count"]
    for _ in range(5):
        async with http.get(f"{worker.url}/whoami"):
            pass
    async with http.get(f"{worker.url}/healthz"):
        pass  # probes are not counted
    async with http.get(f"{worker.url}/count") as resp:
        assert (await resp.json())["count"] == before + 5


async def test_static_files(web_worker_factory, http, tmp_path: Path) -> None:
    (tmp_path / "app.css").write_text("body { color: red }\n")
    worker = web_worker_factory("web-static", static=tmp_path)
    async with http.get(f"{worker.url}/static/app.css") as resp:
        assert resp.status == 200
        assert await resp.text() == "body { color: red }\n"
    async with http.get(f"{worker.url}/static/missing.css") as resp:
        assert resp.status == 404


async def test_sigterm_lets_in_flight_request_finish(web_worker_factory, http) -> None:
    worker = web_worker_factory("web-term")

    async def served() -> int:
        async with http.get(f"{worker.url}/count") as resp:
            return (await resp.json())["count"]

    slow = asyncio.create_task(http.get(f"{worker.url}/slow", params={"ms": "500"}))
    # The slow request is counted when it reaches the handler; only then is it "in flight".
    await wait_until_async(lambda: _gt(served, 0), timeout=5, what="slow request in flight")
    worker.process.send_terminate()
    async with await slow as resp:
        assert resp.status == 200
        assert (await resp.json())["slept_ms"] == 500
    await wait_until_async(_const(lambda: not worker.process.running), timeout=10, what="worker exit")
    assert worker.process.returncode == 0


async def _gt(read, value: int) -> bool:
    return await read() > value


def _const(check):
    async def probe() -> bool:
        return check()

    return probe
