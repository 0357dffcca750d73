# Cython declarations for framing.py (pure-Python mode: framing.py stays the one source;
# proxy/_native.py). Compiled, the framers and Message are extension types: their attributes
# (the names in each class's __slots__) are C fields, so making a Message or reading a framer's
# state costs no dictionary or descriptor lookup; every field stays readable and writable from
# Python (`public`), as the pure twin's slots are.
cimport cython

cdef bint _COMPILED

cdef class Message:
    cdef public object type
    cdef public object raw
    cdef public Py_ssize_t _header

cdef class _Framer:
    cdef public object _big
    cdef public list _chunks
    cdef public Py_ssize_t _have
    cdef public Py_ssize_t _need
    cdef public bint _dead
    cdef public bytes _known
    cdef public Py_ssize_t max_message_length

    cpdef Py_ssize_t _scan_typed(self, bytes buf, object view, Py_ssize_t pos, list out) except -1

    @cython.locals(end=Py_ssize_t, avail=Py_ssize_t, code=Py_ssize_t, length=Py_ssize_t, total=Py_ssize_t,
                   limit=Py_ssize_t, known=bytes)
    cdef Py_ssize_t _scan_interpreted(self, bytes buf, object view, Py_ssize_t pos, list out) except -1

    # p: the bytes of buf (read below end = len(buf) only); msg: made by Message.__new__, its fields set in C.
    @cython.locals(end=Py_ssize_t, avail=Py_ssize_t, code=Py_ssize_t, length=Py_ssize_t, total=Py_ssize_t,
                   limit=Py_ssize_t, known=bytes, p="const unsigned char *", msg=Message)
    cdef Py_ssize_t _scan_compiled(self, bytes buf, object view, Py_ssize_t pos, list out) except -1

cdef class FrontendFramer(_Framer):
    cdef public int _phase
    cdef public Py_ssize_t max_startup_length

cdef class BackendFramer(_Framer):
    cdef public bint _expect_byte
