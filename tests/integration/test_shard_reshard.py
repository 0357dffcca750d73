"""`tierproxy shard reshard` end to end: five real PostgreSQL shards, 4 -> 5, a router serving.

The table group `users` holds `users (user_id bigint primary key, name text)` and `orders
(user_id, order_id, amount)` (0-2 orders per user, so rows and keys differ). Rows are loaded
directly on the shard the OLD map names, and every expectation is computed here, not by the code
under test: `modulo` is `key % N`; `consistent` is rebuilt from the ring primitive
(proxy.core.hashing.HashRing, 160 points per shard, the key's 8 bytes big-endian) that the map is
documented to use. After a real run every row is checked directly on the shards.

The real runs happen while a client keeps writing through the router (inserts of new keys,
updates, order inserts, deletes), retrying on 40001, the reshard's documented SQLSTATE, with a
ledger of acknowledged writes; and a transaction that wrote a moving key before the fence commits
while the fence is up, with a write to a moving key held meanwhile: both must end on the new shard.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from proxy.core.hashing import HashRing
from proxy.devstack.postgres import PgCluster, start_pg_cluster
from proxy.devstack.process import python_child_env
from proxy.devstack.shard import ShardRouterServer, shard_config, start_shard_router

ALL = ("s0", "s1", "s2", "s3", "s4")
OLD_SHARDS = ALL[:4]
KEYS = range(1, 2001)
DELETED = range(1801, 1901)  # the writer deletes these users one by one
DEADLINE = 120.0


ACCOUNTS = [f"acct-{i}-é" for i in range(300)]  # a text-keyed group, always `consistent`


def groups_toml(kind: str, shards: tuple[str, ...]) -> str:
    names = ", ".join(f'"{s}"' for s in shards)
    return f"""
[groups.users]
tables = ["users", "orders"]
key = "user_id"
key_type = "integer"
map = "{kind}"
shards = [{names}]

[groups.accounts]
tables = ["accounts"]
key = "name"
key_type = "text"
map = "consistent"
shards = [{names}]
"""


def text_placement(shards: tuple[str, ...]) -> Callable[[str], str]:
    ring = HashRing([(s, 1) for s in shards], vnodes_per_weight=160)
    return lambda k: ring.lookup(k.encode("utf-8"))


def placement(kind: str, shards: tuple[str, ...]) -> Callable[[int], str]:
    if kind == "modulo":
        return lambda k: shards[k % len(shards)]
    ring = HashRing([(s, 1) for s in shards], vnodes_per_weight=160)
    return lambda k: ring.lookup(k.to_bytes(8, "big", signed=True))


def initial_orders(k: int) -> list[tuple[int, int, int]]:
    return [(k, j, k * 10 + j) for j in range(k % 3)]


class Shards:
    def __init__(self, clusters: list[PgCluster]) -> None:
        self.clusters = clusters
        self.conns = {n: psycopg.connect(c.primary.dsn, autocommit=True) for n, c in zip(ALL, clusters, strict=True)}

    def managed_processes(self) -> list:
        return [p for c in self.clusters for p in c.managed_processes()]

    def reset(self) -> None:
        for c in self.conns.values():
            c.execute("drop table if exists users, orders, accounts")
            c.execute("create table users (user_id bigint primary key, name text)")
            c.execute("create table orders (user_id bigint, order_id int, amount int, primary key (user_id, order_id))")
            c.execute("create table accounts (name text primary key, balance numeric, opened timestamptz)")

    def load(self, where: Callable[[int], str]) -> None:
        users: dict[str, list[tuple[int, str]]] = {}
        orders: dict[str, list[tuple[int, int, int]]] = {}
        for k in KEYS:
            users.setdefault(where(k), []).append((k, f"n{k}"))
            orders.setdefault(where(k), []).extend(initial_orders(k))
        for name, rows in users.items():
            with self.conns[name].cursor().copy("COPY users (user_id, name) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
        for name, rows in orders.items():
            with self.conns[name].cursor().copy("COPY orders (user_id, order_id, amount) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
        old_text = text_placement(OLD_SHARDS)
        for i, a in enumerate(ACCOUNTS):
            self.conns[old_text(a)].execute("insert into accounts values (%s, %s, '2026-12-05 10:00+01'::timestamptz "
                                            "+ %s * interval '1 minute')", (a, f"{i}.{i:02d}", i))

    def rows(self, table: str) -> dict[str, list[tuple]]:
        return {n: c.execute(f"select * from {table}").fetchall() for n, c in self.conns.items()}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shards]:
    clusters: list[PgCluster] = []
    try:
        for name in ALL:
            clusters.append(start_pg_cluster(0, log_dir=tmp_path_factory.mktemp(f"reshard_{name}"), name=name))
        s = Shards(clusters)
        yield s
        for c in s.conns.values():
            c.close()
    finally:
        for c in clusters:
            c.close()


def _servers(shards: Shards, names: tuple[str, ...]) -> dict:
    return {n: c.primary for n, c in zip(ALL, shards.clusters, strict=True) if n in names}


def _configs(shards: Shards, tmp_path: Path, kind: str, port: int = 1, admin_port: int = 2,
             head: str = "") -> tuple[Path, Path]:  # fmt: skip
    c0 = shards.clusters[0]
    common = {"port": port, "admin_port": admin_port, "users": {"app": "app-secret"},
              "backend_user": c0.user, "backend_password": c0.password, "head": head}
    old = tmp_path / "old.toml"
    new = tmp_path / "new.toml"
    old.write_text(shard_config(_servers(shards, OLD_SHARDS), groups=groups_toml(kind, OLD_SHARDS), **common))
    new.write_text(shard_config(_servers(shards, ALL), groups=groups_toml(kind, ALL), **common))
    return old, new


def _reshard(old: Path, new: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "proxy.cli", "shard", "reshard", "--from", str(old), "--to", str(new), *extra]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=python_child_env())


def _dry_run_pairs(output: str) -> dict[tuple[str, str], tuple[int, int]]:
    out = {}
    for line in output.splitlines():
        f = line.split()
        if len(f) == 5 and f[0] == "users" and f[1] in ALL and f[2] in ALL:
            out[(f[1], f[2])] = (int(f[3]), int(f[4]))
    return out


@pytest.mark.parametrize("kind", ["modulo", "consistent"])
def test_dry_run_reports_what_moves(shards: Shards, tmp_path: Path, kind: str) -> None:
    shards.reset()
    old_at, new_at = placement(kind, OLD_SHARDS), placement(kind, ALL)
    shards.load(old_at)
    want: Counter[tuple[str, str]] = Counter()
    want_rows: Counter[tuple[str, str]] = Counter()
    for k in KEYS:
        if old_at(k) != new_at(k):
            want[(old_at(k), new_at(k))] += 1
            want_rows[(old_at(k), new_at(k))] += 1 + len(initial_orders(k))
    old, new = _configs(shards, tmp_path, kind)
    proc = _reshard(old, new, "--dry-run")
    output, _ = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, output
    got = _dry_run_pairs(output)
    assert got == {pair: (want[pair], want_rows[pair]) for pair in want}, output
    total_rows = sum(1 + len(initial_orders(k)) for k in KEYS)
    share = sum(want_rows.values()) / total_rows
    if kind == "consistent":
        assert {dst for _, dst in got} == {"s4"}  # only to the new shard
        assert 0.12 < share < 0.28, share  # about 1/5
    else:
        assert share > 0.7, share  # 4 -> 5 by modulo: 80% of the keys
    stay = [line for line in output.splitlines() if "(stay)" in line]
    assert stay and int(stay[0].split()[2]) == len(KEYS) - sum(want.values())
    # nothing changed on the shards
    assert sum(len(r) for r in shards.rows("users").values()) == len(KEYS)
    assert shards.rows("users")["s4"] == []


class Writer(threading.Thread):
    """Writes through the router until told to stop, retrying 40001; a ledger of what was acknowledged."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.stop = threading.Event()
        self.users: dict[int, str] = {k: f"n{k}" for k in KEYS}
        self.orders: set[tuple[int, int, int]] = {o for k in KEYS for o in initial_orders(k)}
        self.acked = 0
        self.retries = 0
        self.error: BaseException | None = None

    def _do(self, conn: psycopg.Connection, sql: str, params: tuple) -> None:
        for _ in range(1000):
            try:
                conn.execute(sql, params)
                self.acked += 1
                return
            except psycopg.errors.SerializationFailure:
                self.retries += 1
        raise AssertionError(f"still refused after 1000 tries: {sql} {params}")

    def run(self) -> None:
        rng = random.Random(14)
        deletes = list(DELETED)
        updatable = [k for k in KEYS if k not in DELETED]
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                i = 0
                while not self.stop.is_set():
                    i += 1
                    k = 100_000 + i
                    self._do(conn, "INSERT INTO users (user_id, name) VALUES (%s, %s)", (k, f"w{i}"))
                    self.users[k] = f"w{i}"
                    u = rng.choice(updatable)
                    self._do(conn, "UPDATE users SET name = %s WHERE user_id = %s", (f"u{i}", u))
                    self.users[u] = f"u{i}"
                    o = (u, 1000 + i, i)
                    self._do(conn, "INSERT INTO orders (user_id, order_id, amount) VALUES (%s, %s, %s)", o)
                    self.orders.add(o)
                    if deletes and i % 3 == 0:
                        d = deletes.pop()
                        self._do(conn, "DELETE FROM users WHERE user_id = %s", (d,))
                        self.users.pop(d)
        except BaseException as exc:  # reported by the test
            self.error = exc


def _reshard_state(router: ShardRouterServer) -> dict:
    return json.loads(router.admin_get("/reshard"))


def _poll(what: str, check: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _check_rows(shards: Shards, new_at: Callable[[int], str], writer: Writer) -> None:
    """Every acknowledged row exactly once, on the shard NEW names (read directly on the shards)."""
    new_text = text_placement(ALL)
    accounts = shards.rows("accounts")
    for shard, rows in accounts.items():
        for r in rows:
            assert new_text(r[0]) == shard, (r, shard)
    assert sorted(r[0] for rows in accounts.values() for r in rows) == sorted(ACCOUNTS)
    users = shards.rows("users")
    for shard, rows in users.items():
        for k, _ in rows:
            assert new_at(k) == shard, (k, shard)
    got_users = Counter(r for rows in users.values() for r in rows)
    assert all(n == 1 for n in got_users.values()), [r for r, n in got_users.items() if n > 1][:5]
    assert dict(got_users) == {(k, v): 1 for k, v in writer.users.items()}
    orders = shards.rows("orders")
    for shard, rows in orders.items():
        for r in rows:
            assert new_at(r[0]) == shard, (r, shard)
    got_orders = Counter(r for rows in orders.values() for r in rows)
    assert dict(got_orders) == {o: 1 for o in writer.orders}


def _start_router(shards: Shards, tmp_path: Path, kind: str, head: str) -> ShardRouterServer:
    c0 = shards.clusters[0]
    return start_shard_router(_servers(shards, OLD_SHARDS), log_dir=tmp_path, backend_user=c0.user,
                              backend_password=c0.password, groups=groups_toml(kind, OLD_SHARDS),
                              head=head)  # fmt: skip


class Command:
    """`tierproxy shard reshard` running, its output collected."""

    def __init__(self, old: Path, new: Path, *extra: str) -> None:
        self.proc = _reshard(old, new, *extra)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)  # type: ignore[arg-type]
        self.reader.start()

    def wait(self) -> tuple[int, str]:
        rc = self.proc.wait(timeout=DEADLINE)
        self.reader.join(DEADLINE)
        return rc, "".join(self.lines)


def _in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def _insert(dsn: str, key: int, name: str, *, retry: bool) -> str:
    with psycopg.connect(dsn, autocommit=True) as c:
        while True:
            try:
                c.execute(f"INSERT INTO users (user_id, name) VALUES ({key}, '{name}')")
                return "ok"
            except psycopg.errors.SerializationFailure as exc:
                if not retry:
                    return f"40001: {exc}"


# ("modulo", 1) is marked slow (`-m slow`): the longest run (most rows move), and its two halves
# run by default: the modulo map under a client's writes in ("modulo", 2), a one-worker router's
# fence, hold and switch in ("consistent", 1).
@pytest.mark.parametrize(("kind", "workers"), [pytest.param("modulo", 1, marks=pytest.mark.slow), ("consistent", 1),
                                               ("modulo", 2)])  # fmt: skip
def test_reshard_moves_every_row_while_a_client_writes(shards: Shards, tmp_path: Path, kind: str,
                                                       workers: int) -> None:  # fmt: skip
    """With `workers = 2` the supervisor relays the fence and the switch to both workers."""
    shards.reset()
    old_at, new_at = placement(kind, OLD_SHARDS), placement(kind, ALL)
    shards.load(old_at)
    head = f"workers = {workers}" if workers > 1 else ""
    router = _start_router(shards, tmp_path, kind, head)
    try:
        old, new = _configs(shards, tmp_path, kind, router.port, router.admin_port, head)
        assert old.read_text() == router.config_path.read_text()
        moving = [k for k in range(200_000, 300_000) if old_at(k) != new_at(k)]
        tx_key, refused_key, held_key, txn_key = moving[:4]
        writer = Writer(router.dsn())
        writer.start()
        tx = psycopg.connect(router.dsn())  # a transaction open across the fence
        tx.execute("INSERT INTO users (user_id, name) VALUES (%s, 'tx')", (tx_key,))
        cmd = Command(old, new, "--range-keys", "100", "--hold", "2", "--quiesce", "90", "--lease", "60")
        _poll("the fence", lambda: _reshard_state(router)["fence"] is not None or cmd.proc.poll() is not None)
        assert _reshard_state(router)["fence"] is not None, "".join(cmd.lines)
        acked_before_fence = writer.acked
        # The fence stays up until `tx` commits. A write to a moving key is held --hold seconds,
        # then refused with 40001; in a transaction it is refused at once.
        t, refused = _in_thread(lambda: _insert(router.dsn(), refused_key, "refused", retry=False))
        t.join(DEADLINE)
        assert len(refused) == 1 and str(refused[0]).startswith("40001: shard key"), refused
        with psycopg.connect(router.dsn()) as other:
            other.execute("SELECT name FROM users WHERE user_id = %s", (tx_key + 1,))  # reads go on
            with pytest.raises(psycopg.errors.SerializationFailure, match="is moving"):
                other.execute("INSERT INTO users (user_id, name) VALUES (%s, 'txn')", (txn_key,))
            other.rollback()
        before = _reshard_state(router)["held_total"]
        held, held_result = _in_thread(lambda: _insert(router.dsn(), held_key, "held", retry=True))
        _poll("a held write", lambda: _reshard_state(router)["held_total"] > before)
        tx.commit()  # the fence was waiting for this transaction
        tx.close()
        rc, output = cmd.wait()
        print(output)
        assert rc == 0, output
        held.join(DEADLINE)
        assert held_result == ["ok"]
        writer.stop.set()
        writer.join(DEADLINE)
        assert writer.error is None, writer.error
        assert "verified" in output and "switched" in output, output
        assert acked_before_fence > 0 and writer.acked > acked_before_fence  # writes went on during the move
        state = _reshard_state(router)
        assert state["fence"] is None and state["switches"] == 1 and state["refused_total"] >= 2
        metrics = {line.split()[0]: float(line.split()[1]) for line in router.admin_get("/metrics").decode().splitlines()
                   if line.startswith("tierproxy_shard_reshard_")}
        assert metrics["tierproxy_shard_reshard_refused_total"] == state["refused_total"] >= 2, metrics
        assert metrics["tierproxy_shard_reshard_held_total"] >= 1 and metrics["tierproxy_shard_reshard_fenced"] == 0
        assert router.config_path.read_text() == new.read_text()  # a restart keeps the new map

        writer.users[tx_key] = "tx"
        writer.users[held_key] = "held"
        _check_rows(shards, new_at, writer)
        moved = sum(1 for k in KEYS if old_at(k) != new_at(k))
        print(f"{kind}: {moved} of {len(KEYS)} initial keys moved; writer: {writer.acked} writes acknowledged, "
              f"{writer.retries} retries on 40001; router: {state}")
        with psycopg.connect(router.dsn(), autocommit=True) as c:  # reads find moved rows on their new shard
            for k in (tx_key, held_key, refused_key, *[k for k in KEYS if old_at(k) != new_at(k)][:20]):
                want = writer.users.get(k)
                got = c.execute("SELECT name FROM users WHERE user_id = %s", (k,)).fetchall()
                assert got == ([(want,)] if want is not None else []), k
        # Run again: the router routes by NEW, so only phase 3 runs, with nothing left to delete.
        rc, output = Command(old, new).wait()
        assert rc == 0 and "resuming at phase 3" in output and "0 rows deleted" in output, output
    finally:
        router.close()


def test_a_stopped_reshard_lets_go_and_a_rerun_finishes(shards: Shards, tmp_path: Path) -> None:
    """The command is killed with the fence up: the fence ends with its lease, writes go on to the
    old shards, and running the command again moves everything."""
    kind = "modulo"
    shards.reset()
    old_at, new_at = placement(kind, OLD_SHARDS), placement(kind, ALL)
    shards.load(old_at)
    router = _start_router(shards, tmp_path, kind, "")
    try:
        old, new = _configs(shards, tmp_path, kind, router.port, router.admin_port)
        tx_key, held_key = [k for k in range(200_000, 300_000) if old_at(k) != new_at(k)][:2]
        writer = Writer(router.dsn())
        writer.start()
        tx = psycopg.connect(router.dsn())
        tx.execute("INSERT INTO users (user_id, name) VALUES (%s, 'tx')", (tx_key,))
        cmd = Command(old, new, "--hold", "60", "--quiesce", "90", "--lease", "3")
        _poll("the fence", lambda: _reshard_state(router)["fence"] is not None or cmd.proc.poll() is not None)
        held, held_result = _in_thread(lambda: _insert(router.dsn(), held_key, "held", retry=True))
        _poll("a held write", lambda: (_reshard_state(router)["fence"] or {}).get("held", 0) >= 1)
        cmd.proc.kill()  # before the switch: nothing was switched or deleted
        cmd.wait()
        _poll("the lease to run out", lambda: _reshard_state(router)["fence"] is None)
        held.join(DEADLINE)
        assert held_result == ["ok"]
        assert [n for n, c in shards.conns.items()
                if c.execute("select 1 from users where user_id = %s", (held_key,)).fetchone()] == [old_at(held_key)]
        tx.commit()
        tx.close()
        assert router.config_path.read_text() == old.read_text()
        rc, output = Command(old, new, "--range-keys", "3").wait()  # many small ranges
        assert rc == 0, output
        writer.stop.set()
        writer.join(DEADLINE)
        assert writer.error is None, writer.error
        writer.users[tx_key] = "tx"
        writer.users[held_key] = "held"
        _check_rows(shards, new_at, writer)
    finally:
        router.close()
