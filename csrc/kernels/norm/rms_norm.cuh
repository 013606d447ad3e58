// Zero-centred RMSNorm with optional fused residual add: y = x / sqrt(mean(x^2) + eps) * (1 + w).
// Kernel: rms_norm.cu. Torch glue: csrc/torch/norm_ops.cpp. Tests: tests/kernels/test_norm.py. Bench: bench/norm.py.
#pragma once
#include <cstdint>
#include <type_traits>

#include "q35/common.h"

#include <cuda_runtime_api.h>  // cudaError_t, cudaStream_t: plain host types, also under the emulator

namespace q35 {

struct RmsNormParams {
  // sizes
  int64_t num_rows;
  int64_t hidden_size;
  // inputs
  const void* x_ptr;         // [num_rows, hidden_size] T, last dim contiguous
  const void* residual_ptr;  // [num_rows, hidden_size] T, or nullptr
  const void* weight_ptr;    // [hidden_size] W
  // outputs
  void* y_ptr;             // [num_rows, hidden_size] T, contiguous
  void* residual_out_ptr;  // [num_rows, hidden_size] T, contiguous; x + residual rounded to T (nullptr without)
  // strides (elements)
  int64_t x_row_stride;
  int64_t residual_row_stride;
  // scalars
  float eps;
};
static_assert(std::is_trivially_copyable_v<RmsNormParams>);

// T: x/y/residual dtype; W: weight dtype (T or float). Instantiated for Q35_FOR_EACH_NORM_TYPES.
#define Q35_FOR_EACH_NORM_TYPES(X) \
  X(float, float) X(__half, __half) X(__half, float) X(__nv_bfloat16, __nv_bfloat16) X(__nv_bfloat16, float)

namespace cuda {
template <typename T, typename W>
cudaError_t launch_rms_norm(const RmsNormParams& params, cudaStream_t stream);
}
namespace emu {
template <typename T, typename W>
cudaError_t launch_rms_norm(const RmsNormParams& params, cudaStream_t stream);
}

}  // namespace q35
