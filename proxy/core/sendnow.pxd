# Cython declarations for sendnow.py (pure-Python mode: sendnow.py stays the one source;
# proxy/_native.py). Compiled, DirectSend is an extension type and `send` a cpdef function the hot
# write sites cimport (a C call); `_send_bytes` is send(2), non-blocking and without SIGPIPE.
cimport cython

cdef bint _COMPILED

cdef class DirectSend:
    cdef readonly object transport
    cdef readonly int fd
    cdef public object held  # bytes held to the loop round's end (SendBatch), or None

cdef class SendBatch:
    cdef public object loop
    cdef public list held
    cdef public bint armed

    cpdef flush(self)

cpdef direct_send(object transport)

@cython.locals(d=DirectSend, sent=Py_ssize_t, idle=int)
cpdef send(object transport, object direct, object data)

@cython.locals(d=DirectSend)
cpdef release(object direct)

cpdef discard(object direct)

@cython.locals(d=DirectSend, b=SendBatch)
cpdef hold(object batch, object transport, object direct, object data)

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


# uvloop's own `is_closing` and `get_write_buffer_size` of its TCPTransport, called as C functions
# (their PyMethodDef's function, with no arguments): `transport.is_closing()` from C is a method
# call through PyObject_VectorcallMethod (the type's lookup, Cython's function object's vectorcall,
# its argument checks), ~0.2k instructions each per send (docs/perf.md "Direct sends"). `_bind` looks
# the two up once, at import, on uvloop's TCPTransport: only a Cython function object (uvloop 0.23 is
# built with binding) or a builtin method descriptor, whose PyMethodDef is named as expected and
# takes METH_FASTCALL|METH_KEYWORDS or METH_NOARGS; anything else leaves the pointers NULL and
# `send` calls the methods by name as before. `send` calls them only on a transport of that exact
# type (DirectSend is made for nothing else, and `direct.transport is transport`).
from cpython.object cimport PyObject, PyTypeObject

cdef extern from "Python.h":
    ctypedef struct PyMethodDef:
        const char *ml_name
        void *ml_meth
        int ml_flags
    ctypedef struct PyCFunctionObject:
        PyMethodDef *m_ml
    ctypedef struct PyMethodDescrObject:
        PyMethodDef *d_method
    PyTypeObject PyMethodDescr_Type
    bint PyObject_TypeCheck(object, PyTypeObject *)
    const int METH_FASTCALL
    const int METH_KEYWORDS
    const int METH_NOARGS
    const int METH_COEXIST

from libc.string cimport strcmp

ctypedef object (*_fastcall_fn)(object, PyObject **, Py_ssize_t, PyObject *)
ctypedef object (*_noargs_fn)(object, PyObject *)

cdef void *_closing_fn
cdef void *_size_fn
cdef bint _closing_fast
cdef bint _size_fast


# The method `name`'s function pointer (NULL: not one `_call` can call), and whether it is fastcall.
cdef inline void *_method_fn(object f, const char *name, bint *fast):
    cdef PyMethodDef *ml = NULL
    cdef int flags
    if type(f).__name__ == "cython_function_or_method":
        ml = (<PyCFunctionObject *><PyObject *>f).m_ml  # Cython's function object starts as PyCFunctionObject
    elif PyObject_TypeCheck(f, &PyMethodDescr_Type):
        ml = (<PyMethodDescrObject *><PyObject *>f).d_method
    if ml == NULL or ml.ml_name == NULL or strcmp(ml.ml_name, name) != 0 or ml.ml_meth == NULL:
        return NULL
    flags = ml.ml_flags & ~METH_COEXIST
    if flags == (METH_FASTCALL | METH_KEYWORDS):
        fast[0] = True
        return ml.ml_meth
    if flags == METH_NOARGS:
        fast[0] = False
        return ml.ml_meth
    return NULL


cdef inline int _bind(object tcp_type) except -1:
    global _closing_fn, _size_fn, _closing_fast, _size_fast
    cdef void *closing
    cdef void *size
    _closing_fn = _size_fn = NULL
    if tcp_type is None:
        return 0
    closing = _method_fn(getattr(tcp_type, "is_closing", None), "is_closing", &_closing_fast)
    size = _method_fn(getattr(tcp_type, "get_write_buffer_size", None), "get_write_buffer_size", &_size_fast)
    if closing != NULL and size != NULL:
        _closing_fn = closing
        _size_fn = size
    return 0


# The method with no arguments, by its C function (an exception it raises propagates).
cdef inline object _call(void *fn, bint fast, object self):
    if fast:
        return (<_fastcall_fn>fn)(self, NULL, 0, NULL)
    return (<_noargs_fn>fn)(self, NULL)


# `not transport.is_closing() and transport.get_write_buffer_size() == 0` by the bound C functions
# (1 or 0; `transport` is uvloop's TCPTransport exactly), or -1 when they are not bound.
cdef inline int _idle(object transport) except -2:
    if _closing_fn == NULL:
        return -1
    if _call(_closing_fn, _closing_fast, transport):
        return 0
    return _call(_size_fn, _size_fast, transport) == 0


cdef inline bint _bound():
    return _closing_fn != NULL
