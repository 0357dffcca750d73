"""`workers = N`: N daemon processes on one port (SO_REUSEPORT) under one supervisor.

Theory of operation. The supervisor is the process the operator started: it binds the admin port
and keeps whatever state must be single (the load balancer's health checks, for one). It starts N
worker processes (`tierproxy <daemon> --config FILE --worker-fd FD`), each binding the listen port
with SO_REUSEPORT so the kernel spreads connections over them, and talks to each over a socketpair
with one JSON object per line. Messages are the daemon's own (see LbDaemon._on_control and
DbProxyDaemon._on_control), plus three the machinery here knows:

    worker -> supervisor   {"op": "ready"}                 started; `on_ready(index)` is called
                           {"id": n, ...}                  the answer to a request of `ask`
                           {"op": ..., "rid": n}           a request (`ControlChannel.request`)
    supervisor -> worker   {"op": ..., "id": n}            a request (`ask`, `snapshots`)
                           {"rid": n, ...}                 the answer to a worker's request

Anything else a worker sends goes to `on_message(index, msg)`. SIGHUP/SIGTERM reach all workers
through the supervisor. A worker whose supervisor disappears drains and exits (end of file on its
control channel).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

__all__ = ["ControlChannel", "WorkerSet"]

log = logging.getLogger("tierproxy.lb")

# Longest control message we accept (a stats snapshot of a big pool fits easily).
MAX_LINE = 16 * 1024 * 1024
STATS_TIMEOUT = 2.0


class _Worker:
    def __init__(self, index: int, proc: subprocess.Popen[bytes], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.index = index
        self.proc = proc
        self.reader = reader
        self.writer = writer
        self.ready = asyncio.get_running_loop().create_future()
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.task: asyncio.Task[None] | None = None

    def send(self, msg: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(json.dumps(msg).encode() + b"\n")


class WorkerSet:
    """The supervisor's side: start, message, query and stop N worker processes."""

    def __init__(self, config_path: Path, count: int, on_ready: Callable[[int], None], *,
                 daemon: str = "lb",
                 on_message: Callable[[int, dict[str, Any]], None] | None = None) -> None:  # fmt: skip
        self.config_path = config_path
        self.count = count
        self.on_ready = on_ready
        self.daemon = daemon
        self.on_message = on_message
        self.workers: list[_Worker] = []
        self._next_id = 0

    async def start(self, timeout: float = 30.0) -> None:
        for i in range(self.count):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            proc = subprocess.Popen(
                [sys.executable, "-m", "proxy.cli", self.daemon, "--config", str(self.config_path),
                 "--worker-fd", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
            )
            theirs.close()
            reader, writer = await asyncio.open_unix_connection(sock=ours, limit=MAX_LINE)
            worker = _Worker(i, proc, reader, writer)
            worker.task = asyncio.get_running_loop().create_task(self._read(worker))
            self.workers.append(worker)
        try:
            async with asyncio.timeout(timeout):
                for worker in self.workers:
                    await worker.ready
        except BaseException:
            await self.stop(5.0)
            raise

    async def _read(self, worker: _Worker) -> None:
        while True:
            try:
                line = await worker.reader.readline()
            except (ValueError, ConnectionError):
                line = b""
            if not line:
                break
            msg = json.loads(line)
            if msg.get("op") == "ready":
                if not worker.ready.done():
                    worker.ready.set_result(None)
                self.on_ready(worker.index)
            elif "id" in msg:
                fut = worker.pending.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif self.on_message is not None:
                self.on_message(worker.index, msg)
        if not worker.ready.done():
            worker.ready.set_exception(RuntimeError(f"worker {worker.index} exited during start-up"))
        for fut in worker.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("worker gone"))

    def broadcast(self, msg: dict[str, Any]) -> None:
        for worker in self.workers:
            worker.send(msg)

    def send_to(self, index: int, msg: dict[str, Any]) -> None:
        self.workers[index].send(msg)

    async def ask(self, op: str, payload: dict[str, Any] | None = None,
                  timeout: float = STATS_TIMEOUT) -> list[dict[str, Any]]:  # fmt: skip
        """Send {"op": op, **payload} to every worker; their answers (one that does not answer
        within `timeout` is left out)."""
        loop = asyncio.get_running_loop()
        futs = []
        for worker in self.workers:
            self._next_id += 1
            fut: asyncio.Future[dict[str, Any]] = loop.create_future()
            worker.pending[self._next_id] = fut
            worker.send({**(payload or {}), "op": op, "id": self._next_id})
            futs.append(fut)
        done, _pending = await asyncio.wait(futs, timeout=timeout) if futs else (set(), set())
        return [f.result() for f in futs if f in done and not f.exception()]

    async def snapshots(self) -> list[dict[str, Any]]:
        """Each live worker's counters (its answer to {"op": "stats"})."""
        return [reply["snapshot"] for reply in await self.ask("stats")]

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers]

    async def stop(self, timeout: float) -> None:
        """SIGTERM every worker (each drains), wait up to `timeout`, then SIGKILL the rest."""
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(w.proc.poll() is None for w in self.workers) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for worker in self.workers:
            if worker.proc.poll() is None:
                log.warning("worker did not stop in time; killing it", extra={"worker": worker.index})
                worker.proc.kill()
                worker.proc.wait()
            worker.writer.close()
            if worker.task is not None:
                worker.task.cancel()


Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


class ControlChannel:
    """The worker's side: read the supervisor's messages, answer, and notice when it is gone."""

    def __init__(self, fd: int, handler: Handler) -> None:
        self.fd = fd
        self.handler = handler
        self.writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}  # our requests, by rid
        self._next_rid = 0

    async def start(self) -> None:
        sock = socket.socket(fileno=self.fd)
        reader, self.writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_LINE)
        self._task = asyncio.get_running_loop().create_task(self._run(reader))

    def send(self, msg: dict[str, Any]) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(json.dumps(msg).encode() + b"\n")

    async def request(self, msg: dict[str, Any], timeout: float = STATS_TIMEOUT) -> dict[str, Any]:
        """Ask the supervisor (see `WorkerSet(on_message=...)`, which answers with the same
        "rid"); TimeoutError if no answer comes in time."""
        self._next_rid += 1
        rid = self._next_rid
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self.send({**msg, "rid": rid})
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._pending.pop(rid, None)

    async def _run(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except (ValueError, ConnectionError):
                line = b""
            if not line:
                break
            msg = json.loads(line)
            if "rid" in msg:  # the answer to one of our requests
                fut = self._pending.get(msg["rid"])
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                continue
            try:
                reply = await self.handler(msg)
            except Exception:
                log.exception("control message failed", extra={"op": msg.get("op")})
                reply = None
            if reply is not None:
                self.send(reply)
        # The supervisor is gone: nobody will stop us or check our backends; drain and exit.
        log.warning("supervisor gone; draining")
        os.kill(os.getpid(), signal.SIGTERM)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.writer is not None:
            self.writer.close()


async def start_worker_channel(fd: int, handler: Handler) -> ControlChannel:
    """A worker's side, started and announced to the supervisor with {"op": "ready"}."""
    channel = ControlChannel(fd, handler)
    await channel.start()
    channel.send({"op": "ready"})
    return channel


def process_role(worker_fd: int | None, workers: int, config_path: object) -> str:
    """"worker" (started by a supervisor), "supervisor" (workers > 1) or "single"."""
    if worker_fd is not None:
        return "worker"
    if workers > 1:
        if config_path is None:
            raise ValueError("workers > 1 needs the config file (workers re-read it)")
        return "supervisor"
    return "single"
