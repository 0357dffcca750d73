"""Process runtime shared by every daemon: the event loop, signals and structured logging.

A daemon is a class with three coroutines: `start()` binds and begins serving, `reload()` applies a
new config read from disk, `drain(deadline)` stops accepting and waits for in-flight work. `run()`
installs uvloop, maps SIGHUP to reload and SIGTERM/SIGINT to drain-then-exit, and returns an exit
code. Nothing here is global: the logger and the loop are made per run. Under systemd (Type=notify,
`$NOTIFY_SOCKET` set) it tells systemd READY=1 once `start()` returned, RELOADING=1 / READY=1
around each reload and STOPPING=1 when the drain begins (proxy/core/sdnotify.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any, Protocol

from proxy.core.sdnotify import Notifier

__all__ = ["Daemon", "JsonFormatter", "run", "setup_logging"]


class Daemon(Protocol):
    async def start(self) -> None: ...

    async def reload(self) -> None: ...

    async def drain(self) -> None: ...


_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, event, plus any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _TextFormatter(logging.Formatter):
    """Human format for terminals: time level logger event key=value..."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _RESERVED and not k.startswith("_")
        )
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{ts} {record.levelname.lower():7s} {record.name}: {record.getMessage()}"
        if extras:
            line += " " + extras
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "info", json_lines: bool | None = None) -> None:
    """Log to stderr: JSON lines unless stderr is a terminal (or `json_lines` says otherwise)."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is per request: off the hot path and out of our logs.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when available (it is a dependency); the stdlib loop otherwise."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _serve(daemon: Daemon, log: logging.Logger, notifier: Notifier) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: asyncio.Queue[None] = asyncio.Queue()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloads.put_nowait, None)
    await daemon.start()
    notifier.ready()

    async def reloader() -> None:
        while True:
            await reloads.get()
            notifier.reloading()
            try:
                await daemon.reload()
                notifier.ready("serving (reloaded)")
            except Exception:
                # A bad reload keeps the running config: the daemon must survive an operator typo.
                log.exception("reload failed; keeping the running config")
                notifier.ready("serving (reload failed: running config kept)")

    task = asyncio.create_task(reloader())
    await stop.wait()
    log.info("stopping: draining in-flight work")
    notifier.stopping()
    task.cancel()
    await daemon.drain()
    log.info("stopped")
    return 0


def run(daemon: Daemon, name: str) -> int:
    """Run a daemon until SIGTERM/SIGINT, reloading on SIGHUP; return the exit code."""
    log = logging.getLogger(f"tierproxy.{name}")
    from proxy import _native

    log.info("%s", _native.summary())  # which twin of the hot modules runs (proxy/_native.py)
    notifier = Notifier.from_environ()  # before any worker process is spawned: they must not inherit it
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_serve(daemon, log, notifier))
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
