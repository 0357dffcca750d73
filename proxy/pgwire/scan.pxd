# Cython declarations for scan.py (pure-Python mode: scan.py stays the one source; proxy/_native.py).
# _whole_typed reads the bytes through a pointer (p): every index read is below n = len(data),
# checked before it.
cimport cython
from libc.string cimport memchr

@cython.locals(n=Py_ssize_t, c=Py_ssize_t, length=Py_ssize_t, end_p=Py_ssize_t, pos=Py_ssize_t, end_d=Py_ssize_t,
               p="const unsigned char *")
cpdef Py_ssize_t _whole_typed(object data) except -1

@cython.locals(hi=Py_ssize_t)
cdef inline Py_ssize_t _int32(const unsigned char *p, Py_ssize_t at) noexcept

# The index of the first NUL in p[start:n], or -1 (compiled only: _whole_typed's Query test; the
# pure twin's is bytes.find).
cdef inline Py_ssize_t _first_nul(const unsigned char *p, Py_ssize_t start, Py_ssize_t n) noexcept:
    cdef const void *at = memchr(p + start, 0, n - start)
    return -1 if at == NULL else <Py_ssize_t>(<const unsigned char *>at - p)
