"""Active health checkers (TCP connect, HTTP GET) and the loop that runs them.

A checker is an async callable returning `CheckResult(ok, reason)`; it never raises for a failed
backend. `CheckLoop` runs one checker per target on its interval, with a random phase so that many
targets are not probed in lock-step, and feeds each result to the target's `HealthState`
(rise/fall) and a callback that sees state flips.
"""

from __future__ import annotations

import asyncio
import ssl
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp

from proxy.core.health import HealthState

__all__ = ["CheckLoop", "CheckResult", "HttpChecker", "tcp_check"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    reason: str = ""


async def tcp_check(host: str, port: int, timeout: float) -> CheckResult:
    """Pass when a TCP connection opens within `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return CheckResult(False, f"tcp connect timed out after {timeout:g}s")
    except OSError as exc:
        return CheckResult(False, f"tcp connect failed: {exc.strerror or exc}")
    writer.close()
    return CheckResult(True)


class HttpChecker:
    """HTTP GET health checks through one shared aiohttp session (no keep-alive: a check must
    exercise the accept path the way a new client connection would)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(force_close=True, limit=0)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._session

    async def check(
        self,
        host: str,
        port: int,
        path: str,
        timeout: float,
        expect_status: Sequence[int],
        host_header: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> CheckResult:
        """`ssl_context`: check over TLS (the backend's certificate verified as the context and
        `server_hostname` say)."""
        scheme = "https" if ssl_context is not None else "http"
        url = f"{scheme}://{host}:{port}{path}"
        extra: dict[str, object] = {}
        if ssl_context is not None:
            extra = {"ssl": ssl_context, "server_hostname": server_hostname}
        headers = {"User-Agent": "tierproxy-health"}
        if host_header:
            headers["Host"] = host_header
        try:
            async with asyncio.timeout(timeout):
                async with self._get_session().get(
                    url, headers=headers, allow_redirects=False, **extra  # type: ignore[arg-type]
                ) as resp:
                    await resp.read()
                    status = resp.status
        except TimeoutError:
            return CheckResult(False, f"http check timed out after {timeout:g}s")
        except aiohttp.ClientConnectorError as exc:
            return CheckResult(False, f"http connect failed: {exc.os_error.strerror or exc}")
        except (aiohttp.ClientError, OSError) as exc:
            return CheckResult(False, f"http check failed: {type(exc).__name__}: {exc}")
        if status in expect_status:
            return CheckResult(True)
        return CheckResult(False, f"http status {status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


Check = Callable[[], Awaitable[CheckResult]]
OnResult = Callable[[HealthState, CheckResult, bool], None]


class CheckLoop:
    """Runs `check` every `interval` seconds for one target until stopped."""

    def __init__(
        self,
        check: Check,
        state: HealthState,
        interval: float,
        on_result: OnResult,
        rng: random.Random | None = None,
    ) -> None:
        self._check = check
        self._state = state
        self._interval = interval
        self._on_result = on_result
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None

    def start(self, first_delay: float | None = None) -> None:
        """Begin checking; the first check runs after `first_delay` (random phase by default)."""
        delay = self._rng.uniform(0, self._interval * 0.2) if first_delay is None else first_delay
        self._task = asyncio.get_running_loop().create_task(self._run(delay))

    async def _run(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(delay)
        while True:
            started = loop.time()
            result = await self._check()
            changed = self._state.record(result.ok, result.reason, loop.time())
            self._on_result(self._state, result, changed)
            # Keep the period fixed however long the check took.
            await asyncio.sleep(max(0.0, self._interval - (loop.time() - started)))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
