# Cython declarations for backend.py (pure-Python mode: backend.py stays the one source;
# proxy/_native.py). Compiled, Backend and LatencyHistogram are extension types: C fields, all
# public; Backend's object fields are made member descriptors at import (proxy/_members.pxd).
cimport cython
from proxy._members cimport as_members

cdef bint _COMPILED

@cython.locals(lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t, less=bint)
cdef Py_ssize_t _bucket(tuple bounds, double value) except -1

cdef class LatencyHistogram:
    cdef public tuple bounds
    cdef public list counts
    cdef public double sum
    # A C counter: `count += 1` per response made a new int object past 256 (the counts' list
    # items stay ints: the status pages read the list).
    cdef public unsigned long long count

    @cython.locals(i=Py_ssize_t)
    cpdef observe(self, double value)

cdef class Backend:
    cdef public object pool_name, name, address, host, port, weight, backup, health, draining, removed
    cdef public object inflight, idle, open_connections, requests, responses, failures, fail_streak
    cdef public LatencyHistogram latency
    cdef public object health_checks_ok, health_checks_failed, ejections, check_loop
