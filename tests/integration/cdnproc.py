"""The cdn tests' shared processes: a real origin (cdnorigin.py) and a `tierproxy cdn` in front of it
(test_cdn.py's `Origin` and `Cdn`), started for a block and stopped, their ports released, after
it; the module-scoped `origin` fixture and `cdn_fixture`, which makes a module's `cdn` fixture from
its config; and the admin purge."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.lbproc import http_json
from tests.integration.test_cdn import Cdn, Origin


@contextmanager
def running_origin(tmp: Path) -> Iterator[Origin]:
    o = Origin(tmp).start()
    try:
        yield o
    finally:
        o.stop()
        o.lock.release()


@contextmanager
def running_cdn(tmp: Path, origin: Any, **config: str) -> Iterator[Cdn]:
    """A cdn in front of `origin` (an `Origin`, anything with a `port`, or None with an
    `origin_toml`); `config` as `Cdn` takes it. It must exit 0 when stopped at the end."""
    c = Cdn(tmp, origin, **config)
    try:
        yield c
    finally:
        code = c.stop()
        c.lock.release()
        c.admin_lock.release()
    assert code == 0


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    with running_origin(tmp_path_factory.mktemp("origin")) as o:
        yield o


def cdn_fixture(**config: str) -> Any:
    """A module-scoped `cdn` fixture: one cdn, configured by `config`, in front of the module's
    `origin`."""

    @pytest.fixture(scope="module")
    def cdn(tmp_path_factory, origin):
        with running_cdn(tmp_path_factory.mktemp("cdn"), origin, **config) as c:
            yield c

    return cdn


def purge(cdn: Cdn, query: str) -> tuple[int, dict]:
    return http_json(f"http://127.0.0.1:{cdn.admin_port}/purge?{query}", "POST")
