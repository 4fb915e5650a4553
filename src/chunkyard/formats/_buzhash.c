/* placeholder replaced by the chunker implementation */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_buzhash", NULL, -1, NULL};
PyMODINIT_FUNC PyInit__buzhash(void) { return PyModule_Create(&mod); }
