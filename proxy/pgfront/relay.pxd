# Cython declarations for relay.py (pure-Python mode: relay.py stays the one source;
# proxy/_native.py). Compiled, SyncGroup, RelaySession and RelayServer are extension types whose
# fields (the names in each class's __slots__) are C fields, readable and writable from Python
# as the pure twin's slots are; `relay` reads the bytes through a pointer (`p`: every index read
# is under n = len(data); data must be bytes or bytearray, as a transport gives).
cimport cython
from cpython.object cimport PyObject, PyTypeObject
from cpython.mem cimport PyMem_Malloc

cdef bint _COMPILED
cdef Py_ssize_t _MAX_LENGTH
cdef bytes _SPECIAL
cdef tuple _BYTE1

cdef class SyncGroup:
    cdef public object flags
    cdef public object names
    cdef public object by_query

cdef class RelaySession:
    cdef public object d
    cdef public object router
    cdef public object transport
    cdef public object phase
    cdef public object ending
    cdef public object terminating
    cdef public object _multi

cdef class RelayServer:
    cdef public object groups
    cdef public object open_group
    cdef public object status
    cdef public object copy
    cdef public object errored
    cdef public object replay
    cdef public object prepared
    cdef public object params
    cdef public object fatal
    cdef public object session
    cdef public object backend
    cdef public object closed
    cdef public object transport
    cdef public RelaySession _owner
    cdef public object _rest
    cdef public Py_ssize_t _skip
    cdef public Py_ssize_t received
    cdef public bint _internal

    @cython.locals(k=Py_ssize_t, used=Py_ssize_t)
    cpdef data_received(self, object data)

@cython.locals(n=Py_ssize_t, pos=Py_ssize_t, start=Py_ssize_t, end=Py_ssize_t, length=Py_ssize_t,
               t=Py_ssize_t, p="const unsigned char *", special="const unsigned char *", g=SyncGroup)
cpdef Py_ssize_t relay(RelaySession s, RelayServer conn, object data) except -1


# Cython exposes a `public` field to Python through a getset descriptor, which CPython 3.11 does
# not specialise: every read or write of it by interpreted code (the session's _send, the
# daemon's books) takes the generic attribute path, ~100 instructions more. A member descriptor
# of type T_OBJECT_EX is what a Python class's __slots__ gives, and CPython specialises it
# (LOAD_ATTR_SLOT, STORE_ATTR_SLOT). `_as_members` replaces the getset descriptors of the given
# object fields with such member descriptors, at import: each field's offset is found by setting
# it to a fresh object on a new instance and finding that pointer in the instance's memory.
# (A typed field, such as `_owner`, must keep its getset: a member would not check the type.)
cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        const char *name
        int type
        Py_ssize_t offset
        int flags
        const char *doc
    object PyDescr_NewMember(PyTypeObject *, PyMemberDef *)
    void PyType_Modified(PyTypeObject *)
    int PyDict_SetItem(object, object, object) except -1

cdef list _MEMBER_NAMES

@cython.locals(t="PyTypeObject *", defs="PyMemberDef *", i=Py_ssize_t, off=Py_ssize_t, found=Py_ssize_t,
               bname=bytes)
cdef inline int _as_members(type cls, tuple names) except -1:
    t = <PyTypeObject *>cls
    obj = cls.__new__(cls)
    defs = <PyMemberDef *>PyMem_Malloc(len(names) * sizeof(PyMemberDef))
    if defs == NULL:
        raise MemoryError()
    for i in range(len(names)):
        name = names[i]
        sentinel = object()
        setattr(obj, name, sentinel)
        found = -1
        off = sizeof(PyObject)
        while off + <Py_ssize_t>sizeof(void *) <= t.tp_basicsize:
            if (<PyObject **>(<char *><PyObject *>obj + off))[0] == <PyObject *>sentinel:
                found = off
                break
            off += sizeof(void *)
        setattr(obj, name, None)
        if found < 0:
            raise RuntimeError(f"field {name} of {cls.__name__} not found")
        bname = name.encode("ascii")
        _MEMBER_NAMES.append(bname)  # the descriptor keeps a pointer to the name
        defs[i].name = bname
        defs[i].type = 16  # T_OBJECT_EX
        defs[i].offset = found
        defs[i].flags = 0
        defs[i].doc = NULL
        PyDict_SetItem(<object>t.tp_dict, name, PyDescr_NewMember(t, &defs[i]))
    PyType_Modified(t)
    return 0
