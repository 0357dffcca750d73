"""The demo's sharded tier: four standalone PostgreSQL shards behind `tierproxy shard`.

`DemoShards(workdir, port=..., admin_port=...)`: `begin()` runs the four initdbs in worker threads
(the slow part of starting a server, so the demo overlaps them with the rest of its start-up),
`finish()` starts the postmasters from the calling (main) thread, where they keep their
parent-death signal, waits until each answers, starts the router on the given ports and, through
the router, creates the `users` table (DDL goes to every shard) and inserts a few users (one
multi-row INSERT, split by the router over the shards by `user_id % 4`). `banner()` gives the
demo's lines, with psql commands that log in through a generated pgpass file (PGPASSFILE): no
password prompt. `close()` stops everything. Nothing here imports a daemon's code.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from proxy.devstack.postgres import HOST, READY_TIMEOUT, PgCluster
from proxy.devstack.shard import ShardRouterServer, start_shard_router

__all__ = ["DEMO_USERS", "SHARD_NAMES", "SHARD_PASSWORD", "SHARD_USER", "DemoShards"]

SHARD_NAMES = ("s0", "s1", "s2", "s3")
SHARD_USER = "postgres"  # the shards' superuser; the router logs in to them as it
SHARD_PASSWORD = "secret"
APP_USER, APP_PASSWORD = "app", "app-secret"  # what clients of the router log in as
GROUPS = """
[groups.users]
tables = ["users"]
key = "user_id"
key_type = "integer"
map = "modulo"
"""
SCHEMA = "CREATE TABLE users (user_id bigint PRIMARY KEY, name text)"
DEMO_USERS = ((1, "ada"), (2, "grace"), (3, "edsger"), (4, "barbara"), (5, "donald"), (6, "margaret"),
              (7, "ken"), (8, "frances"), (9, "john"), (10, "radia"), (11, "dennis"), (12, "leslie"))  # fmt: skip
PSQL_TIMEOUT = 60.0


class DemoShards:
    def __init__(self, workdir: Path, *, port: int, admin_port: int) -> None:
        self.workdir = Path(workdir)
        self.port = port
        self.admin_port = admin_port
        self.clusters = {name: PgCluster(log_dir=self.workdir / "shards", user=SHARD_USER,
                                         password=SHARD_PASSWORD, name=f"shard-{name}")
                         for name in SHARD_NAMES}  # fmt: skip
        self.router: ShardRouterServer | None = None
        self.pgpass = self.workdir / "pgpass"
        self._pool: ThreadPoolExecutor | None = None
        self._initdb: list[Future[object]] = []

    def begin(self) -> None:
        """Start the four initdbs in the background."""
        self._pool = ThreadPoolExecutor(len(self.clusters), thread_name_prefix="shard-initdb")
        self._initdb = [self._pool.submit(c.prepare_primary, READY_TIMEOUT) for c in self.clusters.values()]

    def finish(self, timeout: float = READY_TIMEOUT) -> None:
        """The shards running, the router serving, the table made and filled."""
        if self._pool is None:
            self.begin()
        assert self._pool is not None
        for f in self._initdb:
            f.result()
        self._pool.shutdown()
        for c in self.clusters.values():
            assert c.primary is not None
            c.primary.spawn()  # from this thread: the postmasters keep their parent-death signal
        for c in self.clusters.values():
            assert c.primary is not None
            c.primary.wait_ready(timeout)
        self.pgpass.write_text(f"{HOST}:{self.port}:*:{APP_USER}:{APP_PASSWORD}\n")
        self.pgpass.chmod(0o600)  # libpq ignores a pgpass file others can read
        self.router = start_shard_router(
            {name: c.primary for name, c in self.clusters.items() if c.primary is not None},
            log_dir=self.workdir, backend_user=SHARD_USER, backend_password=SHARD_PASSWORD, groups=GROUPS,
            users={APP_USER: APP_PASSWORD}, port=self.port, admin_port=self.admin_port, name="shard",
        )  # fmt: skip
        rows = ", ".join(f"({k}, '{name}')" for k, name in DEMO_USERS)
        self.psql("postgres", SCHEMA, f"INSERT INTO users (user_id, name) VALUES {rows}")

    def psql_command(self, database: str) -> str:
        """The command line a person types: psql through the router, logged in by the pgpass file."""
        return f"PGPASSFILE={self.pgpass} psql -h {HOST} -p {self.port} -U {APP_USER} {database}"

    def psql(self, database: str, *statements: str) -> str:
        """Run `statements` through the router as the demo's psql command does."""
        c0 = next(iter(self.clusters.values()))
        argv = [str(c0.bindir / "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(self.port),
                "-U", APP_USER, "-d", database, "-w"]  # fmt: skip
        for sql in statements:
            argv += ["-c", sql]
        env = {**os.environ, "PGPASSFILE": str(self.pgpass), "PGSSLMODE": "disable", "PGCONNECT_TIMEOUT": "10"}
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=PSQL_TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"psql through the shard router failed: {done.stderr.strip()}")
        return done.stdout

    def banner(self) -> list[str]:
        shards = ", ".join(f"{n} {c.primary.address}" for n, c in self.clusters.items() if c.primary is not None)
        psql = self.psql_command("postgres")
        console = self.psql_command("tierproxy")
        return [
            f"shard router: tierproxy shard on {HOST}:{self.port} (admin http://{HOST}:{self.admin_port}/status, "
            f"config {self.router.config_path if self.router else '-'})",
            f"  over 4 PostgreSQL shards ({shards}); table users (user_id bigint primary key, name text),",
            f"  {len(DEMO_USERS)} users spread by user_id % 4 (map \"modulo\"); psql logs in through a pgpass file:",
            f"  {psql}",
            f"  {psql} -c 'SELECT * FROM users WHERE user_id = 7'",
            f"  {psql} -c 'SELECT count(*), max(user_id) FROM users'",
            f"  {psql} -c \"INSERT INTO users (user_id, name) VALUES (13, 'alan')\"",
            f"  {console} -c 'SHOW SHARDS'",
            f"  {console} -c 'SHOW SHARD FOR 13'",
            f"  {console} -c 'SHOW HOT KEYS'",
        ]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self.router is not None:
            self.router.close()
        for c in self.clusters.values():
            c.close()
