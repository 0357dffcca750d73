# Cython declarations for books.py (pure-Python mode: the .py stays the one source;
# proxy/_native.py). Compiled, Books is an extension type whose fields (the names in its
# __slots__) are C fields, readable and writable from Python as the pure twin's slots are.
cimport cython
from cpython.object cimport PyObject, PyTypeObject
from cpython.mem cimport PyMem_Malloc

cdef object _monotonic
cdef object _bisect_left
cdef object _get_running_loop
cdef object _query_timed_out

cdef class Books:
    cdef public object _latency_of
    cdef public object outstanding
    cdef public object query_timeout

    @cython.locals(outstanding=dict)
    cpdef started(self, object conn)
    @cython.locals(latency_of=dict)
    cpdef finished(self, object conn)


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
