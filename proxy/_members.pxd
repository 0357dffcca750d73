# Shared by the compiled modules whose extension types interpreted code also reads (cimported:
# `from proxy._members cimport as_members`; a .pxd only, nothing to import at run time).
#
# Cython exposes a `public` object field to Python through a getset descriptor, which CPython 3.11
# does not specialise: every read or write of it by interpreted code takes the generic attribute
# path, ~100 instructions more. A member descriptor of type T_OBJECT_EX is what a Python class's
# __slots__ gives, and CPython specialises it (LOAD_ATTR_SLOT, STORE_ATTR_SLOT). `as_members`
# replaces the getset descriptors of the given object fields of `cls` with such member descriptors,
# once, at import: each field's offset is found by setting it to a fresh object on a new instance
# and finding that pointer in the instance's memory. Only for fields typed `object` (a typed field
# must keep its getset, which checks the type) that are never deleted (a member descriptor allows
# `del`, and compiled code assumes an object field is never NULL). The approach is
# proxy/pgfront/relay.pxd's `_as_members` (docs/perf.md, "The relay's hot state").
cimport cython
from cpython.object cimport PyObject, PyTypeObject
from cpython.mem cimport PyMem_Malloc
from libc.string cimport memcpy

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

@cython.locals(t="PyTypeObject *", defs="PyMemberDef *", i=Py_ssize_t, off=Py_ssize_t, found=Py_ssize_t,
               bname=bytes, copy="char *")
cdef inline int as_members(type cls, tuple names) except -1:
    t = <PyTypeObject *>cls
    obj = cls.__new__(cls)
    # Never freed: the descriptors live as long as the type, and keep pointers to the names.
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
        copy = <char *>PyMem_Malloc(len(bname) + 1)
        if copy == NULL:
            raise MemoryError()
        memcpy(copy, <const char *>bname, len(bname) + 1)
        defs[i].name = copy
        defs[i].type = 16  # T_OBJECT_EX
        defs[i].offset = found
        defs[i].flags = 0
        defs[i].doc = NULL
        PyDict_SetItem(<object>t.tp_dict, name, PyDescr_NewMember(t, &defs[i]))
    PyType_Modified(t)
    return 0
