"""What proxy.devstack.postgres needs around the servers: binaries, the OS user, LSN arithmetic.

- `find_pg_bindir()`: Debian's /usr/lib/postgresql/<newest>/bin, or `pg_config --bindir`.
- `pg_os_user()` / `as_user()`: PostgreSQL refuses to run as root, so as root every server-side
  command runs as an unprivileged user through `setpriv` (switch uid/gid, then exec).
- `parse_lsn` / `format_lsn` / `wal_end_of`: LSNs as ints, and the insert-LSN page-header quirk.
- `conf_value` / `conninfo_value`: quoting for postgresql.conf and libpq connection strings.
- `discard_dir()`: a throwaway cluster's directory gone at once, its files unlinked in the background.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from proxy.devstack.process import DevstackError

__all__ = [
    "PgCommandError",
    "as_user",
    "chown_to",
    "conf_value",
    "conninfo_value",
    "discard_dir",
    "find_pg_bindir",
    "format_lsn",
    "parse_lsn",
    "pg_os_user",
    "wal_end_of",
]

# Candidate unprivileged users when running as root, in order; the last one is created if needed.
OS_USER_CANDIDATES = ("postgres", "tierproxy")
# WAL page and segment geometry of a default build (XLOG_BLCKSZ, wal_segment_size) and the page
# header sizes (SizeOfXLogShortPHD / SizeOfXLogLongPHD on 64-bit): see wal_end_of().
WAL_PAGE = 8192
WAL_SEGMENT = 16 * 1024 * 1024
WAL_SHORT_PAGE_HEADER = 24
WAL_LONG_PAGE_HEADER = 40


class PgCommandError(DevstackError):
    """initdb, pg_basebackup or psql failed; the message carries its output."""

    def __init__(self, what: str, returncode: int | None, output: str) -> None:
        super().__init__(f"{what} failed (exit {returncode}):\n{output.strip()}")
        self.returncode = returncode
        self.output = output


# -- environment ----------------------------------------------------------------------------


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def find_pg_bindir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin (or `pg_config --bindir`) holding `postgres`.

    `TIERPROXY_PG_BINDIR` overrides the search.
    """
    override = os.environ.get("TIERPROXY_PG_BINDIR")
    if override:
        if not (Path(override) / "postgres").exists():
            raise DevstackError(f"TIERPROXY_PG_BINDIR={override} has no postgres binary")
        return Path(override)
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = sorted(
            (p for p in root.iterdir() if (p / "bin" / "postgres").exists()),
            key=lambda p: _version_key(p.name),
            reverse=True,
        )
        if versions:
            return versions[0] / "bin"
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        bindir = subprocess.run(
            [pg_config, "--bindir"], check=False, capture_output=True, text=True
        ).stdout.strip()
        if bindir and (Path(bindir) / "postgres").exists():
            return Path(bindir)
    raise DevstackError(
        "PostgreSQL server binaries not found (no /usr/lib/postgresql/<version>/bin/postgres, "
        "no pg_config --bindir); install Debian's `postgresql` package"
    )


def pg_os_user() -> pwd.struct_passwd | None:
    """The unprivileged user servers run as, or None when we are not root (run as ourselves).

    `TIERPROXY_PG_OS_USER` picks one explicitly; else `postgres` if it exists, else a `tierproxy`
    system user, created with useradd if missing.
    """
    if os.geteuid() != 0:
        return None
    wanted = os.environ.get("TIERPROXY_PG_OS_USER")
    candidates = (wanted,) if wanted else OS_USER_CANDIDATES
    for name in candidates:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    name = candidates[-1]
    created = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=False,
        capture_output=True,
        text=True,
    )
    if created.returncode != 0 and "already exists" not in created.stderr:
        raise PgCommandError(f"useradd {name}", created.returncode, created.stderr)
    return pwd.getpwnam(name)


def as_user(
    user: pwd.struct_passwd | None, argv: Sequence[str | Path], *, keep_pdeathsig: bool = False
) -> list[str]:
    if user is None:
        return [str(a) for a in argv]
    prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"]
    if keep_pdeathsig:
        prefix += ["--pdeathsig", "keep"]
    return [*prefix, "--", *(str(a) for a in argv)]


def chown_to(path: Path, user: pwd.struct_passwd | None) -> None:
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


def conf_value(value: str | float | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def conninfo_value(value: str | int) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


# -- LSNs -----------------------------------------------------------------------------------


def parse_lsn(text: str) -> int:
    """'16/B374D848' -> int."""
    high, _, low = text.strip().partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def wal_end_of(insert_lsn: int) -> int:
    """The end-of-record LSN a replica reports once it has replayed everything up to `insert_lsn`.

    `pg_current_wal_insert_lsn()` names where the *next* record starts; at a page boundary that is
    past the page header, while `pg_last_wal_replay_lsn()` stops at the boundary itself. Without
    this, a catch-up wait that lands on a boundary would wait for the next, unrelated write.
    """
    if insert_lsn % WAL_SEGMENT == WAL_LONG_PAGE_HEADER:
        return insert_lsn - WAL_LONG_PAGE_HEADER
    if insert_lsn % WAL_PAGE == WAL_SHORT_PAGE_HEADER:
        return insert_lsn - WAL_SHORT_PAGE_HEADER
    return insert_lsn


def discard_dir(path: Path) -> None:
    """Remove a throwaway cluster's directory without waiting for the disk: renamed at once (so
    `path` no longer exists when this returns), then deleted by a detached `rm -rf`, reaped by a
    daemon thread. Unlinking the files PostgreSQL has just written waits for the kernel's
    writeback of their pages: seconds per Patroni cluster (180 MB) on a busy disk, measured at
    close, which nothing after close needs. If the rename or the spawn fails, it is removed here."""
    path = Path(path)
    trash = path.with_name(f"{path.name}.discarded")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        rm = subprocess.Popen(["rm", "-rf", "--", str(trash)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    except OSError:
        shutil.rmtree(trash, ignore_errors=True)
        return
    threading.Thread(target=rm.wait, name=f"rm {trash.name}", daemon=True).start()
