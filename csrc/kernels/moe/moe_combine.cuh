// MoE combine: out[n] = sum over the token's local pairs j of y[n * k + j] (the weighted expert outputs of
// moe_down), summed in fp32 in slot order, plus sigmoid(hidden[n] . shared_gate_w) * shared_out[n]; one rounding
// to T, one pass, no atomics (deterministic).
// Kernel: moe_combine.cu. Torch glue: csrc/torch/moe_ops.cpp. Tests: tests/kernels/test_moe_experts.py.
#pragma once
#include <cstdint>
#include <type_traits>

#include "q35/common.h"

#include <cuda_runtime_api.h>

namespace q35 {

struct MoeCombineParams {
  // sizes
  int64_t num_tokens;
  int hidden_size;
  int top_k;
  int num_local_experts;
  int expert_offset;
  // inputs
  const void* expert_out_ptr;     // [N * k, H] T contiguous: rows of local pairs (moe_down); others never read
  const void* ids_ptr;            // [N, k] IdT contiguous global expert ids
  const void* hidden_ptr;         // [N, H] T (row stride hidden_row_stride); read only with a shared expert
  const void* shared_out_ptr;     // [N, H] T contiguous shared-expert output, or nullptr (no shared expert)
  const void* shared_gate_w_ptr;  // [H] T shared-expert gate weight (with shared_out_ptr)
  // outputs
  void* out_ptr;  // [N, H] T contiguous
  // strides (elements)
  int64_t hidden_row_stride;
};
static_assert(std::is_trivially_copyable_v<MoeCombineParams>);

#define Q35_FOR_EACH_MOE_COMBINE_TYPES(X) \
  X(float, int32_t) X(float, int64_t) X(__half, int32_t) X(__half, int64_t) X(__nv_bfloat16, int32_t) \
  X(__nv_bfloat16, int64_t)

// Requires (cudaErrorInvalidValue otherwise): H and hidden_row_stride multiples of 16 / sizeof(T), 16-byte
// aligned row pointers, 1 <= top_k <= 32.
namespace cuda {
template <typename T, typename IdT>
cudaError_t launch_moe_combine(const MoeCombineParams& params, cudaStream_t stream);
}
namespace emu {
template <typename T, typename IdT>
cudaError_t launch_moe_combine(const MoeCombineParams& params, cudaStream_t stream);
}

}  // namespace q35
