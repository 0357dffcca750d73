"""Key traces of the cdn's store: what was looked up and how many bytes it held, one line per
request, for `tierproxy cdn whatif` (proxy/cdn/whatif.py) to replay under each eviction policy.

Format (text, one record a line, `#` lines are comments):

    # tierproxy cdn trace v1
    <size>\\t<primary key>[\\t<variant>]

`size` is the object's cost in the store's accounting (body + header bytes + 256), the primary
key is `host target`, and a Vary variant is a short digest of its secondary key. Tabs, newlines
and backslashes inside a key are escaped as \\t, \\n, \\\\. Only lookups of objects the cache holds
or stored (or would have, but for `max_object_bytes`) are recorded: responses that may not be
stored do not depend on the eviction policy.

`encode`/`parse` are pure; `TraceRecorder` appends to a file through a buffered writer (the
writes go to the page cache; the buffer is flushed when it fills, on `flush` and on `close`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from hashlib import blake2b
from pathlib import Path
from typing import IO, Any

__all__ = ["HEADER", "TraceError", "TraceRecorder", "encode", "parse", "read_trace"]

HEADER = "# tierproxy cdn trace v1\n"

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class TraceError(ValueError):
    """A trace line that is not `<size>\\t<key>[\\t<variant>]`."""


def _escape(text: str) -> str:
    return text.translate(_ESCAPES)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def encode(key: tuple[bytes, Any], size: int) -> str:
    """One trace line for a store key (primary, secondary) holding `size` bytes."""
    primary, secondary = key
    line = f"{size}\t{_escape(primary.decode('latin-1'))}"
    if secondary:
        line += "\t" + blake2b(repr(secondary).encode(), digest_size=6).hexdigest()
    return line + "\n"


def parse(lines: Iterable[str]) -> Iterator[tuple[tuple[bytes, str], int]]:
    """(store key, size) per record; TraceError with the line number on a malformed line."""
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) not in (2, 3) or not parts[0].isdigit() or not parts[1]:
            raise TraceError(f"line {n}: expected <size>TAB<key>[TAB<variant>], got {line[:80]!r}")
        yield (_unescape(parts[1]).encode("latin-1"), parts[2] if len(parts) == 3 else ""), int(parts[0])


def read_trace(path: str | Path) -> list[tuple[tuple[bytes, str], int]]:
    with open(path, encoding="latin-1") as f:
        return list(parse(f))


class TraceRecorder:
    """Appends records to a trace file. `create=True` refuses to overwrite an existing file (an
    admin request names the file, so it must not clobber one)."""

    def __init__(self, path: str | Path, create: bool = False) -> None:
        self.path = str(path)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if create else os.O_APPEND)
        fd = os.open(self.path, flags, 0o644)
        self._file: IO[str] = os.fdopen(fd, "a", encoding="latin-1", buffering=1 << 16)
        if self._file.tell() == 0:
            self._file.write(HEADER)
        self.records = 0

    def record(self, key: tuple[bytes, Any], size: int) -> None:
        self._file.write(encode(key, size))
        self.records += 1

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def status(self) -> dict[str, Any]:
        return {"file": self.path, "records": self.records}
