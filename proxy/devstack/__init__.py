"""Real local backends for tests, `tierproxy demo` and bench/: ports, processes, Redis, web workers.

Nothing here is mocked and nothing imports a daemon package: the dev stack only starts servers
(redis-server, `python -m workers.web`) on locked loopback ports and says when they are ready.
"""

from proxy.devstack.poll import PollTimeout, wait_until, wait_until_async
from proxy.devstack.ports import PortLock, PortUnavailable, allocate_port
from proxy.devstack.process import DevstackError, ManagedProcess, NotReady, ProcessExited
from proxy.devstack.redis import RedisServer, start_redis, start_redis_async
from proxy.devstack.web import WebWorker, WebWorkers, spawn_web_worker, start_web_worker, start_web_worker_async

__all__ = [
    "DevstackError",
    "ManagedProcess",
    "NotReady",
    "PollTimeout",
    "PortLock",
    "PortUnavailable",
    "ProcessExited",
    "RedisServer",
    "WebWorker",
    "WebWorkers",
    "allocate_port",
    "spawn_web_worker",
    "start_redis",
    "start_redis_async",
    "start_web_worker",
    "start_web_worker_async",
    "wait_until",
    "wait_until_async",
]
