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
    for sub in ("core", "http1", "pgwire", "devstack", "pgfront"):
        for path in (REPO / "proxy" / sub).rglob("*.py"):
            bad = [m for m in _imports(path) if m.startswith(daemons)]
            assert bad == [], f"{path.relative_to(REPO)} imports {bad}"


def _package_graph(pkg: str) -> dict[str, set[str]]:
    """proxy.<pkg>'s modules -> the modules of proxy.<pkg> each imports (relative imports
    resolved), and every other module each imports under its own full name."""
    root = REPO / "proxy" / pkg
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        name = ".".join(parts)
        package = parts if rel.name == "__init__" else parts[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                deps.add(mod)
                # `from . import x` / `from .a import b`: b may be a module of its own.
                deps.update(f"{mod}.{a.name}" for a in node.names)
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} | {d for d in deps if d not in graph}
            for m, deps in graph.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in `graph` (module -> modules it imports) as a path, or None (depth-first search
    for a back edge)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_find_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"a"}}) == ["a", "a"]


def test_pgfront_has_no_import_cycle_and_imports_no_daemon():
    """proxy/pgfront is the front end both PostgreSQL daemons share (issue 14): it imports no
    daemon, and its modules form no cycle (imports under TYPE_CHECKING count too)."""
    graph = _package_graph("pgfront")
    assert "proxy.pgfront.server" in graph
    daemons = tuple(f"proxy.{d}" for d in DAEMONS)
    for mod, deps in graph.items():
        bad = sorted(d for d in deps if d.startswith(daemons))
        assert bad == [], f"{mod} imports {bad}"
    inner = {m: {d for d in deps if d in graph and d != "proxy.pgfront"} for m, deps in graph.items()}
    assert _find_cycle(inner) is None, "import cycle in proxy/pgfront: " + " -> ".join(_find_cycle(inner))
