# Cython declarations for _head.py (pure-Python mode: _head.py stays the one source;
# proxy/_native.py). Compiled, RequestHead is an extension type: its fields are C fields, all
# readable and writable from Python (`public`) as the pure twin's slots are, and untyped (object),
# so they hold exactly what the pure twin's hold.
cimport cython

cdef object _NO_BODY, _NEW_LIST
cdef tuple _FIELDS

# (No free list: Cython 3.3 ignores `@cython.freelist` in a .pxd, and the pure twin's .py must not
# import Cython to carry it there; docs/perf.md.)
cdef class RequestHead:
    cdef public object method, target, version, headers, keep_alive, framing, content_length, upgrade
    cdef public object expect_continue, host, raw_fields, forward

    cpdef tuple _key(self)

@cython.locals(head=RequestHead)
cpdef RequestHead _simple_head(method, target, host, raw_fields, forward)
