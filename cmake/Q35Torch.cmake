# Finds the installed PyTorch without its CMake config (which drags in a CUDA discovery that breaks on
# wrapper-script nvcc and a NOTFOUND nvrtc entry). We only need headers, a few libraries and two facts:
# the C++ ABI flag and whether this torch was built with CUDA.
# Sets: Q35_TORCH_VERSION, Q35_TORCH_INCLUDE_DIRS, Q35_TORCH_CPU_LIBS, Q35_TORCH_CUDA_LIBS,
#       Q35_TORCH_HAS_CUDA, Q35_TORCH_CXX11_ABI, Q35_TORCH_CUDA_INCLUDE (headers of the nvidia wheels, if any).
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c [=[
import os, torch
root = os.path.dirname(torch.__file__)
cuda_inc = ''
try:
    import nvidia.cu13 as n  # headers shipped with the CUDA 13 runtime wheels
    cuda_inc = os.path.join(os.path.dirname(n.__file__), 'include')
except Exception:
    pass
print(torch.__version__.split('+')[0])
print(os.path.join(root, 'include'))
print(os.path.join(root, 'lib'))
print(int(torch._C._GLIBCXX_USE_CXX11_ABI))
print(torch.version.cuda or '')
print(cuda_inc)
]=]
  OUTPUT_VARIABLE _q35_torch_out
  RESULT_VARIABLE _q35_torch_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _q35_torch_rc EQUAL 0)
  message(FATAL_ERROR "qwen35_native: could not import torch with ${Python_EXECUTABLE}; install torch>=2.9 first "
                      "(the build needs it: pip install --no-build-isolation uses the environment's torch)")
endif()
string(REPLACE "\n" ";" _q35_torch_out "${_q35_torch_out}")
list(GET _q35_torch_out 0 Q35_TORCH_VERSION)
list(GET _q35_torch_out 1 _q35_torch_inc)
list(GET _q35_torch_out 2 _q35_torch_lib)
list(GET _q35_torch_out 3 Q35_TORCH_CXX11_ABI)
list(LENGTH _q35_torch_out _n)
set(Q35_TORCH_CUDA_VERSION "")
set(Q35_TORCH_CUDA_INCLUDE "")
if(_n GREATER 4)
  list(GET _q35_torch_out 4 Q35_TORCH_CUDA_VERSION)
endif()
if(_n GREATER 5)
  list(GET _q35_torch_out 5 Q35_TORCH_CUDA_INCLUDE)
endif()

set(Q35_TORCH_INCLUDE_DIRS "${_q35_torch_inc}" "${_q35_torch_inc}/torch/csrc/api/include")
set(Q35_TORCH_CPU_LIBS "${_q35_torch_lib}/libtorch.so" "${_q35_torch_lib}/libtorch_cpu.so" "${_q35_torch_lib}/libc10.so")
set(Q35_TORCH_CUDA_LIBS "")
if(Q35_TORCH_CUDA_VERSION AND EXISTS "${_q35_torch_lib}/libtorch_cuda.so")
  set(Q35_TORCH_HAS_CUDA ON)
  set(Q35_TORCH_CUDA_LIBS "${_q35_torch_lib}/libtorch_cuda.so" "${_q35_torch_lib}/libc10_cuda.so")
else()
  set(Q35_TORCH_HAS_CUDA OFF)
endif()
message(STATUS "qwen35_native: torch ${Q35_TORCH_VERSION} at ${_q35_torch_inc}/.. (CUDA: '${Q35_TORCH_CUDA_VERSION}', "
               "cxx11 abi ${Q35_TORCH_CXX11_ABI})")
