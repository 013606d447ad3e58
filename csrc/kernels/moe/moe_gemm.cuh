// Grouped expert GEMMs of the MoE block over the tiles that moe_align produced (tile = block_m rows of one
// expert):
//   gate_up: act[row, j] = silu(x . w13[e, j]) * (x . w13[e, I + j]),  x = hidden[sorted_pairs[row] / top_k]
//   down:    y[pair, h]  = topk_weights[pair] * (act[row] . w2[e, h]),  pair = sorted_pairs[row]
// Tensor cores (mma.sync m16n8k16 + ldmatrix + cp.async multi-stage pipelines) for bf16/fp16, fp32 accumulation;
// fp32 inputs run the same tiles with SIMT FMAs in the fragment layout (the correctness path of fp32 models).
// Three tile shapes, picked by block_m: 16 (decode: few rows per expert, weight streaming), 64 (prefill, mma.sync)
// and 128 (prefill on sm_90a: TMA + wgmma, warp-specialised, persistent; only where sm90a_available()).
// Kernels: moe_gate_up.cu, moe_down.cu (shared tile code: moe_gemm_tile.cuh), moe_gate_up_sm90a.cu,
// moe_down_sm90a.cu (shared code: moe_gemm_sm90a.cuh). Design: README.md.
// Torch glue: csrc/torch/moe_ops.cpp. Tests: tests/kernels/test_moe_experts.py. Bench: bench/moe.py.
#pragma once
#include <cstdint>
#include <type_traits>

#include "q35/common.h"

#include <cuda_runtime_api.h>

namespace q35 {

constexpr int kMoeDecodeBlockM = 16;   // rows per tile when experts see a few tokens each
constexpr int kMoePrefillBlockM = 64;  // rows per tile when experts see many tokens
constexpr int kMoeSm90BlockM = 128;    // rows per tile of the sm_90a prefill kernels (two 64-row warpgroups)
constexpr int kMoeSm90PairBlockM = 256;  // ... of their 2-CTA-cluster form (a CTA per 128 rows, the weights shared)
constexpr int kMoeSkinnyBlockM = 1;   // no tiles: each (token, expert) pair on a grid row of the skinny linear kernel
constexpr int64_t kMoeSkinnyMaxPairs = 64;  // ... up to this many pairs (a decode step of a few tokens)
constexpr int64_t kMoePrefillMinRowsPerExpert = 16;  // the 64-row mma.sync tiles from here
constexpr int64_t kMoeSm90MinRowsPerExpert = 8;      // the 128-row sm_90a tiles from here

// Rows per tile for num_pairs (token, expert) pairs over the local experts: the prefill tiles once experts average
// kMoeSm90MinRowsPerExpert rows (128-row sm_90a tiles, where the device runs them: sm90a) or
// kMoePrefillMinRowsPerExpert rows (64-row mma.sync tiles), else the 16-row decode tiles; fp32 (SIMT path) has only
// the decode tiles. Why so few rows: the decode tiles stream an expert's weights once per 16 rows, so from 2 tiles
// per expert on they read the weights two or more times, while the prefill tiles read them once. H200
// (bench/results/2026-11-28-NVIDIA-H200-session9.md, fused_moe at 35b-a3b, 397b tp8 and tp1): the sm_90a path was
// 1.09-1.34x the decode tiles at 8-10 rows per expert and 1.5-3.3x at 16-64; the mma.sync prefill tiles were even
// at 8, 1.07-1.10x at 10 and 1.43x at 16.
// skinny_fits: the skinny kernel takes the operands (16-bit, H and I multiples of 8, 16-byte aligned rows); then up
// to kMoeSkinnyMaxPairs pairs run one pair per grid row with no align (csrc/kernels/linear/skinny_linear.cu): the
// decode tiles pad each pair to 16 rows of an mma and stream its expert's weights at ~half the HBM rate.
Q35_HD constexpr int moe_pick_block_m(int64_t num_pairs, int64_t num_local_experts, bool fp32, bool sm90a = false,
                                      bool skinny_fits = false) {
  if (fp32) return kMoeDecodeBlockM;
  if (skinny_fits && num_pairs <= kMoeSkinnyMaxPairs) return kMoeSkinnyBlockM;
  if (sm90a) return num_pairs >= kMoeSm90MinRowsPerExpert * num_local_experts ? kMoeSm90BlockM : kMoeDecodeBlockM;
  return num_pairs >= kMoePrefillMinRowsPerExpert * num_local_experts ? kMoePrefillBlockM : kMoeDecodeBlockM;
}

struct MoeGemmParams {
  // sizes
  int64_t max_tiles;  // tiles in sorted_pairs / tile_experts (moe_max_tiles)
  int block_m;        // rows per tile: kMoeDecodeBlockM, kMoePrefillBlockM or kMoeSm90BlockM (fp32: decode only)
  int n;              // output columns: gate_up I, down H
  int k;              // reduction: gate_up H, down I
  int top_k;          // gate_up: token of a pair = pair / top_k
  int num_experts;    // local experts in b_ptr (the sm_90a kernels' tensor maps span them)
  int num_ctas;       // sm_90a persistent grid: at most this many CTAs (the SM count on a GPU); others: unused
  int a_sorted_rows;  // gate_up, block_m 128 only: 1 = a_ptr holds the tile rows already in tile order ([max_tiles *
                      // BM, H], moe_permute), loaded by TMA; 0 = a_ptr is hidden, rows gathered by token
  // inputs
  const void* a_ptr;                // gate_up: hidden [N, H] T (row stride a_row_stride) or, with a_sorted_rows, its
                                    // rows in tile order [max_tiles * BM, H]; down: act [max_tiles * BM, I] T
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
// 16 / sizeof(T) (16-byte cp.async chunks and TMA strides), 16-byte aligned pointers, block_m one of the tile
// heights (16, 64 and 128 for 16-bit types, 16 for fp32). block_m = 128 runs the sm_90a kernels: the launchers
// return cudaErrorInvalidDeviceFunction unless moe_sm90a_available() (an sm_90 device / the emulator at sm_90).
namespace cuda {
template <typename T>
cudaError_t launch_moe_gate_up(const MoeGemmParams& params, cudaStream_t stream);
template <typename T>
cudaError_t launch_moe_down(const MoeGemmParams& params, cudaStream_t stream);
template <typename T>  // block_m = 128 (called by the two above)
cudaError_t launch_moe_gate_up_sm90a(const MoeGemmParams& params, cudaStream_t stream);
template <typename T>
cudaError_t launch_moe_down_sm90a(const MoeGemmParams& params, cudaStream_t stream);
bool moe_sm90a_available();  // block_m = 128 runs here
}  // namespace cuda
namespace emu {
template <typename T>
cudaError_t launch_moe_gate_up(const MoeGemmParams& params, cudaStream_t stream);
template <typename T>
cudaError_t launch_moe_down(const MoeGemmParams& params, cudaStream_t stream);
template <typename T>  // block_m = 128 (called by the two above)
cudaError_t launch_moe_gate_up_sm90a(const MoeGemmParams& params, cudaStream_t stream);
template <typename T>
cudaError_t launch_moe_down_sm90a(const MoeGemmParams& params, cudaStream_t stream);
bool moe_sm90a_available();  // block_m = 128 runs here
}  // namespace emu

}  // namespace q35
