// MoE row permutation kernel (hidden rows into moe_align's tile order) and its launcher. See moe_permute.cuh.
#include "kernels/moe/moe_permute.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

constexpr int kPermuteThreads = 128;
constexpr int kRowsPerBlock = kPermuteThreads / kWarpSize;  // one warp per row
constexpr int kUnroll = 4;                                  // 16-byte chunks in flight per lane

// Computes: rows[r] = hidden[sorted_pairs[r] / top_k] (bytes), for rows r whose tile is used and that hold a pair.
// Args:     p (MoePermuteParams).
// Grid:     ceil(num_rows / kRowsPerBlock) blocks (grid-stride beyond gridDim.x).
// Block:    kPermuteThreads: warp w copies row blockIdx.x * kRowsPerBlock + w; lane l its 16-byte chunks
//           l, l + 32, ... (kUnroll loads in flight before their stores).
// Requires: row_bytes and the hidden row stride multiples of 16; 16-byte aligned pointers.
__global__ void __launch_bounds__(kPermuteThreads) moe_permute_kernel(MoePermuteParams p) {
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t chunks = p.row_bytes / kVecBytes;
  for (int64_t r = int64_t{blockIdx.x} * kRowsPerBlock + warp; r < p.num_rows;
       r += int64_t{gridDim.x} * kRowsPerBlock) {
    // the tile's expert first: sorted_pairs of unused tiles are padding too, but an unused tile needs no read
    if (p.tile_experts_ptr[r / p.block_m] < 0) continue;
    const int pair = p.sorted_pairs_ptr[r];
    if (pair < 0) continue;
    const uint4* src = reinterpret_cast<const uint4*>(static_cast<const char*>(p.hidden_ptr) +
                                                      static_cast<int64_t>(pair / p.top_k) * p.hidden_row_stride_bytes);
    uint4* dst = reinterpret_cast<uint4*>(static_cast<char*>(p.rows_ptr) + r * p.row_bytes);
    for (int64_t c0 = lane; c0 < chunks; c0 += kUnroll * kWarpSize) {
      uint4 v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t c = c0 + u * kWarpSize;
        if (c < chunks) v[u] = src[c];
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t c = c0 + u * kWarpSize;
        if (c < chunks) dst[c] = v[u];
      }
    }
  }
}

}  // namespace

cudaError_t launch_moe_permute(const MoePermuteParams& p, cudaStream_t stream) {
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % kVecBytes == 0; };
  if (p.row_bytes < 0 || p.row_bytes % kVecBytes != 0 || p.hidden_row_stride_bytes % kVecBytes != 0 ||
      p.block_m < 1 || p.top_k < 1 || p.num_rows < 0 || !aligned(p.hidden_ptr) || !aligned(p.rows_ptr))
    return cudaErrorInvalidValue;
  if (p.num_rows == 0 || p.row_bytes == 0) return cudaSuccess;
  constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // rows beyond this loop inside the kernel
  const int64_t blocks = ceil_div(p.num_rows, int64_t{kRowsPerBlock});
  return launch(moe_permute_kernel, dim3(static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks)),
                dim3(kPermuteThreads), 0, stream, p);
}

}  // namespace q35::Q35_TARGET
