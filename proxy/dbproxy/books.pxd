# Cython declarations for books.py (pure-Python mode: the .py stays the one source;
# proxy/_native.py). Compiled, Books is an extension type whose fields (the names in its
# __slots__) are C fields, readable and writable from Python as the pure twin's slots are; the
# connection is the relay's RelayServer (its counted, sent_at and timer read in C).
cimport cython
from cpython.time cimport monotonic as _c_monotonic
from proxy._members cimport as_members
from proxy.upstream.backend cimport LatencyHistogram
from proxy.pgfront.relay cimport RelayServer, RelayBooks

cdef bint _COMPILED

cdef object _monotonic
cdef object _bisect_left
cdef object _get_running_loop
cdef object _query_timed_out

cdef class Books(RelayBooks):
    cdef public object _latency_of
    cdef public object cache
    cdef public object clock
    cdef public object follower
    cdef public object metrics
    cdef public object monitor
    cdef public object outstanding
    cdef public object query_timeout

    @cython.locals(outstanding=dict)
    cpdef started(self, RelayServer conn)
    @cython.locals(outstanding=dict, latency_of=dict, hist=LatencyHistogram)
    cpdef finished(self, RelayServer conn)

@cython.locals(bounds=tuple, lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t, bound=double)
cdef int _observe(LatencyHistogram hist, double value) except -1
