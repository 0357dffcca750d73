# Cython declarations for books.py (pure-Python mode: the .py stays the one source;
# proxy/_native.py). Compiled, Books is an extension type whose fields (the names in its
# __slots__) are C fields, readable and writable from Python as the pure twin's slots are; the
# connection is the relay's RelayServer (its counted, sent_at and timer read in C).
cimport cython
from cpython.time cimport monotonic as _c_monotonic
from cpython.mem cimport PyMem_Realloc, PyMem_Free
from libc.string cimport memset
from proxy._members cimport as_members
from proxy.pgfront.relay cimport RelayServer, RelayBooks
from proxy.dbproxy.outstanding cimport Outstanding

cdef bint _COMPILED

cdef object _monotonic
cdef object _bisect_left
cdef object _get_running_loop
cdef object _query_timed_out

# A role's query latency: its counts (_n, _nb + 1 items) and bounds (_b, _nb) C arrays.
cdef class QueryHistogram:
    cdef public object _counts
    cdef public tuple bounds
    cdef public double sum
    cdef public unsigned long long count
    cdef unsigned long long *_n
    cdef double *_b
    cdef Py_ssize_t _nb

cdef class Books(RelayBooks):
    cdef public object _latency_of
    cdef public object cache
    cdef public object clock
    cdef public object follower
    cdef public object metrics
    cdef public object monitor
    cdef public object outstanding
    cdef public object query_timeout
    cdef public object route_counts

    @cython.locals(outstanding=dict, slots=Outstanding)
    cpdef started(self, RelayServer conn)
    @cython.locals(outstanding=dict, latency_of=dict, hist=QueryHistogram, slots=Outstanding, i=Py_ssize_t)
    cpdef finished(self, RelayServer conn)

@cython.locals(b="double *", lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t)
cdef int _observe(QueryHistogram hist, double value) except -1

cdef inline int _hist_arrays(QueryHistogram h) except -1:
    cdef Py_ssize_t i, nb = len(h.bounds)
    h._n = <unsigned long long *>PyMem_Realloc(NULL, (nb + 1) * sizeof(unsigned long long))
    h._b = <double *>PyMem_Realloc(NULL, (nb + 1) * sizeof(double))
    if h._n == NULL or h._b == NULL:
        raise MemoryError()
    memset(h._n, 0, (nb + 1) * sizeof(unsigned long long))
    for i in range(nb):
        h._b[i] = h.bounds[i]
    h._nb = nb
    return 0

cdef inline void _hist_free(QueryHistogram h):
    PyMem_Free(h._n)
    PyMem_Free(h._b)
    h._n = NULL
    h._b = NULL
    h._nb = 0

# The replica monitor's base (monitor.py's ReplicaMonitor): its shared views a C field, read by
# the compiled session per read.
cdef class MonitorViews:
    cdef public object _views

# The route counts: a slot per (backend, reason), its count an item of a C array (_n, _cap items,
# the first len(_keys) in use, zeroed when made).
cdef class RouteCounts:
    cdef public object _counts
    cdef public object _index
    cdef public object _keys
    cdef unsigned long long *_n
    cdef Py_ssize_t _cap

    @cython.locals(i=Py_ssize_t)
    cpdef Py_ssize_t slot(self, route) except -1

cdef inline int _grow(RouteCounts c, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap
    cdef unsigned long long *n
    if need <= c._cap:
        return 0
    cap = need if need > 2 * c._cap else 2 * c._cap
    if cap < 16:
        cap = 16
    n = <unsigned long long *>PyMem_Realloc(c._n, cap * sizeof(unsigned long long))
    if n == NULL:
        raise MemoryError()
    memset(n + c._cap, 0, (cap - c._cap) * sizeof(unsigned long long))
    c._n = n
    c._cap = cap
    return 0

cdef inline void _free_counts(RouteCounts c):
    PyMem_Free(c._n)
    c._n = NULL
    c._cap = 0
