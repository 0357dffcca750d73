"""Throwaway PostgreSQL clusters (one primary plus streaming hot standbys) on locked loopback ports.

Theory of operation:
- `find_pg_bindir()` finds Debian's server binaries (/usr/lib/postgresql/<newest>/bin). Debian's
  `pg_ctlcluster` and the packaged cluster are never touched: every cluster lives in its own temp
  dir and is gone after `close()`.
- PostgreSQL refuses to run as root. When we are root, every server-side command (initdb,
  pg_basebackup, postgres) runs as an unprivileged OS user (`postgres` from the Debian package, or a
  `tierproxy` system user created on first use) through `setpriv`, which switches uid/gid and then
  *execs*, so the ManagedProcess pid is the postmaster itself. `--pdeathsig keep` restores the
  parent-death SIGKILL that the kernel clears on a uid change, so a test runner killed with SIGKILL
  takes the postmasters with it (their backends notice postmaster death and exit).
- The primary comes from `initdb --no-sync` (about 0.7 s); each replica from `pg_basebackup
  --checkpoint=fast -X stream -R` with its own replication slot (created first), so a stopped or
  delayed replica never loses the WAL it still needs. All base backups run in parallel.
- Servers run in the foreground (`postgres -D dir`), all settings live in the data dir's config
  files (not on the command line, where they would beat ALTER SYSTEM), so `start()` after `stop()`
  or `kill()` comes back with the same configuration. Shutdown modes are postmaster signals:
  smart=SIGTERM, fast=SIGINT, immediate=SIGQUIT.
- Readiness is asked of the server over TCP with the real password (psql, `select ...`): a primary
  is ready when it answers and is not in recovery; a replica when `pg_is_in_recovery()` and its
  WAL receiver reports `streaming`. Never a fixed sleep.
- Durability is off (fsync, full_page_writes, synchronous_commit): these clusters are for tests,
  the demo and benchmarks. With asynchronous commit a commit record reaches the replicas only after
  the WAL writer writes it, so `wal_writer_delay` is 10 ms and catch-up waits target the primary's
  *insert* LSN (see `wal_end_of`), not its write LSN, which may still be behind a just-committed row.

The helpers here are synchronous (psql subprocesses), usable from sync fixtures, scripts and, for
short calls, from async tests; the `*_async` twins of the waits run them in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from proxy.devstack.pgenv import (
    PgCommandError,
    as_user,
    chown_to,
    conf_value,
    conninfo_value,
    discard_dir,
    find_pg_bindir,
    format_lsn,
    parse_lsn,
    pg_os_user,
    wal_end_of,
)
from proxy.devstack.poll import PollTimeout, wait_until
from proxy.devstack.ports import PortLock, allocate_port
from proxy.devstack.process import Closing, DevstackError, ManagedProcess, NotReady

__all__ = [
    "PgCluster",
    "PgCommandError",
    "PgServer",
    "find_pg_bindir",
    "format_lsn",
    "parse_lsn",
    "pg_os_user",
    "start_pg_cluster",
    "start_pg_cluster_async",
    "wal_end_of",
]

HOST = "127.0.0.1"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# Per psql invocation: a SIGSTOPped server must not hang a helper forever.
PSQL_TIMEOUT = 30.0
CONNECT_TIMEOUT_S = 2

ShutdownMode = Literal["smart", "fast", "immediate"]
_SHUTDOWN_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}
AUTH_METHODS = ("scram-sha-256", "md5", "password", "trust")

# Test-only speed settings; `settings=` passed to start_pg_cluster are appended after these.
BASE_SETTINGS: dict[str, str | int] = {
    "listen_addresses": HOST,
    "wal_level": "replica",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "hot_standby": "on",
    "hot_standby_feedback": "on",
    # Two-phase commit (PREPARE TRANSACTION) is off by default; a standby needs at least the
    # primary's value, and replicas copy this file.
    "max_prepared_transactions": 10,
    # Standbys answer "not streaming" quickly after the primary dies instead of waiting 60 s.
    "wal_receiver_timeout": "5s",
    "wal_retrieve_retry_interval": "200ms",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_writer_delay": "10ms",
    "shared_buffers": "32MB",
    "jit": "off",
    "log_line_prefix": "%m [%p] %q%a ",
}


# -- one server -----------------------------------------------------------------------------


def _children_of(pid: int) -> list[int]:
    """Direct children of `pid` (postmaster children each sit in their own session)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command name, which may contain spaces.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _signal_pids(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class PgServer:
    """One postmaster of a PgCluster, primary or replica; `role` follows promote()."""

    def __init__(
        self,
        cluster: PgCluster,
        name: str,
        port_lock: PortLock,
        data_dir: Path,
        role: Literal["primary", "replica"],
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.port_lock = port_lock
        self.data_dir = data_dir
        self.role = role
        self.host = HOST
        self.process: ManagedProcess | None = None
        self._paused: list[int] = []

    # -- addresses --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.port_lock.port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def dsn(self) -> str:
        return self.dsn_for()

    def dsn_for(
        self, database: str = "postgres", user: str | None = None, password: str | None = None
    ) -> str:
        user = user if user is not None else self.cluster.user
        password = password if password is not None else self.cluster.password
        credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"postgresql://{credentials}@{self.host}:{self.port}/{quote(database, safe='')}"

    # -- process control --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def spawn(self) -> PgServer:
        """Start the postmaster (not necessarily accepting connections yet; see wait_ready)."""
        if self.running:
            raise DevstackError(f"{self.name} is already running")
        argv = as_user(
            self.cluster.os_user, [self.cluster.bindir / "postgres", "-D", self.data_dir], keep_pdeathsig=True
        )
        self.process = ManagedProcess(
            argv,
            name=self.name,
            log_dir=self.cluster.log_dir,
            cwd=self.cluster.base_dir,
            env=self.cluster.server_env(),
        )
        return self

    def start(self, timeout: float = READY_TIMEOUT) -> PgServer:
        """(Re)start from the same data dir and wait until ready for its current role.

        A replica is ready only once it streams, so its primary must be running.
        """
        self.spawn()
        return self.wait_ready(timeout)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> PgServer:
        if self.process is None:
            raise DevstackError(f"{self.name} was never started")
        self.process.wait_ready(self._ready_probe, timeout)
        return self

    async def wait_ready_async(self, timeout: float = READY_TIMEOUT) -> PgServer:
        return await asyncio.to_thread(self.wait_ready, timeout)

    def _ready_probe(self) -> bool:
        if self.role == "primary":
            return self.psql("select pg_is_in_recovery()", timeout=5) == "f"
        row = self.psql("select pg_is_in_recovery(), (select status from pg_stat_wal_receiver)", timeout=5)
        return row == "t|streaming"

    def stop(self, mode: ShutdownMode = "fast", timeout: float = STOP_TIMEOUT) -> int | None:
        """Shut down with the postmaster signal for `mode`; SIGKILL after `timeout`. Returns the exit code."""
        process = self.process
        if process is None or not process.running:
            return None if process is None else process.returncode
        self.resume()
        _signal_pids([process.pid], _SHUTDOWN_SIGNALS[mode])
        try:
            wait_until(lambda: not process.running, timeout, f"{self.name} {mode} shutdown")
        except PollTimeout:
            return self.kill()
        return process.returncode

    def kill(self) -> int | None:
        """SIGKILL the postmaster and all its children at once: a crash, not a shutdown."""
        process = self.process
        if process is None or not process.running:
            return None if process is None else process.returncode
        # Collected first: once the postmaster is gone its children are reparented.
        children = _children_of(process.pid)
        _signal_pids(children, signal.SIGKILL)
        code = process.kill()
        self._paused = []
        return code

    def pause(self) -> None:
        """SIGSTOP the postmaster *and* its backends: open connections hang too.

        (`process.stop()` stops only the postmaster; existing sessions keep answering.)
        """
        process = self.process
        if process is None or not process.running:
            return
        process.stop()
        self._paused = _children_of(process.pid)
        _signal_pids(self._paused, signal.SIGSTOP)

    def resume(self) -> None:
        _signal_pids(self._paused, signal.SIGCONT)
        self._paused = []
        if self.process is not None and self.process.running:
            self.process.cont()

    def managed_processes(self) -> list[ManagedProcess]:
        return [self.process] if self.process is not None else []

    # -- SQL --------------------------------------------------------------------------------

    def psql(self, sql: str, *, database: str = "postgres", timeout: float = PSQL_TIMEOUT) -> str:
        """Run `sql` (one or more statements) with psql over TCP; unaligned tuples-only output.

        Columns are separated by '|', rows by newlines; raises PgCommandError with psql's stderr.
        """
        argv = [
            self.cluster.bindir / "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            self.cluster.user,
            "-d",
            database,
        ]
        env = {**self.cluster.client_env(), "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT_S)}
        try:
            done = subprocess.run(
                [str(a) for a in argv],
                check=False,
                input=sql,
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise PgCommandError(f"psql on {self.name}", None, f"timed out after {timeout}s") from exc
        if done.returncode != 0:
            raise PgCommandError(f"psql on {self.name}: {sql.strip()[:200]}", done.returncode, done.stderr)
        return done.stdout.strip()

    def is_in_recovery(self) -> bool:
        return self.psql("select pg_is_in_recovery()") == "t"

    def current_lsn(self) -> int:
        """On a primary: the end of all WAL inserted so far, as a replica's replay LSN would show it."""
        return wal_end_of(parse_lsn(self.psql("select pg_current_wal_insert_lsn()")))

    def replay_lsn(self) -> int | None:
        """On a replica: `pg_last_wal_replay_lsn()` (None if nothing replayed yet)."""
        text = self.psql("select pg_last_wal_replay_lsn()")
        return parse_lsn(text) if text else None

    def receive_lsn(self) -> int | None:
        """On a replica: `pg_last_wal_receive_lsn()`, WAL received and flushed, applied or not."""
        text = self.psql("select pg_last_wal_receive_lsn()")
        return parse_lsn(text) if text else None

    def wait_replayed(self, lsn: int | str, timeout: float = 10.0) -> None:
        """Wait until this replica has replayed WAL up to `lsn` (int or 'X/Y' text)."""
        target = parse_lsn(lsn) if isinstance(lsn, str) else lsn

        def replayed() -> bool:
            current = self.replay_lsn()
            return current is not None and current >= target

        wait_until(
            replayed, timeout, f"{self.name} replay of {format_lsn(target)}", abort=self._raise_if_dead
        )

    async def wait_replayed_async(self, lsn: int | str, timeout: float = 10.0) -> None:
        await asyncio.to_thread(self.wait_replayed, lsn, timeout)

    def _raise_if_dead(self) -> None:
        if not self.running:
            code = None if self.process is None else self.process.returncode
            raise DevstackError(f"{self.name} is not running (exit {code})")

    # -- replica operations -----------------------------------------------------------------

    def set_apply_delay(self, ms: int, timeout: float = 10.0) -> None:
        """`recovery_min_apply_delay` via ALTER SYSTEM + reload: commits become visible `ms` late.

        Returns once a new session sees the value. The postmaster signals the startup process before
        it forks that session, so the delay holds for every commit record not yet replayed.
        """
        self._require_role("replica", "set_apply_delay")
        self.psql(f"alter system set recovery_min_apply_delay = '{int(ms)}ms'; select pg_reload_conf()")
        # pg_settings.setting is in the GUC's base unit (ms); SHOW would say "2s" for 2000.
        query = "select setting from pg_settings where name = 'recovery_min_apply_delay'"
        wait_until(
            lambda: self.psql(query) == str(int(ms)),
            timeout,
            f"{self.name} recovery_min_apply_delay={ms}ms",
        )

    def promote(self, timeout: float = READY_TIMEOUT) -> PgServer:
        """`pg_promote()`: end recovery; returns once this server accepts writes."""
        self._require_role("replica", "promote")
        waited = self.psql(f"select pg_promote(true, {max(1, int(timeout))})", timeout=timeout + 5)
        if waited != "t":
            raise NotReady(
                self.name,
                f"pg_promote() returned {waited!r}",
                self.process.log_tail() if self.process else "",
            )
        self.role = "primary"
        return self.wait_ready(timeout)

    def _require_role(self, role: str, what: str) -> None:
        if self.role != role:
            raise DevstackError(f"{what} needs a {role}; {self.name} is a {self.role}")

    def __repr__(self) -> str:
        return f"PgServer({self.name}, {self.role}, {self.address}, {self.process!r})"


# -- the cluster ----------------------------------------------------------------------------


class PgCluster(Closing):
    """A primary plus `replicas` streaming hot standbys in one temp dir; build with start_pg_cluster()."""

    def __init__(
        self,
        *,
        log_dir: Path | None = None,
        user: str = "postgres",
        password: str = "secret",
        auth: str = "scram-sha-256",
        settings: Mapping[str, str | int | float | bool] | None = None,
        name: str = "pg",
    ) -> None:
        if auth not in AUTH_METHODS:
            raise ValueError(f"auth must be one of {AUTH_METHODS}, got {auth!r}")
        self.bindir = find_pg_bindir()
        self.os_user = pg_os_user()
        self.user = user
        self.password = password
        self.auth = auth
        self.settings = dict(settings or {})
        self.name = name
        # Data dirs need a path the unprivileged user can traverse: never pytest's root-only tmp.
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"tierproxy-{name}-"))
        chown_to(self.base_dir, self.os_user)
        self.log_dir = Path(log_dir) if log_dir is not None else self.base_dir / "log"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.primary: PgServer | None = None
        self.replicas: list[PgServer] = []
        self._closed = False

    # -- environment for subprocesses -------------------------------------------------------

    def server_env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        if self.os_user is not None:
            env |= {"HOME": str(self.base_dir), "USER": self.os_user.pw_name}
        return env

    def client_env(self) -> dict[str, str]:
        return {**self.server_env(), "PGPASSWORD": self.password, "PGSSLMODE": "disable"}

    def _run(self, what: str, argv: Sequence[str | Path], env: Mapping[str, str], timeout: float) -> None:
        try:
            done = subprocess.run(
                as_user(self.os_user, argv),
                check=False,
                capture_output=True,
                text=True,
                env=dict(env),
                cwd=self.base_dir,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise PgCommandError(what, None, f"timed out after {timeout}s") from exc
        if done.returncode != 0:
            raise PgCommandError(what, done.returncode, done.stdout + done.stderr)

    # -- building ---------------------------------------------------------------------------

    def init_primary(self, timeout: float = READY_TIMEOUT) -> PgServer:
        """initdb, configure and start the primary; ready when this returns."""
        return self.prepare_primary(timeout).start(timeout)

    def prepare_primary(self, timeout: float = READY_TIMEOUT) -> PgServer:
        """initdb and configure the primary, not started. Safe in a worker thread (initdb is a
        short-lived child), so several clusters can run initdb at once; start the postmasters
        from the main thread (`spawn`), where they keep their parent-death signal."""
        port_lock = allocate_port(HOST)
        data_dir = self.base_dir / "primary"
        server = PgServer(self, f"{self.name}-primary-{port_lock.port}", port_lock, data_dir, "primary")
        self.primary = server
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        chown_to(pwfile, self.os_user)
        try:
            self._run(
                "initdb",
                [
                    self.bindir / "initdb",
                    "-D",
                    data_dir,
                    "-U",
                    self.user,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    f"--auth-host={self.auth}",
                    "--no-sync",
                    "--no-instructions",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                self.server_env(),
                timeout,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        # Loopback only, including replication connections (initdb's defaults also name ::1).
        (data_dir / "pg_hba.conf").write_text(
            "# tierproxy devstack: loopback only\n"
            "local   all          all                 trust\n"
            "local   replication  all                 trust\n"
            f"host    all          all   127.0.0.1/32  {self.auth}\n"
            f"host    replication  all   127.0.0.1/32  {self.auth}\n"
        )
        conf = {
            **BASE_SETTINGS,
            "password_encryption": "md5" if self.auth == "md5" else "scram-sha-256",
            "unix_socket_directories": str(self.base_dir),
            "port": port_lock.port,
            **self.settings,
        }
        with open(data_dir / "postgresql.conf", "a") as f:
            f.write("\n# tierproxy devstack (test-only: durability off)\n")
            f.writelines(f"{key} = {conf_value(value)}\n" for key, value in conf.items())
        return server

    def _spawn_base_backup(self, index: int) -> tuple[PgServer, subprocess.Popen[str]]:
        assert self.primary is not None
        port_lock = allocate_port(HOST)
        name = f"replica{index}"
        server = PgServer(
            self, f"{self.name}-{name}-{port_lock.port}", port_lock, self.base_dir / name, "replica"
        )
        self.replicas.append(server)
        # application_name ends up in the primary_conninfo written by -R, so the primary's
        # pg_stat_replication names each replica.
        conninfo = " ".join(
            f"{k}={conninfo_value(v)}"
            for k, v in {
                "host": HOST,
                "port": self.primary.port,
                "user": self.user,
                "application_name": name,
            }.items()
        )
        # The slot exists, and holds WAL, before any backup starts: with `-C` pg_basebackup creates
        # it only once its WAL streamer runs, and a parallel backup's checkpoint can recycle the
        # segment it needs in between ("requested WAL segment ... has already been removed").
        slot = re.sub(r"\W", "_", f"{self.name}_{name}").lower()
        self.primary.psql(f"select pg_create_physical_replication_slot('{slot}', true)")
        argv = as_user(
            self.os_user,
            [
                self.bindir / "pg_basebackup",
                "-d",
                conninfo,
                "-D",
                server.data_dir,
                "-R",
                "-X",
                "stream",
                "-S",
                slot,
                "--checkpoint=fast",
                "--no-sync",
            ],
        )
        popen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.client_env(),
            cwd=self.base_dir,
        )
        return server, popen

    def add_replicas(self, count: int, timeout: float = READY_TIMEOUT) -> list[PgServer]:
        """Base-backup `count` new replicas from the primary in parallel, start them, wait for streaming."""
        if self.primary is None:
            raise DevstackError("add_replicas needs a primary (init_primary first)")
        started = [self._spawn_base_backup(len(self.replicas) + 1) for _ in range(count)]
        errors = []
        for server, popen in started:
            try:
                output, _ = popen.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                output, _ = popen.communicate()
                errors.append(
                    PgCommandError(f"pg_basebackup for {server.name}", None, f"timed out; {output}")
                )
                continue
            if popen.returncode != 0:
                errors.append(PgCommandError(f"pg_basebackup for {server.name}", popen.returncode, output))
        if errors:
            raise errors[0]
        new = [server for server, _ in started]
        for server in new:
            with open(server.data_dir / "postgresql.conf", "a") as f:
                f.write(f"port = {server.port}\n")
            server.spawn()
        for server in new:
            server.wait_ready(timeout)
        # A replica's WAL receiver reports "streaming" before the primary's walsender leaves
        # "catchup": wait for the primary's view too, so a ready cluster streams on both ends.
        names = {server.data_dir.name for server in new}  # their application_name
        wait_until(lambda: names <= self._streaming_on_primary(), timeout, "the primary to list its replicas as streaming")
        return new

    def _streaming_on_primary(self) -> set[str]:
        assert self.primary is not None
        out = self.primary.psql("select application_name from pg_stat_replication where state = 'streaming'", timeout=5)
        return set(out.split()) if out else set()

    # -- waiting ----------------------------------------------------------------------------

    def following_replicas(self) -> list[PgServer]:
        """Replicas still in the replica role whose postmaster is running."""
        return [r for r in self.replicas if r.role == "replica" and r.running]

    def wait_for_replicas_caught_up(self, timeout: float = 10.0) -> int:
        """Wait until every following replica has replayed all WAL the primary inserted so far.

        Returns the LSN waited for. Killed, stopped or promoted replicas are skipped.
        """
        if self.primary is None:
            raise DevstackError("cluster has no primary")
        target = self.primary.current_lsn()
        for replica in self.following_replicas():
            replica.wait_replayed(target, timeout)
        return target

    async def wait_for_replicas_caught_up_async(self, timeout: float = 10.0) -> int:
        return await asyncio.to_thread(self.wait_for_replicas_caught_up, timeout)

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def servers(self) -> list[PgServer]:
        return ([self.primary] if self.primary is not None else []) + self.replicas

    def managed_processes(self) -> list[ManagedProcess]:
        """For the test harness's log dump on failure."""
        return [p for server in self.servers for p in server.managed_processes()]

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """Immediate shutdown of all servers (the data is thrown away), free ports, rm the dir. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            live = [s for s in self.servers if s.running]
            for server in live:
                server.resume()
                assert server.process is not None
                _signal_pids([server.process.pid], signal.SIGQUIT)
            deadline = time.monotonic() + timeout
            for server in live:
                try:
                    wait_until(
                        lambda s=server: not s.running,
                        max(0.1, deadline - time.monotonic()),
                        f"{server.name} exit",
                    )
                except PollTimeout:
                    server.kill()
        finally:
            for server in self.servers:
                server.port_lock.release()
            discard_dir(self.base_dir)  # at once; its files are unlinked in the background

    def __repr__(self) -> str:
        return f"PgCluster({self.name}, primary={self.primary!r}, replicas={self.replicas!r})"


def start_pg_cluster(
    replicas: int = 2,
    *,
    log_dir: Path | None = None,
    user: str = "postgres",
    password: str = "secret",
    auth: str = "scram-sha-256",
    settings: Mapping[str, str | int | float | bool] | None = None,
    name: str = "pg",
    timeout: float = READY_TIMEOUT,
) -> PgCluster:
    """initdb + start a primary, base-backup and start `replicas` streaming standbys; all ready.

    `settings` go into the primary's postgresql.conf before the first start (replicas inherit
    them). On any failure everything already started is closed before the error propagates.
    """
    cluster = PgCluster(
        log_dir=log_dir, user=user, password=password, auth=auth, settings=settings, name=name
    )
    try:
        cluster.init_primary(timeout)
        if replicas:
            cluster.add_replicas(replicas, timeout)
    except BaseException:
        cluster.close()
        raise
    return cluster


async def start_pg_cluster_async(replicas: int = 2, **kwargs: object) -> PgCluster:
    """start_pg_cluster in a worker thread, for code inside an event loop.

    Note: ManagedProcess skips PR_SET_PDEATHSIG off the main thread, so these servers survive a
    SIGKILLed parent; prefer the sync call from fixtures.
    """
    return await asyncio.to_thread(start_pg_cluster, replicas, **kwargs)  # type: ignore[arg-type]
