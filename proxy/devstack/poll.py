"""Polling with a short exponential backoff: the replacement for `sleep(2)` in harness code.

`wait_until(condition, timeout)` calls `condition()` until it returns a truthy value, raises, or
the deadline passes; it starts at a few milliseconds between attempts (servers on loopback are
usually ready within tens of ms) and backs off to MAX_DELAY so a slow start does not spin the CPU.
An exception from the condition counts as "not yet"; the last one is chained to the timeout error.
`abort()` is checked each round, so a caller can stop early (ManagedProcess: the process exited).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["PollTimeout", "wait_until", "wait_until_async"]

T = TypeVar("T")

FIRST_DELAY = 0.005
MAX_DELAY = 0.1


class PollTimeout(Exception):
    """The condition did not hold before the deadline."""


def _never() -> None:
    return None


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    what: str = "condition",
    abort: Callable[[], None] = _never,
) -> T:
    """Return the first truthy `condition()`; `abort()` may raise to give up early."""
    deadline = time.monotonic() + timeout
    delay = FIRST_DELAY
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
            last_error = None
        except Exception as exc:  # any failure of the probe means "not ready yet"
            last_error = exc
        abort()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise PollTimeout(f"{what} not met within {timeout:.1f}s{detail}") from last_error
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_DELAY)


async def wait_until_async(
    condition: Callable[[], Awaitable[T]],
    timeout: float,
    what: str = "condition",
    abort: Callable[[], None] = _never,
) -> T:
    """Like `wait_until`, for a coroutine condition; sleeps without blocking the loop."""
    deadline = time.monotonic() + timeout
    delay = FIRST_DELAY
    last_error: BaseException | None = None
    while True:
        try:
            result = await condition()
            if result:
                return result
            last_error = None
        except Exception as exc:  # any failure of the probe means "not ready yet"
            last_error = exc
        abort()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise PollTimeout(f"{what} not met within {timeout:.1f}s{detail}") from last_error
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_DELAY)
