"""The active health check of one upstream server as its config says (`HealthConfig.type`: an HTTP
GET of `path` expecting one of `expect_status`, or a TCP connect), built on the checkers of
proxy/core/checks.py. Shared by the load balancer's pools and the cdn's origins; each daemon runs
the returned check in a `CheckLoop` and decides what a flip means for it.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

from proxy.core.checks import CheckResult, HttpChecker, tcp_check
from proxy.upstream.backend import Backend
from proxy.upstream.config import HealthConfig

__all__ = ["Check", "backend_check"]

Check = Callable[[], Awaitable[CheckResult]]
# The TLS context and server name to check `backend` with ((None, None): plain HTTP).
TlsFor = Callable[[Backend], tuple[ssl.SSLContext | None, str | None]]


def backend_check(hc: HealthConfig, backend: Backend, checker: HttpChecker, tls_for: TlsFor | None = None) -> Check:
    """The check of `backend` (for `hc.type` "http" or "tcp"; "none" runs no checks)."""
    if hc.type == "tcp":

        async def check() -> CheckResult:
            return await tcp_check(backend.host, backend.port, hc.timeout)
    else:

        async def check() -> CheckResult:
            ssl_ctx, server_name = tls_for(backend) if tls_for is not None else (None, None)
            return await checker.check(backend.host, backend.port, hc.path, hc.timeout, hc.expect_status,
                                       hc.host, ssl_ctx, server_name)  # fmt: skip

    return check
