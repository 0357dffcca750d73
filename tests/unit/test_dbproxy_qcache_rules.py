"""`[[cache.rules]]` (qcache_rules.py): config validation, matching by tables and fingerprint, and
the property that a rule never makes an unsafe statement cacheable (hypothesis, compared with the
classifier); the operators' side (qcache_ops.py): SHOW CACHE rows, metrics, purge requests."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.core.config import ConfigError, load_config
from proxy.dbproxy.classify import classify
from proxy.dbproxy.classify_types import Reason, Target
from proxy.dbproxy.config import CacheConfig, DbProxyConfig
from proxy.dbproxy.console import run_console
from proxy.dbproxy.qcache_ops import cache_metrics, merge_cache, purge_tables, show_cache
from proxy.dbproxy.qcache_policy import cacheable
from proxy.dbproxy.qcache_rules import CachePlanner, Rule, fold_table_name

BASE = '''primary = { address = "127.0.0.1:5432" }
backend_auth = { user = "tierproxy" }
auth = { users = { app = { password = "pw" } } }
'''


def load(tmp_path: Path, body: str) -> DbProxyConfig:
    path = tmp_path / "dbproxy.toml"
    path.write_text(BASE + body)
    return load_config(path, DbProxyConfig)


def planner(*rules: dict) -> CachePlanner:
    cfg = CacheConfig.model_validate({"rules": list(rules)})
    return CachePlanner([r.rule() for r in cfg.rules])


def test_fold_table_name():
    assert fold_table_name("Orders") == "orders"
    assert fold_table_name("shop.Orders") == "orders"
    assert fold_table_name('"Orders"') == "Orders"
    assert fold_table_name('s."a""b"') == 'a"b'
    for bad in ("", "a b", "a.b.c", "1a", '"', "a;drop", "a."):
        assert fold_table_name(bad) is None, bad


def test_rules_load_with_located_errors(tmp_path):
    cfg = load(tmp_path, '[cache]\nenabled = true\n[[cache.rules]]\ntables = ["Shop.Items", "cats"]\nttl = 30\n'
                         '[[cache.rules]]\nstatement = "SELECT name FROM items WHERE id = 1"\nttl = 5\n'
                         '[[cache.rules]]\nfingerprint = "052E0F02187D0072"\ntables = ["t"]\nttl = 7\n')  # fmt: skip
    rules = [r.rule() for r in cfg.cache.rules]
    assert rules[0] == Rule(30, frozenset({"items", "cats"}), None)
    assert rules[1].tables is None and len(rules[1].fingerprint) == 16
    assert rules[2] == Rule(7, frozenset({"t"}), "052e0f02187d0072")
    for body, where in (
        ("[[cache.rules]]\ntables = [\"t\"]\nttl = 30\nttll = 3\n", "cache.rules[0].ttll: unknown key"),
        ("[[cache.rules]]\ntables = [\"t\"]\nttl = 0\n", "cache.rules[0].ttl"),
        ("[[cache.rules]]\ntables = [\"t\"]\nttl = 86401\n", "cache.rules[0].ttl"),
        ("[[cache.rules]]\ntables = [\"t\"]\nttl = 3\n[[cache.rules]]\ntables = [\"a b\"]\nttl = 3\n",
         "cache.rules[1].tables: [0] 'a b' is not a table name"),
        ("[[cache.rules]]\ntables = []\nttl = 3\n", "cache.rules[0].tables"),
        ("[[cache.rules]]\nttl = 3\n", "cache.rules[0]: a rule needs tables, fingerprint or statement"),
        ("[[cache.rules]]\nfingerprint = \"xyz\"\nttl = 3\n", "cache.rules[0].fingerprint: 'xyz' is not a fingerprint"),
        ("[[cache.rules]]\nstatement = \"SELEC 1\"\nttl = 3\n", "cache.rules[0].statement: not one SELECT"),
        ("[[cache.rules]]\nstatement = \"DELETE FROM t\"\nttl = 3\n", "cache.rules[0].statement: not one SELECT"),
        ("[[cache.rules]]\nstatement = \"SELECT 1\"\nfingerprint = \"052e0f02187d0072\"\nttl = 3\n",
         "cache.rules[0]: fingerprint and statement exclude each other"),
    ):  # fmt: skip
        with pytest.raises(ConfigError) as exc:
            load(tmp_path, "[cache]\n" + body)
        assert where in str(exc.value), (body, str(exc.value))


def test_rule_matching():
    p = planner({"tables": ["items", "cats"], "ttl": 30},
                {"statement": "SELECT name FROM users WHERE id = 1", "ttl": 5},
                {"tables": ["orders"], "statement": "SELECT * FROM orders WHERE id = 1", "ttl": 9})  # fmt: skip
    assert p.plan("SELECT * FROM items")[0] == 30
    assert p.plan("SELECT * FROM Items JOIN cats USING (cat)")[0] == 30
    assert p.plan("SELECT * FROM shop.items")[0] == 30  # the schema is not compared
    assert p.plan("SELECT * FROM items JOIN other USING (cat)")[0] is None  # a table nobody named
    assert p.plan("SELECT 1")[0] is None  # reads no table: no tables rule matches it
    # The fingerprint leaves out constants, parameters, comments, spacing and IN-list lengths.
    for sql in ("SELECT name FROM users WHERE id = 2", "select name from users where id=$1 -- x",
                "/* app */ SELECT name FROM users WHERE id = 99"):  # fmt: skip
        assert p.plan(sql)[0] == 5, sql
    assert p.plan("SELECT name, email FROM users WHERE id = 2")[0] is None
    assert p.plan("SELECT * FROM orders WHERE id = 3")[0] == 9
    assert p.plan("SELECT * FROM orders WHERE id > 3")[0] is None  # the fingerprint differs
    # A hint comes first, whatever the rules say.
    assert p.plan("/* tierproxy:cache ttl=2 */ SELECT * FROM items")[0] == 2
    assert p.plan("/* tierproxy:cache ttl=2 */ SELECT * FROM nothing_ruled")[0] == 2
    assert p.plan("SELEC nonsense")[0] is None
    # No rules: only hinted statements are parsed at all.
    assert CachePlanner().plan("SELECT * FROM items") == (None, None)


def test_the_memo_is_bounded(monkeypatch):
    import proxy.dbproxy.qcache_rules as rules

    monkeypatch.setattr(rules, "MEMO_SIZE", 3)
    p = planner({"tables": ["t"], "ttl": 3})
    for i in range(10):
        assert p.plan(f"SELECT {i} FROM t")[0] == 3
    assert len(p._memo) == 3


# -- generated statements: a rule never makes an unsafe statement cacheable ----------------------

TABLES = ["t", "u"]
SAFE_ITEMS = ["a", "count(*)", "lower(b)", "1 + 2", "'x'", "coalesce(a, 0)", "$1"]
UNSAFE_ITEMS = ["random()", "now()", "clock_timestamp()", "CURRENT_DATE", "current_user", "nextval('s')",
                "pg_advisory_lock(1)", "set_config('x', 'y', false)", "current_setting('x')", "txid_current()",
                "(SELECT random())", "statement_timestamp()", "localtimestamp", "gen_random_uuid()"]  # fmt: skip
SAFE_FROM = ["t", "s.t", "t JOIN u USING (id)", "(SELECT a FROM u) AS q"]
UNSAFE_FROM = ["t TABLESAMPLE BERNOULLI (5)", "(SELECT a FROM u FOR UPDATE) AS q", "pg_temp.t"]
SAFE_TAIL = ["", " WHERE a = 1", " ORDER BY a LIMIT 3"]
UNSAFE_TAIL = [" FOR UPDATE", " FOR SHARE", " FOR NO KEY UPDATE", "; SELECT 1", "; DELETE FROM t"]
UNSAFE_WRAP = ["WITH w AS (INSERT INTO t VALUES (1) RETURNING *) {}", "WITH w AS (DELETE FROM u) {}",
               "EXPLAIN {}", "/* tierproxy:primary */ {}", "CREATE TABLE c AS {}", "COPY ({}) TO STDOUT",
               "DECLARE c CURSOR FOR {}"]  # fmt: skip
WRITES = ["INSERT INTO t SELECT {items} FROM u", "UPDATE t SET a = {items}", "DELETE FROM t WHERE a = 1",
          "TRUNCATE t", "SELECT {items} INTO t2 FROM t"]  # fmt: skip


@st.composite
def statements(draw):
    unsafe = False
    items = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            items.append(draw(st.sampled_from(SAFE_ITEMS)))
        else:
            items.append(draw(st.sampled_from(UNSAFE_ITEMS)))
            unsafe = True
    if draw(st.integers(0, 5)) == 0:
        return draw(st.sampled_from(WRITES)).format(items=items[0]), True
    source = draw(st.sampled_from(SAFE_FROM + UNSAFE_FROM))
    unsafe |= source in UNSAFE_FROM
    tail = draw(st.sampled_from(SAFE_TAIL + UNSAFE_TAIL))
    unsafe |= tail in UNSAFE_TAIL
    sql = f"SELECT {', '.join(items)} FROM {source}{tail}"
    if draw(st.booleans()):
        sql = draw(st.sampled_from(UNSAFE_WRAP)).format(sql)
        unsafe = True
    return sql, unsafe


# Rules that match everything the generator writes: by tables, and by fingerprint of the text itself.
RULES = CachePlanner([Rule(30, frozenset(TABLES + ["q", "c", "t2", "w"]))])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated=statements(), txn=st.sampled_from(["none", "read-only", "read-write"]),
       pinned=st.booleans(), by_fingerprint=st.booleans())  # fmt: skip
def test_a_rule_never_makes_an_unsafe_statement_cacheable(generated, txn, pinned, by_fingerprint):
    sql, unsafe = generated
    p = CachePlanner([Rule(30, None, __import__("proxy.dbproxy.qcache_rules", fromlist=["x"])
                           .statement_fingerprint(sql))]) if by_fingerprint else RULES  # fmt: skip
    ttl, shape = p.plan(sql)
    decision = classify(sql)
    served = ttl is not None and cacheable(decision, shape, in_transaction=txn != "none",
                                           read_only_transaction=txn == "read-only", pinned=pinned)  # fmt: skip
    if served:
        # Whatever the cache serves, the classifier calls a plain read a replica may answer.
        assert decision.target is Target.REPLICA and decision.reason is Reason.READ
        assert not decision.pins_session and not decision.reads_catalog
    if unsafe or pinned or txn == "read-write":
        assert not served, sql
    elif "pg_temp" not in sql:
        assert served, sql  # not vacuous: a safe statement the rule names is cached


# -- operators: SHOW CACHE, metrics, purge requests ------------------------------------------------

SNAP = {"totals": {"entries": 2, "bytes": 900, "max_bytes": 4096, "hits": 5, "misses": 3, "stored": 3,
                   "not_stored": 0, "evictions": 1, "expirations": 0, "invalidations": 4, "coalesced": 2,
                   "purges": 1},
        "tables": {"items": {"entries": 2, "bytes": 900, "hits": 5, "misses": 3, "invalidations": 1},
                   "cats": {"entries": 0, "bytes": 0, "hits": 0, "misses": 1, "invalidations": 2}}}  # fmt: skip


def test_show_cache_rows():
    cols, rows = show_cache({"qcache": SNAP})
    assert cols[:6] == ("table", "entries", "bytes", "hits", "misses", "invalidations")
    assert rows[0] == ("*", 2, 900, 5, 3, 4, 1, 0, 4096)
    assert rows[1] == ("cats", 0, 0, 0, 1, 2, None, None, None)
    assert rows[2][0] == "items" and rows[2][1:6] == (2, 900, 5, 3, 1)
    assert show_cache({"qcache": None}) == (cols, [])
    answer = run_console("show cache;", {"qcache": SNAP})
    assert answer[:1] == b"T" and b"items" in answer and answer.endswith(b"SHOW\x00")


def test_merge_and_metrics():
    merged = merge_cache([SNAP, None, SNAP])
    assert merged["totals"]["hits"] == 10 and merged["tables"]["items"]["entries"] == 4
    assert merge_cache([None, None]) is None
    metrics = {m.name: m for m in cache_metrics(SNAP)}
    assert metrics["tierproxy_dbproxy_query_cache_hits"].samples[0].value == 5
    assert metrics["tierproxy_dbproxy_query_cache_evictions"].samples[0].value == 1
    assert metrics["tierproxy_dbproxy_query_cache_bytes"].samples[0].value == 900
    inval = {s.labels["table"]: s.value for s in metrics["tierproxy_dbproxy_query_cache_invalidations"].samples
             if s.name.endswith("_total")}  # fmt: skip
    assert inval == {"items": 1, "cats": 2, "*": 1}
    assert list(cache_metrics(None)) == []


def test_purge_requests():
    assert purge_tables({"table": ["Items", "shop.cats,x"]}) == frozenset({"items", "cats", "x"})
    assert purge_tables({"all": ["1"]}) is None
    assert isinstance(purge_tables({}), str)
    assert isinstance(purge_tables({"table": ["a b"]}), str)
    assert isinstance(purge_tables({"all": ["0"]}), str)
