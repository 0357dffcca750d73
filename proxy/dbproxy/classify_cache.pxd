# Cython declarations for classify_cache.py (pure-Python mode: classify_cache.py stays the one
# source; proxy/_native.py). Compiled, ClassifierCache is an extension type: its dicts typed, its
# counters C integers (read and set from Python as ints), `get_bytes` a C method (the dbproxy
# session cimports this type and calls it in C), the key classify_key.py's scanner called in C.
cimport cython
from proxy.dbproxy.classify_key cimport _key_typed

cdef bint _COMPILED
cdef Py_ssize_t _MAX_CACHED

cdef class ClassifierCache:
    cdef dict _by_bytes
    cdef dict _entries
    cdef object _classify
    cdef object _maxsize
    cdef object _write_functions
    cdef public Py_ssize_t hits
    cdef public Py_ssize_t misses

    @cython.locals(entries=dict)
    cpdef get(self, sql)
    cdef _remember(self, dict entries, key, decision)
    @cython.locals(entries=dict)
    cpdef get_bytes(self, sql)
