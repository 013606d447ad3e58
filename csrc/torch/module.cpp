// Makes the op library importable as the Python module qwen35_native._C. Importing it runs the static
// TORCH_LIBRARY registrations; the module itself exposes only build facts.
#include <Python.h>

namespace {

#if defined(Q35_WITH_CUDA)
constexpr long kWithCuda = 1;
#else
constexpr long kWithCuda = 0;
#endif
#if defined(Q35_WITH_EMULATOR)
constexpr long kWithEmulator = 1;
#else
constexpr long kWithEmulator = 0;
#endif

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "qwen35_native CUDA kernels and their SIMT-emulated twins",
                          -1, nullptr, nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__C() {
  PyObject* m = PyModule_Create(&module_def);
  if (!m) return nullptr;
  if (PyModule_AddIntConstant(m, "WITH_CUDA", kWithCuda) < 0 ||
      PyModule_AddIntConstant(m, "WITH_EMULATOR", kWithEmulator) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
