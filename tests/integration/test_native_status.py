"""A running daemon says which twin of the native layer it runs (proxy/_native.py): in its first log
line and in /status. With the package built (CI), every native module runs compiled; under
TIERPROXY_PURE=1 (the env a daemon inherits) every one runs pure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy import _native

from tests.integration.conftest import backends_toml
from tests.integration.lbproc import http_json


def _expected() -> str:
    built = (Path(_native.__file__).parent / _native.BUILD_RECORD).exists()
    return "compiled" if built and os.environ.get("TIERPROXY_PURE", "") in ("", "0") else "pure"


def test_lb_status_and_start_up_log_name_the_native_modules(web_worker_factory, lb_factory):
    if "stale" in _native.status()["modules"].values() and not os.environ.get("CI"):
        pytest.skip("native build older than its sources here: bash scripts/dev.sh setup rebuilds it")
    a = web_worker_factory("a")
    lb = lb_factory(backends_toml("web", [a]))
    status, body = http_json(lb.admin("/status"))
    assert status == 200
    want = _expected()
    native = body["native"]
    assert set(native["modules"]) == set(_native.NATIVE_MODULES)
    for name, how in native["modules"].items():
        assert how == want or (want == "pure" and how in ("absent", "stale")), (name, how)
    assert native["mode"] == want
    first = lb.log_path.read_text(errors="replace").splitlines()[0]
    assert "native: " in first
    assert ("compiled (cython 3." in first) if want == "compiled" else ("pure" in first), first


def test_dbproxy_status_names_the_native_modules(dbproxy):
    if "stale" in _native.status()["modules"].values() and not os.environ.get("CI"):
        pytest.skip("native build older than its sources here: bash scripts/dev.sh setup rebuilds it")
    native = dbproxy.status()["native"]
    want = _expected()
    assert set(native["modules"]) == set(_native.NATIVE_MODULES)
    assert all(how == want or (want == "pure" and how in ("absent", "stale")) for how in native["modules"].values())
