// MoE token permutation ("align"): groups the N*k (token, expert) pairs by local expert, pads each group to the
// GEMM row tile and writes the gather indices and the expert of every tile, all on the device (no host sync: the
// buffers are sized for the worst case, so the step can be captured in a CUDA graph).
// Kernel: moe_align.cu. Torch glue: csrc/torch/moe_ops.cpp. Tests: tests/kernels/test_moe_align.py.
#pragma once
#include <cstdint>
#include <type_traits>

#include "q35/common.h"

#include <cuda_runtime_api.h>

namespace q35 {

constexpr int kMoeAlignMaxExperts = 1024;  // per-warp counters of every local expert live in shared memory

// Tiles the GEMMs may need in the worst case: sum_e ceil(rows_e / block_m) over at most min(E, P) non-empty
// experts is <= (P + min(E, P) * (block_m - 1)) / block_m. The GEMM grids are sized by this (never by a count
// read back from the device); tiles past the used ones carry expert -1 and exit at once.
Q35_HD constexpr int64_t moe_max_tiles(int64_t num_pairs, int64_t num_local_experts, int64_t block_m) {
  if (num_pairs <= 0 || num_local_experts <= 0) return 0;
  const int64_t nonempty = num_pairs < num_local_experts ? num_pairs : num_local_experts;
  return (num_pairs + nonempty * (block_m - 1)) / block_m;
}

struct MoeAlignParams {
  // sizes
  int64_t num_pairs;      // N * top_k
  int num_local_experts;  // experts whose weights this rank holds
  int expert_offset;      // global id of local expert 0
  int block_m;            // rows per GEMM tile
  int64_t max_tiles;      // moe_max_tiles(num_pairs, num_local_experts, block_m)
  // inputs
  const void* ids_ptr;  // [num_pairs] IdT (int32 or int64) global expert ids: topk_ids flattened, contiguous
  // outputs
  int32_t* sorted_pairs_ptr;  // [max_tiles * block_m] pair index n * k + j, grouped by expert; -1 = padding
  int32_t* tile_experts_ptr;  // [max_tiles] local expert of each tile; -1 for the unused tiles at the end
};
static_assert(std::is_trivially_copyable_v<MoeAlignParams>);

#define Q35_FOR_EACH_MOE_ID_TYPE(X) X(int32_t) X(int64_t)

namespace cuda {
template <typename IdT>
cudaError_t launch_moe_align(const MoeAlignParams& params, cudaStream_t stream);
}
namespace emu {
template <typename IdT>
cudaError_t launch_moe_align(const MoeAlignParams& params, cudaStream_t stream);
}

}  // namespace q35
