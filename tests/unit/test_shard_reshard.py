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
