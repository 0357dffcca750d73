"""ShardRouter: the example config's routing end to end, scatter policy, the bounded cache."""

from __future__ import annotations

from pathlib import Path

from proxy.core.config import load_config
from proxy.shard.config import ShardConfig
from proxy.shard.keys import All, One, Refuse, Some
from proxy.shard.router import ShardRouter

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "config" / "shard.toml"


def test_example_config_routes() -> None:
    r = ShardRouter(load_config(EXAMPLE, ShardConfig))
    p = r.plan("select * from users where user_id = 42")
    assert isinstance(p, One) and p.shard == "hot"  # dedicated in shard.toml
    p = r.plan("select * from events where event_id = $1", params=[1_500_000])
    assert isinstance(p, One) and p.shard == "s1"  # [1000000, 2000000) is s1's range
    p = r.plan("select * from events where event_id in (5, 2500000)")
    assert isinstance(p, Some) and [s for s, _ in p.parts] == ["s0", "s2"]
    assert isinstance(r.plan("select count(*) from users"), All)
    p = r.plan("select * from events where event_id between 1500000 and 2500000")
    assert isinstance(p, Some) and [s for s, _ in p.parts] == ["s1", "s2"]
    assert isinstance(r.plan_query("select 1; select 2"), One)


def test_scatter_deny_and_the_cache_bound() -> None:
    cfg = load_config(EXAMPLE, ShardConfig).model_copy(update={"scatter": "deny"})
    r = ShardRouter(cfg, cache_size=3)
    p = r.plan("select count(*) from users")
    assert isinstance(p, Refuse) and p.sqlstate == "0A000"
    for i in range(10):  # the comment makes each text a shape of its own (shape.py)
        r.plan(f"select * from users where user_id = {i} /* {i} */")
    assert len(r._cache) == 3
    assert r.analyze("select * from users where user_id = 9 /* 9 */") is r.analyze("select * from users where user_id = 9 /* 9 */")
