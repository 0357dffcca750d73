"""Where the dbproxy will learn Patroni's topology: a REST poller and an etcd watcher (asyncio).

Both produce `proxy.dbproxy.topology.Topology` values and hand each *different* view (the version
aside) to `on_topology`; parsing and decisions live in topology.py, this file only moves bytes.

- `PatroniRestSource(endpoints, on_topology)` polls `GET /cluster` on a list of Patroni REST
  endpoints every `interval` seconds, sticking to the endpoint that last answered and moving to
  the next on an error (a dead node's Patroni answers nothing; any live one knows the cluster).
- `EtcdWatchSource(etcd_urls, scope, on_topology)` reads the keys under `/service/<scope>/` through
  etcd's v3 JSON gateway (`POST /v3/kv/range`, keys base64) and then keeps one `POST /v3/watch`
  stream open from the next revision, so a change (the leader key deleted when its lease expires,
  a new leader, a member's state) arrives as it happens instead of at the next poll. The view's
  version is etcd's revision. A broken stream or a compacted revision starts over with a fresh
  range read (on the next URL of the list).

Errors (an endpoint down, a garbage answer) go to `on_error` and the loop goes on with the last
view kept: neither source ever invents "no leader" because it cannot reach Patroni or etcd; the
caller decides what a long silence means.

Used by the daemon through failover.py (`[topology] source = "patroni"`).
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp

from proxy.dbproxy.topology import Topology, TopologyError, parse_cluster, parse_etcd

__all__ = ["EtcdWatchSource", "PatroniRestSource", "SourceError", "same_view"]

TopologyCallback = Callable[[Topology], Awaitable[None] | None]
ErrorCallback = Callable[[Exception], Awaitable[None] | None]


class SourceError(Exception):
    """No endpoint gave a usable answer; the message lists what each one said."""


def same_view(a: Topology | None, b: Topology | None) -> bool:
    """Equal but for the version: nothing the proxy acts on has changed."""
    if a is None or b is None:
        return a is b
    return (a.members, a.leader, a.sync_standbys, a.synchronous_mode, a.paused, a.pending_switchover) == (
        b.members, b.leader, b.sync_standbys, b.synchronous_mode, b.paused, b.pending_switchover,
    )  # fmt: skip


async def _call(callback: Callable[[Any], Any] | None, value: Any) -> None:
    if callback is None:
        return
    result = callback(value)
    if inspect.isawaitable(result):
        await result


class _Emitter:
    def __init__(self, on_topology: TopologyCallback, on_error: ErrorCallback | None) -> None:
        self.on_topology = on_topology
        self.on_error = on_error
        self.last: Topology | None = None
        self.views = 0
        self.ok_at: float | None = None  # wall clock of the last good answer, changed or not

    async def emit(self, topology: Topology) -> None:
        self.ok_at = time.time()
        if same_view(self.last, topology):
            self.last = topology
            return
        self.last = topology
        self.views += 1
        await _call(self.on_topology, topology)

    async def error(self, exc: Exception) -> None:
        await _call(self.on_error, exc)


class PatroniRestSource:
    """Poll `/cluster` on Patroni REST endpoints (base URLs such as http://10.0.0.1:8008)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        on_topology: TopologyCallback,
        *,
        on_error: ErrorCallback | None = None,
        interval: float = 0.5,
        timeout: float = 2.0,
    ) -> None:
        if not endpoints:
            raise ValueError("PatroniRestSource needs at least one endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.interval = interval
        self.timeout = timeout
        self._emitter = _Emitter(on_topology, on_error)
        self._current = 0
        self._counter = 0

    @property
    def last(self) -> Topology | None:
        return self._emitter.last

    @property
    def ok_at(self) -> float | None:
        return self._emitter.ok_at

    async def fetch_once(self, session: aiohttp.ClientSession) -> Topology:
        """One /cluster answer, from the endpoint that last answered or the next ones in turn."""
        failures: list[str] = []
        for step in range(len(self.endpoints)):
            index = (self._current + step) % len(self.endpoints)
            url = f"{self.endpoints[index]}/cluster"
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                    body = await response.read()
                    if response.status != 200:
                        failures.append(f"{url}: HTTP {response.status}")
                        continue
                self._counter += 1
                topology = parse_cluster(body, version=self._counter)
            except (TimeoutError, aiohttp.ClientError, OSError, TopologyError) as exc:
                failures.append(f"{url}: {exc!r}")
                continue
            self._current = index
            return topology
        raise SourceError("; ".join(failures))

    async def run(self) -> None:
        """Poll until cancelled."""
        async with aiohttp.ClientSession() as session:
            while True:
                started = time.monotonic()
                try:
                    await self._emitter.emit(await self.fetch_once(session))
                except SourceError as exc:
                    await self._emitter.error(exc)
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode("ascii")


def _prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for "every key starting with prefix": the prefix with its last byte + 1."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


class _Restart(Exception):
    """The watch must start over from a fresh range read (compacted, cancelled, stream ended)."""


class EtcdWatchSource:
    """Watch `/service/<scope>/` through etcd's v3 HTTP gateway (base URLs such as http://127.0.0.1:2379)."""

    def __init__(
        self,
        etcd_urls: Sequence[str],
        scope: str,
        on_topology: TopologyCallback,
        *,
        on_error: ErrorCallback | None = None,
        namespace: str = "/service",
        timeout: float = 2.0,
        retry_delay: float = 0.2,
    ) -> None:
        if not etcd_urls:
            raise ValueError("EtcdWatchSource needs at least one etcd URL")
        self.urls = [u.rstrip("/") for u in etcd_urls]
        self.scope = scope
        self.prefix = f"{namespace.rstrip('/')}/{scope}/".encode()
        self.timeout = timeout
        self.retry_delay = retry_delay
        self._emitter = _Emitter(on_topology, on_error)
        self._current = 0
        self.kvs: dict[str, bytes] = {}
        self.revision = 0

    @property
    def last(self) -> Topology | None:
        return self._emitter.last

    @property
    def ok_at(self) -> float | None:
        return self._emitter.ok_at

    def _key_range(self) -> dict[str, str]:
        return {"key": _b64(self.prefix), "range_end": _b64(_prefix_end(self.prefix))}

    async def _emit(self) -> None:
        try:
            topology = parse_etcd(self.scope, self.kvs, version=self.revision)
        except TopologyError as exc:
            await self._emitter.error(exc)
            return
        await self._emitter.emit(topology)

    async def snapshot(self, session: aiohttp.ClientSession, url: str) -> None:
        """Read every key of the scope and the revision it was read at."""
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with session.post(f"{url}/v3/kv/range", json=self._key_range(), timeout=timeout) as response:
            body = await response.json(content_type=None)
            if response.status != 200 or not isinstance(body, dict):
                raise SourceError(f"{url}/v3/kv/range: HTTP {response.status} {body!r:.200}")
        kvs: dict[str, bytes] = {}
        for kv in body.get("kvs", []):
            kvs[base64.b64decode(kv["key"]).decode("utf-8", "replace")] = base64.b64decode(kv.get("value", ""))
        self.kvs = kvs
        self.revision = int(body["header"]["revision"])

    def _apply(self, result: dict[str, Any]) -> bool:
        """Apply one watch response; True if keys changed."""
        if result.get("compact_revision") not in (None, "0", 0) or result.get("canceled"):
            raise _Restart(f"watch canceled: {result.get('cancel_reason') or result.get('compact_revision')}")
        events = result.get("events") or []
        for event in events:
            kv = event.get("kv", {})
            key = base64.b64decode(kv.get("key", "")).decode("utf-8", "replace")
            if event.get("type") == "DELETE":
                self.kvs.pop(key, None)
            else:  # PUT is the enum's zero value, left out of the JSON
                self.kvs[key] = base64.b64decode(kv.get("value", ""))
        header = result.get("header") or {}
        if "revision" in header:
            self.revision = max(self.revision, int(header["revision"]))
        return bool(events)

    async def watch(self, session: aiohttp.ClientSession, url: str) -> None:
        """Snapshot, then follow the watch stream until it breaks."""
        await self.snapshot(session, url)
        await self._emit()
        request = {"create_request": {**self._key_range(), "start_revision": str(self.revision + 1)}}
        # No total timeout: the stream stays open; a dead etcd shows as a read error.
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=None)
        async with session.post(f"{url}/v3/watch", json=request, timeout=timeout) as response:
            if response.status != 200:
                raise SourceError(f"{url}/v3/watch: HTTP {response.status}")
            decoder = json.JSONDecoder()
            buffer = ""
            async for chunk in response.content.iter_any():
                buffer += chunk.decode("utf-8", "replace")
                while True:
                    buffer = buffer.lstrip()
                    if not buffer:
                        break
                    try:
                        message, end = decoder.raw_decode(buffer)
                    except ValueError:
                        break  # an incomplete message: wait for more bytes
                    buffer = buffer[end:]
                    if not isinstance(message, dict) or "error" in message:
                        raise _Restart(f"watch error: {message!r:.200}")
                    if self._apply(message.get("result") or {}):
                        await self._emit()
            raise _Restart("watch stream ended")

    async def run(self) -> None:
        """Watch until cancelled, moving through the etcd URLs on errors."""
        async with aiohttp.ClientSession() as session:
            while True:
                url = self.urls[self._current]
                try:
                    await self.watch(session, url)
                except (TimeoutError, aiohttp.ClientError, OSError, SourceError, _Restart, ValueError, KeyError) as exc:  # fmt: skip
                    await self._emitter.error(exc)
                    self._current = (self._current + 1) % len(self.urls)
                    await asyncio.sleep(self.retry_delay)
