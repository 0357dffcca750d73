# Cython declarations for _simple.py (pure-Python mode: _simple.py stays the one source;
# proxy/_native.py). The scanners read the bytes and the character tables through pointers; every
# index they read is checked below n (the length of `data`, or of the name compared) first.
cimport cython
from libc.stdint cimport uint64_t
from libc.string cimport memcpy
# simple_head is _head's, called in C (the pure twin imports it by that name; a Python call of the
# cpdef function's wrapper, ~0.2k instructions, before); proxy/_native.py then compiles this module
# only where _head is compiled too.
from proxy.http1._head cimport _simple_head as simple_head

cdef object _NO_BODY
cdef bytes _TCHAR, _TARGET, _REQUEST_VALUE, _VALUE, _REG_NAME, _IP_LITERAL, _REQUEST_NAMES, _RESPONSE_NAMES
cdef bytes _REQUEST_LEADS, _RESPONSE_LEADS

@cython.locals(j=Py_ssize_t)
cdef bint _at(const unsigned char *p, Py_ssize_t n, Py_ssize_t i, const char *s, Py_ssize_t k) noexcept

@cython.locals(j=Py_ssize_t, c=Py_ssize_t)
cdef bint _ieq(const unsigned char *p, Py_ssize_t n, Py_ssize_t i, const char *s, Py_ssize_t o,
               Py_ssize_t k) noexcept

@cython.locals(j=Py_ssize_t, m=Py_ssize_t)
cdef bint _listed(const unsigned char *p, Py_ssize_t i, Py_ssize_t k, const char *names, Py_ssize_t size) noexcept

cdef inline Py_ssize_t _keep_alive(const unsigned char *p, Py_ssize_t n, Py_ssize_t i) noexcept

cdef bint _COMPILED

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object, int *) except? -1

# `n > limit + extra` (`n > limit` when extra is 0), in C where `limit` is an int that fits a long
# long (the head limit always is); anything else as Python compares it, with its errors.
cdef inline bint _beyond(Py_ssize_t n, object limit, Py_ssize_t extra) except -1:
    cdef int overflow = 0
    cdef long long v
    if type(limit) is int:
        v = PyLong_AsLongLongAndOverflow(limit, &overflow)
        if overflow == 0:
            return n - extra > v
    if extra == 0:
        return n > limit
    return n > limit + extra

cdef Py_ssize_t _span(const unsigned char *p, Py_ssize_t i, Py_ssize_t n, const unsigned char *table) noexcept

# _span over a bytes' buffer (the scanners take only bytes): its byte at n is NUL, which no table
# holds (asserted at import), so the run ends there at the latest; each read past the first
# happens only after the byte before it was in the table, so no read goes beyond that NUL. Four
# bytes a step: no bounds test, a quarter of the loop's branches (~4 instructions a byte less).
cdef inline Py_ssize_t _span_nul(const unsigned char *p, Py_ssize_t i, const unsigned char *table) noexcept:
    while table[p[i]] and table[p[i + 1]] and table[p[i + 2]] and table[p[i + 3]]:
        i += 4
    while table[p[i]]:
        i += 1
    return i

cdef extern from *:
    """
    /* The index of the lowest-addressed byte whose top bit is set in m (m != 0), where the bytes
       were loaded little-endian; 0 (no skip) on other machines or compilers. */
    static inline Py_ssize_t tierproxy_first_flag(uint64_t m) {
    #if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        return (Py_ssize_t)(__builtin_ctzll(m) >> 3);
    #else
        (void)m;
        return 0;
    #endif
    }
    """
    Py_ssize_t _first_flag "tierproxy_first_flag"(uint64_t m) noexcept

# A field value's run (or a reason phrase's): `table` holds every byte from 0x20 to 0x7E (asserted
# at import), so eight bytes that are all of those are all in it, tested at once (a byte below 0x20:
# x - 0x20.. borrows into its top bit where x's is clear; above 0x7E: x + 0x01.. or x sets it; both
# exact as a yes/no); the first eight that are not, and the rest, go byte by byte (_span_nul). Only
# where eight bytes are left before `n`, so nothing past the bytes is read.
# The eight that are not: the lowest flagged byte is exact (a borrow or carry starts only at a
# flagged byte and runs upward), so on a little-endian machine the scan goes on from that byte (the
# CR that ends a value, most often), not from the first of the eight (_first_flag; 0 elsewhere).
cdef inline Py_ssize_t _span_text(const unsigned char *p, Py_ssize_t i, Py_ssize_t n,
                                  const unsigned char *table) noexcept:
    cdef uint64_t x, m
    while i + 8 <= n:
        memcpy(&x, p + i, 8)
        m = (((x - 0x2020202020202020ULL) & ~x) | (x + 0x0101010101010101ULL) | x) & 0x8080808080808080ULL
        if m:
            i += _first_flag(m)
            break
        i += 8
    return _span_nul(p, i, table)

@cython.locals(p="const unsigned char *", tchar="const unsigned char *", value="const unsigned char *",
               table="const unsigned char *", names="const char *", leads="const unsigned char *", n=Py_ssize_t, i=Py_ssize_t,
               target_start=Py_ssize_t, target_end=Py_ssize_t, block=Py_ssize_t, host_start=Py_ssize_t,
               host_end=Py_ssize_t, conn_start=Py_ssize_t, conn_end=Py_ssize_t, line=Py_ssize_t, k=Py_ssize_t,
               size=Py_ssize_t, is_conn=bint)
cpdef _scan_request(object data, object max_head)

@cython.locals(p="const unsigned char *", tchar="const unsigned char *", value="const unsigned char *",
               names="const char *", leads="const unsigned char *", n=Py_ssize_t, i=Py_ssize_t, status=Py_ssize_t, d1=Py_ssize_t,
               d2=Py_ssize_t, length=cython.longlong, digits=Py_ssize_t, conn_start=Py_ssize_t,
               conn_end=Py_ssize_t, line=Py_ssize_t, k=Py_ssize_t, size=Py_ssize_t, is_conn=bint)
cpdef _scan_response(object data, object max_head)
