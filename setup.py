"""The build of tierproxy's native layer (issue 17); everything else is in pyproject.toml.

Each module named in `proxy/_native.py` (NATIVE_MODULES) is compiled by Cython in pure-Python mode
into an extension module of the same name beside its `.py` (which stays the one source, and the
pure twin `TIERPROXY_PURE=1` selects). Typing for Cython comes only from a `.pxd` beside the `.py`:
annotations are not used for typing (`annotation_typing=False`), so a hint such as `data: bytes`
never makes the compiled module refuse a bytearray the pure one takes.

On this project's machines the build must compile (scripts/dev.sh installs gcc and the Python
headers): a compiler error fails `pip install`. `TIERPROXY_NO_NATIVE=1` builds without the
extensions (the package then runs pure, and says so).

After building, `_native_build.txt` records the SHA-256 of each module's sources and the Cython
version beside `proxy/_native.py`, so an extension older than its source is never imported.
"""

from __future__ import annotations

import importlib.util
import os

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _native_module():
    spec = importlib.util.spec_from_file_location("_tierproxy_native", os.path.join(HERE, "proxy", "_native.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NATIVE = _native_module()


def _source(name: str) -> str:
    return name.replace(".", "/") + ".py"


def _extensions():
    if os.environ.get("TIERPROXY_NO_NATIVE", "") not in ("", "0"):
        return []
    from Cython.Build import cythonize
    from setuptools import Extension

    exts = [Extension(name, [_source(name)]) for name in NATIVE.NATIVE_MODULES]
    return cythonize(
        exts,
        build_dir="build/cython",
        compiler_directives={
            "language_level": 3,
            "annotation_typing": False,  # see the module docstring
            "binding": True,  # functions keep their introspection (signatures, __defaults__)
        },
        quiet=True,
    )


class BuildNative(build_ext):
    """build_ext that compiles in parallel and then writes the build record."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        super().run()
        if not self.extensions:
            return
        import Cython

        base = HERE if self.inplace else self.build_lib
        lines = [f"cython {Cython.__version__}"]
        for ext in self.extensions:
            lines.append(f"{ext.name} {NATIVE.source_digest(os.path.join(HERE, _source(ext.name)))}")
        os.makedirs(os.path.join(base, "proxy"), exist_ok=True)
        with open(os.path.join(base, "proxy", NATIVE.BUILD_RECORD), "w") as f:
            f.write("\n".join(lines) + "\n")


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildNative})
