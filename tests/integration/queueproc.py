"""The queue tests' shared pieces: a redis-server of its own for each test (the `server` fixture)
and a client of it (`r`), the queue command line against it (`cli`), the queue worker's config, and
queue worker processes (`python -m proxy.cli queue worker`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from proxy.devstack.poll import wait_until_async
from proxy.devstack.process import ManagedProcess, python_child_env
from proxy.devstack.redis import RedisServer, start_redis_async

HANDLER = "tests.integration.queue_handlers:run"


@pytest.fixture
async def server(tmp_path) -> AsyncIterator[RedisServer]:
    s = await start_redis_async(log_dir=tmp_path / "redis")
    try:
        yield s
    finally:
        await s.close_async()


@pytest.fixture
async def r(server) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(server.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


def cli(server: RedisServer, *args: str) -> subprocess.CompletedProcess[str]:
    """`tierproxy queue ARGS --redis <server>` as a subprocess."""
    return subprocess.run([sys.executable, "-m", "proxy.cli", "queue", *args, "--redis", server.url],
                          env=python_child_env(), capture_output=True, text=True, timeout=60)


def write_config(path: Path, redis_url: str, tables: str = "", **over: object) -> Path:
    opts = {"concurrency": 4, "visibility_timeout": 2.0, "poll_interval": 0.2, "drain_timeout": 30.0}
    opts.update({k: v for k, v in over.items() if k not in ("max_attempts", "backoff_base", "max_length")})
    q = {"max_attempts": over.get("max_attempts", 3), "backoff_base": over.get("backoff_base", 0.05),
         "max_length": over.get("max_length", 0)}
    lines = [f'redis = "{redis_url}"']
    for k, v in opts.items():
        lines.append(f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"')
    lines.append(tables)
    lines.append("[queues.jobs]")
    lines.append(f'handler = "{HANDLER}"')
    lines += [f"{k} = {v!r}" for k, v in q.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Workers:
    def __init__(self, log_dir: Path, config: Path, redis: aioredis.Redis) -> None:
        self.log_dir, self.config, self.redis = log_dir, config, redis
        self.procs: dict[str, ManagedProcess] = {}

    async def start(self, name: str, config: Path | None = None) -> ManagedProcess:
        argv = [sys.executable, "-m", "proxy.cli", "queue", "worker", "--config", str(config or self.config),
                "--name", name, "--log-level", "debug", "--no-json-logs"]
        proc = ManagedProcess(argv, name=f"qworker-{name}", log_dir=self.log_dir, env=python_child_env())
        self.procs[name] = proc

        async def ready() -> bool:
            return bool(await self.redis.hexists("tq:workers", name))

        def abort() -> None:
            if proc.returncode is not None:
                raise AssertionError(f"worker {name} exited: {proc.log_tail()}")

        await wait_until_async(ready, 20, f"worker {name} ready", abort)
        return proc

    def managed_processes(self) -> list[ManagedProcess]:
        return list(self.procs.values())

    def close(self) -> None:
        for p in self.procs.values():
            p.kill() if p.stopped else p.terminate(10)
