# Cython declarations for rotation.py (pure-Python mode: rotation.py stays the one source;
# proxy/_native.py). Compiled, the three balancers are extension types: the pool's pick
# (lb/clientcore.py) calls `pick` through Balancer's vtable, which for a Python subclass
# (balancer.py's other algorithms) dispatches to its own `pick`.
cimport cython
from proxy._members cimport as_members

cdef object _EMPTY

cdef class Balancer:
    cdef public object _last, members

    cpdef pick(self, candidates, key=*)

cdef class RoundRobin(Balancer):
    cdef public Py_ssize_t _next

    @cython.locals(n=Py_ssize_t, i=Py_ssize_t)
    cpdef pick(self, candidates, key=*)

cdef class WeightedRoundRobin(Balancer):
    cdef public dict _saved
    cdef public list _names, _weights, _current
    cdef public object _total

    cpdef _rebind(self, candidates)
    @cython.locals(best=Py_ssize_t, i=Py_ssize_t)
    cpdef pick(self, candidates, key=*)
