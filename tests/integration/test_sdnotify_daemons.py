"""systemd's Type=notify protocol spoken by real daemon processes: `tierproxy lb` (with worker
processes) and `tierproxy queue worker`, started with $NOTIFY_SOCKET pointing at a real AF_UNIX
datagram socket. SO_PASSCRED gives each datagram's sender pid, as systemd sees it: every notice
must come from the main process (NotifyAccess=main), none from the lb's worker processes."""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.devstack.ports import allocate_port
from proxy.devstack.process import python_child_env
from proxy.devstack.redis import start_redis

TIMEOUT = 30.0


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)

    def recv(self, timeout: float = TIMEOUT) -> tuple[int, dict[str, str]]:
        """The next notice and its sender's pid (the kernel's SCM_CREDENTIALS, not the text)."""
        self.sock.settimeout(timeout)
        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
        pid = next(struct.unpack("3i", d[:12])[0] for lvl, typ, d in anc
                   if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS)
        return pid, dict(line.split("=", 1) for line in data.decode().splitlines())

    def pending(self) -> list[tuple[int, dict[str, str]]]:
        out = []
        while True:
            try:
                out.append(self.recv(timeout=0.001))
            except (TimeoutError, BlockingIOError):
                return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify.sock")
    try:
        yield s
    finally:
        s.close()


def _spawn(argv: list[str], notify: NotifySocket, log: Path) -> subprocess.Popen[bytes]:
    env = python_child_env()
    env["NOTIFY_SOCKET"] = notify.path
    return subprocess.Popen([sys.executable, "-m", "proxy.cli", *argv], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_lb_notifies_ready_reloading_and_stopping_from_its_main_process(tmp_path, notify) -> None:
    port, admin = allocate_port(), allocate_port()
    cfg = tmp_path / "lb.toml"
    cfg.write_text(f'listen = "127.0.0.1:{port.port}"\nworkers = 2\n'
                   f'[admin]\naddress = "127.0.0.1:{admin.port}"\n'
                   '[pools.web]\n[[pools.web.backends]]\nname = "w1"\naddress = "127.0.0.1:9"\n')
    proc = _spawn(["lb", "--config", str(cfg)], notify, tmp_path / "lb.log")
    try:
        pid, ready = notify.recv()
        assert (pid, ready["READY"], ready["MAINPID"]) == (proc.pid, "1", str(proc.pid)), ready
        # READY=1 means serving: the admin port answers at once, no polling.
        with urllib.request.urlopen(f"http://127.0.0.1:{admin.port}/healthz", timeout=5) as resp:
            assert resp.status == 200
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 2  # the worker processes, which must stay silent
        proc.send_signal(signal.SIGHUP)
        assert notify.recv()[1]["RELOADING"] == "1"
        pid, again = notify.recv()
        assert (pid, again["READY"]) == (proc.pid, "1") and "reloaded" in again["STATUS"]
        proc.send_signal(signal.SIGTERM)
        pid, stopping = notify.recv()
        assert (pid, stopping["STOPPING"]) == (proc.pid, "1")
        assert proc.wait(TIMEOUT) == 0
        # Nothing from the worker processes (they did not inherit NOTIFY_SOCKET).
        assert [p for p, _ in notify.pending() if p != proc.pid] == []
    finally:
        _stop(proc)
        port.release()
        admin.release()


def test_queue_worker_notifies_ready_once_redis_answers(tmp_path, notify) -> None:
    redis = start_redis(log_dir=tmp_path / "redis")
    cfg = tmp_path / "q.toml"
    cfg.write_text(f'redis = "{redis.url}"\npoll_interval = 0.2\n[queues.jobs]\n'
                   'handler = "tests.integration.queue_handlers:run"\n')
    proc = _spawn(["queue", "worker", "--config", str(cfg), "--name", "n1"], notify, tmp_path / "q.log")
    try:
        pid, ready = notify.recv()
        assert (pid, ready["READY"]) == (proc.pid, "1") and "jobs" in ready["STATUS"]
        proc.send_signal(signal.SIGTERM)
        pid, stopping = notify.recv()
        assert (pid, stopping["STOPPING"]) == (proc.pid, "1")
        assert proc.wait(TIMEOUT) == 0
    finally:
        _stop(proc)
        redis.close()
