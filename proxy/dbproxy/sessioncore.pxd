# Cython declarations for sessioncore.py (pure-Python mode: sessioncore.py stays the one source;
# proxy/_native.py). Compiled, SessionCore is an extension type deriving from the relay's
# RelaySession: its fields (the names in _FIELDS) are C fields, exposed to Python as member
# descriptors (relay.py's as_members); a server connection is typed RelayServer and a sync group
# SyncGroup, so their relay fields are read and written in C; the framer is typed (its `_have`
# and limit read in C) and the whole-packet recogniser is scan.py's, called in C; the daemon is
# typed Books (its `outstanding` a C field, `started` a C call) and the router SessionRouter (its
# `transaction_backend`, `pinned`, `needs_commit_lsn` C fields), the classifier's decision Decision
# (its fields read in C). proxy/_native.py compiles this module only where relay, framing, scan,
# books, session_router, classify_cache and classify_types are compiled too (CIMPORTS).
cimport cython
from proxy.pgfront.relay cimport RelaySession, RelayServer, SyncGroup, _differs
from proxy.core.sendnow cimport send
from proxy.pgwire.framing cimport Message, _Framer
from proxy.pgwire.scan cimport _whole_typed
from cpython.time cimport monotonic as _c_monotonic
from proxy.dbproxy.books cimport Books, MonitorViews, RouteCounts
from cpython.unicode cimport PyUnicode_GET_LENGTH
from proxy.dbproxy.session_router cimport SessionRouter
from proxy.dbproxy.classify_cache cimport ClassifierCache
from proxy.dbproxy.classify_types cimport Decision
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.ref cimport PyObject
from libc.string cimport memcmp

# A whole Query's text (raw[5:-1], raw at least 6 bytes: the recogniser checked it) copied out
# directly; Cython slices bytes through PySequence_GetSlice and a slice object (~0.55k instructions).
cdef inline bytes _query_text(bytes raw):
    cdef Py_ssize_t n = len(raw)
    if n < 6:
        return raw[5:-1]
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(raw) + 5, n - 6)

# A route's target (route[0]): a Route is a tuple subclass, whose indexing goes through Python's
# __getitem__ (slot_sq_item); its item is read in C.
cdef inline object _route_target(object route):
    if isinstance(route, tuple) and len(<tuple>route) > 0:
        return <object>PyTuple_GET_ITEM(route, 0)
    return route[0]

# _unnamed_packet: `data` starts with all of `prefix`, which is n bytes long (the session's last
# unnamed Parse against this packet's, compared in place: no slice of data).
cdef inline bint _same_prefix(bytes data, bytes prefix, Py_ssize_t n):
    return (len(prefix) == n and len(data) >= n
            and memcmp(PyBytes_AS_STRING(data), PyBytes_AS_STRING(prefix), n) == 0)

# data[start:] (start <= len(data)) copied out directly, without a slice object (see _query_text).
cdef inline bytes _tail(bytes data, Py_ssize_t start):
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + start, len(data) - start)

# A new sync group, as SyncGroup() makes it (relay.py's __init__: keep the two alike), without the
# generic call of the type and its __init__'s argument parsing (~0.1k instructions a statement).
cdef inline SyncGroup _new_group():
    cdef SyncGroup g = SyncGroup.__new__(SyncGroup)
    g.flags = []
    g.names = []
    g.by_query = False
    return g

cdef object _deque_append
cdef str _MULTI_STATEMENT, _PRIMARY_NAME
cdef frozenset _DB_ADMIN_DETAILS

# `a == b` for a str `b` (a literal): `a` the same object, or a str of b's length equal to it
# (compared untyped, `a == b` went through PyUnicode_Compare, ~0.1k instructions).
cdef inline bint _is_str(object a, str b) except -1:
    if a is b:
        return True
    if type(a) is str:
        return PyUnicode_GET_LENGTH(<str>a) == PyUnicode_GET_LENGTH(b) and <str>a == b
    return a == b

cdef bint _COMPILED, _BOOKS_COMPILED
cdef Py_ssize_t _MAX_BATCH
cdef object _T_PRIMARY, _T_REPLICA, _PRIMARY, _monotonic, _UNDECIDED, _UNPACK_INT32
cdef tuple _FIELDS

cdef _parse_on(dict prepared, name, raw, SyncGroup group, list out, bint injected)

cdef class SessionCore(RelaySession):
    cdef public object _avoid, _count_in, _count_route, _plain, _query_aux, _query_decision, _resend, _unnamed, aborted, admin, batch, batch_bytes, current, framer, inbox
    cdef public object inflight, last_route, servers, skip_until_sync, statements, waiting
    cdef public Py_ssize_t _count_slot, statements_run

    @cython.locals(c=Py_ssize_t, n=Py_ssize_t, end_p=Py_ssize_t, framer=_Framer, raw=bytes)
    cpdef data_received(self, data)

    @cython.locals(pos=Py_ssize_t, end_d=Py_ssize_t, m_p=Message, m_s=Message, memo=tuple, d=Books, same=bint,
                   statements=dict)
    cdef bint _unnamed_packet(self, bytes data, Py_ssize_t n, Py_ssize_t end_p) except -1

    @cython.locals(m=Message, d=Books, cache=ClassifierCache, aux=tuple)
    cdef _query(self, bytes raw)

    cpdef _decision(self, batch)

    @cython.locals(conn=RelayServer, servers=dict, replica=bint, d=Books, router=SessionRouter, dec=Decision)
    cdef _dispatch_at(self, batch=*, decision=*, whole=*)

    cpdef _route(self, decision)
    @cython.locals(now=double, d=Books, router=SessionRouter, monitor=MonitorViews, counts=RouteCounts)
    cdef _route_at(self, Decision decision, bint replica, catalog, detail)

    @cython.locals(group=SyncGroup, msg=Message, was_busy=bint, prepared=dict, d=Books, router=SessionRouter,
                   backend=str)
    cpdef _send(self, RelayServer conn, batch, whole=*)
