# Cython declarations for _response.py (pure-Python mode: _response.py stays the one source;
# proxy/_native.py). Compiled, ResponseParser is an extension type: its state (the names in its
# __slots__) is C fields, so `feed_simple`, `expect` and the full parser's loop read and write it
# without a descriptor lookup; every field stays readable and writable from Python (`public`), as
# the pure twin's slots are. `_remaining` stays an object: a chunk-size may be up to 16 hex digits.
cimport cython
# simple_response is _simple's compiled scanner, called in C (the pure twin imports _match_response
# under that name); proxy/_native.py then compiles this module only where _simple is compiled too.
from proxy.http1._simple cimport _scan_response as simple_response

from libc.string cimport memcmp
from proxy._deque cimport _call1, _call2

cdef bint _COMPILED

cdef extern from "Python.h":
    char *PyBytes_AS_STRING(object)
    Py_ssize_t PyBytes_GET_SIZE(object)

# ResponseParser.feed_simple's memo check: `data` starts with the last simple response's head,
# which is the first `result[1]` bytes of `head` (compiled, `head` is that whole response when it
# was short: no copy of its head was made). By memcmp when both are bytes.
cdef inline bint _same_start(object data, bytes head, object result) except -1:
    cdef Py_ssize_t n
    if type(data) is not bytes or head is None or type(result) is not tuple:
        return data.startswith(head)
    n = result[1]
    if n > PyBytes_GET_SIZE(head):
        n = PyBytes_GET_SIZE(head)
    return PyBytes_GET_SIZE(data) >= n and memcmp(PyBytes_AS_STRING(data), PyBytes_AS_STRING(head), n) == 0

cdef int _R_HEAD, _R_LENGTH, _R_CHUNK_SIZE, _R_CHUNK_DATA, _R_CHUNK_CRLF, _R_TRAILER, _R_UNTIL_CLOSE
cdef int _R_TUNNEL, _R_CLOSED, _R_DEAD
cdef dict _R_NEEDS
# _simple's, imported: a C integer (as a module global, a dict lookup per use, two per response).
cdef Py_ssize_t REMEMBER_MAX
cdef object _NO_BODY_STATUS, _append, _popleft

cdef class ResponseParser:
    cdef public Py_ssize_t _max_head
    cdef public object _head_limit
    cdef public object _expected
    cdef public int _state
    cdef public bytearray _buf
    cdef public object _remaining
    cdef public bint _keep_alive
    cdef public bint _interim
    cdef public Py_ssize_t _trailer_bytes
    cdef public bytes _last_head
    cdef public Py_ssize_t _last_size
    cdef public object _last_result

    cpdef expect(self, method)
    @cython.locals(n=Py_ssize_t, head_len=Py_ssize_t)
    cpdef feed_simple(self, data)
    cdef _die(self)
    cdef _check_buffer(self, Py_ssize_t size)
    @cython.locals(pos=Py_ssize_t, n=Py_ssize_t, state=int, end=Py_ssize_t, nl=Py_ssize_t)
    cdef Py_ssize_t _run(self, bytes data, list events) except -1
    cdef _finish(self, list events)
    @cython.locals(lines=list, headers=list, http11=bint, status=int)
    cdef _head(self, bytes head, list events)
