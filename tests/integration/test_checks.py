"""Active health checkers against real servers: pass, refuse, wrong status, frozen (timeout)."""

from __future__ import annotations

import socket

from proxy.core.checks import HttpChecker, tcp_check
from proxy.devstack.ports import allocate_port


async def test_tcp_check_passes_on_a_listener_and_fails_on_a_closed_port():
    lock = allocate_port()
    srv = socket.socket()
    srv.bind(("127.0.0.1", lock.port))
    srv.listen(4)
    try:
        assert (await tcp_check("127.0.0.1", lock.port, 1.0)).ok
    finally:
        srv.close()
    result = await tcp_check("127.0.0.1", lock.port, 1.0)
    lock.release()
    assert not result.ok and "tcp connect failed" in result.reason


async def test_http_check_status_refusal_and_timeout(web_worker_factory):
    w = await web_worker_factory.start_async("hc")
    checker = HttpChecker()
    try:
        assert (await checker.check("127.0.0.1", w.port, "/healthz", 2.0, [200])).ok
        wrong = await checker.check("127.0.0.1", w.port, "/status/500", 2.0, [200])
        assert not wrong.ok and wrong.reason == "http status 500"
        assert (await checker.check("127.0.0.1", w.port, "/status/204", 2.0, [200, 204])).ok
        w.process.stop()  # frozen: the kernel accepts, nobody answers
        try:
            frozen = await checker.check("127.0.0.1", w.port, "/healthz", 0.5, [200])
        finally:
            w.process.cont()
        assert not frozen.ok and "timed out after 0.5s" in frozen.reason
        w.process.kill()
        dead = await checker.check("127.0.0.1", w.port, "/healthz", 2.0, [200])
        assert not dead.ok and "connect failed" in dead.reason
    finally:
        await checker.close()
