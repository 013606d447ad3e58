// Block-wide reductions: warp butterflies, then one warp over the per-warp partials in shared memory.
// Every thread of the block must call them (they contain __syncthreads); all threads get the result.
#pragma once

namespace q35::block {

constexpr int kMaxWarps = kMaxThreadsPerBlock / kWarpSize;

__device__ __forceinline__ float reduce_sum(float x) {
  __shared__ float partials[kMaxWarps];  // [warps] smem
  const int lane = threadIdx.x % kWarpSize;
  const int warp_id = threadIdx.x / kWarpSize;
  const int num_warps = (blockDim.x + kWarpSize - 1) / kWarpSize;
  x = warp::reduce_sum(x);
  __syncthreads();  // partials may still be read by a previous call
  if (lane == 0) partials[warp_id] = x;
  __syncthreads();
  x = lane < num_warps ? partials[lane] : 0.0f;
  return warp::reduce_sum(x);
}

}  // namespace q35::block
