# Cython declarations for outstanding.py (pure-Python mode: the .py stays the one source;
# proxy/_native.py). Compiled, Outstanding is an extension type whose counts are a C array (_n,
# _cap items, the first len(_keys) in use, zeroed when made), read and counted in C by the books
# (books.pxd) and read by the compiled router (session_router.pxd).
cimport cython
from cpython.mem cimport PyMem_Realloc, PyMem_Free
from libc.string cimport memset
from proxy._members cimport as_members

cdef bint _COMPILED

cdef class Outstanding:
    cdef public object _counts
    cdef public dict _index
    cdef public list _keys
    cdef public list hists
    cdef long long *_n
    cdef Py_ssize_t _cap

    @cython.locals(keys=list, n=Py_ssize_t, i=Py_ssize_t)
    cpdef Py_ssize_t find(self, backend) except -2
    @cython.locals(i=Py_ssize_t)
    cpdef Py_ssize_t slot(self, backend) except -1
    @cython.locals(i=Py_ssize_t)
    cpdef long long count_of(self, backend) except? -1

cdef inline int _grow(Outstanding c, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap
    cdef long long *n
    if need <= c._cap:
        return 0
    cap = need if need > 2 * c._cap else 2 * c._cap
    if cap < 8:
        cap = 8
    n = <long long *>PyMem_Realloc(c._n, cap * sizeof(long long))
    if n == NULL:
        raise MemoryError()
    memset(n + c._cap, 0, (cap - c._cap) * sizeof(long long))
    c._n = n
    c._cap = cap
    return 0

cdef inline void _free_counts(Outstanding c):
    PyMem_Free(c._n)
    c._n = NULL
    c._cap = 0
