"""House rules checked on the source tree: lint-clean, files under ~800 lines, daemons independent."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    p for d in ("proxy", "workers", "bench", "tests") for p in (REPO / d).rglob("*.py")
)
DAEMONS = ("lb", "dbproxy", "shard", "geodns", "cdn")
MAX_LINES = 800


def test_ruff_finds_no_errors():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed; it is part of the test extra")
    proc = subprocess.run([ruff, "check", "--select", "F,E9", "proxy", "workers", "bench", "tests"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_file_size(path: Path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_no_daemon_imports_another():
    for daemon in DAEMONS:
        pkg = REPO / "proxy" / daemon
        if not pkg.exists():
            continue
        others = tuple(f"proxy.{d}" for d in DAEMONS if d != daemon)
        for path in pkg.rglob("*.py"):
            bad = [m for m in _imports(path) if m.startswith(others)]
            assert bad == [], f"{path.relative_to(REPO)} imports {bad}"


def test_core_and_codecs_import_no_daemon():
    daemons = tuple(f"proxy.{d}" for d in DAEMONS)
    for sub in ("core", "http1", "pgwire", "devstack"):
        for path in (REPO / "proxy" / sub).rglob("*.py"):
            bad = [m for m in _imports(path) if m.startswith(daemons)]
            assert bad == [], f"{path.relative_to(REPO)} imports {bad}"
