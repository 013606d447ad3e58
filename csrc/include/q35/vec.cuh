// 16-byte vector loads/stores of kVecBytes / sizeof(T) elements, unpacked to fp32 (the habit of every
// memory-bound kernel here: one 128-bit access per thread, coalesced across the warp).
#pragma once

namespace q35 {

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

// Loads N elements (N * sizeof(T) must be 4, 8 or 16 bytes, pointer aligned to that) and widens to fp32.
template <typename T, int N>
__device__ __forceinline__ void load_vec_f32(const T* __restrict__ ptr, float (&out)[N]) {
  Vec<T, N> raw = *reinterpret_cast<const Vec<T, N>*>(ptr);
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = to_float(raw.v[i]);
}

// Rounds N fp32 values to T and stores them with one access.
template <typename T, int N>
__device__ __forceinline__ void store_vec_f32(T* __restrict__ ptr, const float (&in)[N]) {
  Vec<T, N> raw;
#pragma unroll
  for (int i = 0; i < N; ++i) raw.v[i] = from_float<T>(in[i]);
  *reinterpret_cast<Vec<T, N>*>(ptr) = raw;
}

}  // namespace q35
