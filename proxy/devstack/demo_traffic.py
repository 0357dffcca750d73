"""`tierproxy demo --traffic`: a steady mixed load over every tier, so that the status pages and
dashboards move while a person kills a web worker, a replica or the primary.

Streams, each at its own steady rate (a failed request is counted and the stream goes on; a lost
database connection is opened again on the next tick):

* HTTP through the east balancer: GET /whoami; GET /db (a read through the dbproxy); POST /notes
  (a write through the dbproxy that also enqueues a `notes` job for the queue worker);
* HTTP through the cdn: the static site's page and assets, and a miss now and then;
* SQL through the dbproxy (asyncpg: reads, and a write to `notes`) and the shard router (keyed
  reads of `users`, and a scatter count now and then);
* DNS queries for www.demo.test to geodns from the east and west client addresses.

Every 10 s it prints one line of tallies per stream (ok, errors, the last error), which shows a
failover from the clients' side. Run by the demo as a child process, or by hand:

    python -m proxy.devstack.demo_traffic --lb http://127.0.0.1:8080 --dns 127.0.0.1:5353 ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Targets", "Tally", "main", "run_traffic", "traffic_argv"]

REPORT_EVERY = 10.0


@dataclass(frozen=True)
class Targets:
    lb: str | None = None  # http://host:port of the balancer
    notes: bool = False  # the workers behind it have /db and /notes (a database and a queue)
    cdn: str | None = None  # http://host:port of the cdn
    cdn_paths: tuple[str, ...] = ("/static/index.html",)
    dns: tuple[str, int] | None = None
    dns_name: str = "www.demo.test"
    dns_sources: tuple[str, ...] = ("127.0.0.2", "127.0.0.3")
    dbproxy: str | None = None  # a DSN
    shard: str | None = None  # a DSN; a table keyed by user_id
    shard_table: str = "users"
    shard_keys: int = 12


def traffic_argv(t: Targets, rate: float = 1.0, duration: float | None = None) -> list[str]:
    """The command line that runs `t` (the demo starts it as a child process)."""
    argv = [sys.executable, "-m", "proxy.devstack.demo_traffic", "--rate", str(rate)]
    if t.lb:
        argv += ["--lb", t.lb] + (["--notes"] if t.notes else [])
    if t.cdn:
        argv += ["--cdn", t.cdn, "--cdn-paths", ",".join(t.cdn_paths)]
    if t.dns:
        argv += ["--dns", f"{t.dns[0]}:{t.dns[1]}", "--dns-name", t.dns_name, "--dns-sources", ",".join(t.dns_sources)]
    if t.dbproxy:
        argv += ["--dbproxy", t.dbproxy]
    if t.shard:
        argv += ["--shard", t.shard, "--shard-table", t.shard_table]
    if duration is not None:
        argv += ["--duration", str(duration)]
    return argv


@dataclass
class Tally:
    ok: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    last_error: dict[str, str] = field(default_factory=dict)

    def good(self, stream: str) -> None:
        self.ok[stream] = self.ok.get(stream, 0) + 1

    def bad(self, stream: str, exc: BaseException) -> None:
        self.errors[stream] = self.errors.get(stream, 0) + 1
        self.last_error[stream] = f"{type(exc).__name__}: {exc}"[:120]

    def lines(self) -> list[str]:
        out = []
        for stream in sorted(set(self.ok) | set(self.errors)):
            err = self.errors.get(stream, 0)
            last = f" (last: {self.last_error[stream]})" if err else ""
            out.append(f"  {stream:<14} {self.ok.get(stream, 0):>7} ok {err:>6} errors{last}")
        return out


async def _steady(stream: str, per_second: float, fn: Callable[[int], Awaitable[Any]], tally: Tally,
                  stop: asyncio.Event) -> None:  # fmt: skip
    """Call `fn(i)` `per_second` times a second (ticks on a fixed schedule; a slow call delays
    only its own stream)."""
    period = 1.0 / per_second
    start = time.monotonic()
    for i in itertools.count():
        if stop.is_set():
            return
        try:
            await asyncio.wait_for(fn(i), 10.0)
            tally.good(stream)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # counted: the point is to see failures from the clients' side
            tally.bad(stream, exc)
        delay = start + (i + 1) * period - time.monotonic()
        if delay < 0:  # fell behind (a hang): start the schedule again from now
            start, delay = time.monotonic() - (i + 1) * period, 0
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


class _Pg:
    """One asyncpg connection, opened again after it is lost."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: Any = None

    async def fetch(self, sql: str, *args: Any) -> Any:
        import asyncpg

        if self.conn is None or self.conn.is_closed():
            self.conn = await asyncpg.connect(self.dsn, timeout=5, ssl=False)
        try:
            return await self.conn.fetch(sql, *args)
        except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError):
            with contextlib.suppress(Exception):
                self.conn.terminate()
            self.conn = None
            raise

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close(timeout=2)


async def run_traffic(t: Targets, rate: float = 1.0, duration: float | None = None,
                      report: Callable[[str], None] = print) -> Tally:  # fmt: skip
    """Drive the load until `duration` seconds pass (or forever); `rate` scales every stream."""
    import aiohttp

    tally = Tally()
    stop = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=8)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        streams: list[tuple[str, float, Callable[[int], Awaitable[Any]]]] = []

        async def get(url: str) -> None:
            async with http.get(url) as resp:
                await resp.read()
                if resp.status >= 500:
                    raise RuntimeError(f"HTTP {resp.status} from {url}")

        if t.lb:
            lb = t.lb
            streams.append(("lb /whoami", 8, lambda i: get(f"{lb}/whoami")))
            if t.notes:
                streams.append(("lb /db", 2, lambda i: get(f"{lb}/db")))

                async def note(i: int) -> None:
                    async with http.post(f"{lb}/notes", data=f"traffic note {i}".encode()) as resp:
                        await resp.read()
                        if resp.status != 201:
                            raise RuntimeError(f"HTTP {resp.status} from POST /notes")

                streams.append(("lb POST /notes", 1, note))
        if t.cdn:
            cdn, paths = t.cdn, t.cdn_paths
            streams.append(("cdn", 5, lambda i: get(f"{cdn}{paths[i % len(paths)]}" if i % 10 else f"{cdn}/whoami?t={i}")))
        pgs: list[_Pg] = []
        if t.dbproxy:
            db = _Pg(t.dbproxy)
            pgs.append(db)

            async def sql(i: int) -> None:
                if i % 5 == 4 and t.notes:
                    await db.fetch("INSERT INTO notes (body, worker) VALUES ($1, 'traffic') RETURNING id", f"sql {i}")
                else:
                    await db.fetch("SELECT count(*) FROM pg_class WHERE relpages >= $1", i % 3)

            streams.append(("dbproxy sql", 5, sql))
        if t.shard:
            sh = _Pg(t.shard)
            pgs.append(sh)

            async def shard(i: int) -> None:
                if i % 10 == 9:
                    await sh.fetch(f"SELECT count(*) FROM {t.shard_table}")  # a scatter over every shard
                else:
                    await sh.fetch(f"SELECT * FROM {t.shard_table} WHERE user_id = $1", i % t.shard_keys + 1)

            streams.append(("shard sql", 5, shard))
        if t.dns:
            import dns.asyncquery
            import dns.message

            host, port = t.dns

            async def query(i: int) -> None:
                q = dns.message.make_query(t.dns_name, "A")
                src = t.dns_sources[i % len(t.dns_sources)] if t.dns_sources else None
                await dns.asyncquery.udp(q, host, port=port, timeout=2, source=src)

            streams.append(("geodns", 5, query))

        async def reporter() -> None:
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), REPORT_EVERY)
                report(time.strftime("traffic %H:%M:%S (totals since start):"))
                for line in tally.lines():
                    report(line)

        tasks = [asyncio.create_task(_steady(name, n * rate, fn, tally, stop)) for name, n, fn in streams]
        tasks.append(asyncio.create_task(reporter()))
        try:
            if duration is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(duration)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for pg in pgs:
                await pg.close()
    return tally


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m proxy.devstack.demo_traffic", description=__doc__.split("\n")[0])
    p.add_argument("--lb")
    p.add_argument("--notes", action="store_true", help="the workers have /db and /notes")
    p.add_argument("--cdn")
    p.add_argument("--cdn-paths", default="/static/index.html")
    p.add_argument("--dns", help="host:port of geodns")
    p.add_argument("--dns-name", default="www.demo.test")
    p.add_argument("--dns-sources", default="127.0.0.2,127.0.0.3")
    p.add_argument("--dbproxy", help="DSN")
    p.add_argument("--shard", help="DSN")
    p.add_argument("--shard-table", default="users", help="its table keyed by user_id")
    p.add_argument("--rate", type=float, default=1.0, help="scale every stream's rate")
    p.add_argument("--duration", type=float, help="seconds (default: until stopped)")
    a = p.parse_args(argv)
    dns_target = None
    if a.dns:
        host, _, port = a.dns.rpartition(":")
        dns_target = (host, int(port))
    t = Targets(lb=a.lb, notes=a.notes, cdn=a.cdn, cdn_paths=tuple(a.cdn_paths.split(",")), dns=dns_target,
                dns_name=a.dns_name, dns_sources=tuple(s for s in a.dns_sources.split(",") if s),
                dbproxy=a.dbproxy, shard=a.shard, shard_table=a.shard_table)  # fmt: skip
    try:
        asyncio.run(run_traffic(t, a.rate, a.duration, report=lambda line: print(line, flush=True)))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
