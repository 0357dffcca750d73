# Cython declarations for clientcore.py (pure-Python mode: clientcore.py stays the one source;
# proxy/_native.py). Compiled, ClientCore is an extension type: its state is C fields (all public,
# so ClientConn's Python half, the mixins, the frontend and the tests read and set them as before),
# and the hot methods are called in C. The cpdef ones are also called from Python or overridden
# by subclasses (lb/frontconn.py: RedirectConn._start_request), which Cython's dispatch honours.
cimport cython
from proxy.upstream.conn cimport UpstreamCore

cdef int _IDLE, _HEAD, _BACKEND, _TUNNEL, _P_UPSTREAM, _P_PENDING, _P_BACKLOG
cdef object _LENGTH, _HTTP_5XX
cdef frozenset _IDEMPOTENT

cdef object _cut_connection

@cython.locals(p="const char *")
cpdef _cut(data, Py_ssize_t start, Py_ssize_t end)

cdef class ClientCore:
    cdef public object fe, transport, parser, clock, backlog
    cdef public object req, pool, backend, up, connecting, retry_buf, exclude, last_failure
    cdef public object resp, set_cookie, hash_key, tunnel_buf
    cdef public list pending
    cdef public bytes client_ip, up_head
    cdef public int phase, paused, attempts
    cdef public double deadline, t0, xfer_since
    cdef public bint closed, write_paused, close_after, client_eof, req_done, sent, idempotent
    cdef public bint stale_retried, resp_chunked, client_ka, continued
    cdef public Py_ssize_t pending_size, retry_size, tunnel_size
    cdef public long long xfer

    cdef _reset_exchange(self)
    cpdef _pause(self, int reason)
    cpdef _resume(self, int reason)

    @cython.locals(now=double)
    cpdef _start_request(self, head)

    cpdef _dispatch(self, bint sticky=*)
    @cython.locals(up=UpstreamCore)
    cdef _dispatch_at(self, bint sticky, double now)
    cpdef _attach(self, up, bint reused)
    cdef _attach_at(self, UpstreamCore up, bint reused, double now)

    @cython.locals(status=Py_ssize_t, body_len=Py_ssize_t, cut_start=Py_ssize_t, cut_end=Py_ssize_t)
    cpdef on_simple_response(self, up, data, result)

    @cython.locals(now=double)
    cpdef _response_end(self, UpstreamCore up)
    cpdef _finish_exchange(self)
    cdef _finish_at(self, double now)
