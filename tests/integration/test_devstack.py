"""proxy.devstack against real processes: port locks, readiness, signals, cleanup."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from proxy.devstack.poll import PollTimeout, wait_until, wait_until_async
from proxy.devstack.ports import PORT_RANGE, PortLock, PortUnavailable, allocate_port
from proxy.devstack.probes import http_probe, http_probe_async
from proxy.devstack.process import ManagedProcess, NotReady, ProcessExited
from proxy.devstack.web import WebWorkers

SHORT = aiohttp.ClientTimeout(total=0.5)


def test_port_lock_excludes_a_second_allocation_of_the_same_port() -> None:
    first = allocate_port()
    assert PORT_RANGE[0] <= first.port <= PORT_RANGE[1]
    with pytest.raises(PortUnavailable, match="locked"):
        PortLock(first.port)
    first.release()
    assert not first.held
    with PortLock(first.port) as again:
        assert again.port == first.port and again.held


def test_port_lock_excludes_other_processes() -> None:
    script = textwrap.dedent(
        """
        import sys
        from proxy.devstack.ports import PortLock, PortUnavailable
        try:
            PortLock(int(sys.argv[1])).release()
        except PortUnavailable:
            sys.exit(3)
        """
    )
    with allocate_port() as held:
        locked = subprocess.run([sys.executable, "-c", script, str(held.port)], timeout=30)
        assert locked.returncode == 3
    free = subprocess.run([sys.executable, "-c", script, str(held.port)], timeout=30)
    assert free.returncode == 0


def test_port_lock_skips_a_port_bound_outside_the_scheme() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        with pytest.raises(PortUnavailable, match="bound"):
            PortLock(squatter.getsockname()[1])


def test_allocations_are_distinct() -> None:
    locks = [allocate_port() for _ in range(50)]
    try:
        assert len({lock.port for lock in locks}) == 50
    finally:
        for lock in locks:
            lock.release()


def test_wait_ready_reports_early_exit_with_log_tail(tmp_path: Path) -> None:
    proc = ManagedProcess(
        [sys.executable, "-c", "import sys; print('config is broken: marker-42'); sys.exit(3)"],
        name="early-exit",
        log_dir=tmp_path,
    )
    with allocate_port() as unused, pytest.raises(ProcessExited) as info:
        proc.wait_ready(http_probe("127.0.0.1", unused.port), timeout=20)
    assert info.value.returncode == 3
    assert "marker-42" in info.value.log_tail
    assert "marker-42" in str(info.value)


async def test_wait_ready_async_times_out_with_log_tail(tmp_path: Path) -> None:
    proc = ManagedProcess(
        [sys.executable, "-c", "import signal; print('never listening', flush=True); signal.pause()"],
        name="never-ready",
        log_dir=tmp_path,
    )
    try:
        # Wait for the marker first, so the timeout below is about readiness, not startup.
        await wait_until_async(_const(lambda: "never listening" in proc.log_tail()), 20, "marker")
        with allocate_port() as unused, pytest.raises(NotReady) as info:
            await proc.wait_ready_async(http_probe_async("127.0.0.1", unused.port), timeout=0.3)
        assert "never listening" in info.value.log_tail
        assert proc.running
    finally:
        proc.terminate(timeout=5)
    assert not proc.running


def test_terminate_escalates_to_sigkill(tmp_path: Path) -> None:
    proc = ManagedProcess(
        [
            sys.executable,
            "-c",
            "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            " print('ignoring', flush=True); signal.pause()",
        ],
        name="stubborn",
        log_dir=tmp_path,
    )
    wait_until(lambda: "ignoring" in proc.log_tail(), 20, "handler installed")
    assert proc.terminate(timeout=0.3) == -signal.SIGKILL


def test_kill_reaps(tmp_path: Path) -> None:
    proc = ManagedProcess([sys.executable, "-c", "import signal; signal.pause()"], name="k", log_dir=tmp_path)
    assert proc.kill() == -signal.SIGKILL
    assert not proc.running


async def test_stopped_worker_answers_only_after_cont(web_worker_factory) -> None:
    worker = web_worker_factory("web-stop")
    async with aiohttp.ClientSession(timeout=SHORT) as http:
        worker.process.stop()
        assert worker.process.stopped
        with pytest.raises(TimeoutError):
            async with http.get(f"{worker.url}/whoami") as resp:
                await resp.read()
        worker.process.cont()
        async with http.get(f"{worker.url}/whoami") as resp:
            assert (await resp.json())["instance"] == "web-stop"
    # Left stopped on purpose: the fixture must still clean it up (SIGCONT + SIGTERM).
    worker.process.stop()


def test_web_workers_close_terminates_stopped_workers_gracefully(tmp_path: Path) -> None:
    with WebWorkers(tmp_path) as workers:
        a = workers.start("web-x")
        b = workers.start("web-y")
        a.process.stop()
    # Exit code 0 means SIGTERM was handled (after SIGCONT), not the SIGKILL fallback.
    assert a.process.returncode == 0 and b.process.returncode == 0
    assert not a.port_lock.held and not b.port_lock.held


def test_worker_restart_keeps_the_port(web_worker_factory) -> None:
    worker = web_worker_factory("web-restart")
    port, pid = worker.port, worker.process.pid
    worker.restart()
    assert worker.port == port and worker.process.pid != pid
    assert http_probe("127.0.0.1", port, "/whoami")()


async def test_redis_server_fixture_answers_ping(redis_server) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.ping() is True
        assert await client.config_get("save") == {"save": ""}
        assert await client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        await client.aclose()


def test_poll_timeout_chains_last_error() -> None:
    def broken() -> bool:
        raise ConnectionRefusedError("nope")

    with pytest.raises(PollTimeout, match="nope"):
        wait_until(broken, 0.05, "broken probe")


def _const(check):
    async def probe() -> bool:
        return check()

    return probe
