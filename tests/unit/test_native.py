"""The native layer's loader (proxy/_native.py): which twin of a compiled module is imported, and
what `tierproxy --version` says about it."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy import _native

ROOT = Path(__file__).resolve().parents[2]


def _run_version(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "TIERPROXY_PURE"}
    environ["PYTHONPATH"] = str(ROOT)
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", "import sys; from proxy.cli import main; sys.exit(main(['--version']))"],
                         env=environ, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return out.stdout


def test_tierproxy_pure_1_imports_every_pure_twin_and_says_so():
    out = _run_version(TIERPROXY_PURE="1")
    assert out.startswith("tierproxy ")
    assert "native: pure (TIERPROXY_PURE=1)" in out
    code = "import sys, proxy._native as n, importlib; " \
           "print(all(importlib.import_module(m).__file__.endswith('.py') for m in n.NATIVE_MODULES))"  # fmt: skip
    environ = {**os.environ, "TIERPROXY_PURE": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "True", res.stderr


def test_version_names_every_native_module_and_its_state():
    out = _run_version()
    line = out.splitlines()[1]
    assert line.startswith("native: ")
    for name in _native.NATIVE_MODULES:
        assert name.removeprefix("proxy.") in line


def _built() -> bool:
    return (Path(_native.__file__).parent / _native.BUILD_RECORD).exists()


@pytest.mark.skipif(_native.pure_requested(), reason="the pure pass")
def test_the_suite_runs_against_the_compiled_build():
    """Where the package was installed with its extensions (CI: `bash scripts/dev.sh`), every
    native module runs compiled; only a checkout nobody built may run pure."""
    if not _built():
        assert not os.environ.get("CI"), "CI must run against the compiled build (setup.py did not run)"
        pytest.skip("no native build in this checkout")
    st = _native.status()
    if "stale" in st["modules"].values() and not os.environ.get("CI"):
        # A checkout whose native sources changed since its build (a merge): `bash scripts/dev.sh`
        # rebuilds before it tests; CI always tests a fresh build.
        pytest.skip("native build older than its sources here: bash scripts/dev.sh setup rebuilds it")
    assert st["modules"] == {name: "compiled" for name in _native.NATIVE_MODULES}
    assert st["mode"] == "compiled" and st["cython"]
    for name in _native.NATIVE_MODULES:
        module = sys.modules[name]
        assert isinstance(module.__loader__, importlib.machinery.ExtensionFileLoader)


def _package(tmp_path: Path, record: str | None) -> tuple[Path, Path]:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    src = pkg / "mod.py"
    src.write_text("X = 1\n")
    ext = pkg / ("mod" + importlib.machinery.EXTENSION_SUFFIXES[0])
    ext.write_bytes(b"not loaded by these tests")
    if record is not None:
        (tmp_path / _native.BUILD_RECORD).write_text(record)
    return pkg, src


def test_the_extension_is_chosen_only_when_built_from_the_sources_on_disk(tmp_path):
    pkg, src = _package(tmp_path, None)
    (tmp_path / _native.BUILD_RECORD).write_text(f"cython 3\npkg.mod {_native.source_digest(str(src))}\n")
    finder = _native._NativeFinder(("pkg.mod",), pure=False, record_dir=str(tmp_path))
    spec = finder.find_spec("pkg.mod", [str(pkg)])
    assert spec.origin.endswith(importlib.machinery.EXTENSION_SUFFIXES[0]) and finder.chosen["pkg.mod"] == "compiled"
    # An edit after the build: the source, not the old build.
    src.write_text("X = 2\n")
    spec = finder.find_spec("pkg.mod", [str(pkg)])
    assert spec.origin == str(src) and finder.chosen["pkg.mod"] == "stale"
    # A .pxd beside it is a source too.
    src.write_text("X = 1\n")
    (pkg / "mod.pxd").write_text("cdef int x\n")
    assert finder.find_spec("pkg.mod", [str(pkg)]).origin == str(src)


def test_an_edit_of_a_declaration_file_it_cimports_makes_the_build_stale(tmp_path):
    # proxy/_members.pxd is cimported by several compiled modules' .pxd but is no module itself:
    # a build made before an edit of it must not be chosen.
    pkg, src = _package(tmp_path, None)
    (pkg / "mod.pxd").write_text("from pkg.shared cimport helper\nfrom libc.string cimport memchr\n")
    shared = pkg / "shared.pxd"
    shared.write_text("cdef inline int helper(): return 1\n")
    (tmp_path / _native.BUILD_RECORD).write_text(f"pkg.mod {_native.source_digest(str(src))}\n")
    finder = _native._NativeFinder(("pkg.mod",), pure=False, record_dir=str(tmp_path))
    assert finder.find_spec("pkg.mod", [str(pkg)]).origin != str(src) and finder.chosen["pkg.mod"] == "compiled"
    shared.write_text("cdef inline int helper(): return 2\n")
    assert finder.find_spec("pkg.mod", [str(pkg)]).origin == str(src) and finder.chosen["pkg.mod"] == "stale"


def test_pure_mode_and_a_missing_build_import_the_source(tmp_path):
    pkg, src = _package(tmp_path, None)
    (tmp_path / _native.BUILD_RECORD).write_text(f"pkg.mod {_native.source_digest(str(src))}\n")
    pure = _native._NativeFinder(("pkg.mod",), pure=True, record_dir=str(tmp_path))
    assert pure.find_spec("pkg.mod", [str(pkg)]).origin == str(src) and pure.chosen["pkg.mod"] == "pure"
    next(pkg.glob("mod.*.so")).unlink()
    finder = _native._NativeFinder(("pkg.mod",), pure=False, record_dir=str(tmp_path))
    assert finder.find_spec("pkg.mod", [str(pkg)]).origin == str(src) and finder.chosen["pkg.mod"] == "absent"
    # Not one of its modules: left to the rest of sys.meta_path.
    assert finder.find_spec("pkg.other", [str(pkg)]) is None


def test_summary_says_which_modules_are_compiled_and_which_are_not():
    st = {"pure_requested": False, "cython": "3.3.1",
          "modules": {"proxy.a": "compiled", "proxy.b": "stale", "proxy.c": "absent"}}  # fmt: skip
    assert _native.summary(st) == ("native: compiled (cython 3.3.1): a; pure, not built: c; "
                                   "pure, build older than source: b")  # fmt: skip


def test_load_pure_gives_the_source_module_under_its_own_name():
    for name in _native.NATIVE_MODULES:
        pure = _native.load_pure(name)
        assert pure.__name__ == name + "__pure" and pure.__file__.endswith(name.rpartition(".")[2] + ".py")


def test_a_module_that_cimports_another_follows_its_twin():
    # The compiled _response calls _simple's compiled scanner in C (CIMPORTS): with _simple pure
    # (here by TIERPROXY_PURE=<name>; a stale build is the same), _response must be its pure twin
    # too, not fail to import.
    code = ("import proxy.http1._response as r, proxy.http1._simple as s, proxy._native as n; "
            "print(r.__file__.endswith('.py'), s.__file__.endswith('.py'), n._finder.chosen['proxy.http1._response'])")
    environ = {**os.environ, "TIERPROXY_PURE": "proxy.http1._simple", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == ["True", "True", "pure"], res.stderr
