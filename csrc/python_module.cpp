// Makes the op library importable as a Python extension module (stdiff._C or stdiff._C_cuda):
// importing it loads the shared library, whose static initialisers register the ops.
// STDIFF_MODULE is the module's name (_C or _C_cuda), set by setup.py.
#include <Python.h>

#define STDIFF_CAT2(a, b) a##b
#define STDIFF_CAT(a, b) STDIFF_CAT2(a, b)
#define STDIFF_STR2(a) #a
#define STDIFF_STR(a) STDIFF_STR2(a)

static PyModuleDef stdiff_module = {PyModuleDef_HEAD_INIT, STDIFF_STR(STDIFF_MODULE),
                                    "stdiff op library: registers torch.ops.stdiff.*", -1, nullptr};

PyMODINIT_FUNC STDIFF_CAT(PyInit_, STDIFF_MODULE)(void) { return PyModule_Create(&stdiff_module); }
