// Helpers of the torch glue of the emulator's test kernels (emu_test_ops.cpp, hopper_test_ops.cpp): run a
// launcher on the tensors' device (the emulator for CPU tensors, the GPU for CUDA tensors) and check arguments.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

#if defined(Q35_WITH_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace q35::emutest {

// cudaErrorInvalidDeviceFunction from an sm_90a launcher: the device (or the emulated architecture) is not sm_90.
inline const char* arch_hint(cudaError_t err) {
  return err == cudaErrorInvalidDeviceFunction ? "unsupported arch (this kernel needs sm_90a): " : "";
}

// Runs the launcher of the tensors' device: emulated on the CPU, the real kernel on CUDA.
template <typename Emu, typename Cuda>
void run_on(const at::Tensor& ref, const char* op, Emu&& emu_launch, Cuda&& cuda_launch) {
  cudaError_t err = cudaSuccess;
  if (ref.is_cuda()) {
#if defined(Q35_WITH_CUDA)
    const c10::cuda::CUDAGuard guard(ref.device());
    err = cuda_launch(c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == cudaSuccess, "q35_emu_tests.", op, ": launch failed: ", arch_hint(err),
                cudaGetErrorString(err));
    return;
#else
    (void)cuda_launch;
    TORCH_CHECK(false, "q35_emu_tests.", op, ": built without CUDA");
#endif
  }
  err = emu_launch(nullptr);
  TORCH_CHECK(err == cudaSuccess, "q35_emu_tests.", op, ": launch failed: ", arch_hint(err), "cudaError ",
              static_cast<int>(err));
}

#define Q35_RUN(op, ref, launcher, ...)                                                               \
  run_on(                                                                                             \
      ref, op, [&](cudaStream_t s) { return q35::emu::emutest::launcher(__VA_ARGS__, s); },           \
      [&](cudaStream_t s) { return q35::cuda::emutest::launcher(__VA_ARGS__, s); })

template <typename T>
T* ptr(const at::Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

inline void check(const at::Tensor& t, at::ScalarType dtype, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == dtype && t.is_contiguous(), "q35_emu_tests.", op, ": ", name, " must be a contiguous ",
              c10::toString(dtype), " tensor");
}

}  // namespace q35::emutest
