"""COPY ... FROM STDIN rows split by their shard key (pure, sans-IO).

`copy_options(stmt)` reads a COPY statement's options (FORMAT text|csv, DELIMITER, NULL, QUOTE,
ESCAPE, HEADER) as PostgreSQL does, or says why the router cannot split it (binary format, an
ENCODING option). `RowSplitter(options, key_index)` takes the client's CopyData bytes in any
chunking (`feed`, then `finish`) and returns whole rows, each as its raw bytes (end of line
included, unchanged: the shards parse them again) with the raw text of its key field, decoded as
COPY would decode it (text format: backslash escapes and the NULL string; CSV: quotes, the
escape character, and NULL only when unquoted). Rows end at a newline (LF, CR LF or CR) outside
CSV quotes and not escaped by a backslash in text format; a line `\\.` ends the data. The header
line (HEADER) is returned as `header` and not routed: it is sent to every shard, which skips its
own first line.

Malformed data raises `CopyDataError` with PostgreSQL's SQLSTATE: 22P04 (bad_copy_file_format)
for a row without the key's column or an unterminated CSV quote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pglast import ast

__all__ = ["CopyDataError", "CopyOptions", "RowSplitter", "copy_options"]

BAD_COPY_FORMAT = "22P04"
FEATURE_NOT_SUPPORTED = "0A000"


class CopyDataError(ValueError):
    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message


@dataclass(frozen=True)
class CopyOptions:
    csv: bool = False
    delimiter: bytes = b"\t"
    null: bytes = b"\\N"
    quote: bytes = b'"'
    escape: bytes = b'"'
    header: bool = False


def _value(arg: Any) -> Any:
    if arg is None:
        return True
    if isinstance(arg, ast.Boolean):
        return arg.boolval
    if isinstance(arg, ast.Integer):
        return arg.ival
    return getattr(arg, "sval", None)


def copy_options(stmt: ast.CopyStmt) -> CopyOptions | CopyDataError:
    """The options of a COPY FROM STDIN the router splits, or why it cannot."""
    opts: dict[str, Any] = {}
    for d in stmt.options or ():
        opts[d.defname.lower()] = _value(d.arg)
    fmt = str(opts.get("format", "text")).lower()
    if fmt not in ("text", "csv"):
        return CopyDataError(FEATURE_NOT_SUPPORTED, f"COPY FROM STDIN in {fmt} format into a sharded table "
                             "(the router splits text and csv rows)")
    if "encoding" in opts:
        return CopyDataError(FEATURE_NOT_SUPPORTED, "COPY ... ENCODING into a sharded table (send the data in "
                             "the client encoding)")
    csv = fmt == "csv"
    header = opts.get("header", False)
    if isinstance(header, str):
        header = header.lower() in ("true", "on", "1", "match")
    delimiter = str(opts.get("delimiter", "," if csv else "\t")).encode("utf-8")
    quote = str(opts.get("quote", '"')).encode("utf-8")
    escape = str(opts.get("escape", quote.decode())).encode("utf-8")
    null = str(opts.get("null", "" if csv else "\\N")).encode("utf-8")
    if len(delimiter) != 1 or len(quote) != 1 or len(escape) != 1:
        return CopyDataError("22023", "COPY delimiter, quote and escape must be a single one-byte character")
    return CopyOptions(csv, delimiter, null, quote, escape, bool(header))


_ESCAPES = {ord("b"): b"\b", ord("f"): b"\f", ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t",
            ord("v"): b"\v"}


def _unescape_text(field: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(field)
    while i < n:
        c = field[i]
        if c != 0x5C or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        nxt = field[i + 1]
        if 0x30 <= nxt <= 0x37:  # \ooo: up to three octal digits
            j = i + 1
            while j < n and j < i + 4 and 0x30 <= field[j] <= 0x37:
                j += 1
            out.append(int(field[i + 1 : j], 8) & 0xFF)
            i = j
        elif nxt == ord("x") and i + 2 < n and chr(field[i + 2]) in "0123456789abcdefABCDEF":
            j = i + 2
            while j < n and j < i + 4 and chr(field[j]) in "0123456789abcdefABCDEF":
                j += 1
            out.append(int(field[i + 2 : j], 16))
            i = j
        else:
            out += _ESCAPES.get(nxt, bytes((nxt,)))
            i += 2
    return bytes(out)


class RowSplitter:
    """See the module docstring. `key_index`: the key's position among the row's fields."""

    def __init__(self, options: CopyOptions, key_index: int) -> None:
        self.o = options
        self.key_index = key_index
        self._buf = bytearray()
        self._scan = 0  # bytes of _buf already scanned (no row end in them)
        self._in_quote = False  # CSV: the scan stopped inside a quoted field
        self._skip = False  # text: the scan stopped right after a backslash
        self.header: bytes | None = None
        self._need_header = options.header
        self.ended = False  # the \. line was seen
        self.rows = 0

    def feed(self, data: bytes) -> list[tuple[bytes, bytes | None]]:
        """Whole rows completed by `data`: (raw row with its line end, key field or None for NULL)."""
        if self.ended:
            return []
        self._buf += data
        out = []
        while not self.ended:
            end = self._row_end()
            if end is None:
                break
            row = bytes(self._buf[:end])
            del self._buf[:end]
            self._scan = 0
            got = self._row(row)
            if got is not None:
                out.append(got)
        return out

    def finish(self) -> list[tuple[bytes, bytes | None]]:
        """At CopyDone: the last row, if it has no line end (COPY accepts that)."""
        if self.ended or not self._buf:
            return []
        row = bytes(self._buf)  # an unterminated CSV quote in it: _split_csv says so
        self._buf.clear()
        got = self._row(row)
        return [got] if got is not None else []

    def _row_end(self) -> int | None:
        """The end (after the line end) of the first whole row in the buffer, or None."""
        buf = self._buf
        n = len(buf)
        i = self._scan
        csv = self.o.csv
        q, e = self.o.quote[0], self.o.escape[0]
        in_quote, skip = self._in_quote, self._skip
        while i < n:
            c = buf[i]
            if csv:
                if in_quote:
                    if c == e and i + 1 < n and buf[i + 1] == q and e != q:
                        i += 2
                        continue
                    if c == q:
                        if e == q and i + 1 < n and buf[i + 1] == q:
                            i += 2
                            continue
                        if e == q and i + 1 >= n:
                            break  # a doubled quote may continue in the next chunk
                        in_quote = False
                    elif c == e and i + 1 >= n:
                        break
                    i += 1
                    continue
                if c == q:
                    in_quote = True
                    i += 1
                    continue
            elif skip:
                skip = False
                i += 1
                continue
            elif c == 0x5C:
                skip = True
                i += 1
                continue
            if c == 0x0A:
                self._in_quote, self._skip = False, False
                return i + 1
            if c == 0x0D:
                if i + 1 >= n:
                    break  # CR LF may be split over chunks
                self._in_quote, self._skip = False, False
                return i + 2 if buf[i + 1] == 0x0A else i + 1
            i += 1
        self._scan, self._in_quote, self._skip = i, in_quote, skip
        return None

    def _row(self, row: bytes) -> tuple[bytes, bytes | None] | None:
        line = row.rstrip(b"\r\n")
        if line == b"\\.":
            self.ended = True
            return None
        if self._need_header:
            self._need_header = False
            self.header = row
            return None
        self.rows += 1
        key = self._field(line, self.key_index)
        return row, key

    def _field(self, line: bytes, index: int) -> bytes | None:
        fields = self._split_csv(line) if self.o.csv else self._split_text(line)
        if index >= len(fields):
            raise CopyDataError(BAD_COPY_FORMAT, f"missing data for the shard key column (row {self.rows})")
        return fields[index]

    def _split_text(self, line: bytes) -> list[bytes | None]:
        out: list[bytes | None] = []
        d = self.o.delimiter[0]
        start = i = 0
        n = len(line)
        while i <= n:
            if i == n or line[i] == d:
                raw = line[start:i]
                out.append(None if raw == self.o.null else _unescape_text(raw))
                start = i + 1
                i += 1
            elif line[i] == 0x5C:
                i += 2
            else:
                i += 1
        return out

    def _split_csv(self, line: bytes) -> list[bytes | None]:
        out: list[bytes | None] = []
        d, q, e = self.o.delimiter[0], self.o.quote[0], self.o.escape[0]
        i, n = 0, len(line)
        while True:
            value = bytearray()
            quoted = False
            while i < n and line[i] != d:
                if line[i] == q:
                    quoted = True
                    i += 1
                    while True:
                        if i >= n:
                            raise CopyDataError(BAD_COPY_FORMAT, "unterminated CSV quoted field")
                        c = line[i]
                        if c == e and i + 1 < n and line[i + 1] == q:
                            value.append(q)
                            i += 2
                        elif c == q:
                            i += 1
                            break
                        else:
                            value.append(c)
                            i += 1
                else:
                    value.append(line[i])
                    i += 1
            raw = bytes(value)
            out.append(None if not quoted and raw == self.o.null else raw)
            if i >= n:
                return out
            i += 1  # the delimiter
