# Cython declarations for _head.py (pure-Python mode: _head.py stays the one source;
# proxy/_native.py). Compiled, RequestHead is an extension type: its fields are C fields, all
# readable and writable from Python (`public`) as the pure twin's slots are, and untyped (object),
# so they hold exactly what the pure twin's hold.
cimport cython

cdef object _NO_BODY, _NEW_LIST
cdef tuple _FIELDS

# A request's head lives for one exchange: a free list of them spares an allocation and a free per
# request (the simple path makes one per request).
@cython.freelist(16)
cdef class RequestHead:
    cdef public object method, target, version, headers, keep_alive, framing, content_length, upgrade
    cdef public object expect_continue, host, raw_fields, forward

    cpdef tuple _key(self)

@cython.locals(head=RequestHead)
cpdef RequestHead _simple_head(method, target, host, raw_fields, forward)
