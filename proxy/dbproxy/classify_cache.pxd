# Cython declarations for classify_cache.py (pure-Python mode: classify_cache.py stays the one
# source; proxy/_native.py). Compiled, ClassifierCache is an extension type: its dicts typed, its
# counters C integers (read and set from Python as ints), `get_bytes` a C method (the dbproxy
# session cimports this type and calls it in C), the key classify_key.py's scanner called in C.
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memcmp

from proxy.dbproxy.classify_key cimport _key_in, _key_typed

cdef bint _COMPILED
cdef Py_ssize_t _MAX_CACHED
cdef Py_ssize_t _MEMO_TEXT
cdef bytes _NO_KEY

# The memo's slot for a key (k[:w]): its length and two of its bytes (each before k[w], or k[0] of
# an empty text, the NUL after a bytes object's text).
cdef inline Py_ssize_t _slot(const unsigned char *k, Py_ssize_t w) noexcept:
    return (w * 5 + k[w >> 1] * 3 + k[(w * 3) >> 2]) & 63

# Whether the memo's key `mk` (exact bytes) is k[:w].
cdef inline bint _memo_is(object mk, const unsigned char *k, Py_ssize_t w) noexcept:
    return PyBytes_GET_SIZE(mk) == w and memcmp(PyBytes_AS_STRING(mk), k, w) == 0

cdef class ClassifierCache:
    cdef dict _by_bytes
    cdef dict _entries
    cdef object _classify
    cdef object _maxsize
    cdef object _write_functions
    cdef public Py_ssize_t hits
    cdef public Py_ssize_t misses
    cdef list _memo_keys
    cdef list _memo_decisions

    @cython.locals(entries=dict)
    cpdef get(self, sql)
    cdef _remember(self, dict entries, key, decision)
    cdef _forget(self, key)
    @cython.locals(entries=dict, b=bytes, n=Py_ssize_t, w=Py_ssize_t, k="const unsigned char *", slot=Py_ssize_t,
                   own=bint, small="unsigned char[512]")
    cpdef get_bytes(self, sql)
