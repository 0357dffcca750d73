"""The native layer: which hot modules are compiled, and which twin of each one is imported.

Each module in `NATIVE_MODULES` is one Python source compiled by Cython in pure-Python mode
(setup.py: the `.py` file stays the one source, typing hints in a `.pxd` beside it) into an
extension module of the same name beside the `.py` (`_simple.cpython-311-x86_64-linux-gnu.so`
next to `_simple.py`). Python itself would always prefer the extension; `install()` (called by
`proxy/__init__.py`) puts a finder first on `sys.meta_path` that decides instead, per module:

* `TIERPROXY_PURE=1` in the environment: the `.py` (the pure-Python twin), whatever is built
  (`TIERPROXY_PURE=proxy.lb.client,proxy.lb.pool`: only those, to measure one module's share);
* no extension built (a checkout nobody has installed, a failed build): the `.py`;
* an extension built from other sources than those on disk (`.py` or `.pxd` edited since the
  build: the build records their SHA-256 in `_native_build.txt`): the `.py`, reported "stale", so
  an edit is never shadowed by an old build (`bash scripts/dev.sh setup` rebuilds);
* a compiled module that cimports another (`CIMPORTS`) where that one is not compiled: the `.py`,
  reported as that one is;
* otherwise the extension.

`status()` says what was chosen (for `tierproxy --version`, start-up logs and /status);
`load_pure(name)` imports the pure twin under another name, so the differential tests can hold
both at once. Standard library only: setup.py loads this file by path to read the module list.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
from types import ModuleType
from typing import Any

__all__ = ["NATIVE_MODULES", "BUILD_RECORD", "install", "status", "summary", "load_pure", "source_digest"]

# The compiled hot paths (issue 17), by import name.
NATIVE_MODULES: tuple[str, ...] = (
    "proxy.http1._head",  # RequestHead (an extension type when compiled)
    "proxy.http1._simple",  # the HTTP/1.1 simple recognisers
    "proxy.http1._request",  # the request parser's state and simple entry (RequestCore, an extension type)
    "proxy.http1._response",  # the upstream response parser (an extension type when compiled)
    "proxy.upstream.conn",  # the backend connection's state (an extension type when compiled)
    "proxy.upstream.backend",  # a backend's state and latency histogram (extension types when compiled)
    "proxy.pgwire.framing",  # PostgreSQL message framing
    "proxy.pgwire.scan",  # the session relay loop's step over forwarded messages
    "proxy.dbproxy.classify_key",  # the classifier cache's key (a typed scanner when compiled)
    "proxy.dbproxy.classify_cache",  # the classifier's cache (an extension type when compiled)
    "proxy.dbproxy.classify_types",  # the classifier's Decision (an extension type when compiled)
    "proxy.lb.rotation",  # the balancers' base, round robin and weighted round robin (extension types)
    "proxy.lb.clientcore",  # the lb client connection's state and simple exchange (an extension type)
    "proxy.pgfront.relay",  # the relay loop and its hot state (server connection, session) as extension types
    "proxy.dbproxy.sessioncore",  # the dbproxy session's client side: a statement to the server's write
    "proxy.dbproxy.outstanding",  # the dbproxy's outstanding queries per backend (an extension type)
    "proxy.dbproxy.session_router",  # the dbproxy's SessionRouter (an extension type) and replica choice
    "proxy.dbproxy.books",  # the dbproxy's per-statement books (an extension type, DbProxyDaemon's base)
    "proxy.core.sendnow",  # direct sends: send(2) on a plain TCP transport's socket where that is safe
)
# What a compiled module cimports from another (calls in C, types): it can only run compiled where
# that one is compiled too, so it follows the other's choice (pure, stale, absent).
CIMPORTS: dict[str, tuple[str, ...]] = {
    "proxy.http1._simple": ("proxy.http1._head",),
    "proxy.http1._response": ("proxy.http1._simple",),
    "proxy.http1._request": ("proxy.http1._simple",),
    "proxy.upstream.conn": ("proxy.http1._response", "proxy.core.sendnow"),
    "proxy.lb.clientcore": ("proxy.upstream.conn", "proxy.upstream.backend", "proxy.http1._head",
                            "proxy.http1._request", "proxy.lb.rotation", "proxy.core.sendnow"),
    "proxy.dbproxy.books": ("proxy.pgfront.relay", "proxy.dbproxy.outstanding"),
    "proxy.dbproxy.classify_cache": ("proxy.dbproxy.classify_key",),
    "proxy.pgfront.relay": ("proxy.core.sendnow",),
    "proxy.dbproxy.sessioncore": ("proxy.pgfront.relay", "proxy.pgwire.framing", "proxy.pgwire.scan", "proxy.core.sendnow",
                                  "proxy.dbproxy.books", "proxy.dbproxy.session_router",
                                  "proxy.dbproxy.classify_cache", "proxy.dbproxy.classify_types",
                                  "proxy.dbproxy.outstanding"),
    "proxy.dbproxy.session_router": ("proxy.dbproxy.classify_types", "proxy.pgfront.relay",
                                     "proxy.dbproxy.outstanding"),
}
# Measured and left out, for now (docs/perf.md, "The native layer"): compiled as they are, the rest
# of the lb exchange (lb/client.py, frontend.py, pool.py), http1/parser.py and
# (as a plain class) _response.py, and (as a plain class) the classifier's cache execute MORE instructions than
# interpreted: their cost is attribute access on plain classes, which CPython 3.11 specialises
# in its bytecode and a compiled module does through the generic C API (lb/clientcore.py pays
# because its state is an extension type's C fields). The cache's key
# (classify_key.py) is compiled because its compiled twin is another loop: a typed byte scanner
# instead of the regexes; _response.py because _response.pxd makes its ResponseParser an extension
# type (typed C fields, and `feed_simple` calls _simple's scanner in C); upstream/conn.py because
# conn.pxd makes UpstreamCore one, which lb/clientcore.py types its backend connection as.

# Written by setup.py's build_ext beside this file: "<module> <sha256 of .py + .pxd>" per line,
# and "cython <version>".
BUILD_RECORD = "_native_build.txt"

_PURE_SUFFIX = "__pure"
_HERE = os.path.dirname(os.path.abspath(__file__))


def pure_requested() -> bool:
    """TIERPROXY_PURE=1: every module pure."""
    return os.environ.get("TIERPROXY_PURE", "") not in ("", "0") and not _pure_list()


def _pure_list() -> frozenset[str]:
    """TIERPROXY_PURE=proxy.lb.client,proxy.lb.pool: only those pure (to measure one module's share)."""
    value = os.environ.get("TIERPROXY_PURE", "")
    return frozenset(v.strip() for v in value.split(",") if "." in v)


def source_digest(py_path: str) -> str:
    """SHA-256 over the module's `.py`, (if present) its `.pxd`, and every `.pxd` that one
    cimports, transitively (`proxy/_members.pxd`, another module's declarations): what its
    extension was built from, so an edit of a shared declaration marks its users stale too."""
    h = hashlib.sha256()
    pxd = py_path[:-3] + ".pxd"
    for path in (py_path, pxd, *_cimported(pxd)):
        try:
            with open(path, "rb") as f:
                h.update(f.read())
        except FileNotFoundError:
            h.update(b"-")
    return h.hexdigest()


_CIMPORT = re.compile(rb"^\s*(?:from\s+([\w.]+)\s+cimport\b|cimport\s+([\w.]+))", re.MULTILINE)


def _cimported(pxd: str) -> list[str]:
    """The `.pxd` files `pxd` cimports, and theirs, in a stable order: a dotted name is looked
    up from each directory above `pxd` (`proxy._members` from the one holding `proxy/`);
    cimports of Cython's own (libc, cpython) match no file and are left out."""
    out: list[str] = []
    todo = [pxd]
    while todo:
        path = todo.pop(0)
        try:
            with open(path, "rb") as f:
                text = f.read()
        except FileNotFoundError:
            continue
        for m in _CIMPORT.finditer(text):
            parts = (m.group(1) or m.group(2)).decode().split(".")
            d = os.path.dirname(os.path.abspath(path))
            while True:
                candidate = os.path.join(d, *parts) + ".pxd"
                if os.path.isfile(candidate):
                    if candidate not in out and candidate != os.path.abspath(pxd):
                        out.append(candidate)
                        todo.append(candidate)
                    break
                parent = os.path.dirname(d)
                if parent == d:
                    break
                d = parent
    return out


def _read_record(directory: str) -> dict[str, str]:
    try:
        with open(os.path.join(directory, BUILD_RECORD)) as f:
            return dict(line.split() for line in f if line.strip())
    except (OSError, ValueError):
        return {}


class _NativeFinder(importlib.abc.MetaPathFinder):
    """Chooses the compiled or the pure twin of each native module (see the module docstring)."""

    def __init__(self, modules: tuple[str, ...], pure: bool, record_dir: str = _HERE) -> None:
        self.modules = frozenset(modules)
        self.pure = pure
        self.record_dir = record_dir
        self.chosen: dict[str, str] = {}  # module -> "compiled" | "pure" | "stale" | "absent"
        self.origins: dict[str, str] = {}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname.endswith(_PURE_SUFFIX):
            return self._pure_spec(fullname, path)
        if fullname not in self.modules:
            return None
        leaf = fullname.rpartition(".")[2]
        for directory in path or sys.path:
            source = os.path.join(directory, leaf + ".py")
            if os.path.isfile(source):
                break
        else:
            return None
        how, origin = "pure", source
        if not self.pure and fullname not in _pure_list():
            how = "absent"
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                ext = os.path.join(directory, leaf + suffix)
                if os.path.isfile(ext):
                    if _read_record(self.record_dir).get(fullname) == source_digest(source):
                        how, origin = "compiled", ext
                    else:
                        how = "stale"
                    break
        if how == "compiled":
            for dep in CIMPORTS.get(fullname, ()):
                importlib.import_module(dep)
                if self.chosen.get(dep, "compiled") != "compiled":
                    how, origin = self.chosen[dep], source
                    break
        self.chosen[fullname] = how
        self.origins[fullname] = origin
        return importlib.util.spec_from_file_location(fullname, origin)

    def _pure_spec(self, fullname: str, path: Any) -> Any:
        name = fullname[: -len(_PURE_SUFFIX)]
        if name not in self.modules:
            return None
        leaf = name.rpartition(".")[2]
        for directory in path or sys.path:
            source = os.path.join(directory, leaf + ".py")
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


_finder: _NativeFinder | None = None


def install() -> None:
    """Put the finder first on `sys.meta_path` (once per process)."""
    global _finder
    if _finder is None:
        _finder = _NativeFinder(NATIVE_MODULES, pure_requested())
        sys.meta_path.insert(0, _finder)


def _is_compiled(module: ModuleType) -> bool:
    return isinstance(module.__loader__, importlib.machinery.ExtensionFileLoader)


def status() -> dict[str, Any]:
    """Which twin runs, per native module (importing them), and the Cython version they were built with."""
    install()
    assert _finder is not None
    modules: dict[str, str] = {}
    for name in NATIVE_MODULES:
        module = importlib.import_module(name)
        modules[name] = "compiled" if _is_compiled(module) else _finder.chosen.get(name, "pure")
    cython = _read_record(_HERE).get("cython")
    compiled = [n for n, how in modules.items() if how == "compiled"]
    mode = "pure" if not compiled else ("compiled" if len(compiled) == len(modules) else "mixed")
    return {"mode": mode, "pure_requested": _finder.pure, "cython": cython, "modules": modules}


def summary(st: dict[str, Any] | None = None) -> str:
    """One line for `--version` and start-up logs."""
    st = st if st is not None else status()
    if st["pure_requested"]:
        return "native: pure (TIERPROXY_PURE=1)"
    by: dict[str, list[str]] = {}
    for name, how in st["modules"].items():
        by.setdefault(how, []).append(name.removeprefix("proxy."))
    parts = []
    if "compiled" in by:
        parts.append(f"compiled (cython {st['cython'] or '?'}): " + " ".join(by.pop("compiled")))
    for how, names in sorted(by.items()):
        label = {"absent": "pure, not built", "stale": "pure, build older than source"}.get(how, how)
        parts.append(f"{label}: " + " ".join(names))
    return "native: " + "; ".join(parts)


def load_pure(name: str) -> ModuleType:
    """A fresh import of the pure-Python twin of `name` (as `name + "__pure"`), for differential tests."""
    install()
    return importlib.import_module(name + _PURE_SUFFIX)
