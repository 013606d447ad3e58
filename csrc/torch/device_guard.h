// Where a kernel runs: the CUDA stream of the current torch device, or the SIMT emulator for CPU tensors.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

#if defined(Q35_WITH_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace q35::glue {

// Turns a launcher's cudaError_t into a Python exception naming the op.
inline void check_launch(cudaError_t err, const char* op) {
#if defined(Q35_WITH_CUDA)
  TORCH_CHECK(err == cudaSuccess, "qwen35_native.", op, ": kernel launch failed: ", cudaGetErrorString(err));
#else
  TORCH_CHECK(err == cudaSuccess, "qwen35_native.", op, ": kernel launch failed with cudaError ", static_cast<int>(err));
#endif
}

}  // namespace q35::glue
