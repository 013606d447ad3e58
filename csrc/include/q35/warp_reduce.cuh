// Butterfly reductions within a warp (all lanes get the result).
#pragma once

namespace q35::warp {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float reduce_sum(float x) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(kFullMask, x, offset);
  return x;
}

__device__ __forceinline__ float reduce_max(float x) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, offset));
  return x;
}

}  // namespace q35::warp
