"""The reshard dry run: 4 -> 5 shards moves ~1/5 of the rows with `consistent`, most with `modulo`."""

from __future__ import annotations

import pytest

from proxy.core.config import parse_config
from proxy.shard.config import ShardConfig
from proxy.shard.reshard import ReshardError, dry_run, render_dry_run


def _cfg(n: int, kind: str, key: str = "user_id", dedicated: dict[str, str] | None = None) -> ShardConfig:
    shards = {f"s{i}": {"address": f"127.0.0.1:{5440 + i}"} for i in range(5)}
    group = {"tables": ["users"], "key": key, "map": kind, "shards": [f"s{i}" for i in range(n)],
             "dedicated": dedicated or {}}
    return parse_config({"shards": shards, "groups": {"users": group},
                         "backend_auth": {"user": "t"}, "auth": {"method": "trust"}}, ShardConfig)


ROWS = {"users": {k: 1 + k % 3 for k in range(20_000)}}  # 1-3 rows per key: 40,000 rows


def test_consistent_four_to_five_moves_about_a_fifth() -> None:
    (g,) = dry_run(_cfg(4, "consistent"), _cfg(5, "consistent"), ROWS)
    assert g.keys_total == 20_000 and g.rows_total == sum(ROWS["users"].values())
    assert all(dst == "s4" for _, dst in g.moves)
    assert 0.13 < g.rows_moving / g.rows_total < 0.27


def test_modulo_four_to_five_moves_most() -> None:
    (g,) = dry_run(_cfg(4, "modulo"), _cfg(5, "modulo"), ROWS)
    assert g.keys_moving == 16_000  # only keys with k % 20 in 0..3 stay
    # keys k % 4 == 0 and k % 5 == 1: 1000 of them (k = 16, 36, ... mod 20 == 16)
    assert g.moves[("s0", "s1")][0] == 1000
    text = render_dry_run([g])
    assert "80.0% of" in text.splitlines()[-1]


def test_a_dedicated_entry_moves_one_key() -> None:
    old = _cfg(4, "hash")
    new = _cfg(4, "hash", dedicated={"42": "s4"})
    (g,) = dry_run(old, new, {"users": {42: 7, 43: 1}})
    assert g.moves == {(old.maps()["users"].shard_for(42), "s4"): (1, 7)}


def test_incompatible_configs_are_refused() -> None:
    with pytest.raises(ReshardError, match="the key changes"):
        dry_run(_cfg(4, "hash"), _cfg(4, "hash", key="id"), ROWS)


# -- the real run's decisions (reshard.py) and the router's fence (fence.py) ----------------------

from proxy.shard.fence import Fence, statement_writes  # noqa: E402
from proxy.shard.reshard import (  # noqa: E402
    KeyRange,
    check_compatible,
    incoming,
    key_ranges,
    mismatched,
    outgoing,
    routing_fingerprint,
    stale_rows,
)
from proxy.shard.router import ShardRouter  # noqa: E402


def test_outgoing_takes_only_keys_the_source_owns_and_sorts_them() -> None:
    old, new = _cfg(4, "modulo").maps()["users"], _cfg(5, "modulo").maps()["users"]
    # on s1: keys 1, 5, 9 (k % 4 == 1) and 2, a stray copy (k % 4 == 2) that s1 must not copy out
    got = outgoing("s1", [9, 5, 1, 2], old, new)
    assert got == {"s0": [5], "s4": [9]}  # 1 stays on s1 (1 % 5 == 1)
    assert incoming("s4", "s1", [9, 4, 14], old, new) == {9}  # 4: s0's; 14: s2's (14 % 5 == 4)
    assert stale_rows("s1", [1, 5, 9, 2], new) == [2, 5, 9]  # after the switch: all but 1
    assert stale_rows("s2", [2, 7], new) == []


def test_key_ranges_cut_sorted_keys() -> None:
    rs = key_ranges([5, 1, 3, 9, 7, 3], 2)
    assert rs == [KeyRange(0, (1, 3)), KeyRange(1, (5, 7)), KeyRange(2, (9,))]
    assert (rs[1].first, rs[1].last) == (5, 7)
    assert key_ranges([], 10) == []
    with pytest.raises(ValueError):
        key_ranges([1], 0)


def test_mismatched_ranges_compare_count_and_md5() -> None:
    rs = key_ranges(list(range(6)), 2)
    src = {0: (2, "a"), 1: (3, "b"), 2: (1, "c")}
    assert mismatched(rs, src, dict(src)) == []
    assert mismatched(rs, src, {0: (2, "a"), 1: (3, "x")}) == [rs[1], rs[2]]  # md5 differs; range 2 missing
    assert mismatched(rs, {}, {}) == []  # no rows on either side


def test_check_compatible_and_fingerprint() -> None:
    a, b = _cfg(4, "modulo"), _cfg(5, "modulo")
    check_compatible(a, b)
    assert routing_fingerprint(a) == routing_fingerprint(_cfg(4, "modulo")) != routing_fingerprint(b)
    moved = parse_config({"shards": {"s0": {"address": "127.0.0.1:6000"}}, "groups": {"users": {
        "tables": ["users"], "key": "user_id", "map": "modulo", "shards": ["s0"]}},
        "backend_auth": {"user": "t"}, "auth": {"method": "trust"}}, ShardConfig)
    with pytest.raises(ReshardError, match="address changes"):
        check_compatible(a, moved)


@pytest.mark.parametrize(("sql", "writes"), [
    ("SELECT * FROM users WHERE user_id = 1", False),
    ("SELECT * FROM users WHERE user_id = 1 FOR UPDATE", False),
    ("INSERT INTO users (user_id) VALUES (1)", True),
    ("UPDATE users SET name = 'x' WHERE user_id = 1", True),
    ("DELETE FROM users WHERE user_id = 1", True),
    ("WITH d AS (DELETE FROM users WHERE user_id = 1 RETURNING *) SELECT * FROM d", True),
    ("COPY users FROM STDIN", True),
    ("COPY users TO STDOUT", False),
    ("TRUNCATE users", True),
    ("EXPLAIN ANALYZE DELETE FROM users WHERE user_id = 1", True),
])
def test_statement_writes(sql: str, writes: bool) -> None:
    from pglast import parse_sql

    assert statement_writes(parse_sql(sql)[0].stmt) is writes


def _fence() -> tuple[Fence, ShardRouter]:
    old, new = _cfg(4, "modulo"), _cfg(5, "modulo")
    return Fence("f", old, new, "", hold=1.0, lease=1.0), ShardRouter(old)


def test_fence_blocks_writes_of_moving_keys_only() -> None:
    f, r = _fence()
    assert f.groups == {"users"}
    # 20 % 4 == 0 == 20 % 5: stays; 5: s1 -> s0
    assert f.blocks(r, "INSERT INTO users (user_id, name) VALUES (20, 'a')", None, None) is None
    assert "moving from shard s1 to s0" in f.blocks(r, "INSERT INTO users (user_id, name) VALUES (5, 'a')", None, None)
    assert f.blocks(r, "INSERT INTO users (user_id, name) VALUES (20, 'a'), (5, 'b')", None, None) is not None
    assert f.blocks(r, "SELECT * FROM users WHERE user_id = 5", None, None) is None  # reads go on
    assert f.blocks(r, "UPDATE users SET name = 'x' WHERE user_id = $1", [5], None) is not None
    assert f.blocks(r, "UPDATE users SET name = 'x' WHERE user_id = $1", [20], None) is None
    assert f.blocks(r, "UPDATE users SET name = 'x'", None, None) is not None  # keyless: may touch any
    assert f.blocks(r, "UPDATE users SET name = 'x'", None, "20") is None  # the session's key stays
    assert f.blocks(r, "CREATE INDEX ON users (name)", None, None) is not None
    assert f.blocks(r, "/* tierproxy:shard=s1 */ DELETE FROM users", None, None) is not None
    assert f.blocks(r, "SELECT 1; DELETE FROM users WHERE user_id = 5", None, None) is not None
    assert f.blocks(r, "BEGIN", None, None) is None
    assert f.blocks(r, "INSERT INTO other (x) VALUES (5)", None, None) is None  # not sharded
    assert "not known before it runs" in f.blocks(r, "COPY users (user_id, name) FROM STDIN", None, None)
    assert f.blocks(r, "COPY public.users FROM STDIN", None, None) is not None
    assert f.blocks(r, "COPY other FROM STDIN", None, None) is None
    assert f.blocks(r, "COPY users TO STDOUT", None, None) is None


def test_fence_ignores_groups_whose_map_does_not_change() -> None:
    f = Fence("f", _cfg(4, "modulo"), _cfg(4, "modulo"), "", hold=1.0, lease=1.0)
    assert f.groups == set()
    assert f.blocks(ShardRouter(_cfg(4, "modulo")), "UPDATE users SET name = 'x'", None, None) is None
