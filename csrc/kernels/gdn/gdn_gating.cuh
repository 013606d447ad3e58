// GDN gates (MODEL_SPEC §3b.5) as a standalone op: g = -exp(A_log) * softplus(a + dt_bias) in fp32 and
// beta = sigmoid(b) rounded to b's dtype. The scan kernels compute the same gates inline from a, b (gdn_chunk,
// gdn_recurrent); this op serves callers of the flash-linear-attention-style functions.
// Kernel: gdn_gating.cu. Torch glue: csrc/torch/gdn_ops.cpp. Python: ops/gdn_layer.py. Tests:
// tests/kernels/test_gdn_norm_gating.py.
#pragma once
#include <cstdint>
#include <type_traits>

#include "q35/common.h"

#include <cuda_runtime_api.h>

namespace q35 {

struct GdnGatingParams {
  // sizes
  int64_t num_rows;   // tokens (leading dims of a collapsed)
  int64_t num_heads;  // Hv
  // inputs
  const void* a_ptr;        // [rows, Hv] T, row stride a_row_stride
  const void* b_ptr;        // [rows, Hv] T, row stride b_row_stride
  const void* a_log_ptr;    // [Hv] T or float32 (a_log_fp32)
  const void* dt_bias_ptr;  // [Hv] T or float32 (dt_bias_fp32)
  // outputs
  float* g_ptr;     // [rows, Hv] float32 contiguous
  void* beta_ptr;   // [rows, Hv] T contiguous
  // strides (elements)
  int64_t a_row_stride;
  int64_t b_row_stride;
  // scalars
  bool a_log_fp32;
  bool dt_bias_fp32;
};
static_assert(std::is_trivially_copyable_v<GdnGatingParams>);

namespace cuda {
template <typename T>
cudaError_t launch_gdn_gating(const GdnGatingParams& params, cudaStream_t stream);
}
namespace emu {
template <typename T>
cudaError_t launch_gdn_gating(const GdnGatingParams& params, cudaStream_t stream);
}

}  // namespace q35
