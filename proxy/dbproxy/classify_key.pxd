# Cython declarations for classify_key.py (pure-Python mode: classify_key.py stays the one source;
# proxy/_native.py). The scanner `_key_typed` and its helpers read the text through `p` and write
# the key through `q` (pointers into the bytes and into a bytearray, or a C array, as long as the
# text); every index is checked against n (or w) before it is read, but in `_scan`'s stepping loop,
# which stops at the NUL after the text (p[n], a bytes object's).
cimport cython

cdef bint _space(Py_ssize_t c) noexcept
cdef bint _word(Py_ssize_t c) noexcept
cdef bint _wordish(Py_ssize_t c) noexcept
cdef Py_ssize_t _line_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) noexcept

@cython.locals(c=Py_ssize_t)
cdef Py_ssize_t _block_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) noexcept

cdef Py_ssize_t _string_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) noexcept

@cython.locals(t=Py_ssize_t, size=Py_ssize_t, j=Py_ssize_t, k=Py_ssize_t)
cdef Py_ssize_t _dollar_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) noexcept

@cython.locals(j=Py_ssize_t, k=Py_ssize_t)
cdef Py_ssize_t _number_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) noexcept

@cython.locals(c=Py_ssize_t, j=Py_ssize_t)
cdef Py_ssize_t _copy(const unsigned char *p, Py_ssize_t i, Py_ssize_t e, Py_ssize_t n, unsigned char *q,
                      Py_ssize_t w) noexcept

@cython.locals(word="const char *", k=Py_ssize_t)
cdef bint _hinted(const unsigned char *p, Py_ssize_t i, Py_ssize_t e) noexcept

@cython.locals(block=bint)
cdef Py_ssize_t _comment(const unsigned char *p, Py_ssize_t i, Py_ssize_t e, Py_ssize_t n, unsigned char *q,
                         Py_ssize_t w) noexcept

@cython.locals(c=Py_ssize_t, word="const char *", size=Py_ssize_t, k=Py_ssize_t)
cdef Py_ssize_t _keyword(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) noexcept

@cython.locals(count=Py_ssize_t, k=Py_ssize_t)
cdef Py_ssize_t _in_list_end(unsigned char *q, Py_ssize_t j, Py_ssize_t w) noexcept

@cython.locals(r=Py_ssize_t, o=Py_ssize_t, c=Py_ssize_t, e=Py_ssize_t)
cdef Py_ssize_t _in_lists(unsigned char *q, Py_ssize_t w) noexcept

from libc.stdint cimport uint64_t
from libc.string cimport memcmp, memcpy

cdef bint _COMPILED
cdef Py_ssize_t _SMALL
cdef bytes _PIECE

# The key (q[:n]) is the text (p[:n]), compared in place.
cdef inline bint _same_bytes(const unsigned char *p, const unsigned char *q, Py_ssize_t n) noexcept:
    return memcmp(p, q, n) == 0

# p[s:e] written at q[w:] (classify_key.py's `_put`).
cdef inline Py_ssize_t _put_c(unsigned char *q, Py_ssize_t w, const unsigned char *p, Py_ssize_t s,
                              Py_ssize_t e) noexcept:
    if e > s:
        memcpy(q + w, p + s, e - s)
        return w + e - s
    return w

# Whether p[:n] is ASCII: eight bytes at a time (memcpy: any alignment), then the rest.
cdef inline bint _ascii(const unsigned char *p, Py_ssize_t n) noexcept:
    cdef uint64_t acc = 0
    cdef uint64_t x
    cdef Py_ssize_t i = 0
    cdef unsigned char last = 0
    while i + 8 <= n:
        memcpy(&x, p + i, 8)
        acc |= x
        i += 8
    while i < n:
        last |= p[i]
        i += 1
    return (acc & 0x8080808080808080ULL) == 0 and last < 128

cdef Py_ssize_t _put(unsigned char *q, Py_ssize_t w, const unsigned char *p, Py_ssize_t s, Py_ssize_t e) noexcept

# p[n] must be 0 (see the function).
@cython.locals(t="const unsigned char *", w=Py_ssize_t, s=Py_ssize_t, i=Py_ssize_t, e=Py_ssize_t, c=Py_ssize_t,
               marked=bint, changed=bint, same=bint)
cdef Py_ssize_t _scan(const unsigned char *p, Py_ssize_t n, unsigned char *q) noexcept

@cython.locals(p="const unsigned char *", w=Py_ssize_t)
cdef Py_ssize_t _key_in(bytes b, Py_ssize_t n, unsigned char *q) noexcept

# `small`: the key's buffer for a text up to _SMALL bytes (a C array on the stack: no object made).
@cython.locals(q="unsigned char *", b=bytes, buf=bytearray, n=Py_ssize_t, w=Py_ssize_t, small="unsigned char[512]")
cpdef object _key_typed(object sql)

@cython.locals(raw=bytes)
cpdef object _key_str_typed(object sql)
