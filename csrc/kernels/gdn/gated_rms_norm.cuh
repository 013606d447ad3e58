// Gated RMSNorm of the GDN output (MODEL_SPEC §3a): y = rmsnorm(x) * w * silu(z) per row (one token and value
// head), plain w (not 1 + w), normalise first, then gate; fp32 math with the reference's roundings
// (gdn::gated_norm_value). The prefill and decode kernels fuse the same epilogue; this is the standalone op.
// Kernel: gated_rms_norm.cu. Torch glue: csrc/torch/gdn_ops.cpp. Python: ops/gdn_layer.py. Tests:
// tests/kernels/test_gdn_norm_gating.py.
#pragma once
#include <cstdint>
#include <type_traits>

#include "q35/common.h"

#include <cuda_runtime_api.h>

namespace q35 {

struct GatedRmsNormParams {
  // sizes
  int64_t num_rows;
  int64_t hidden_size;  // V
  // inputs
  const void* x_ptr;       // [rows, V] T, row stride x_row_stride, last dim contiguous
  const void* z_ptr;       // [rows, V] T, row stride z_row_stride
  const void* weight_ptr;  // [V] T or float32 (weight_fp32)
  // outputs
  void* y_ptr;  // [rows, V] T contiguous
  // strides (elements)
  int64_t x_row_stride;
  int64_t z_row_stride;
  // scalars
  float eps;
  bool weight_fp32;
};
static_assert(std::is_trivially_copyable_v<GatedRmsNormParams>);

namespace cuda {
template <typename T>
cudaError_t launch_gated_rms_norm(const GatedRmsNormParams& params, cudaStream_t stream);
}
namespace emu {
template <typename T>
cudaError_t launch_gated_rms_norm(const GatedRmsNormParams& params, cudaStream_t stream);
}

}  // namespace q35
