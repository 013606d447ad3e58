// MoE align kernel (group pairs by expert, pad to the GEMM tile) and its launcher. See moe_align.cuh for the op.
#include "kernels/moe/moe_align.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

constexpr int kAlignWarps = 16;
constexpr int kAlignThreads = kAlignWarps * kWarpSize;
constexpr int kCountUnroll = 4;

// Exclusive scan in place of a[0, n) (shared memory) by the whole block; a[n] receives the total.
// warp_sums: [kAlignWarps] shared scratch. Callers __syncthreads() before reading a.
__device__ void block_exclusive_scan(int32_t* a, int n, int32_t* warp_sums) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp_id = threadIdx.x / kWarpSize;
  const int per_thread = static_cast<int>(ceil_div(n, kAlignThreads));
  const int begin = min(n, static_cast<int>(threadIdx.x) * per_thread);
  const int end = min(n, begin + per_thread);
  int own = 0;
  for (int i = begin; i < end; ++i) own += a[i];
  int inclusive = own;
#pragma unroll
  for (int offset = 1; offset < kWarpSize; offset *= 2) {
    const int v = __shfl_up_sync(warp::kFullMask, inclusive, offset);
    if (lane >= offset) inclusive += v;
  }
  if (lane == kWarpSize - 1) warp_sums[warp_id] = inclusive;
  __syncthreads();
  if (warp_id == 0) {
    const int w = lane < kAlignWarps ? warp_sums[lane] : 0;
    int w_inclusive = w;
#pragma unroll
    for (int offset = 1; offset < kWarpSize; offset *= 2) {
      const int v = __shfl_up_sync(warp::kFullMask, w_inclusive, offset);
      if (lane >= offset) w_inclusive += v;
    }
    if (lane < kAlignWarps) warp_sums[lane] = w_inclusive - w;
  }
  __syncthreads();
  int run = warp_sums[warp_id] + inclusive - own;
  for (int i = begin; i < end; ++i) {
    const int c = a[i];
    a[i] = run;
    run += c;
  }
  if (threadIdx.x == kAlignThreads - 1) a[n] = run;
}

template <typename IdT>
__device__ __forceinline__ int local_expert(const IdT* ids, int64_t q, const MoeAlignParams& p) {
  const int64_t e = static_cast<int64_t>(ids[q]) - p.expert_offset;
  return e >= 0 && e < p.num_local_experts ? static_cast<int>(e) : -1;
}

// The local expert owning tile t: the last e with tile_start[e] <= t (empty experts own no tile).
__device__ __forceinline__ int expert_of_tile(const int32_t* tile_start, int num_experts, int64_t t) {
  int lo = 0, hi = num_experts - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (tile_start[mid] <= t) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// Computes: pairs q = n * k + j with a local expert e = ids[q] - offset, grouped by e in ascending e and, within
//           an expert, ascending q (stable: independent of thread timing); expert e occupies tiles
//           [tile_start[e], tile_start[e] + ceil(rows_e / BM)); sorted_pairs[tile * BM + r] = q or -1 (padding),
//           tile_experts[tile] = e or -1 past the last used tile.
// Args:     ids [P] IdT; sorted_pairs [max_tiles * BM] int32; tile_experts [max_tiles] int32.
// Grid:     1 block (P = N * k is at most ~10^5 pairs per forward: one SM reads them twice in a few us).
// Block:    kAlignWarps warps; warp w owns the pair segment [w * seg, (w + 1) * seg) and counts / scatters it.
// Smem:     (kAlignWarps * E + 2 * E + 1 + kAlignWarps) * 4 bytes.
// Requires: 1 <= E <= kMoeAlignMaxExperts, max_tiles >= moe_max_tiles(P, E, BM), max_tiles * BM < 2^31.
template <typename IdT>
__global__ void __launch_bounds__(kAlignThreads) moe_align_kernel(MoeAlignParams p) {
  Q35_DYNAMIC_SMEM(int32_t, smem);
  const int num_experts = p.num_local_experts;
  const int bm = p.block_m;
  int32_t* cursor = smem;                                 // [kAlignWarps, E] smem: pairs, then warp offsets
  int32_t* tile_start = cursor + kAlignWarps * num_experts;  // [E + 1] smem: tiles per expert, then their scan
  int32_t* expert_rows = tile_start + num_experts + 1;    // [E] smem
  int32_t* warp_sums = expert_rows + num_experts;         // [kAlignWarps] smem
  const IdT* __restrict__ ids = static_cast<const IdT*>(p.ids_ptr);
  const int lane = threadIdx.x % kWarpSize;
  const int warp_id = threadIdx.x / kWarpSize;
  const int64_t seg = ceil_div(p.num_pairs, kAlignWarps);
  const int64_t seg_begin = min(p.num_pairs, warp_id * seg);
  const int64_t seg_end = min(p.num_pairs, seg_begin + seg);

  // ---- count the pairs of each (warp segment, expert) ----
  for (int i = threadIdx.x; i < kAlignWarps * num_experts; i += kAlignThreads) cursor[i] = 0;
  __syncthreads();
  for (int64_t q = seg_begin + lane; q < seg_end; q += kCountUnroll * kWarpSize) {
    int e[kCountUnroll];  // loads first, then the atomics: kCountUnroll loads in flight per lane
#pragma unroll
    for (int u = 0; u < kCountUnroll; ++u) {
      const int64_t qu = q + u * kWarpSize;
      e[u] = qu < seg_end ? local_expert(ids, qu, p) : -1;
    }
#pragma unroll
    for (int u = 0; u < kCountUnroll; ++u) {
      if (e[u] >= 0) atomicAdd(&cursor[warp_id * num_experts + e[u]], 1);
    }
  }
  __syncthreads();

  // ---- per expert: offsets of the warp segments inside the expert, rows and tiles ----
  for (int e = threadIdx.x; e < num_experts; e += kAlignThreads) {
    int run = 0;
    for (int w = 0; w < kAlignWarps; ++w) {
      const int c = cursor[w * num_experts + e];
      cursor[w * num_experts + e] = run;
      run += c;
    }
    expert_rows[e] = run;
    tile_start[e] = static_cast<int32_t>(ceil_div(run, bm));
  }
  __syncthreads();
  block_exclusive_scan(tile_start, num_experts, warp_sums);
  __syncthreads();
  const int used_tiles = tile_start[num_experts];

  // ---- tile experts and padding slots: a warp per tile, its lanes on consecutive slots ----
  // (One thread per tile, writing its padding alone: up to 128 uncoalesced stores per thread at block_m 128, the
  // likely reason moe_align took 49 us there against 19 us at block_m 16 for 35b-a3b with 1024 tokens; H200,
  // bench/moe.py --paths-only.)
  for (int64_t t = warp_id; t < p.max_tiles; t += kAlignWarps) {
    const int e = t < used_tiles ? expert_of_tile(tile_start, num_experts, t) : -1;
    if (lane == 0) p.tile_experts_ptr[t] = e;
    const int64_t first_pad = e < 0 ? t * bm : static_cast<int64_t>(tile_start[e]) * bm + expert_rows[e];
    for (int64_t r = max(first_pad, t * bm) + lane; r < (t + 1) * bm; r += kWarpSize) p.sorted_pairs_ptr[r] = -1;
  }

  // ---- scatter: pairs of equal expert in a 32-pair chunk are ranked by lane (match_any) ----
  int e_next = seg_begin + lane < seg_end ? local_expert(ids, seg_begin + lane, p) : -1;
  for (int64_t base = seg_begin; base < seg_end; base += kWarpSize) {
    const int64_t q = base + lane;
    const int e = e_next;
    const int64_t q_next = q + kWarpSize;  // prefetch: the next chunk's load overlaps this chunk's work
    e_next = q_next < seg_end ? local_expert(ids, q_next, p) : -1;
    const unsigned peers = __match_any_sync(warp::kFullMask, e);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    if (e >= 0) {
      const int64_t row = static_cast<int64_t>(tile_start[e]) * bm + cursor[warp_id * num_experts + e] + rank;
      p.sorted_pairs_ptr[row] = static_cast<int32_t>(q);
    }
    __syncwarp();
    if (e >= 0 && lane == __ffs(static_cast<int>(peers)) - 1) cursor[warp_id * num_experts + e] += __popc(peers);
    __syncwarp();
  }
}

}  // namespace

template <typename IdT>
cudaError_t launch_moe_align(const MoeAlignParams& p, cudaStream_t stream) {
  if (p.num_local_experts < 0 || p.num_local_experts > kMoeAlignMaxExperts || p.block_m < 1 ||
      p.max_tiles < moe_max_tiles(p.num_pairs, p.num_local_experts, p.block_m) ||
      p.max_tiles * p.block_m >= (int64_t{1} << 31))
    return cudaErrorInvalidValue;
  if (p.max_tiles == 0) return cudaSuccess;
  const size_t smem = (static_cast<size_t>(kAlignWarps + 2) * p.num_local_experts + 1 + kAlignWarps) * sizeof(int32_t);
  return launch(moe_align_kernel<IdT>, dim3(1), dim3(kAlignThreads), smem, stream, p);
}

#define Q35_INSTANTIATE(IdT) template cudaError_t launch_moe_align<IdT>(const MoeAlignParams&, cudaStream_t);
Q35_FOR_EACH_MOE_ID_TYPE(Q35_INSTANTIATE)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
