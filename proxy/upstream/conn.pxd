# Cython declarations for conn.py (pure-Python mode: conn.py stays the one source; proxy/_native.py).
# Compiled, UpstreamCore is an extension type: its state is C fields (all public: the lb's client
# connection and the cdn's origin fetch read and set them), and data_received calls the response
# parser's feed_simple in C.
cimport cython
from proxy.http1._response cimport ResponseParser
from proxy._members cimport as_members
from proxy.core.sendnow cimport direct_send, discard, release, send

cdef bint _COMPILED

# The lb's exchange (ClientCore derives from it): its simple-response methods called in C.
cdef class UpstreamClient:
    cpdef bint takes_simple_response(self) except -1
    cpdef on_simple_response(self, up, data, result)

cdef class UpstreamCore:
    cdef public object backend, transport, client
    cdef public object direct  # proxy/core/sendnow.py's DirectSend for `transport`, or None
    cdef public ResponseParser parser
    cdef public bint reused, got_bytes, closed, read_paused, private
    cdef public double idle_since
    cdef public object max_header_bytes

    @cython.locals(core=UpstreamClient)
    cpdef data_received(self, data)
