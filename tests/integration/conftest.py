"""Fixtures for load-balancer integration tests: `lb_factory` runs real `tierproxy lb` processes.

The factory exposes `managed_processes()`, so tests/conftest.py adds the balancer's log tail to the
report of a failing test, as it does for web workers and Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.lbproc import LbProcess


class LbFactory:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[LbProcess] = []

    def __call__(self, body: str, name: str = "lb") -> LbProcess:
        lb = LbProcess(self.tmp_path, body, name=name)
        self.started.append(lb)
        return lb.start()

    def managed_processes(self) -> list[LbProcess]:
        return list(self.started)

    def close(self) -> None:
        for lb in self.started:
            lb.stop()


@pytest.fixture
def lb_factory(tmp_path: Path) -> Iterator[LbFactory]:
    factory = LbFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


def backends_toml(pool: str, workers: list[Any], weights: dict[str, int] | None = None) -> str:
    """`[[pools.<pool>.backends]]` tables for running web workers."""
    out = []
    for w in workers:
        out.append(f'[[pools.{pool}.backends]]\nname = "{w.name}"\naddress = "{w.address}"\n')
        if weights and w.name in weights:
            out.append(f"weight = {weights[w.name]}\n")
    return "".join(out)
