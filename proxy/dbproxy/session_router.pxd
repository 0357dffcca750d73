# Cython declarations for session_router.py (pure-Python mode: the .py stays the one source;
# proxy/_native.py). Compiled, SessionRouter is an extension type whose fields (the names in its
# __slots__) are C fields, readable and writable from Python as the pure twin's slots are; the
# helpers of `route` are C functions and methods.
cimport cython
from cpython.object cimport PyObject, PyTypeObject
from cpython.mem cimport PyMem_Malloc

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
cdef tuple _STATUSES
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

cdef bint _is_write(object d) except -1

cdef object _with_lag(object replicas, object primary_lsn)

cdef class SessionRouter:
    cdef public object _commit_epoch
    cdef public object _commit_pending
    cdef public object _last_commit_lsn
    cdef public object _last_target
    cdef public object _last_write_at
    cdef public object _max_lag_bytes
    cdef public object _max_lag_seconds
    cdef public object _mode
    cdef public object _on_commit
    cdef public object _read_routes
    cdef public object needs_commit_lsn
    cdef public object pinned
    cdef public object _rotation
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

    cdef int _note_write(self, object now, object d) except -1
    cdef tuple _pick_read(self, object now, object replicas, object outstanding, object floor=*)
    @cython.locals(views=list, names=list, weights=list, counts=dict, n=Py_ssize_t, i=Py_ssize_t,
                   ties=Py_ssize_t, k=Py_ssize_t, rot=Py_ssize_t, tied="Py_ssize_t[16]",
                   best_key=double, key=double, lf=double, wf=double)
    cdef object _least_loaded_here(self, object min_lsn, object outstanding)


# Cython exposes a `public` field to Python through a getset descriptor, which CPython 3.11 does
# not specialise: every read or write of it by interpreted code (the session's _send, the
# daemon's books) takes the generic attribute path, ~100 instructions more. A member descriptor
# of type T_OBJECT_EX is what a Python class's __slots__ gives, and CPython specialises it
# (LOAD_ATTR_SLOT, STORE_ATTR_SLOT). `_as_members` replaces the getset descriptors of the given
# object fields with such member descriptors, at import: each field's offset is found by setting
# it to a fresh object on a new instance and finding that pointer in the instance's memory.
# (A typed field, such as `_owner`, must keep its getset: a member would not check the type.)
cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        const char *name
        int type
        Py_ssize_t offset
        int flags
        const char *doc
    object PyDescr_NewMember(PyTypeObject *, PyMemberDef *)
    void PyType_Modified(PyTypeObject *)
    int PyDict_SetItem(object, object, object) except -1

cdef list _MEMBER_NAMES

@cython.locals(t="PyTypeObject *", defs="PyMemberDef *", i=Py_ssize_t, off=Py_ssize_t, found=Py_ssize_t,
               bname=bytes)
cdef inline int _as_members(type cls, tuple names) except -1:
    t = <PyTypeObject *>cls
    obj = cls.__new__(cls)
    defs = <PyMemberDef *>PyMem_Malloc(len(names) * sizeof(PyMemberDef))
    if defs == NULL:
        raise MemoryError()
    for i in range(len(names)):
        name = names[i]
        sentinel = object()
        setattr(obj, name, sentinel)
        found = -1
        off = sizeof(PyObject)
        while off + <Py_ssize_t>sizeof(void *) <= t.tp_basicsize:
            if (<PyObject **>(<char *><PyObject *>obj + off))[0] == <PyObject *>sentinel:
                found = off
                break
            off += sizeof(void *)
        setattr(obj, name, None)
        if found < 0:
            raise RuntimeError(f"field {name} of {cls.__name__} not found")
        bname = name.encode("ascii")
        _MEMBER_NAMES.append(bname)  # the descriptor keeps a pointer to the name
        defs[i].name = bname
        defs[i].type = 16  # T_OBJECT_EX
        defs[i].offset = found
        defs[i].flags = 0
        defs[i].doc = NULL
        PyDict_SetItem(<object>t.tp_dict, name, PyDescr_NewMember(t, &defs[i]))
    PyType_Modified(t)
    return 0
