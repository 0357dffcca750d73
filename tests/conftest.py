"""Shared pytest fixtures: real Redis and web-worker processes from proxy.devstack, log dumps.

- `redis_server` (session): one redis-server on a locked loopback port; `.url`, `.port`.
- `web_worker_factory` (function): `start(name, sessions="memory"|"redis"|URL, static=None)` starts
  `python -m workers.web` and returns a ready WebWorker; every worker it started is terminated at
  teardown, SIGSTOPped ones included (SIGCONT is sent with the SIGTERM).
- When a test fails, the tail of the log of every process owned by the fixtures it used is added
  to its report: any fixture value with a `managed_processes()` method takes part, so fixtures in
  other conftest files get the dump by providing that method.
- Tests under tests/integration are marked `integration` automatically; tests marked `slow` are
  skipped unless the marker expression names them (`-m slow`).
- Hypothesis, for the whole suite: no per-example deadline and no "too slow" health check (both
  are wall-clock limits, which fail on a loaded 2-core machine without any bug: seen for
  test_queue_job's codec round trip); locally examples are random (new ones every run, which is
  how properties find bugs); under CI (`CI` set, as `.ci/run` runs) they are derandomized, the
  same every run, so a run cannot fail on a draw the previous one never made.
- `bash scripts/dev.sh test` runs the suite in two pytest-xdist workers, each taking whole files
  (`--dist loadfile`): a session fixture (Redis, the shared clusters) is built once per worker, and
  every server a fixture starts takes its ports from proxy/devstack/ports.py's locks, which hold
  across processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from proxy.devstack.process import ManagedProcess
from proxy.devstack.redis import RedisServer, start_redis
from proxy.devstack.web import READY_TIMEOUT, WebWorker, WebWorkers

settings.register_profile("tierproxy", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("tierproxy"), derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "tierproxy")

_INTEGRATION_DIR = Path(__file__).parent / "integration"
# Report of each phase, stored on the item so fixtures can ask "did the test fail?" at teardown.
PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
LOG_TAIL_LINES = 60


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Soaks marked `slow` (minutes to hours) run only when asked for by a marker expression that
    # names them (`-m slow`): the README's test command and CI stay within their time budget.
    run_slow = "slow" in (config.getoption("markexpr") or "")
    skip_slow = pytest.mark.skip(reason="a slow soak: run it with -m slow")
    for item in items:
        if item.path.is_relative_to(_INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)
        if not run_slow and item.get_closest_marker("slow") is not None:
            item.add_marker(skip_slow)


def _processes_of(item: pytest.Item) -> list[Any]:
    seen: dict[int, Any] = {}
    for value in getattr(item, "funcargs", {}).values():
        owner = getattr(value, "managed_processes", None)
        if callable(owner):
            for process in owner():
                seen.setdefault(id(process), process)
    return list(seen.values())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    # At "call" (or a failing "setup") the processes are still alive and their logs complete;
    # sections added here are printed with the failure.
    if report.failed and report.when in ("setup", "call"):
        for process in _processes_of(item):
            report.sections.append(_log_section(process))
    return report


def _log_section(process: Any) -> tuple[str, str]:
    # Duck-typed: other fixtures' process objects need only name, pid, log_path and log_tail(n).
    title = (
        f"log tail: {getattr(process, 'name', '?')} (pid {getattr(process, 'pid', '?')}, "
        f"{getattr(process, 'log_path', '?')})"
    )
    try:
        return title, process.log_tail(LOG_TAIL_LINES)
    except Exception as exc:  # a broken log must not hide the test's own failure
        return title, f"<could not read log: {exc!r}>"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(log_dir=tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.close()


class WebWorkerFactory:
    """The `web_worker_factory` fixture: call it to start a ready worker owned by the test."""

    def __init__(self, request: pytest.FixtureRequest, log_dir: Path) -> None:
        self._request = request
        self.workers = WebWorkers(log_dir)
        self._redis: RedisServer | None = None

    def _sessions(self, sessions: str) -> str:
        if sessions != "redis":
            return sessions
        # Resolved lazily so tests that only use memory sessions never start Redis.
        if self._redis is None:
            self._redis = self._request.getfixturevalue("redis_server")
        return self._redis.url

    def start(
        self,
        name: str,
        sessions: str = "memory",
        *,
        static: Path | None = None,
        extra_args: Sequence[str] = (),
        timeout: float = READY_TIMEOUT,
    ) -> WebWorker:
        return self.workers.start(
            name, sessions=self._sessions(sessions), static=static, extra_args=extra_args, timeout=timeout
        )

    __call__ = start

    async def start_async(
        self,
        name: str,
        sessions: str = "memory",
        *,
        static: Path | None = None,
        extra_args: Sequence[str] = (),
        timeout: float = READY_TIMEOUT,
    ) -> WebWorker:
        return await self.workers.start_async(
            name, sessions=self._sessions(sessions), static=static, extra_args=extra_args, timeout=timeout
        )

    def managed_processes(self) -> list[ManagedProcess]:
        redis = self._redis.managed_processes() if self._redis is not None else []
        return self.workers.managed_processes() + redis


@pytest.fixture
def web_worker_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebWorkerFactory]:
    factory = WebWorkerFactory(request, tmp_path_factory.mktemp("web"))
    try:
        yield factory
    finally:
        factory.workers.close()


# -- PostgreSQL (proxy.devstack.postgres) ------------------------------------------------------
# `pg_cluster` (session): a primary plus 2 streaming replicas, for tests that only read and write
# (use your own table names). `pg_cluster_factory` (function): `pg_cluster_factory(replicas=2,
# **start_pg_cluster kwargs)` starts a fresh cluster owned by the test, for tests that kill, stop,
# delay or promote servers; all are closed at teardown. Both expose managed_processes() for the
# log dump above.

from proxy.devstack.postgres import PgCluster, start_pg_cluster


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    cluster = start_pg_cluster(2, log_dir=tmp_path_factory.mktemp("pg"), name="pgsession")
    try:
        yield cluster
    finally:
        cluster.close()


class PgClusterFactory:
    """The `pg_cluster_factory` fixture: call it to start a ready cluster owned by the test."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.clusters: list[PgCluster] = []

    def __call__(self, replicas: int = 2, **kwargs: Any) -> PgCluster:
        kwargs.setdefault("log_dir", self.log_dir / f"cluster{len(self.clusters) + 1}")
        kwargs.setdefault("name", f"pg{len(self.clusters) + 1}")
        cluster = start_pg_cluster(replicas, **kwargs)
        self.clusters.append(cluster)
        return cluster

    def managed_processes(self) -> list[ManagedProcess]:
        return [p for cluster in self.clusters for p in cluster.managed_processes()]

    def close(self) -> None:
        for cluster in self.clusters:
            cluster.close()


@pytest.fixture
def pg_cluster_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgClusterFactory]:
    factory = PgClusterFactory(tmp_path_factory.mktemp("pgf"))
    try:
        yield factory
    finally:
        factory.close()
