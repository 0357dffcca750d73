# Cython declarations for classify_key.py (pure-Python mode: classify_key.py stays the one source;
# proxy/_native.py). The scanner `_key_typed` and its helpers read the text through `p` and write
# the key through `q` (pointers into the bytes and into a bytearray as long as the text); every
# index is checked against n (or w) before it is read.
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

from libc.string cimport memcmp

cdef bint _COMPILED
cdef Py_ssize_t _SMALL

# The key (q[:n]) is the text (p[:n]), compared in place.
cdef inline bint _same_bytes(const unsigned char *p, const unsigned char *q, Py_ssize_t n) noexcept:
    return memcmp(p, q, n) == 0

# `small`: the key's buffer for a text up to _SMALL bytes (a C array on the stack: no object made).
@cython.locals(p="const unsigned char *", q="unsigned char *", t="const unsigned char *", buf=bytearray, n=Py_ssize_t, i=Py_ssize_t,
               e=Py_ssize_t, w=Py_ssize_t, c=Py_ssize_t, marked=bint, small="unsigned char[512]")
cpdef object _key_typed(object sql)

@cython.locals(raw=bytes)
cpdef object _key_str_typed(object sql)
