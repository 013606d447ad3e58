// Projections of a few tokens (decode): y[M, N] = x[M, K] w[N, K]^T for M <= 64, streaming the weight once at the
// memory's rate, optionally with the SwiGLU of a fused [gate; up] weight as its epilogue; and the routed experts of
// a decode step, one (token, expert) pair per grid row (fused_moe's block_m 1).
// Kernels: skinny_linear.cu (M <= 8), skinny_mma.cu (8 < M <= 64). Torch glue: csrc/torch/linear_ops.cpp. Python: ops/projection.py.
// Tests: tests/kernels/test_linear.py. Bench: bench/linear.py.
#pragma once
#include <cstdint>
#include <type_traits>

#include "q35/common.h"

#include <cuda_runtime_api.h>  // cudaError_t, cudaStream_t: plain host types, also under the emulator

namespace q35 {

constexpr int kSkinnyLinearMaxRows = 64;
constexpr int kSkinnyFmaMaxRows = 8;  // up to here fp32 FMAs (skinny_linear.cu); above, tensor cores (skinny_mma.cu)

struct SkinnyLinearParams {
  // sizes
  int64_t rows;          // M, 0..kSkinnyLinearMaxRows
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
  // MoE decode (pair_ids != nullptr; fused_moe's block_m 1): one (token, expert) pair per grid row blockIdx.y, rows
  // == 1. Pair p multiplies x row p / top_k (x_per_pair: row p) by its expert's weight, w_ptr + (pair_ids[p] -
  // expert_offset) * w_expert_stride, into y row p; pairs of experts outside [0, num_experts) (other ranks') are
  // skipped. The epilogue is the grouped GEMMs' (moe_gate_up / moe_down): silu(g) * u, or pair_weights[p] * sum,
  // in fp32 with one rounding.
  const int32_t* pair_ids;     // [num_pairs] global expert ids (topk_ids), or nullptr
  const float* pair_weights;   // [num_pairs] routing weights for the down product, or nullptr
  int64_t num_pairs;
  int64_t w_expert_stride;     // elements between two experts' weights
  int64_t expert_offset;       // global id of local expert 0
  int64_t num_experts;         // local experts
  int top_k;
  bool x_per_pair;
};
static_assert(std::is_trivially_copyable_v<SkinnyLinearParams>);

// T: __half or __nv_bfloat16.
// launch_skinny_mma: the tensor-core kernel for kSkinnyFmaMaxRows < rows <= kSkinnyLinearMaxRows, no pairs; called
// by launch_skinny_linear.
namespace cuda {
template <typename T>
cudaError_t launch_skinny_linear(const SkinnyLinearParams& params, cudaStream_t stream);
template <typename T>
cudaError_t launch_skinny_mma(const SkinnyLinearParams& params, cudaStream_t stream);
}
namespace emu {
template <typename T>
cudaError_t launch_skinny_linear(const SkinnyLinearParams& params, cudaStream_t stream);
template <typename T>
cudaError_t launch_skinny_mma(const SkinnyLinearParams& params, cudaStream_t stream);
}

}  // namespace q35
