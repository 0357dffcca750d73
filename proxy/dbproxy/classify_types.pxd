# Cython declarations for classify_types.py (pure-Python mode: the .py stays the one source;
# proxy/_native.py). Compiled, Decision (a frozen dataclass in the .py) is an extension type made
# by Cython's dataclass support: its fields are C fields, read-only from Python, read in C by the
# modules that cimport it (the dbproxy session and its router). The flags are C booleans (a truthy
# non-bool given to the constructor is stored as True), `target`, `reason` and `detail` objects.

cdef class Decision:
    cdef readonly object target
    cdef readonly object reason
    cdef readonly bint begins_transaction
    cdef readonly bint read_only_transaction
    cdef readonly bint ends_transaction
    cdef readonly bint pins_session
    cdef readonly object detail
    cdef readonly bint reads_catalog
    cdef readonly bint writes_catalog
