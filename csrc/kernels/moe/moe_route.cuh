// MoE routing (MODEL_SPEC §3d.1-2): fp32 softmax over all E experts, top-k (ties to the lower expert id, like
// torch.topk on the CPU), renormalised to sum 1, in one kernel, one warp per token.
// Kernel: moe_route.cu. Torch glue: csrc/torch/moe_route_ops.cpp. Tests: tests/kernels/test_moe_route.py.
// Bench: bench/moe.py (routing rows).
#pragma once
#include <cstdint>
#include <type_traits>

#include "q35/common.h"

#include <cuda_runtime_api.h>

namespace q35 {

constexpr int kMoeRouteMaxExperts = 1024;  // 32 logits per lane in registers
constexpr int kMoeRouteMaxTopK = kWarpSize;  // lane j holds the j-th choice

struct MoeRouteParams {
  // sizes
  int64_t num_tokens;
  int num_experts;
  int top_k;
  // inputs
  const void* logits_ptr;  // [num_tokens, num_experts] T, last dim contiguous
  // outputs
  float* weights_ptr;  // [num_tokens, top_k] fp32, contiguous: descending
  int32_t* ids_ptr;    // [num_tokens, top_k] int32, contiguous
  // strides (elements)
  int64_t logits_row_stride;
};
static_assert(std::is_trivially_copyable_v<MoeRouteParams>);

#define Q35_FOR_EACH_MOE_ROUTE_TYPE(X) X(float) X(__half) X(__nv_bfloat16)

namespace cuda {
template <typename T>
cudaError_t launch_moe_route(const MoeRouteParams& params, cudaStream_t stream);
}
namespace emu {
template <typename T>
cudaError_t launch_moe_route(const MoeRouteParams& params, cudaStream_t stream);
}

}  // namespace q35
