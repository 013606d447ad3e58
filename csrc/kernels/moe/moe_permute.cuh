// MoE row permutation for the sm_90a gate_up GEMM's "sorted rows" variant: copies each tile row's token row of
// hidden into a buffer in moe_align's tile order, so that the GEMM can load its A operand with TMA boxes (as the
// down GEMM loads act) instead of gathering rows with cp.async (TMA cannot gather rows by index on sm_90).
//   rows[r] = hidden[sorted_pairs[r] / top_k]   for the rows r of used tiles that hold a pair
// Padding rows and the rows of unused tiles are not written (the GEMM never stores their results).
// Kernel: moe_permute.cu. Torch glue: csrc/torch/moe_stage_ops.cpp (moe_permute), moe_ops.cpp (fused_moe).
// Tests: tests/kernels/test_moe_sorted_rows.py. Design: README.md, "sorted rows".
#pragma once
#include <cstdint>
#include <type_traits>

#include "q35/common.h"

#include <cuda_runtime_api.h>

namespace q35 {

struct MoePermuteParams {
  // sizes
  int64_t num_rows;   // max_tiles * block_m (the length of sorted_pairs)
  int block_m;        // rows per tile
  int top_k;          // token of a pair = pair / top_k
  int64_t row_bytes;  // bytes of one row (H * element size); a multiple of 16
  // inputs
  const void* hidden_ptr;           // [N, H] rows of row_bytes at hidden_row_stride_bytes
  const int32_t* sorted_pairs_ptr;  // [num_rows] pair index or -1 (moe_align)
  const int32_t* tile_experts_ptr;  // [num_rows / block_m] local expert or -1 (moe_align)
  // outputs
  void* rows_ptr;  // [num_rows, H] contiguous (row stride row_bytes); padding rows not written
  // strides (bytes)
  int64_t hidden_row_stride_bytes;
};
static_assert(std::is_trivially_copyable_v<MoePermuteParams>);

// Requires (cudaErrorInvalidValue otherwise): row_bytes and hidden_row_stride_bytes multiples of 16, 16-byte
// aligned hidden_ptr and rows_ptr, block_m >= 1, top_k >= 1. Any element type: the rows are copied as bytes.
namespace cuda {
cudaError_t launch_moe_permute(const MoePermuteParams& params, cudaStream_t stream);
}
namespace emu {
cudaError_t launch_moe_permute(const MoePermuteParams& params, cudaStream_t stream);
}

}  // namespace q35
