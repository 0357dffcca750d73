# Cython declarations for clientcore.py (pure-Python mode: clientcore.py stays the one source;
# proxy/_native.py). Compiled, ClientCore is an extension type: its state is C fields (all public,
# so ClientConn's Python half, the mixins, the frontend and the tests read and set them as before),
# and the hot methods are called in C. The cpdef ones are also called from Python or overridden
# by subclasses (lb/frontconn.py: RedirectConn._start_request), which Cython's dispatch honours.
cimport cython
from libc.string cimport memcpy, memcmp
from proxy.http1._head cimport RequestHead as CRequestHead
from proxy.http1._request cimport RequestCore
from proxy.upstream.conn cimport UpstreamCore, UpstreamClient
from proxy.upstream.backend cimport Backend as CBackend
from proxy.lb.rotation cimport Balancer
from proxy._members cimport as_members
from proxy.core.sendnow cimport hold
from proxy._deque cimport _call1, _call2

cdef bint _COMPILED

cdef int _IDLE, _HEAD, _BACKEND, _TUNNEL, _P_UPSTREAM, _P_PENDING, _P_BACKLOG
cdef object _LENGTH, _HTTP_5XX, _idle_pop, _idle_append
cdef frozenset _IDEMPOTENT

cpdef _cut(data, Py_ssize_t start, Py_ssize_t end)

cdef class SimpleHeads:
    cdef public bytes scheme, rid_prefix
    cdef public unsigned long long rid

    # `head` typed: its fields read in C (a generic attribute lookup each, untyped).
    cpdef simple(self, CRequestHead head, bytes client_ip)

cdef class FrontendCore:
    cdef public object draining, fallback, limits, now, pools, routes, timeouts
    # The loop's held sends (proxy/core/sendnow.py's SendBatch): the simple response and the
    # request head are held to the round's end.
    cdef public object batch
    # A dict (Frontend's, its only setter): `get` and the store are C calls of the dict's (as an
    # object, `heads.get(status)` was a method lookup and call, ~0.33k instructions a response).
    cdef public dict simple_heads
    # Typed: the exchange adds them to a double and compares a length with it in C (as objects, a
    # float made of the double and a Python addition each).
    cdef public double backend_response_timeout, client_idle_timeout, first_byte_timeout
    cdef public Py_ssize_t max_idle_per_backend
    cdef public unsigned long long requests_total

cdef class PoolCore:
    # The balancers typed: `pick` calls theirs in C (Pool sets them, once per membership change).
    cdef public Balancer _backup_balancer, _balancer
    cdef public object _eligible, _eligible_backup, keyed, no_backend_total, retry_non_idempotent, sticky

    cpdef pick(self, double now, key=*, exclude=*)

cdef class ClientCore(UpstreamClient):
    cdef public SimpleHeads heads
    cdef public object fe, transport, clock, backlog
    cdef public object direct  # proxy/core/sendnow.py's DirectSend for `transport`, or None
    cdef public RequestCore parser  # feed_simple called in C
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

    @cython.locals(now=double, heads=SimpleHeads, fe=FrontendCore, pool=PoolCore)
    cpdef _start_request(self, CRequestHead head)

    cpdef _dispatch(self, bint sticky=*)
    @cython.locals(up=UpstreamCore, backend=CBackend, fe=FrontendCore, pool=PoolCore)
    cdef _dispatch_at(self, bint sticky, double now)
    cpdef _attach(self, up, bint reused)
    @cython.locals(fe=FrontendCore, req=CRequestHead)
    cdef _attach_at(self, UpstreamCore up, bint reused, double now)

    @cython.locals(req=CRequestHead, fe=FrontendCore)
    cpdef bint takes_simple_response(self) except -1

    @cython.locals(status=Py_ssize_t, body_len=Py_ssize_t, cut_start=Py_ssize_t, cut_end=Py_ssize_t,
                   backend=CBackend, fe=FrontendCore, heads=dict)
    cpdef on_simple_response(self, up, data, result)

    cpdef _response_end(self, UpstreamCore up)
    @cython.locals(now=double, backend=CBackend, fe=FrontendCore, t=double)
    cdef _response_end_at(self, UpstreamCore up, bint keep_alive)
    cpdef _finish_exchange(self)
    @cython.locals(fe=FrontendCore)
    cdef _finish_at(self, double now)


# SimpleHeads.simple, compiled: the head written into a new bytes of its exact size (the parts are
# the simple path's, all bytes; anything else gives None and the caller formats as the pure twin).
cdef extern from "Python.h":
    bytes PyBytes_FromStringAndSize(const char *, Py_ssize_t)
    char *PyBytes_AS_STRING(object)
    Py_ssize_t PyBytes_GET_SIZE(object)

# `method in IDEMPOTENT` for a bytes, in C (anything else: the frozenset's answer); clientcore.py
# asserts at import that it takes IDEMPOTENT's six and refuses others.
cdef inline bint _idempotent(object m) except -1:
    cdef Py_ssize_t n
    cdef const char *s
    if type(m) is not bytes:
        return m in _IDEMPOTENT
    n = PyBytes_GET_SIZE(m)
    s = PyBytes_AS_STRING(m)
    if n == 3:
        return memcmp(s, b"GET", 3) == 0 or memcmp(s, b"PUT", 3) == 0
    if n == 4:
        return memcmp(s, b"HEAD", 4) == 0
    if n == 5:
        return memcmp(s, b"TRACE", 5) == 0
    if n == 6:
        return memcmp(s, b"DELETE", 6) == 0
    if n == 7:
        return memcmp(s, b"OPTIONS", 7) == 0
    return False

# _cut, compiled: `data` (bytes) less [start, end), checked 0 <= start <= end <= len(data) by _cut.
cdef inline bytes _cut_bytes(bytes data, Py_ssize_t start, Py_ssize_t end):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n - (end - start))
    cdef char *q = PyBytes_AS_STRING(out)
    cdef const char *p = PyBytes_AS_STRING(data)
    memcpy(q, p, start)
    memcpy(q + start, p + end, n - end)
    return out

cdef inline char *_put(char *q, object b) noexcept:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
    memcpy(q, PyBytes_AS_STRING(b), n)
    return q + n

cdef inline char *_lit(char *q, const char *s, Py_ssize_t n) noexcept:
    memcpy(q, s, n)
    return q + n

@cython.locals(h=CRequestHead, n=Py_ssize_t, digits=Py_ssize_t, v="unsigned long long", q="char *", i=Py_ssize_t,
               hexdigits="const char *")
cdef inline object _write_simple(SimpleHeads heads, object head, bytes client_ip):
    if type(head) is not CRequestHead:
        return None
    h = <CRequestHead>head
    method, target, forward, host = h.method, h.target, h.forward, h.host
    scheme, prefix = heads.scheme, heads.rid_prefix
    if (type(method) is not bytes or type(target) is not bytes or type(forward) is not bytes
            or type(host) is not bytes or client_ip is None or scheme is None or prefix is None):
        return None
    v = heads.rid
    digits = 1
    while v >= 16:
        v >>= 4
        digits += 1
    # "M T HTTP/1.1\r\n" F "x-forwarded-for: " IP "\r\nx-forwarded-proto: " S
    # "\r\nx-forwarded-host: " H "\r\nx-request-id: " P "-" RID "\r\n\r\n"
    n = (PyBytes_GET_SIZE(method) + 1 + PyBytes_GET_SIZE(target) + 11 + PyBytes_GET_SIZE(forward) + 17
         + PyBytes_GET_SIZE(client_ip) + 21 + PyBytes_GET_SIZE(scheme) + 20 + PyBytes_GET_SIZE(host) + 16
         + PyBytes_GET_SIZE(prefix) + 1 + digits + 4)
    out = PyBytes_FromStringAndSize(NULL, n)
    q = PyBytes_AS_STRING(out)
    q = _put(q, method)
    q = _lit(q, " ", 1)
    q = _put(q, target)
    q = _lit(q, " HTTP/1.1\r\n", 11)
    q = _put(q, forward)
    q = _lit(q, "x-forwarded-for: ", 17)
    q = _put(q, client_ip)
    q = _lit(q, "\r\nx-forwarded-proto: ", 21)
    q = _put(q, scheme)
    q = _lit(q, "\r\nx-forwarded-host: ", 20)
    q = _put(q, host)
    q = _lit(q, "\r\nx-request-id: ", 16)
    q = _put(q, prefix)
    q = _lit(q, "-", 1)
    v = heads.rid
    hexdigits = b"0123456789abcdef"
    for i in range(digits - 1, -1, -1):
        q[i] = hexdigits[v & 15]
        v >>= 4
    q += digits
    _lit(q, "\r\n\r\n", 4)
    return out
