"""Fixtures for load-balancer integration tests: `lb_factory` runs real `tierproxy lb` processes
(`module_lb_factory` and `module_web_workers`: the same, shared by a module's tests).

The factory exposes `managed_processes()`, so tests/conftest.py adds the balancer's log tail to the
report of a failing test, as it does for web workers and Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from proxy.devstack.ports import allocate_port
from proxy.devstack.web import WebWorkers
from tests.integration.lbproc import LbProcess


class LbFactory:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[LbProcess] = []

    def __call__(self, body: str, name: str = "lb", admin_extra: str = "", listen: bool = True) -> LbProcess:
        lb = LbProcess(self.tmp_path, body, name=name, admin_extra=admin_extra, listen=listen)
        self.started.append(lb)
        return lb.start()

    def managed_processes(self) -> list[LbProcess]:
        return list(self.started)

    def close(self) -> None:
        for lb in self.started:
            lb.stop()


@pytest.fixture
def free_port() -> Iterator[Callable[[], int]]:
    """A function that returns a free loopback port on each call (for a listener a test configures
    itself), each held (proxy/devstack/ports.py) until the test ends."""
    locks = []

    def take() -> int:
        lock = allocate_port()
        locks.append(lock)
        return lock.port

    yield take
    for lock in locks:
        lock.release()


@pytest.fixture
def lb_factory(tmp_path: Path) -> Iterator[LbFactory]:
    with closing(LbFactory(tmp_path)) as factory:
        yield factory


# Module-scoped twins of `lb_factory` and `web_worker_factory` (memory sessions), for a module's
# balancer that several tests share because each only sends requests on connections of its own
# (malformed input, conformance cases): one start per module instead of one per test. Tests that
# change or exhaust a balancer (limits, timeouts, reloads, floods) keep their own.


@pytest.fixture(scope="module")
def module_lb_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LbFactory]:
    with closing(LbFactory(tmp_path_factory.mktemp("lb"))) as factory:
        yield factory


@pytest.fixture(scope="module")
def module_web_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebWorkers]:
    with closing(WebWorkers(tmp_path_factory.mktemp("web"))) as workers:
        yield workers


def backends_toml(pool: str, workers: list[Any], weights: dict[str, int] | None = None) -> str:
    """`[[pools.<pool>.backends]]` tables for running web workers."""
    out = []
    for w in workers:
        out.append(f'[[pools.{pool}.backends]]\nname = "{w.name}"\naddress = "{w.address}"\n')
        if weights and w.name in weights:
            out.append(f"weight = {weights[w.name]}\n")
    return "".join(out)


# -- tierproxy dbproxy (proxy.devstack.dbproxy) ------------------------------------------------
# `dbproxy` (session): one proxy in front of the shared `pg_cluster`, users app/app-secret and
# md5user/md5-secret; for tests that only route and read and write their own tables.
# `dbproxy_statement` (session): the same with `[routing] balance = "statement"` (reads spread
# over the replicas statement by statement), for tests of what that spreading exercises.
# `dbproxy_factory` (function): `dbproxy_factory(cluster, extra="", users=None)` starts a proxy owned
# by the test (for its own cluster from pg_cluster_factory, or a different config).

from proxy.devstack.dbproxy import DbProxyServer, start_dbproxy  # noqa: E402

DBPROXY_USERS = {"app": "app-secret"}


@pytest.fixture(scope="session")
def dbproxy(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DbProxyServer]:
    server = start_dbproxy(pg_cluster, log_dir=tmp_path_factory.mktemp("dbproxy"), users=DBPROXY_USERS)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def dbproxy_statement(pg_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DbProxyServer]:
    server = start_dbproxy(pg_cluster, log_dir=tmp_path_factory.mktemp("dbproxy_statement"), users=DBPROXY_USERS,
                           extra='[routing]\nbalance = "statement"\n')  # fmt: skip
    try:
        yield server
    finally:
        server.close()


class DbProxyFactory:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[DbProxyServer] = []

    def __call__(self, cluster: Any, extra: str = "", users: dict[str, str] | None = None,
                 auth_method: str = "scram-sha-256", workers: int = 1, head: str = "",
                 auth_extra: str = "") -> DbProxyServer:  # fmt: skip
        log_dir = self.log_dir / f"dbproxy{len(self.started) + 1}"
        log_dir.mkdir()
        server = start_dbproxy(cluster, log_dir=log_dir, users=users or DBPROXY_USERS, extra=extra,
                               auth_method=auth_method, workers=workers, head=head,
                               auth_extra=auth_extra)  # fmt: skip
        self.started.append(server)
        return server

    def managed_processes(self) -> list[Any]:
        return [p for s in self.started for p in s.managed_processes()]

    def close(self) -> None:
        for s in self.started:
            s.close()


@pytest.fixture
def dbproxy_factory(tmp_path: Path) -> Iterator[DbProxyFactory]:
    factory = DbProxyFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


# -- four standalone PostgreSQL servers (proxy.devstack.postgres) -------------------------------
# `shard_servers` (session): s0..s3, started once for the `tierproxy shard` modules that reuse
# test_shard_daemon.py's `shards` fixture (catalog, copy, extended_scatter, one_shard_parity,
# protocol); that fixture gives each module an empty public schema with `users`.

from proxy.devstack.postgres import PgCluster, start_pg_cluster  # noqa: E402


@pytest.fixture(scope="session")
def shard_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[PgCluster]]:
    clusters: list[PgCluster] = []
    try:
        for name in ("s0", "s1", "s2", "s3"):
            clusters.append(start_pg_cluster(0, log_dir=tmp_path_factory.mktemp(f"shard_{name}"), name=name))
        yield clusters
    finally:
        for c in clusters:
            c.close()
