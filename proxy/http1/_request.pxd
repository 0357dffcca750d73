# Cython declarations for _request.py (pure-Python mode: _request.py stays the one source;
# proxy/_native.py). Compiled, RequestCore is an extension type whose fields are C fields (objects,
# made member descriptors at import so parser.py's interpreted code reads them as slots), and
# feed_simple a C method (cpdef: RequestParser, a Python subclass, and the cdn call it from Python).
cimport cython
# simple_request is _simple's compiled scanner, called in C (the pure twin imports it by that name);
# proxy/_native.py then compiles this module only where _simple is compiled too.
from proxy.http1._simple cimport _scan_request as simple_request
from proxy._members cimport as_members

cdef Py_ssize_t REMEMBER_MAX

cdef class RequestCore:
    cdef public object _in_msg, _last_head, _last_simple, _max_head, _pending, _state

    cpdef feed_simple(self, data)
