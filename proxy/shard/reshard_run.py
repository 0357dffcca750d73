"""`tierproxy shard reshard --from OLD.toml --to NEW.toml`: move rows to the shards a new config
names, while the router keeps serving (docs/shard.md, "Resharding").

    tierproxy shard reshard --from OLD.toml --to NEW.toml --dry-run   # what would move
    tierproxy shard reshard --from OLD.toml --to NEW.toml             # move it

(the options are defined in proxy/cli.py, which loads this module only to run the command)

OLD is the config the running router routes by (its admin API is found at OLD's `admin.address`
unless `--router` says otherwise); NEW the one to switch to. Every decision is reshard.py's, the
SQL reshard_io.py's; this module runs the phases and prints progress:

1. **copy** (writes go on): for each table of each group and each (source, target) pair, the keys
   the source holds that NEW puts elsewhere are cut into key ranges; each range's (rows, md5) is
   computed on both sides and the ranges that differ are copied (COPY out of the source piped into
   COPY into the target, replacing the target's rows of those keys). Then a second pass catches
   up with what changed meanwhile.
2. **fence, catch up, verify, switch**: the router fences writes to moving keys (fence.py: held,
   then refused with 40001) and waits for work begun before; the same pass runs again (copies of
   keys deleted from the source meanwhile are removed from the target), the ranges copied again
   are verified once more, and every range must match on both sides. Then the router switches to
   NEW (writes NEW over its config file and reloads); held writes go on to the new shards. On any
   failure before the switch the fence is aborted and nothing has changed for clients.
3. **delete**: on every shard, the rows whose NEW shard is another one are deleted.

A rerun after a stop is safe: before the switch it starts again (copies are replaced range by
range, so it only redoes what differs); after it (the router already routes by NEW) it goes
straight to phase 3, deleting only keys whose new shard holds rows.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from proxy.core.config import AdminTlsConfig, ConfigError, load_config

from . import reshard_io as io
from .config import ShardConfig
from .maps import DedicatedMap, Key
from .reshard import (
    ReshardError,
    all_shard_addresses,
    check_compatible,
    dry_run,
    incoming,
    key_ranges,
    mismatched,
    outgoing,
    render_dry_run,
    routing_fingerprint,
    stale_rows,
)

__all__ = ["main"]

Out = Callable[[str], None]
FENCE_ATTEMPTS = 3
DELETE_BATCH = 1000  # keys per DELETE transaction in phase 3
PROGRESS_RANGES = 50  # a progress line every this many ranges copied within one pair


class Failed(Exception):
    """The reshard stopped; the message says where and what to do."""


def main(args: argparse.Namespace) -> int:
    out: Out = lambda line: print(line, flush=True)  # noqa: E731
    try:
        old = load_config(args.old, ShardConfig)
        new = load_config(args.new, ShardConfig)
        new_text = Path(args.new).read_text()
        check_compatible(old, new)
        if args.range_keys < 1:
            raise ReshardError("--range-keys must be at least 1")
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    except (ReshardError, OSError) as exc:
        print(f"reshard: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args, old, new, new_text, out))
    except Failed as exc:
        print(f"reshard: {exc}", file=sys.stderr)
        return 1


async def _main(args: argparse.Namespace, old: ShardConfig, new: ShardConfig, new_text: str, out: Out) -> int:
    shards = Shards(old, new, args.database)
    try:
        if args.dry_run:
            await _dry_run(shards, old, new, out)
            return 0
        router = RouterAdmin(args.router or old.admin.address, old.admin.token, old.admin.tls)
        try:
            return await Reshard(shards, router, old, new, new_text, args, out).run()
        finally:
            await router.close()
    finally:
        await shards.close()


class Shards:
    """One connection per shard of either config, opened on first use."""

    def __init__(self, old: ShardConfig, new: ShardConfig, database: str) -> None:
        self.addresses = all_shard_addresses(old, new)
        ba = old.backend_auth
        self.user = ba.user
        self.password = ba.password.get_secret_value() if ba.password is not None else None
        self.database = database
        self.conns: dict[str, asyncpg.Connection] = {}

    async def get(self, name: str) -> asyncpg.Connection:
        conn = self.conns.get(name)
        if conn is None or conn.is_closed():
            try:
                conn = await io.connect(self.addresses[name], self.user, self.password, self.database)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                raise Failed(f"cannot connect to shard {name} ({self.addresses[name]}): {exc}") from None
            self.conns[name] = conn
        return conn

    async def keys(self, name: str, table: str, key: str) -> dict[Key, int]:
        try:
            return await io.key_counts(await self.get(name), table, key)
        except asyncpg.UndefinedTableError:
            raise Failed(f"shard {name} has no table {table}: create the schema on every shard first") from None

    async def close(self) -> None:
        for conn in self.conns.values():
            await conn.close()


async def _dry_run(shards: Shards, old: ShardConfig, new: ShardConfig, out: Out) -> None:
    """Each group's keys and row counts, read from the shards OLD places them on."""
    key_rows: dict[str, dict[Key, int]] = {}
    old_maps = old.maps()
    misplaced = 0
    for gname, group in old.groups.items():
        counts = key_rows.setdefault(gname, {})
        for table in group.tables:
            for shard in old.shards:
                for k, n in (await shards.keys(shard, table, group.key)).items():
                    if old_maps[gname].shard_for(k) != shard:
                        misplaced += n  # a copy left by a stopped run: not what the router reads
                        continue
                    counts[k] = counts.get(k, 0) + n
    out(render_dry_run(dry_run(old, new, key_rows)))
    if misplaced:
        out(f"({misplaced} rows on shards OLD does not put them on were left out: copies of a stopped run)")


class RouterAdmin:
    """The running router's /reshard endpoints (fence.py)."""

    def __init__(self, address: str, token: str | None = None, tls: AdminTlsConfig | None = None) -> None:
        # OLD's [admin] says how to reach it: its token_file's token, and over TLS the router's own
        # certificate (cert_file) as the one trusted, so a self-signed one works and no other does.
        self.base = f"{'https' if tls else 'http'}://{address}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.ssl: ssl.SSLContext | bool = True
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(tls.cert_file)
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the trust anchor
            ctx.check_hostname = False  # pinned: the address (0.0.0.0, an IP) need not be a name in it
            self.ssl = ctx
        self.http: aiohttp.ClientSession | None = None

    async def call(self, method: str, path: str, body: Mapping[str, Any] | None = None,
                   timeout: float = 60.0) -> tuple[int, dict[str, Any]]:  # fmt: skip
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        try:
            async with self.http.request(method, self.base + path, json=body, headers=self.headers, ssl=self.ssl,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as resp:  # fmt: skip
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = {"error": (await resp.text())[:200]}
                return resp.status, data if isinstance(data, dict) else {"error": str(data)}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Failed(f"the router's admin API at {self.base} did not answer {method} {path}: {exc}") from None

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()


class Reshard:
    """One run of the real reshard (see the module docstring)."""

    def __init__(self, shards: Shards, router: RouterAdmin, old: ShardConfig, new: ShardConfig, new_text: str,
                 args: argparse.Namespace, out: Out) -> None:  # fmt: skip
        self.shards = shards
        self.router = router
        self.old, self.new, self.new_text = old, new, new_text
        self.args = args
        self.out = out
        self.old_maps = old.maps()
        self.new_maps = new.maps()
        self.names = list(shards.addresses)
        self.columns: dict[tuple[str, str], list[str]] = {}  # (shard, table) -> columns

    async def run(self) -> int:
        status, state = await self.router.call("GET", "/reshard")
        if status != 200:
            raise Failed(f"GET /reshard answered {status}: {state.get('error')} (is the router a tierproxy shard?)")
        if state["routing"] == routing_fingerprint(self.new):
            self.out("the router routes by NEW already: resuming at phase 3 (delete moved rows from old shards)")
            await self.delete_moved(resumed=True)
            return 0
        if state["routing"] != routing_fingerprint(self.old):
            raise Failed("the router routes by neither --from nor --to: give --from the router's running config")
        if state.get("fence"):
            raise Failed(f"a reshard fence is up on the router already ({state['fence'].get('id')}): another "
                         "reshard is running (or wait for its lease to run out)")
        started = time.monotonic()
        self.out("phase 1: copy the moving rows (writes go on)")
        await self.sync_all(final=False)
        self.out("phase 1: catch-up pass")
        await self.sync_all(final=False)
        t0 = time.monotonic()
        fence = await self.raise_fence()
        renew = asyncio.get_running_loop().create_task(self.renew(fence))
        switched = False
        try:
            self.out(f"phase 2: fence {fence} up: writes to moving keys are held; final catch-up and verify")
            await self.sync_all(final=True)
            status, body = await self.router.call("POST", "/reshard/switch",
                                                  {"fence": fence, "quiesce": self.args.quiesce},
                                                  timeout=self.args.quiesce + 30)  # fmt: skip
            if status != 200:
                raise Failed(f"the router refused the switch ({status}): {body.get('error')}")
            switched = True
            self.out(f"phase 2: switched: the router routes by NEW ({body['routing']}); writes were fenced "
                     f"{time.monotonic() - t0:.2f} s; old config kept as {body.get('backup')}")
            if body.get("pending"):
                self.out(f"  ({body['pending']} sessions still ran statements planned with OLD after "
                         f"{self.args.quiesce:g} s)")
        finally:
            renew.cancel()
            if not switched:
                await self._abort(fence)
        await self.delete_moved(resumed=False)
        self.out(f"done in {time.monotonic() - started:.1f} s")
        return 0

    async def raise_fence(self) -> str:
        body = {"config": self.new_text, "expect": routing_fingerprint(self.old), "hold": self.args.hold,
                "lease": self.args.lease, "quiesce": self.args.quiesce}
        for attempt in range(1, FENCE_ATTEMPTS + 1):
            status, answer = await self.router.call("POST", "/reshard/fence", body, timeout=self.args.quiesce + 30)
            if status == 200:
                return str(answer["fence"])
            if status != 503 or attempt == FENCE_ATTEMPTS:
                raise Failed(f"the router refused the fence ({status}): {answer.get('error')}; nothing was "
                             "switched: run the command again")
            self.out(f"phase 2: {answer.get('error')} (attempt {attempt} of {FENCE_ATTEMPTS})")
            await self.sync_all(final=False)
        raise AssertionError("unreachable")

    async def renew(self, fence: str) -> None:
        while True:
            await asyncio.sleep(self.args.lease / 3)
            status, answer = await self.router.call("POST", "/reshard/renew", {"fence": fence})
            if status != 200:
                self.out(f"phase 2: the fence could not be renewed ({status}): {answer.get('error')}")
                return

    async def _abort(self, fence: str) -> None:
        try:
            status, _ = await self.router.call("POST", "/reshard/abort", {"fence": fence}, timeout=10)
        except Failed as exc:
            self.out(f"could not abort the fence ({exc}); it ends by itself after its lease")
            return
        if status == 200:
            self.out("fence aborted: the router goes on with OLD; nothing was deleted. Run the command again.")

    # -- copying and verifying --------------------------------------------------------------------

    async def table_columns(self, shard: str, table: str) -> list[str]:
        cols = self.columns.get((shard, table))
        if cols is None:
            cols = self.columns[(shard, table)] = await io.table_columns(await self.shards.get(shard), table)
        return cols

    async def sync_all(self, *, final: bool) -> None:
        for gname, group in self.old.groups.items():
            old_m, new_m = self.old_maps[gname], self.new_maps[gname]
            if old_m == new_m:
                continue
            for table in group.tables:
                keys_on = {name: await self.shards.keys(name, table, group.key) for name in self.names}
                for src in self.names:
                    moving = outgoing(src, keys_on[src], old_m, new_m)
                    for dst in self.names:
                        if dst != src and (dst in moving or incoming(dst, src, keys_on[dst], old_m, new_m)):
                            await self.sync_pair(gname, table, src, dst, moving.get(dst, []), keys_on, final=final)

    async def sync_pair(self, gname: str, table: str, src: str, dst: str, keys: list[Key],
                        keys_on: Mapping[str, Mapping[Key, int]], *, final: bool) -> None:  # fmt: skip
        group = self.old.groups[gname]
        old_m, new_m = self.old_maps[gname], self.new_maps[gname]
        s, d = await self.shards.get(src), await self.shards.get(dst)
        gone = sorted(incoming(dst, src, keys_on[dst], old_m, new_m) - set(keys))  # type: ignore[type-var]
        removed = 0
        for i in range(0, len(gone), DELETE_BATCH):
            removed += await io.delete_keys(d, table, group.key, group.key_type, gone[i : i + DELETE_BATCH])
        ranges = key_ranges(keys, self.args.range_keys)
        cols = await self.table_columns(src, table)
        src_d, dst_d = await asyncio.gather(io.digests(s, table, group.key, group.key_type, ranges),
                                            io.digests(d, table, group.key, group.key_type, ranges))  # fmt: skip
        bad = mismatched(ranges, src_d, dst_d)
        copied = 0
        for i, r in enumerate(bad, 1):
            copied += await io.copy_keys(s, d, table, group.key, group.key_type, cols, r.keys)
            if i % PROGRESS_RANGES == 0 and i < len(bad):
                self.out(f"  {table}: {src} -> {dst}: {i} of {len(bad)} ranges copied ({copied} rows)")
        line = (f"  {table}: {src} -> {dst}: {len(keys)} keys, {sum(n for n, _ in src_d.values())} rows in "
                f"{len(ranges)} ranges; copied {len(bad)} ranges ({copied} rows)")
        if gone:
            line += f"; removed {removed} rows of {len(gone)} keys gone from {src}"
        if final:
            again = [r for r in ranges if r in bad]
            src_d, dst_d = await asyncio.gather(io.digests(s, table, group.key, group.key_type, again),
                                                io.digests(d, table, group.key, group.key_type, again))  # fmt: skip
            still = mismatched(again, src_d, dst_d)
            if still:
                r = still[0]
                raise Failed(f"{table}: {src} -> {dst}: keys {r.first!r}..{r.last!r} still differ after copying "
                             f"them under the fence ({len(still)} ranges)")
            line += f"; verified {len(ranges)} ranges (rows and md5 equal on both shards)"
        self.out(line)

    # -- phase 3 ------------------------------------------------------------------------------------

    async def delete_moved(self, *, resumed: bool) -> None:
        """Delete, on every shard, the rows NEW puts on another shard. Resumed (this run did not
        verify the copies): only keys whose NEW shard holds rows of them."""
        self.out("phase 3: delete the moved rows from their old shards")
        total = kept = 0
        for gname, group in self.new.groups.items():
            new_m: DedicatedMap = self.new_maps[gname]
            for table in reversed(group.tables):  # children before parents (copied parents first)
                keys_on = {name: await self.shards.keys(name, table, group.key) for name in self.names}
                for shard in self.names:
                    stale = stale_rows(shard, keys_on[shard], new_m)
                    if resumed:
                        held = [k for k in stale if keys_on.get(new_m.shard_for(k), {}).get(k)]
                        kept += len(stale) - len(held)
                        stale = held
                    if not stale:
                        continue
                    conn = await self.shards.get(shard)
                    deleted = 0
                    for i in range(0, len(stale), DELETE_BATCH):
                        deleted += await io.delete_keys(conn, table, group.key, group.key_type,
                                                        stale[i : i + DELETE_BATCH])  # fmt: skip
                    total += deleted
                    self.out(f"  {table}: {shard}: deleted {deleted} rows of {len(stale)} keys")
        self.out(f"phase 3: {total} rows deleted")
        if kept:
            self.out(f"phase 3: kept {kept} keys whose new shard holds no rows of them (check them by hand)")
