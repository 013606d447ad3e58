// Grouped expert GEMMs of the MoE block over the tiles that moe_align produced (tile = block_m rows of one
// expert):
//   gate_up: act[row, j] = silu(x . w13[e, j]) * (x . w13[e, I + j]),  x = hidden[sorted_pairs[row] / top_k]
//   down:    y[pair, h]  = topk_weights[pair] * (act[row] . w2[e, h]),  pair = sorted_pairs[row]
// Tensor cores (mma.sync m16n8k16 + ldmatrix + cp.async multi-stage pipelines) for bf16/fp16, fp32 accumulation;
// fp32 inputs run the same tiles with SIMT FMAs in the fragment layout (the correctness path of fp32 models).
// Two tile shapes, picked by block_m: 16 (decode: few rows per expert, weight streaming) and 64 (prefill).
// Kernels: moe_gate_up.cu, moe_down.cu (shared tile code: moe_gemm_tile.cuh). Design: README.md.
// Torch glue: csrc/torch/moe_ops.cpp. Tests: tests/kernels/test_moe_experts.py. Bench: bench/moe.py.
#pragma once
#include <cstdint>
#include <type_traits>

#include "q35/common.h"

#include <cuda_runtime_api.h>

namespace q35 {

constexpr int kMoeDecodeBlockM = 16;   // rows per tile when experts see a few tokens each
constexpr int kMoePrefillBlockM = 64;  // rows per tile when experts see many tokens
constexpr int64_t kMoePrefillMinRowsPerExpert = 48;

// Rows per tile for num_pairs (token, expert) pairs over the local experts: the 64-row prefill tiles once experts
// average kMoePrefillMinRowsPerExpert rows (from there their mma efficiency outweighs the padding they add), the
// 16-row decode tiles below; fp32 (SIMT path) has only the decode tiles.
Q35_HD constexpr int moe_pick_block_m(int64_t num_pairs, int64_t num_local_experts, bool fp32) {
  return !fp32 && num_pairs >= kMoePrefillMinRowsPerExpert * num_local_experts ? kMoePrefillBlockM : kMoeDecodeBlockM;
}

struct MoeGemmParams {
  // sizes
  int64_t max_tiles;  // tiles in sorted_pairs / tile_experts (moe_max_tiles)
  int block_m;        // rows per tile: kMoeDecodeBlockM or kMoePrefillBlockM (fp32: decode only)
  int n;              // output columns: gate_up I, down H
  int k;              // reduction: gate_up H, down I
  int top_k;          // gate_up: token of a pair = pair / top_k
  // inputs
  const void* a_ptr;                // gate_up: hidden [N, H] T (row stride a_row_stride); down: act [max_tiles * BM, I] T
  const void* b_ptr;                // gate_up: w13 [E, 2I, H] T; down: w2 [E, H, I] T; contiguous
  const int32_t* sorted_pairs_ptr;  // [max_tiles * BM] pair index or -1 (moe_align)
  const int32_t* tile_experts_ptr;  // [max_tiles] local expert or -1 (moe_align)
  const float* topk_weights_ptr;    // down: [N * top_k] fp32 routing weight of each pair; gate_up: unused
  // outputs
  void* c_ptr;  // gate_up: act [max_tiles * BM, I] T (padding rows not written); down: y [N * top_k, H] T (rows
                // of pairs routed to other ranks not written)
  // strides (elements)
  int64_t a_row_stride;  // gate_up: hidden row stride; down: I
};
static_assert(std::is_trivially_copyable_v<MoeGemmParams>);

#define Q35_FOR_EACH_MOE_GEMM_TYPE(X) X(float) X(__half) X(__nv_bfloat16)

// Requires (checked by the launchers: cudaErrorInvalidValue otherwise): n, k and a_row_stride multiples of
// 16 / sizeof(T) (16-byte cp.async chunks), 16-byte aligned pointers, block_m one of the two tile heights.
namespace cuda {
template <typename T>
cudaError_t launch_moe_gate_up(const MoeGemmParams& params, cudaStream_t stream);
template <typename T>
cudaError_t launch_moe_down(const MoeGemmParams& params, cudaStream_t stream);
}  // namespace cuda
namespace emu {
template <typename T>
cudaError_t launch_moe_gate_up(const MoeGemmParams& params, cudaStream_t stream);
template <typename T>
cudaError_t launch_moe_down(const MoeGemmParams& params, cudaStream_t stream);
}  // namespace emu

}  // namespace q35
