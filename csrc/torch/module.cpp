// Makes the op library importable as the Python module qwen35_native._C. Importing it runs the static
// TORCH_LIBRARY registrations; the module itself exposes build facts and the SIMT emulator's controls
// (wrapped by python/qwen35_native/emulator.py).
#include <Python.h>

#include <exception>
#include <stdexcept>
#include <string>

#if defined(Q35_WITH_EMULATOR)
#include "q35/emu/control.h"
#endif

namespace {

#if defined(Q35_WITH_CUDA)
constexpr long kWithCuda = 1;
#else
constexpr long kWithCuda = 0;
#endif
#if defined(Q35_WITH_EMULATOR)
constexpr long kWithEmulator = 1;

// Runs f(); C++ exceptions become ValueError (bad settings) or RuntimeError.
template <typename F>
PyObject* guarded(F&& f) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

PyObject* str_setter(PyObject* arg, void (*set)(const std::string&)) {
  const char* s = PyUnicode_AsUTF8(arg);
  if (!s) return nullptr;
  return guarded([&] {
    set(s);
    Py_RETURN_NONE;
  });
}

PyObject* emu_set_schedule(PyObject*, PyObject* arg) { return str_setter(arg, q35::simt::set_schedule); }
PyObject* emu_get_schedule(PyObject*, PyObject*) {
  return guarded([] { return PyUnicode_FromString(q35::simt::get_schedule().c_str()); });
}
PyObject* emu_set_arch(PyObject*, PyObject* arg) { return str_setter(arg, q35::simt::set_arch); }
PyObject* emu_get_arch(PyObject*, PyObject*) {
  return guarded([] { return PyUnicode_FromString(q35::simt::get_arch().c_str()); });
}
PyObject* emu_set_threads(PyObject*, PyObject* arg) {
  const long n = PyLong_AsLong(arg);
  if (n == -1 && PyErr_Occurred()) return nullptr;
  return guarded([&] {
    q35::simt::set_os_threads(static_cast<int>(n));
    Py_RETURN_NONE;
  });
}
PyObject* emu_get_threads(PyObject*, PyObject*) {
  return guarded([] { return PyLong_FromLong(q35::simt::get_os_threads()); });
}
PyObject* emu_set_stack_kib(PyObject*, PyObject* arg) {
  const long n = PyLong_AsLong(arg);
  if (n == -1 && PyErr_Occurred()) return nullptr;
  if (n < 0) {
    PyErr_SetString(PyExc_ValueError, "emulator stack size must be >= 16 KiB");
    return nullptr;
  }
  return guarded([&] {
    q35::simt::set_stack_kib(static_cast<size_t>(n));
    Py_RETURN_NONE;
  });
}
PyObject* emu_get_stack_kib(PyObject*, PyObject*) {
  return guarded([] { return PyLong_FromSize_t(q35::simt::get_stack_kib()); });
}
PyObject* emu_stats(PyObject*, PyObject*) {
  return guarded([] {
    const q35::simt::Stats s = q35::simt::get_stats();
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K}", "launches", s.launches, "blocks", s.blocks, "threads",
                         s.threads, "context_switches", s.context_switches, "barriers", s.barriers,
                         "warp_collectives", s.warp_collectives);
  });
}
PyObject* emu_reset_stats(PyObject*, PyObject*) {
  q35::simt::reset_stats();
  Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"_emu_set_schedule", emu_set_schedule, METH_O, "Thread order: 'forward', 'reverse' or 'random:<seed>'."},
    {"_emu_get_schedule", emu_get_schedule, METH_NOARGS, "The current thread order."},
    {"_emu_set_arch", emu_set_arch, METH_O, "Emulated architecture limits: 'sm_80' or 'sm_90'."},
    {"_emu_get_arch", emu_get_arch, METH_NOARGS, "The emulated architecture."},
    {"_emu_set_threads", emu_set_threads, METH_O, "OS threads running blocks (0 = one per core)."},
    {"_emu_get_threads", emu_get_threads, METH_NOARGS, "OS threads running blocks."},
    {"_emu_set_stack_kib", emu_set_stack_kib, METH_O, "Stack size of each emulated CUDA thread, KiB."},
    {"_emu_get_stack_kib", emu_get_stack_kib, METH_NOARGS, "Stack size of each emulated CUDA thread, KiB."},
    {"_emu_stats", emu_stats, METH_NOARGS, "Counters since the last reset (launches, blocks, ...)."},
    {"_emu_reset_stats", emu_reset_stats, METH_NOARGS, "Reset the counters."},
    {nullptr, nullptr, 0, nullptr}};
#else
constexpr long kWithEmulator = 0;
PyMethodDef methods[] = {{nullptr, nullptr, 0, nullptr}};
#endif

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "qwen35_native CUDA kernels and their SIMT-emulated twins",
                          -1, methods, nullptr, nullptr, nullptr, nullptr};

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
