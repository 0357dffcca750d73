"""Fixed ports (`tierproxy demo --port ...`) are checked the way servers bind them: connections
left in TIME_WAIT do not make a port busy; a real listener does, and the refusal names it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from proxy.devstack.ports import PortLock, PortUnavailable, allocate_port
from tests.integration.lbproc import REPO
from tests.integration.timewait import leave_time_wait

LISTENER = textwrap.dedent(
    """
    import signal, socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen()
    print("listening", flush=True)
    signal.pause()
    """
)


def test_a_port_left_in_time_wait_is_free_to_a_fixed_port_check(tmp_path):
    with allocate_port() as held:  # keeps parallel tests off the port
        leave_time_wait(held.port)
        # a second lock scheme (own lock dir), so only the bind check decides
        with PortLock(held.port, lock_dir=tmp_path) as again:
            assert again.held


def test_a_real_listener_is_refused_with_a_message_naming_it(tmp_path):
    with allocate_port() as held:
        child = subprocess.Popen([sys.executable, "-c", LISTENER, str(held.port)], stdout=subprocess.PIPE)
        try:
            assert child.stdout is not None and child.stdout.readline() == b"listening\n"
            with pytest.raises(PortUnavailable) as info:
                PortLock(held.port, lock_dir=tmp_path)
            message = str(info.value)
            assert f"pid {child.pid} (python" in message
            assert f"listens on 127.0.0.1:{held.port}" in message
        finally:
            child.kill()
            child.wait()


def test_demo_refuses_a_busy_port_at_once_and_names_the_holder(tmp_path):
    locks = [allocate_port() for _ in range(4)]
    port, admin, db_port, db_admin = (lock.port for lock in locks)
    child = subprocess.Popen([sys.executable, "-c", LISTENER, str(port)], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"listening\n"
        for lock in locks:
            lock.release()  # the demo claims its ports itself
        run = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "demo", "--port", str(port), "--admin-port", str(admin),
             "--db-port", str(db_port), "--db-admin-port", str(db_admin)],
            cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        assert run.returncode == 1
        assert f"port {port}: already bound on 127.0.0.1: pid {child.pid} (python" in run.stderr
        # refused before starting anything: no PostgreSQL, Redis or web worker was started
        assert "starting redis-server" not in run.stdout
    finally:
        child.kill()
        child.wait()
