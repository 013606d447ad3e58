// Projections of a few tokens (decode): y[M, N] = x[M, K] w[N, K]^T for M <= 8, streaming the weight once at the
// memory's rate, optionally with the SwiGLU of a fused [gate; up] weight as its epilogue.
// Kernel: skinny_linear.cu. Torch glue: csrc/torch/linear_ops.cpp. Python: ops/linear.py.
// Tests: tests/kernels/test_linear.py. Bench: bench/linear.py.
#pragma once
#include <cstdint>
#include <type_traits>

#include "q35/common.h"

#include <cuda_runtime_api.h>  // cudaError_t, cudaStream_t: plain host types, also under the emulator

namespace q35 {

constexpr int kSkinnyLinearMaxRows = 8;

struct SkinnyLinearParams {
  // sizes
  int64_t rows;          // M, 1..kSkinnyLinearMaxRows
  int64_t out_features;  // N: outputs per row (with swiglu the weight has 2N rows)
  int64_t in_features;   // K, a multiple of 8
  // inputs
  const void* x_ptr;  // [M, K] T, rows x_row_stride apart, 16-byte aligned rows
  const void* w_ptr;  // [N, K] T (swiglu: [2N, K], gate rows then up rows), contiguous, 16-byte aligned
  // outputs
  void* y_ptr;  // [M, N] T, contiguous
  // strides (elements)
  int64_t x_row_stride;
  // options
  bool swiglu;  // y = silu(x w_gate^T) * (x w_up^T), each product and silu rounded to T as the unfused ops
  int num_sms;  // the device's SM count (the launcher splits K over a block's warps when N is short)
};
static_assert(std::is_trivially_copyable_v<SkinnyLinearParams>);

// T: __half or __nv_bfloat16.
namespace cuda {
template <typename T>
cudaError_t launch_skinny_linear(const SkinnyLinearParams& params, cudaStream_t stream);
}
namespace emu {
template <typename T>
cudaError_t launch_skinny_linear(const SkinnyLinearParams& params, cudaStream_t stream);
}

}  // namespace q35
