# A deque's append, pop and popleft called in C by the compiled exchange (a header only, no module
# of its own: proxy/lb/clientcore.pxd and proxy/http1/_response.pxd cimport it). `deque.append` and
# the others are method descriptors around a C function of the deque (and the item); through
# Python's call machinery (the descriptor's vectorcall, its checks) a call costs ~0.11k
# instructions, the C function itself ~20. `_call1(descr, d)` is `descr(d)` and `_call2(descr, d,
# x)` is `descr(d, x)`: the descriptor's C function is called directly only where `descr` is a
# method descriptor of exactly `d`'s type with the calling convention assumed (METH_NOARGS,
# METH_O: what the descriptor's own vectorcall would then call); anything else is the Python
# call, with its errors. An error of the C function itself (an empty deque's IndexError) is
# raised as from the Python call.
cdef extern from *:
    """
    static PyObject *tierproxy_call1(PyObject *descr, PyObject *self) {
        if (Py_IS_TYPE(descr, &PyMethodDescr_Type) && Py_IS_TYPE(self, PyDescr_TYPE(descr))) {
            PyMethodDef *def = ((PyMethodDescrObject *)descr)->d_method;
            if ((def->ml_flags & ~METH_COEXIST) == METH_NOARGS)
                return def->ml_meth(self, NULL);
        }
        return PyObject_CallOneArg(descr, self);
    }
    static PyObject *tierproxy_call2(PyObject *descr, PyObject *self, PyObject *arg) {
        PyObject *args[2];
        if (Py_IS_TYPE(descr, &PyMethodDescr_Type) && Py_IS_TYPE(self, PyDescr_TYPE(descr))) {
            PyMethodDef *def = ((PyMethodDescrObject *)descr)->d_method;
            if ((def->ml_flags & ~METH_COEXIST) == METH_O)
                return def->ml_meth(self, arg);
        }
        args[0] = self;
        args[1] = arg;
        return PyObject_Vectorcall(descr, args, 2, NULL);
    }
    """
    object _call1 "tierproxy_call1"(object descr, object d)
    object _call2 "tierproxy_call2"(object descr, object d, object x)
