"""The dbproxy's outstanding queries per backend (the books' `outstanding`, books.py): a mapping
backend name -> statements in flight on it, counted by `Books.started` and `Books.finished` per
statement and read by the router's least-outstanding choice per read (session_router.py), by
/status, /metrics, the console's SHOW and `_forget` (daemon.py).

Each backend seen has a slot, a small int, for good: the books find it by the backend's name
(the same str object on every server connection of a backend: an identity test per slot, a dict
lookup only when none is identical) and count with an increment of one item, where the dict it
replaces looked the name up twice per statement and stored a new int (~0.3k instructions each
`started` and `finished`, compiled). Compiled, the counts are a C array of long long (an
extension type, read in C by the books and the compiled router); interpreted, a list of ints
(the daemon keeps a plain dict there: the pure twin's dict operations are the interpreter's
fastest). `hists` is the books' own: the latency histogram of each slot's backend, found once
(`Books._latency_of`) instead of per statement.

Read as the dict it replaces: `get`, `[]` (KeyError for a backend never counted), `[] =`, `in`,
`len`, iteration, `keys`, `values`, `items`, `dict(...)`, `==` with a dict. A backend counted
once keeps its key at 0, as the dict did; nothing deletes one.

This module is compiled (proxy/_native.py) and is also its own pure-Python twin.
"""

from __future__ import annotations

from typing import Any

__all__ = ["COMPILED", "Outstanding"]


def _probe() -> None:
    pass


# A compiled module's functions are Cython's, not Python's.
_COMPILED = type(_probe).__name__ != "function"
COMPILED = _COMPILED


class Outstanding:
    """backend -> statements in flight (see the module docstring)."""

    __slots__ = ("_counts", "_index", "_keys", "hists")

    def __init__(self) -> None:
        self._index: dict[str, int] = {}  # backend -> slot
        self._keys: list[str] = []  # slot -> backend
        self._counts: list[int] = []  # interpreted: slot -> count (compiled: the C array _n)
        self.hists: list[Any] = []  # slot -> its backend's latency histogram or None (books.py's)

    def __dealloc__(self) -> None:  # compiled only (the C array); a plain method interpreted
        if _COMPILED:
            _free_counts(self)  # noqa: F821 (outstanding.pxd)

    def find(self, backend: Any) -> int:
        """`backend`'s slot, -1 if it has none: by identity first, then by equality."""
        keys = self._keys
        n = len(keys)
        for i in range(n):
            if keys[i] is backend:
                return i
        return self._index.get(backend, -1)

    def slot(self, backend: Any) -> int:
        """`backend`'s slot, made (counted 0) at its first use."""
        i = self.find(backend)
        if i < 0:
            i = len(self._keys)
            if _COMPILED:
                _grow(self, i + 1)  # noqa: F821 (outstanding.pxd)
            else:
                self._counts.append(0)
            self._keys.append(backend)
            self.hists.append(None)
            self._index[backend] = i
        return i

    def count_of(self, backend: Any) -> int:
        """`backend`'s count, 0 if it has none (the router's `get(name, 0)`)."""
        i = self.find(backend)
        if i < 0:
            return 0
        if _COMPILED:
            return self._n[i]
        return self._counts[i]

    def _count(self, i: int) -> int:
        if _COMPILED:
            return self._n[i]
        return self._counts[i]

    def get(self, backend: Any, default: Any = None) -> Any:
        i = self.find(backend)
        if i < 0:
            return default
        return self._count(i)

    def __getitem__(self, backend: Any) -> int:
        i = self.find(backend)
        if i < 0:
            raise KeyError(backend)
        return self._count(i)

    def __setitem__(self, backend: Any, n: int) -> None:
        i = self.slot(backend)
        if _COMPILED:
            self._n[i] = n
        else:
            self._counts[i] = int(n)

    def __contains__(self, backend: Any) -> bool:
        return self.find(backend) >= 0

    def __iter__(self) -> Any:
        return iter(list(self._keys))

    def __len__(self) -> int:
        return len(self._keys)

    def keys(self) -> list[str]:
        return list(self._keys)

    def values(self) -> list[int]:
        return [self._count(i) for i in range(len(self._keys))]

    def items(self) -> list[tuple[str, int]]:
        return [(key, self._count(i)) for i, key in enumerate(self._keys)]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Outstanding):
            other = dict(other.items())
        return isinstance(other, dict) and dict(self.items()) == other

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]  # a mapping: compared by its counts

    def __repr__(self) -> str:
        return f"Outstanding({dict(self.items())!r})"


# Compiled: the object fields as member descriptors, which CPython specialises as it does slots
# (proxy/_members.pxd): interpreted code reads and writes them as fast as the pure twin's.
if COMPILED:
    as_members(Outstanding, ("_counts",))  # noqa: F821
