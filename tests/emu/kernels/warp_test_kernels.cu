// Test kernels for warp shuffles, votes, block reductions, atomics and a deliberately racy exchange.
// Declarations: emu_test_kernels.cuh. Tests: tests/emu/test_warp.py, tests/emu/test_races.py.
#include <cmath>

#include "emu_test_kernels.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET::emutest {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kMaxThreads = 1024;

template <typename T>
__device__ __forceinline__ T shuffle(int mode, unsigned mask, T v, int b, int width) {
  switch (mode) {
    case 0:
      return __shfl_sync(mask, v, b, width);
    case 1:
      return __shfl_up_sync(mask, v, static_cast<unsigned>(b), width);
    case 2:
      return __shfl_down_sync(mask, v, static_cast<unsigned>(b), width);
    default:
      return __shfl_xor_sync(mask, v, b, width);
  }
}

// Computes: out = shuffle(values) of the selected kind, 32-bit (low word) and 64-bit, per thread.
// Grid: 1. Block: p.n threads; lanes outside p.mask exit without shuffling.
__global__ void shuffle_kernel(ShuffleParams p) {
  const int tid = threadIdx.x;
  const int lane = tid % kWarpSize;
  if (!((p.mask >> lane) & 1u)) {
    p.out32[tid] = 0;
    p.out64[tid] = 0;
    return;
  }
  const uint64_t v = p.values[tid];
  p.out32[tid] = shuffle<uint32_t>(p.mode, p.mask, static_cast<uint32_t>(v), p.operand[tid], p.width);
  p.out64[tid] = shuffle<unsigned long long>(p.mode, p.mask, static_cast<unsigned long long>(v), p.operand[tid],
                                             p.width);
}

// Computes: per thread, the block votes (__syncthreads_count/and/or) and, for lanes in p.mask, the warp votes,
//           __match_any_sync, __reduce_add_sync and a __syncwarp; __activemask() inside `if (predicate)`.
// Grid: 1. Block: p.n threads (a multiple of 32).
__global__ void vote_kernel(VoteParams p) {
  const int tid = threadIdx.x;
  const int lane = tid % kWarpSize;
  const int pred = p.predicate[tid];
  int32_t* out = p.out + tid * kVoteOutputs;
  out[4] = __syncthreads_count(pred);
  out[5] = __syncthreads_and(pred);
  out[6] = __syncthreads_or(pred);
  if ((p.mask >> lane) & 1u) {
    out[0] = static_cast<int32_t>(__ballot_sync(p.mask, pred));
    out[1] = __any_sync(p.mask, pred);
    out[2] = __all_sync(p.mask, pred);
    out[7] = static_cast<int32_t>(__match_any_sync(p.mask, pred % 3));
    out[8] = __reduce_add_sync(p.mask, pred);
    __syncwarp(p.mask);
    out[9] = 1;
  } else {
    out[0] = out[1] = out[2] = out[7] = out[8] = out[9] = -1;
  }
  __syncwarp();
  out[3] = pred ? static_cast<int32_t>(__activemask()) : 0;
}

// Computes: sum[row] = sum(x[row, :]) with block::reduce_sum; max[row] with warp::reduce_max + smem.
// Grid: rows. Block: any multiple of 32 up to 1024.
__global__ void block_reduce_kernel(BlockReduceParams p) {
  __shared__ float warp_max[kMaxThreads / kWarpSize];  // [warps] smem
  const int row = blockIdx.x;
  const int lane = threadIdx.x % kWarpSize;
  const int warp_id = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  float s = 0.0f;
  float m = -INFINITY;
  for (int c = threadIdx.x; c < p.cols; c += blockDim.x) {
    const float v = p.x[static_cast<int64_t>(row) * p.cols + c];
    s += v;
    m = fmaxf(m, v);
  }
  const float total = block::reduce_sum(s);
  m = warp::reduce_max(m);
  if (lane == 0) warp_max[warp_id] = m;
  __syncthreads();
  if (warp_id == 0) {
    m = warp::reduce_max(lane < num_warps ? warp_max[lane] : -INFINITY);
    if (lane == 0) {
      p.sum[row] = total;
      p.max[row] = m;
    }
  }
}

// Computes: bins = histogram(keys) through shared-memory atomics, then global atomics; stats[0/1] = max/min key
//           (atomicMax/Min), stats[2] += 1 per key through an atomicCAS loop, stats[3] = 1 (atomicExch).
// Grid: any. Block: any. Smem: num_bins * 4 bytes.
__global__ void histogram_kernel(HistogramParams p) {
  Q35_DYNAMIC_SMEM(int32_t, local_bins);  // [num_bins] smem
  for (int b = threadIdx.x; b < p.num_bins; b += blockDim.x) local_bins[b] = 0;
  __syncthreads();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x) {
    const int k = p.keys[i];
    atomicAdd(&local_bins[k], 1);
    atomicMax(&p.stats[0], k);
    atomicMin(&p.stats[1], k);
    int old = atomicAdd(&p.stats[2], 0);
    int assumed;
    do {
      assumed = old;
      old = atomicCAS(&p.stats[2], assumed, assumed + 1);
    } while (old != assumed);
  }
  __syncthreads();
  for (int b = threadIdx.x; b < p.num_bins; b += blockDim.x)
    if (local_bins[b]) atomicAdd(&p.bins[b], local_bins[b]);
  if (threadIdx.x == 0) atomicExch(&p.stats[3], 1);
}

// Computes: out[t] = 2 * x[neighbour(t)] through shared memory. Variant 0: block neighbour after __syncthreads;
//           1: the same without the barrier (a race); 2: warp neighbour without __syncwarp (a race);
//           3: warp neighbour after __syncwarp.
// Grid: 1. Block: p.n threads (a multiple of 32, at most 1024). Smem: 4 * n bytes.
__global__ void racy_kernel(RacyParams p) {
  Q35_DYNAMIC_SMEM(float, buf);  // [n] smem (poisoned by the emulator at block start)
  const int tid = threadIdx.x;
  buf[tid] = 2.0f * p.x[tid];
  if (p.variant == 0) __syncthreads();
  if (p.variant == 3) __syncwarp();
  const bool warp_local = p.variant >= 2;
  const int src = warp_local ? (tid & ~(kWarpSize - 1)) | ((tid + 1) & (kWarpSize - 1)) : (tid + 1) % p.n;
  p.out[tid] = buf[src];
}

}  // namespace

cudaError_t launch_shuffle(const ShuffleParams& p, cudaStream_t s) {
  return launch(shuffle_kernel, dim3(1), dim3(p.n), 0, s, p);
}
cudaError_t launch_vote(const VoteParams& p, cudaStream_t s) { return launch(vote_kernel, dim3(1), dim3(p.n), 0, s, p); }
cudaError_t launch_block_reduce(const BlockReduceParams& p, int threads, cudaStream_t s) {
  return launch(block_reduce_kernel, dim3(p.rows), dim3(threads), 0, s, p);
}
cudaError_t launch_histogram(const HistogramParams& p, cudaStream_t s) {
  constexpr int kThreads = 128;
  constexpr int kBlocks = 3;
  return launch(histogram_kernel, dim3(kBlocks), dim3(kThreads), p.num_bins * sizeof(int32_t), s, p);
}
cudaError_t launch_racy(const RacyParams& p, cudaStream_t s) { return launch(racy_kernel, dim3(1), dim3(p.n), p.n * sizeof(float), s, p); }

}  // namespace q35::Q35_TARGET::emutest
