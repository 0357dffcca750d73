# Cython declarations for relay.py (pure-Python mode: relay.py stays the one source;
# proxy/_native.py). Compiled, SyncGroup, RelaySession and RelayServer are extension types whose
# fields (the names in each class's __slots__) are C fields, readable and writable from Python
# as the pure twin's slots are; `relay` reads the bytes through a pointer (`p`: every index read
# is under n = len(data); data must be bytes or bytearray, as a transport gives).
cimport cython
from cpython.object cimport PyObject, PyTypeObject
from cpython.mem cimport PyMem_Malloc
from proxy.core.sendnow cimport send, _method_fn, _noargs_fn
from cpython.object cimport Py_SIZE

cdef bint _COMPILED
cdef Py_ssize_t _MAX_LENGTH
cdef bytes _SPECIAL
cdef tuple _BYTE1
cdef object _popleft
cdef type _DEQUE
cdef void *_popleft_fn

# deque.popleft's C function (a METH_NOARGS method descriptor, found once at import: _bind_popleft)
# and a deque's length as Py_SIZE (CPython's deque_len), checked on a deque of three first; NULL
# (by name, as before) if either is not as expected.
cdef inline int _bind_popleft(object dq) except -1:
    global _popleft_fn
    cdef bint fast = True
    cdef void *fn = _method_fn(_DEQUE.popleft, "popleft", &fast)
    _popleft_fn = NULL
    if fn != NULL and not fast and type(dq) is _DEQUE and len(dq) == 3 and Py_SIZE(dq) == 3:
        _popleft_fn = fn
    return 0

# At a ReadyForQuery: the answered group taken off a server connection's `groups` (if any), and how
# many are left (0: none). For a deque (server.py's) C calls: popleft's C function and the length;
# `_popleft(groups)` and truth tests otherwise (the twin's `groups.popleft()` and `if groups`).
cdef inline Py_ssize_t _pop_answered(object groups) except -1:
    if _popleft_fn != NULL and type(groups) is _DEQUE:
        if Py_SIZE(groups) > 0:
            (<_noargs_fn>_popleft_fn)(groups, NULL)
        return Py_SIZE(groups)
    if groups:
        _popleft(groups)
    return 1 if groups else 0

# a != b for two str (None: not a str), the lengths compared before the text: Cython's compare of two
# str tests their identity, then calls PyUnicode_Compare (~0.1k instructions) even for another
# length (a session's phase "ready" against "closed").
cdef inline bint _differs(str a, str b):
    if a is b:
        return False
    if a is None or b is None or len(a) != len(b):
        return True
    return a != b

cdef class SyncGroup:
    cdef public object flags
    cdef public object names
    cdef public object by_query

cdef class RelaySession:
    cdef public object d
    cdef public object router
    cdef public object transport
    cdef public object direct  # proxy/core/sendnow.py's DirectSend for `transport`, or None
    cdef public object phase
    cdef public object ending
    cdef public object terminating
    cdef public object _multi

cdef class RelayServer:
    cdef public object groups
    cdef public object open_group
    cdef public object status
    cdef public object copy
    cdef public object errored
    cdef public object replay
    cdef public object prepared
    cdef public object params
    cdef public object fatal
    cdef public object session
    cdef public object backend
    cdef public object closed
    cdef public object transport
    cdef public object direct  # proxy/core/sendnow.py's DirectSend for `transport`, or None
    cdef public object counted
    cdef public double sent_at
    cdef public object timer
    cdef public RelaySession _owner
    cdef public object _rest
    cdef public Py_ssize_t _skip
    cdef public Py_ssize_t received
    cdef public bint _internal

    @cython.locals(k=Py_ssize_t, used=Py_ssize_t)
    cpdef data_received(self, object data)

# The hooks the relay calls at a ReadyForQuery, as bases a daemon's books and router derive from
# (books.py's Books, session_router.py's SessionRouter): cpdef, so they are C calls (_answered).
cdef class RelayBooks:
    cpdef finished(self, RelayServer conn)
    cpdef restart_query_timer(self, RelayServer conn)

cdef class RelayRouter:
    cpdef on_ready_for_query(self, object status, bint failed=*)

# The session's daemon and router as the bases, once `isinstance` has said they are (Cython's
# assignment to a typed local tests the type again, ~25 instructions each).
cdef inline RelayBooks _as_books(object d):
    return <RelayBooks>d

cdef inline RelayRouter _as_router(object r):
    return <RelayRouter>r

@cython.locals(failed=bint, left=Py_ssize_t)
cdef int _answered(RelaySession s, RelayServer conn, object status) except -1

@cython.locals(phase=str, n=Py_ssize_t, pos=Py_ssize_t, start=Py_ssize_t, end=Py_ssize_t, length=Py_ssize_t,
               t=Py_ssize_t, p="const unsigned char *", special="const unsigned char *", g=SyncGroup)
cpdef Py_ssize_t relay(RelaySession s, RelayServer conn, object data) except -1


# The object fields as member descriptors (interpreted code reads them as fast as the pure twin's
# slots): proxy/_members.pxd, shared with the other compiled modules.
from proxy._members cimport as_members as _as_members
