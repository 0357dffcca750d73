"""A throwaway `redis-server` on a locked loopback port, for sessions, caches and queues in tests.

Started with persistence off (`--save "" --appendonly no`) and its working directory in a temp dir,
bound to 127.0.0.1 only; ready when PING answers +PONG over RESP. `close()` shuts it down and
releases the port. (Not `stop()`: on ManagedProcess that name means SIGSTOP.)
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from proxy.devstack.ports import PortLock, allocate_port
from proxy.devstack.probes import redis_ping_probe, redis_ping_probe_async
from proxy.devstack.process import DevstackError, ManagedProcess, PortProcess

__all__ = ["RedisServer", "find_redis_server", "start_redis", "start_redis_async"]

HOST = "127.0.0.1"
READY_TIMEOUT = 10.0


def find_redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None and Path("/usr/sbin/redis-server").exists():
        path = "/usr/sbin/redis-server"  # Debian PATH for non-root users may lack sbin
    if path is None:
        raise DevstackError("redis-server not found on PATH; install Debian's redis-server package")
    return path


class RedisServer(PortProcess):
    """A running redis-server; build it with `start_redis()` or `RedisServer.spawn()` + wait_ready."""

    def __init__(self, port_lock: PortLock, process: ManagedProcess, workdir: Path) -> None:
        self.port_lock = port_lock
        self.process = process
        self.workdir = workdir
        self.host = HOST

    @classmethod
    def spawn(
        cls,
        *,
        name: str = "redis",
        log_dir: Path | None = None,
        executable: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> RedisServer:
        """Start the server process; it is not necessarily answering yet (see wait_ready)."""
        executable = executable or find_redis_server()
        port_lock = allocate_port(HOST)
        try:
            base = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="tierproxy-redis-"))
            workdir = base / f"{name}-{port_lock.port}"
            workdir.mkdir(parents=True, exist_ok=True)
            argv = [
                executable,
                "--port", str(port_lock.port),
                "--bind", HOST,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(workdir),
                "--daemonize", "no",
                # Log to stdout, which ManagedProcess sends to the log file.
                "--logfile", "",
                *extra_args,
            ]
            process = ManagedProcess(argv, name=f"{name}-{port_lock.port}", log_dir=base, cwd=workdir)
        except BaseException:
            port_lock.release()
            raise
        return cls(port_lock, process, workdir)

    @property
    def url(self) -> str:
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> RedisServer:
        self.process.wait_ready(redis_ping_probe(self.host, self.port), timeout)
        return self

    async def wait_ready_async(self, timeout: float = READY_TIMEOUT) -> RedisServer:
        await self.process.wait_ready_async(redis_ping_probe_async(self.host, self.port), timeout)
        return self

    def __repr__(self) -> str:
        return f"RedisServer({self.url}, {self.process!r})"


def start_redis(
    *,
    name: str = "redis",
    log_dir: Path | None = None,
    executable: str | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = READY_TIMEOUT,
) -> RedisServer:
    """Spawn redis-server and wait until it answers PING; cleaned up if it never does."""
    server = RedisServer.spawn(name=name, log_dir=log_dir, executable=executable, extra_args=extra_args)
    try:
        return server.wait_ready(timeout)
    except BaseException:
        server.close()
        raise


async def start_redis_async(
    *,
    name: str = "redis",
    log_dir: Path | None = None,
    executable: str | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = READY_TIMEOUT,
) -> RedisServer:
    server = RedisServer.spawn(name=name, log_dir=log_dir, executable=executable, extra_args=extra_args)
    try:
        return await server.wait_ready_async(timeout)
    except BaseException:
        await server.close_async()
        raise
