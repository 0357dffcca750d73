"""The query-cache tests' shared pieces: a dbproxy with `[cache] enabled` for a module, and the
admin purge of every entry, which a test needs when it changed tables directly (bypassing the
proxy, so no invalidation) or drew a statement an earlier example already cached."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def cache_dbproxy(pg_cluster: Any, log_dir: Path) -> Iterator[Any]:
    from proxy.devstack.dbproxy import start_dbproxy

    proxy = start_dbproxy(pg_cluster, log_dir=log_dir, users={"app": "app-secret"}, extra="[cache]\nenabled = true\n")
    try:
        yield proxy
    finally:
        proxy.close()


def purge_all(proxy: Any) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{proxy.admin_port}/cache/purge?all=1", method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
