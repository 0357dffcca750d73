# Cython declarations for sendnow.py (pure-Python mode: sendnow.py stays the one source;
# proxy/_native.py). Compiled, DirectSend is an extension type and `send` a cpdef function the hot
# write sites cimport (a C call); `_send_bytes` is send(2), non-blocking and without SIGPIPE.
cimport cython

cdef bint _COMPILED

cdef class DirectSend:
    cdef readonly object transport
    cdef readonly int fd

cpdef direct_send(object transport)

@cython.locals(d=DirectSend, sent=Py_ssize_t)
cpdef send(object transport, object direct, object data)

cdef extern from "sys/socket.h" nogil:
    ssize_t _c_send "send"(int fd, const void *buf, size_t n, int flags)
    const int MSG_DONTWAIT
    const int MSG_NOSIGNAL

cdef extern from "Python.h":
    char *PyBytes_AS_STRING(object)
    Py_ssize_t PyBytes_GET_SIZE(object)

# What send(2) took of `data` (a bytes), or -1 (errno: EAGAIN, or an error uvloop will meet again).
cdef inline Py_ssize_t _send_bytes(int fd, object data) noexcept:
    return _c_send(fd, PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data), MSG_DONTWAIT | MSG_NOSIGNAL)
