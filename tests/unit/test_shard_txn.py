"""Transactions stay on one shard: held BEGIN, binding, refusals, failed state, no partial commit."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.shard.keys import All, GroupSpec, One, Refuse, Session, Some, analyze, plan
from proxy.shard.maps import ModuloMap
from proxy.shard.txn import Forward, Reply, TxnState, step

SHARDS = ("s0", "s1", "s2", "s3")
USERS = GroupSpec("users", frozenset({"users"}), "user_id")
MAPS = {"users": ModuloMap(SHARDS)}


def run(statements: list[str], state: TxnState = TxnState(), shards: tuple[str, ...] = SHARDS) -> list:
    out = []
    for sql in statements:
        maps = MAPS if shards == SHARDS else {"users": ModuloMap(shards)}
        p = plan(analyze(sql, [USERS], shards), maps, {"users": USERS}, all_shards=shards)
        state, decision = step(state, p, shards)
        out.append(decision)
    return out + [state]


def test_begin_is_held_and_sent_with_the_first_statement() -> None:
    got = run(["BEGIN", "SAVEPOINT a", "select * from users where user_id = 5",
               "update users set n = 1 where user_id = 9", "COMMIT"])
    assert got[0] == Reply("BEGIN") and got[1] == Reply("SAVEPOINT")
    assert got[2] == Forward((("s1", ("BEGIN", "SAVEPOINT a", "select * from users where user_id = 5")),))
    assert got[3] == Forward((("s1", ("update users set n = 1 where user_id = 9",)),))
    assert got[4] == Forward((("s1", ("COMMIT",)),))
    assert got[5] == TxnState()


def test_a_second_shard_is_refused_and_commit_rolls_back() -> None:
    got = run(["BEGIN", "insert into users (user_id) values (1)", "insert into users (user_id) values (2)",
               "select 1", "COMMIT"])
    assert got[1] == Forward((("s1", ("BEGIN", "insert into users (user_id) values (1)")),))
    refused = got[2]
    assert isinstance(refused, Refuse) and refused.sqlstate == "0A000"
    assert "shard s1" in refused.message and "shard s2" in refused.message
    assert isinstance(got[3], Refuse) and got[3].sqlstate == "25P02"
    # No partial commit: the shard gets ROLLBACK, the client the tag ROLLBACK.
    assert got[4] == Forward((("s1", ("ROLLBACK",)),), tag="ROLLBACK")


def test_a_statement_naming_no_table_follows_the_transaction() -> None:
    got = run(["BEGIN", "select * from users where user_id = 6", "select now()", "COMMIT"])
    assert got[2] == Forward((("s2", ("select now()",)),))
    got = run(["BEGIN", "select now()", "select * from users where user_id = 6"])
    assert got[1] == Forward((("s0", ("BEGIN", "select now()")),))
    assert isinstance(got[2], Refuse) and "shard s0" in got[2].message


def test_scatter_inside_a_transaction_is_refused_but_fine_outside() -> None:
    got = run(["select count(*) from users", "BEGIN", "select count(*) from users", "ROLLBACK"])
    assert got[0] == Forward(tuple((s, ("select count(*) from users",)) for s in SHARDS))
    assert isinstance(got[2], Refuse) and "s0, s1, s2, s3" in got[2].message
    assert got[3] == Reply("ROLLBACK")


def test_one_shard_behaves_like_plain_postgresql() -> None:
    got = run(["BEGIN", "select count(*) from users", "select * from users where user_id = 7", "COMMIT"],
              shards=("only",))
    assert got[1] == Forward((("only", ("BEGIN", "select count(*) from users")),))
    assert got[2] == Forward((("only", ("select * from users where user_id = 7",)),))
    assert got[3] == Forward((("only", ("COMMIT",)),))


def test_rollback_to_savepoint_recovers_a_refused_statement() -> None:
    got = run(["BEGIN", "select * from users where user_id = 1", "SAVEPOINT a",
               "select * from users where user_id = 2", "ROLLBACK TO SAVEPOINT a",
               "select * from users where user_id = 5", "COMMIT"])
    assert isinstance(got[3], Refuse)
    assert got[4] == Forward((("s1", ("ROLLBACK TO SAVEPOINT a",)),))
    assert got[5] == Forward((("s1", ("select * from users where user_id = 5",)),))
    assert got[6] == Forward((("s1", ("COMMIT",)),))


def test_savepoint_outside_a_transaction_and_prepared_commits() -> None:
    got = run(["SAVEPOINT a", "COMMIT PREPARED 'x'", "/* tierproxy:shard=s2 */ COMMIT PREPARED 'x'"])
    assert isinstance(got[0], Refuse) and got[0].sqlstate == "25P01"
    assert isinstance(got[1], Refuse) and "tierproxy:shard=NAME" in got[1].message
    assert got[2] == Forward((("s2", ("/* tierproxy:shard=s2 */ COMMIT PREPARED 'x'",)),))


plans = st.sampled_from([
    One("s0", "q", "k"), One("s1", "q", "k"), Some((("s0", "q"), ("s2", "q")), "in"), All("q", "scatter"),
    Session("begin", "BEGIN"), Session("commit", "COMMIT"), Session("rollback", "ROLLBACK"),
    Session("savepoint", "SAVEPOINT a"), Session("rollback_to", "ROLLBACK TO a"), Refuse("22P02", "bad"),
])


@settings(max_examples=500)
@given(st.lists(plans, max_size=30))
def test_a_transaction_never_touches_two_shards_nor_commits_after_a_refusal(seq: list) -> None:
    state = TxnState()
    touched: set[str] = set()
    refused = False
    for p in seq:
        was_open = state.open
        state, d = step(state, p, SHARDS)
        if was_open and isinstance(d, Refuse):
            refused = refused or d.sqlstate != "25P02"
        if was_open and isinstance(d, Forward):
            touched |= {s for s, _ in d.parts}
            assert len(touched) == 1, touched
            if refused and any("COMMIT" in stmts for _, stmts in d.parts):
                raise AssertionError("COMMIT sent after a refused statement")
        if isinstance(p, Session) and p.kind == "rollback_to":
            refused = False
        if not state.open:
            touched, refused = set(), False


def test_commit_prepared_goes_to_the_only_shard_and_needs_a_name_with_several() -> None:
    assert run(["COMMIT PREPARED 'x'"], shards=("only",))[0] == Forward((("only", ("COMMIT PREPARED 'x'",)),))
    assert isinstance(run(["ROLLBACK PREPARED 'x'"])[0], Refuse)
