# Cython declarations for session_router.py (pure-Python mode: the .py stays the one source;
# proxy/_native.py). Compiled, SessionRouter is an extension type whose fields (the names in its
# __slots__) are C fields, readable and writable from Python as the pure twin's slots are; the
# helpers of `route` are C functions and methods.
cimport cython
from proxy._members cimport as_members
from proxy.dbproxy.classify_types cimport Decision
from proxy.dbproxy.outstanding cimport Outstanding
from proxy.pgfront.relay cimport RelayRouter
from cpython.list cimport PyList_GET_ITEM

cdef object _PRIMARY
cdef object _R_HINT
cdef object _R_PRIMARY_STATE
cdef object _R_TRANSACTION_CONTROL
cdef object _RR_HINT
cdef object _RR_READ
cdef object _RR_TRANSACTION
cdef object _T_PRIMARY
cdef object _T_REPLICA
cdef object _new_route
cdef frozenset _ROLLBACK_DETAILS
cdef Py_ssize_t _MAX_TIES
cdef object _P_FALLBACK
cdef object _P_HINT
cdef object _P_PINNED
cdef object _P_READ_YOUR_WRITES
cdef object _P_TRANSACTION
cdef object _P_WRITE

cdef bint _usable(object r, object max_lag_bytes, object max_lag_seconds) except -1

@cython.locals(best=list)
cdef object _least_loaded(object replicas, object min_lsn, object rotation, object outstanding)

cdef bint _is_write(Decision d, object detail) except -1

cdef object _with_lag(object replicas, object primary_lsn)

# `name in names`, the items tested by identity first (`_pick_read`: the session's bound replica
# among the usable names, the same str objects as a rule); the list's contains when none is it.
cdef inline bint _has_name(list names, object name) except -1:
    cdef Py_ssize_t i
    for i in range(len(names)):
        if <object>PyList_GET_ITEM(names, i) is name:
            return True
    return name in names

cdef class SessionRouter(RelayRouter):
    cdef public object _commit_epoch
    cdef public object _commit_pending
    cdef public object _last_commit_lsn
    cdef public object _last_target
    cdef public object _last_write_at
    cdef public object _max_lag_bytes
    cdef public object _max_lag_seconds
    cdef public object _mode
    cdef public object _on_commit
    cdef public object _on_move
    cdef public object _read_name
    cdef public object _read_route
    cdef public object _read_routes
    cdef public object needs_commit_lsn
    cdef public object pinned
    cdef public object _rotation
    cdef public object _sessions
    cdef public object _sticky
    cdef public object transaction_backend
    cdef public object _txn_failed
    cdef public object _uncommitted_ddl
    cdef public object _uncommitted_write
    cdef public object _usable_for
    cdef public object _usable_names
    cdef public object _usable_views
    cdef public object _usable_weights
    cdef public object _window
    cdef public object _window_mode

    # The session's per-statement entry (`route` calls it too): positional, a C call from the
    # compiled session, which has read the decision's target and detail already; the decision's
    # other fields are read in C (classify_types.pxd).
    @cython.locals(d=Decision, routes=dict, on_primary=bint)
    cpdef object route_at(self, Decision decision, bint replica, object detail, double now, object replicas,
                          object outstanding, object floor_lsn)
    # The relay's hook per ReadyForQuery (relay.pxd's RelayRouter): a C call from the relay.
    cpdef on_ready_for_query(self, object status, bint failed=*)
    cdef int _note_write(self, double now, Decision d) except -1
    cdef int _leave(self, object new) except -1
    @cython.locals(names=list)
    cdef object _pick_read(self, double now, object replicas, object outstanding, object floor=*)
    cdef int _usable_from(self, tuple replicas, object max_b, object max_s) except -1
    @cython.locals(views=list, names=list, weights=list, counts=dict, slots=Outstanding, n=Py_ssize_t, i=Py_ssize_t,
                   ties=Py_ssize_t, k=Py_ssize_t, rot=Py_ssize_t, tied="Py_ssize_t[16]",
                   best_key=double, key=double, lf=double, wf=double)
    cdef object _least_loaded_here(self, object min_lsn, object outstanding)
