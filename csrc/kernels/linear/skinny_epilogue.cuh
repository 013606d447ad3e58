// Device helpers shared by the skinny linear kernels (skinny_linear.cu, skinny_mma.cu).
#pragma once
#include "q35/device.cuh"

namespace q35::Q35_TARGET::skinny {

// silu(g) * u with the roundings of the unfused ops: g and u rounded to T (F.linear's outputs), silu(g) rounded to T
// (F.silu), the product rounded to T.
template <typename T>
__device__ __forceinline__ T swiglu_rounded(float gate_sum, float up_sum) {
  const float g = to_float(from_float<T>(gate_sum));
  const float u = to_float(from_float<T>(up_sum));
  const float s = to_float(from_float<T>(g / (1.0f + expf(-g))));
  return from_float<T>(s * u);
}

}  // namespace q35::Q35_TARGET::skinny
