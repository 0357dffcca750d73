"""The admin console framework: pgbouncer-style `SHOW <what>` on a virtual database (pure).

    psql -h 127.0.0.1 -p 6432 -U app tierproxy -c 'SHOW POOLS'

A daemon gives `run_console` its table of commands (name -> a function from a snapshot of the
daemon, plain dicts, to (columns, rows)); this turns a command text into the wire bytes of the
answer (RowDescription, DataRows, CommandComplete, or an ErrorResponse 42601 naming the commands
there are); the session adds ReadyForQuery. Commands are matched case-insensitively, with or
without a trailing semicolon. Values are rendered as PostgreSQL's text format does (booleans as
t/f, floats with 3 decimals, None as NULL).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from proxy.pgwire import encode

__all__ = ["ADMIN_DATABASE", "Command", "Rows", "rows_answer", "run_console", "text_value"]

# The virtual database a client connects to for the console, in both PostgreSQL daemons.
ADMIN_DATABASE = "tierproxy"

Rows = tuple[Sequence[str], list[Sequence[Any]]]
Command = Callable[[Mapping[str, Any]], Rows]

_SHOW = re.compile(r"\s*show\s+([a-z_]+)\s*;?\s*\Z", re.IGNORECASE)


def text_value(v: Any) -> bytes | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return b"t" if v else b"f"
    if isinstance(v, float):
        return f"{v:.3f}".encode()
    return str(v).encode()


def rows_answer(cols: Sequence[str], rows: Iterable[Sequence[Any]], tag: str = "SHOW") -> bytes:
    """RowDescription (text columns), one DataRow per row, CommandComplete `tag`."""
    out = [encode.row_description(list(cols))]
    out.extend(encode.data_row([text_value(v) for v in row]) for row in rows)
    out.append(encode.command_complete(tag))
    return b"".join(out)


def run_console(sql: str, snapshot: Mapping[str, Any], commands: Mapping[str, Command]) -> bytes:
    """The answer to `sql`: `SHOW <name>` runs `commands[NAME]` on `snapshot`."""
    stripped = sql.strip().rstrip(";").strip()
    if not stripped:
        return encode.empty_query_response()
    m = _SHOW.match(sql)
    fn = commands.get(m.group(1).upper()) if m else None
    if fn is None:
        return encode.error_response(
            "ERROR", "42601", f"unknown admin command: {stripped[:80]}",
            hint="try SHOW HELP: " + ", ".join(f"SHOW {c}" for c in sorted(commands)),
        )  # fmt: skip
    cols, rows = fn(snapshot)
    return rows_answer(cols, rows)
