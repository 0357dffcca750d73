"""Fixtures for load-balancer integration tests: `lb_factory` runs real `tierproxy lb` processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.lbproc import LbProcess


@pytest.fixture
def lb_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., LbProcess]]:
    started: list[LbProcess] = []

    def start(body: str, name: str = "lb") -> LbProcess:
        lb = LbProcess(tmp_path, body, name=name)
        started.append(lb)
        return lb.start()

    yield start
    failed = getattr(request.node, "rep_call", None)
    for lb in started:
        if failed is not None and failed.failed:
            print(f"--- log of {lb.config_path.name} ---\n{lb.log_tail(60)}")
        lb.stop()


def backends_toml(pool: str, workers: list, weights: dict[str, int] | None = None) -> str:
    out = []
    for w in workers:
        out.append(f'[[pools.{pool}.backends]]\nname = "{w.name}"\naddress = "{w.address}"\n')
        if weights and w.name in weights:
            out.append(f"weight = {weights[w.name]}\n")
    return "".join(out)
