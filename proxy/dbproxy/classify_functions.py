"""Function names the statement classifier treats specially: writers, session pins, session resets.

Policy: what sends a function call to the primary is a *side effect* or a need for the *primary's
state*, not volatility as such. `random()`, `gen_random_uuid()`, `clock_timestamp()` and
`pg_sleep()` are volatile, but they give an equally good answer on a replica and change nothing,
so they stay there. `nextval()` writes the sequence; `currval()`/`lastval()` read state that only
the session's primary backend holds (the backend that ran the `nextval`); `pg_current_wal_lsn()`
fails during recovery; `pg_terminate_backend(pid)` means a pid *on the primary*, and so on.

Names are matched lower-case, on the bare name whatever the schema (`pg_catalog.nextval`,
`public.nextval` and `nextval` are all `nextval`: a same-named user function is sent to the
primary too, which is the safe side) or on the whole dotted name, so a deployment can list its own
writing functions either as `create_order` or as `app.create_order`. Unknown functions are taken to
be read-only: the classifier does no I/O, so it cannot look at `pg_proc`. A function that writes
and is not listed reaches a replica and fails there with SQLSTATE 25006, loudly, never silently.

Source: the volatile functions of pg_catalog (`SELECT proname FROM pg_proc WHERE provolatile = 'v'
AND pronamespace = 'pg_catalog'::regnamespace`, PostgreSQL 15-18), minus the side-effect-free ones,
plus the usual extension writers (dblink, pg_stat_statements).
"""

from __future__ import annotations

__all__ = [
    "CATALOG_FUNCTIONS",
    "CATALOG_TYPES",
    "DEFAULT_WRITE_FUNCTIONS",
    "PRIMARY_STATE_FUNCTIONS",
    "PRIMARY_STATE_RELATIONS",
    "SESSION_PIN_FUNCTIONS",
    "SESSION_RESET_FUNCTIONS",
]

# Calls that send a statement to the primary (Reason.VOLATILE_FUNCTION). Configurable: `classify`
# takes `write_functions=`, and a deployment extends this set with its own writing functions.
DEFAULT_WRITE_FUNCTIONS: frozenset[str] = frozenset(
    {
        # Sequences: nextval/setval write; currval/lastval read the state nextval left in the
        # session's primary backend (on any other backend: "currval ... not yet defined").
        "nextval",
        "setval",
        "currval",
        "lastval",
        # Transaction-level advisory locks: they only exclude other lockers on the same server, so
        # they must be taken where the writers are. (Session-level ones pin: see below.)
        "pg_advisory_xact_lock",
        "pg_advisory_xact_lock_shared",
        "pg_try_advisory_xact_lock",
        "pg_try_advisory_xact_lock_shared",
        # The session-level lock functions are listed here as well, so that this set alone names
        # every advisory-lock function that needs the primary; SESSION_PIN_FUNCTIONS adds the pin.
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
        # Notifications (NOTIFY needs an XID; a standby refuses it).
        "pg_notify",
        # Transaction ids: assigning one is a write; a replica has none to give.
        "txid_current",
        "txid_current_if_assigned",
        "pg_current_xact_id",
        "pg_current_xact_id_if_assigned",
        # WAL positions and WAL control: they fail during recovery or act on the server they run on.
        "pg_current_wal_lsn",
        "pg_current_wal_insert_lsn",
        "pg_current_wal_flush_lsn",
        "pg_walfile_name",
        "pg_walfile_name_offset",
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_backup_start",
        "pg_backup_stop",
        "pg_start_backup",
        "pg_stop_backup",
        "pg_log_standby_snapshot",
        "pg_logical_emit_message",
        # Recovery control: aimed at a chosen server, never at whichever replica is least loaded.
        "pg_promote",
        "pg_wal_replay_pause",
        "pg_wal_replay_resume",
        # Server administration: pids, logs and statistics belong to one server, the primary.
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_log_backend_memory_contexts",
        "pg_stat_reset",
        "pg_stat_reset_shared",
        "pg_stat_reset_single_table_counters",
        "pg_stat_reset_single_function_counters",
        "pg_stat_reset_slru",
        "pg_stat_reset_replication_slot",
        "pg_stat_reset_subscription_stats",
        "pg_stat_reset_backend_stats",
        "pg_stat_statements_reset",
        "pg_import_system_collations",
        # Index maintenance functions that write.
        "brin_summarize_new_values",
        "brin_summarize_range",
        "brin_desummarize_range",
        "gin_clean_pending_list",
        # Replication slots and origins.
        "pg_create_physical_replication_slot",
        "pg_create_logical_replication_slot",
        "pg_drop_replication_slot",
        "pg_copy_physical_replication_slot",
        "pg_copy_logical_replication_slot",
        "pg_replication_slot_advance",
        "pg_logical_slot_get_changes",
        "pg_logical_slot_get_binary_changes",
        "pg_logical_slot_peek_changes",
        "pg_logical_slot_peek_binary_changes",
        "pg_sync_replication_slots",
        "pg_replication_origin_create",
        "pg_replication_origin_drop",
        "pg_replication_origin_advance",
        "pg_replication_origin_session_setup",
        "pg_replication_origin_session_reset",
        "pg_replication_origin_xact_setup",
        "pg_replication_origin_xact_reset",
        # Large objects: the writers, lo_export (writes a server file) and lo_open (a descriptor
        # opened for writing fails in a read-only transaction, and the mode is not visible here).
        "lo_create",
        "lo_creat",
        "lo_import",
        "lo_export",
        "lo_unlink",
        "lo_put",
        "lo_from_bytea",
        "lo_open",
        "lowrite",
        "lo_truncate",
        "lo_truncate64",
        # dblink: remote writes, and named connections are session state.
        "dblink_exec",
        "dblink_connect",
        "dblink_connect_u",
    }
)

# Calls that create session state which must stay on one backend: the caller pins the client's
# session to the primary (Reason.SESSION, pins_session). Not configurable: this is what the
# functions do, not a deployment's choice.
#
# `set_config` is not in either set: classify_rules.py looks at its is_local argument. With the
# constant `true` it changes only the current transaction, which stays on one backend anyway, so
# it goes wherever the rest goes: the row-level-security idiom `SELECT set_config('app.user',
# '42', true); SELECT ... FROM orders` keeps its reads on a replica. Anything else (false, or a
# $1 whose value the classifier cannot see) is a session-level SET and pins.
SESSION_PIN_FUNCTIONS: frozenset[str] = frozenset(
    {
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
    }
)

# Calls that only undo session state. In a pinned session they run on the primary like everything
# else; in an unpinned one there is nothing to undo, so they are no-ops anywhere and go to a
# replica. asyncpg's pool sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
# ALL;` at every release: if that pinned, every pooled asyncpg client would end up on the primary.
SESSION_RESET_FUNCTIONS: frozenset[str] = frozenset(
    {
        "pg_advisory_unlock",
        "pg_advisory_unlock_shared",
        "pg_advisory_unlock_all",
    }
)

# Reads of state a standby does not share with the primary, or reports about itself: two-phase
# commit (pg_prepared_xacts is empty on a standby), replication (pg_stat_replication and the
# slots exist on the primary; pg_stat_wal_receiver is empty there and full on a standby, which
# is the wrong server to ask about the primary's senders), and sessions, locks and pids: the
# client's session (its PID, locks, NOTIFY sender) lives on its primary server connection, so
# pg_stat_activity joins, lock-wait checks and pg_backend_pid() must run there. Such a read goes
# to the primary (Reason.PRIMARY_STATE) without counting as a write. Matched on the bare name;
# names starting with "pg_stat_progress_" are included too.
#
# Not here, on purpose: pg_is_in_recovery() answers truthfully for the server that runs the
# statement, and applications and our tests use it to see where a read ran.
PRIMARY_STATE_RELATIONS: frozenset[str] = frozenset(
    {
        "pg_prepared_xacts",
        "pg_stat_replication",
        "pg_replication_slots",
        "pg_stat_replication_slots",
        "pg_stat_wal_receiver",
        "pg_stat_subscription",
        "pg_stat_subscription_stats",
        "pg_replication_origin_status",
        "pg_stat_activity",
        "pg_locks",
        "pg_stat_ssl",
        "pg_stat_gssapi",
        "pg_stat_archiver",
        "pg_backend_memory_contexts",
    }
)
PRIMARY_STATE_FUNCTIONS: frozenset[str] = frozenset(
    {
        "pg_backend_pid",
        "pg_blocking_pids",
        "pg_safe_snapshot_blocking_pids",
        "pg_stat_get_activity",
        "pg_stat_get_wal_receiver",
        "pg_stat_get_replication_slot",
        "pg_stat_get_wal_senders",
        "pg_get_replication_slots",
        "pg_prepared_xact",
        "pg_lock_status",
        "pg_last_committed_xact",
        "pg_xact_commit_timestamp",
        "pg_xact_commit_timestamp_origin",
    }
)

# Introspection: calls that read the system catalogs (besides any pg_catalog.-qualified call and
# the families matched by prefix in classify_rules: pg_get_*, to_reg*, *_is_visible,
# has_*_privilege). A read using one is a catalog read (Decision.reads_catalog).
CATALOG_FUNCTIONS: frozenset[str] = frozenset(
    {
        "format_type",
        "obj_description",
        "col_description",
        "shobj_description",
        "pg_relation_is_updatable",
        "pg_column_is_updatable",
        "pg_relation_filenode",
        "pg_relation_filepath",
        "pg_describe_object",
        "pg_identify_object",
        "pg_identify_object_as_address",
        "pg_get_object_address",
        "pg_typeof",
        "current_schemas",
    }
)

# Casts to these types look names up in the catalogs ('orders'::regclass fails with 42P01 on a
# standby that has not replayed the CREATE TABLE).
CATALOG_TYPES: frozenset[str] = frozenset(
    {
        "regclass", "regtype", "regproc", "regprocedure", "regoper", "regoperator",
        "regnamespace", "regrole", "regcollation", "regconfig", "regdictionary",
    }
)  # fmt: skip
