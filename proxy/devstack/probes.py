"""Readiness probes that speak the server's protocol: an HTTP GET, a Redis PING.

A probe answers "is it serving yet?" with True/False and may raise; ManagedProcess.wait_ready
treats an exception as "not yet" and shows the last one if the deadline passes. Each probe comes
as a blocking callable (for sync fixtures and scripts) and a coroutine function (for code already
inside an event loop). They use plain sockets and asyncio streams, not aiohttp or redis-py, so a
probe's verdict does not depend on a client library's pooling or retries.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
from collections.abc import Awaitable, Callable

__all__ = [
    "SyncProbe",
    "AsyncProbe",
    "http_probe",
    "http_probe_async",
    "redis_ping_probe",
    "redis_ping_probe_async",
]

SyncProbe = Callable[[], bool]
AsyncProbe = Callable[[], Awaitable[bool]]

# Per-attempt I/O timeout: loopback answers in microseconds; a slow answer means "not ready" and
# the caller's overall deadline decides when to give up.
ATTEMPT_TIMEOUT = 1.0
_PING = b"*1\r\n$4\r\nPING\r\n"


def http_probe(
    host: str, port: int, path: str = "/healthz", expect: int = 200, timeout: float = ATTEMPT_TIMEOUT
) -> SyncProbe:
    def probe() -> bool:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            response = conn.getresponse()
            response.read()
            return response.status == expect
        finally:
            conn.close()

    return probe


def http_probe_async(
    host: str, port: int, path: str = "/healthz", expect: int = 200, timeout: float = ATTEMPT_TIMEOUT
) -> AsyncProbe:
    async def probe() -> bool:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
                )
                status_line = await reader.readline()
            finally:
                writer.close()
        parts = status_line.split()
        return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1] == str(expect).encode()

    return probe


def redis_ping_probe(host: str, port: int, timeout: float = ATTEMPT_TIMEOUT) -> SyncProbe:
    def probe() -> bool:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_PING)
            # "+PONG\r\n" when serving; "-LOADING ..." while loading a dataset.
            return sock.recv(64).startswith(b"+PONG")

    return probe


def redis_ping_probe_async(host: str, port: int, timeout: float = ATTEMPT_TIMEOUT) -> AsyncProbe:
    async def probe() -> bool:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(_PING)
                line = await reader.readline()
            finally:
                writer.close()
        return line.startswith(b"+PONG")

    return probe
