"""Read consistency across sessions (issue 12, items 6, 7, 8c): the classifier's catalog flags and
primary-state reads, the router's commit reports and floors, and the commit epochs (causal.py)."""

from __future__ import annotations

import pytest

from proxy.dbproxy.causal import CommitClock, CommitEpochs, WalPosition, claim_slot, create_slots
from proxy.dbproxy.classify import Reason, Target, classify
from proxy.dbproxy.classify_types import Decision
from proxy.dbproxy.router import MAX_LSN, PRIMARY, ReplicaView, Route, RouteReason, SessionRouter

P, R = Target.PRIMARY, Target.REPLICA

# -- the classifier ----------------------------------------------------------------------------

CATALOG_READS = [
    "SELECT 'orders'::regclass",
    "SELECT 'mytype'::pg_catalog.regtype",
    "SELECT to_regclass('public.orders') IS NOT NULL",
    "SELECT relname FROM pg_class WHERE relname = 'orders'",
    "SELECT * FROM pg_catalog.pg_attribute WHERE attrelid = 42",
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    "SELECT count(*) FROM information_schema.columns",
    # psql's \\d orders (the first of its queries)
    "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n "
    "ON n.oid = c.relnamespace WHERE c.relname OPERATOR(pg_catalog.~) '^(orders)$' COLLATE pg_catalog.default "
    "AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3",
    # SQLAlchemy 2's PostgreSQL has_table
    "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace ON "
    "pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace WHERE pg_catalog.pg_class.relname = $1 "
    "AND pg_catalog.pg_class.relkind = ANY (ARRAY[$2, $3, $4, $5, $6]) AND "
    "pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != $7",
    "SELECT format_type(atttypid, atttypmod) FROM t",
    "SELECT pg_get_viewdef('v'::regclass)",
    "SELECT has_table_privilege('orders', 'SELECT')",
    "SELECT 1; SELECT * FROM pg_type",
    "WITH x AS (SELECT oid FROM pg_proc) SELECT count(*) FROM x",
]


@pytest.mark.parametrize("sql", CATALOG_READS)
def test_catalog_reads_are_marked(sql):
    d = classify(sql)
    assert (d.target, d.reads_catalog, d.writes_catalog) == (R, True, False)


@pytest.mark.parametrize("sql", ["SELECT * FROM orders", "SELECT 1", "SELECT now()", "VALUES (1)",
                                 "SELECT * FROM app.pgx", "SELECT pg_is_in_recovery()"])  # fmt: skip
def test_plain_reads_are_not_catalog_reads(sql):
    d = classify(sql)
    assert (d.target, d.reason, d.reads_catalog) == (R, Reason.READ, False)


@pytest.mark.parametrize("sql,writes_catalog", [
    ("CREATE TABLE t (id int)", True),
    ("CREATE TABLE t AS SELECT 1", True),
    ("SELECT 1 INTO t2", True),
    ("ALTER TABLE t ADD COLUMN v int", True),
    ("DROP TABLE t", True),
    ("CREATE INDEX ON t (id)", True),
    ("CREATE VIEW v AS SELECT 1", True),
    ("CREATE TYPE mood AS ENUM ('a')", True),
    ("GRANT SELECT ON t TO PUBLIC", True),
    ("COMMENT ON TABLE t IS 'x'", True),
    ("DO $$ BEGIN EXECUTE 'CREATE TABLE x ()'; END $$", True),
    ("CALL make_tables()", True),
    ("COMMIT PREPARED 'gid'", True),
    ("SELECT 1; CREATE TABLE t (id int)", True),
    ("INSERT INTO t VALUES (1)", False),
    ("UPDATE t SET v = 1", False),
    ("DELETE FROM t", False),
    ("TRUNCATE t", False),
    ("VACUUM t", False),
    ("CREATE TEMP TABLE tt (id int)", False),
])  # fmt: skip
def test_catalog_changes_are_marked(sql, writes_catalog):
    d = classify(sql)
    assert d.target is P
    assert d.writes_catalog is writes_catalog


@pytest.mark.parametrize("sql", [
    "SELECT gid FROM pg_prepared_xacts",
    "SELECT * FROM pg_catalog.pg_prepared_xacts WHERE database = current_database()",
    "SELECT count(*) FROM pg_stat_replication",
    "SELECT slot_name FROM pg_replication_slots",
    "SELECT * FROM pg_stat_wal_receiver",
    "SELECT pid, state FROM pg_stat_activity WHERE datname = 'x'",
    "SELECT * FROM pg_locks WHERE NOT granted",
    "SELECT pg_backend_pid()",
    "SELECT pg_blocking_pids(123)",
    "SELECT * FROM pg_stat_progress_vacuum",
    "SELECT 1 FROM t WHERE id IN (SELECT pid FROM pg_stat_activity)",
])  # fmt: skip
def test_reads_of_the_primarys_own_state_go_to_the_primary_without_being_writes(sql):
    d = classify(sql)
    assert (d.target, d.reason, d.detail) == (P, Reason.PRIMARY_STATE, "primary-state")
    router = SessionRouter(read_your_writes="lsn")
    assert router.route(d, 0.0, REPLICAS) == Route(PRIMARY, RouteReason.WRITE)
    router.on_ready_for_query(b"I")
    assert not router.needs_commit_lsn  # not a write: the next read may go to a replica
    assert router.route(classify("SELECT 1"), 0.0, REPLICAS).target == "r1"


def test_write_functions_still_win_over_primary_state():
    assert classify("SELECT pg_current_wal_lsn()").reason is Reason.VOLATILE_FUNCTION


# -- the router ----------------------------------------------------------------------------------

REPLICAS = (ReplicaView("r1", lag_bytes=0, lag_seconds=0.0, replay_lsn=1000),
            ReplicaView("r2", lag_bytes=0, lag_seconds=0.0, replay_lsn=2000))  # fmt: skip
READ = classify("SELECT 1")
CATALOG_READ = classify("SELECT to_regclass('t')")


def test_commit_prepared_counts_as_a_write_for_read_your_writes():
    router = SessionRouter(read_your_writes="lsn")
    router.route(classify("COMMIT PREPARED 'g1'"), 0.0, REPLICAS)
    router.on_ready_for_query(b"I")
    assert router.needs_commit_lsn
    assert router.route(READ, 0.0, REPLICAS) == Route(PRIMARY, RouteReason.READ_YOUR_WRITES)


def test_every_committed_write_is_reported_with_its_catalog_flag_in_every_mode():
    for mode in ("lsn", "primary-window", "global", "off"):
        reports: list[bool] = []

        def on_commit(ddl: bool, reports: list[bool] = reports) -> int:
            reports.append(ddl)
            return len(reports) * 10

        router = SessionRouter(read_your_writes=mode, on_commit=on_commit)  # type: ignore[arg-type]
        router.route(classify("INSERT INTO t VALUES (1)"), 0.0, REPLICAS)
        router.on_ready_for_query(b"I")
        router.route(classify("BEGIN"), 0.0, REPLICAS)
        router.route(classify("CREATE TABLE t2 (id int)"), 0.0, REPLICAS)
        router.route(classify("INSERT INTO t VALUES (2)"), 0.0, REPLICAS)
        router.on_ready_for_query(b"T")
        router.route(classify("COMMIT"), 0.0, REPLICAS)
        router.on_ready_for_query(b"I")
        # Neither a rolled-back nor a failed transaction nor a read commits anything.
        router.route(classify("BEGIN"), 0.0, REPLICAS)
        router.route(classify("DROP TABLE t2"), 0.0, REPLICAS)
        router.route(classify("ROLLBACK"), 0.0, REPLICAS)
        router.on_ready_for_query(b"I")
        router.route(classify("CREATE TABLE t3 (id int)"), 0.0, REPLICAS)
        router.on_ready_for_query(b"I", failed=True)
        router.route(READ, 0.0, REPLICAS)
        router.on_ready_for_query(b"I")
        assert reports == [False, True], mode
        assert router.commit_epoch == 20


def test_a_floor_keeps_reads_and_read_only_transactions_off_replicas_behind_it():
    router = SessionRouter(read_your_writes="off")
    assert router.route(READ, 0.0, REPLICAS, floor_lsn=1500) == Route("r2", RouteReason.READ)
    assert router.route(READ, 0.0, REPLICAS, floor_lsn=2001) == Route(PRIMARY, RouteReason.READ_YOUR_WRITES)
    assert router.route(READ, 0.0, REPLICAS, floor_lsn=MAX_LSN).target == PRIMARY
    begin_ro = classify("BEGIN READ ONLY")
    assert router.route(begin_ro, 0.0, REPLICAS, floor_lsn=1500) == Route("r2", RouteReason.TRANSACTION)


def test_global_mode_owes_no_per_session_lsn_but_keeps_own_uncommitted_writes_on_the_primary():
    router = SessionRouter(read_your_writes="global")
    router.route(classify("INSERT INTO t VALUES (1)"), 0.0, REPLICAS)
    assert router.route(READ, 0.0, REPLICAS) == Route(PRIMARY, RouteReason.READ_YOUR_WRITES)
    router.on_ready_for_query(b"I")
    assert not router.needs_commit_lsn  # the daemon's floor covers the session's own commits
    assert router.route(READ, 0.0, REPLICAS, floor_lsn=1500).target == "r2"


# -- commit epochs -------------------------------------------------------------------------------


def test_commit_epochs_cover_what_was_acknowledged_before_the_fetch():
    e = CommitEpochs()
    assert e.covered(0, 0) and not e.covered(1)
    assert e.acknowledged(ddl=False) == 1
    assert e.acknowledged(ddl=True) == 2
    assert e.totals() == (2, 1) and e.ddl_lsn is None
    e.learned(1, 0, 500)  # fetched before the DDL was acknowledged: covers the first commit only
    assert e.covered(1) and not e.covered(2) and not e.covered(0, 1)
    assert e.ddl_lsn is None
    e.learned(2, 1, 700)
    assert e.covered(2, 1) and (e.known_lsn, e.ddl_lsn) == (700, 700)
    e.acknowledged(ddl=False)
    e.learned(3, 1, 900)
    assert (e.known_lsn, e.ddl_lsn) == (900, 700)  # later plain commits do not move the DDL's bound
    e.learned(2, 1, 800)  # an older fetch finishing late changes nothing
    assert (e.known_commits, e.known_lsn) == (3, 900)


def test_workers_share_their_counts_through_slots(tmp_path):
    path = tmp_path / "slots"
    create_slots(path, 3)
    first, second = CommitEpochs(), CommitEpochs()
    first.acknowledged(ddl=True)  # before sharing: kept, and written to the slot when shared
    first.share(claim_slot(path, 3))
    second.share(claim_slot(path, 3))
    assert second.totals() == (1, 1)
    assert second.acknowledged(ddl=False) == 2  # the count includes the other worker's commit
    assert first.acknowledged(ddl=True) == 3
    assert first.totals() == second.totals() == (3, 2)
    third = claim_slot(path, 3)
    with pytest.raises(ValueError, match="no free slot"):
        claim_slot(path, 3)
    assert third.slot == 2 and third.totals() == (3, 2)


def _never_connects() -> WalPosition:
    async def connect() -> object:
        raise AssertionError("no fetch expected")

    return WalPosition(connect, 1.0)


def test_the_clock_asks_for_a_bound_only_when_a_read_needs_one():
    lsn_clock = CommitClock(_never_connects(), global_mode=False)
    router = SessionRouter(read_your_writes="lsn", on_commit=lsn_clock.acknowledged)
    assert not lsn_clock.owed(router, READ) and lsn_clock.floor(READ) is None
    assert not lsn_clock.owed(router, CATALOG_READ) and lsn_clock.floor(CATALOG_READ) is None
    other = SessionRouter(read_your_writes="lsn", on_commit=lsn_clock.acknowledged)
    other.route(classify("CREATE TABLE t (id int)"), 0.0, REPLICAS)
    other.on_ready_for_query(b"I")
    # Another session's DDL: this session's catalog reads need its LSN, plain reads do not.
    assert lsn_clock.owed(router, CATALOG_READ)
    assert lsn_clock.floor(CATALOG_READ) == MAX_LSN
    assert not lsn_clock.owed(router, READ) and lsn_clock.floor(READ) is None
    lsn_clock.epochs.learned(1, 1, 1500)
    assert not lsn_clock.owed(router, CATALOG_READ) and lsn_clock.floor(CATALOG_READ) == 1500
    # The DDL's own session: its LSN is settled from the fetch already made, without another.
    assert other.needs_commit_lsn and not lsn_clock.owed(other, READ)
    assert not other.needs_commit_lsn and other.last_commit_lsn == 1500

    global_clock = CommitClock(_never_connects(), global_mode=True)
    router = SessionRouter(read_your_writes="global", on_commit=global_clock.acknowledged)
    assert not global_clock.owed(router, READ) and global_clock.floor(READ) is None
    global_clock.acknowledged(False)
    assert global_clock.owed(router, READ) and global_clock.floor(READ) == MAX_LSN
    global_clock.epochs.learned(1, 0, 1200)
    assert not global_clock.owed(router, READ) and global_clock.floor(READ) == 1200

    no_replicas = CommitClock(None, global_mode=True)
    no_replicas.acknowledged(True)
    assert not no_replicas.owed(router, CATALOG_READ) and no_replicas.floor(CATALOG_READ) is None


def test_decision_defaults_keep_old_constructions_valid():
    d = Decision(R, Reason.READ, detail="select")
    assert (d.reads_catalog, d.writes_catalog) == (False, False)
