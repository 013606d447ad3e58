// The per-thread pieces of the causal conv1d (+ SiLU) over kVec channels, shared by its own kernels
// (causal_conv1d.cu) and the fused GDN decode step (gdn_recurrent.cu): the weights, the conv state of the thread's
// channels, and the outputs of one token, rounded as the reference rounds them (MODEL_SPEC §3b.3).
#pragma once
#include "kernels/gdn/gdn_common.cuh"
#include "q35/vec.cuh"

namespace q35::gdn {

// w[j][v] = weight[c0 + v][j] ([C, W] contiguous, T or fp32). The thread's kVec * kW weights are contiguous: in
// 16-byte pieces where they are 16-bit and 16-byte aligned (4 loads at 8 channels of width 4, instead of 32).
template <typename T, int kW, int kVec>
__device__ __forceinline__ void load_conv_weights(const void* weight, bool weight_fp32, int64_t c0,
                                                  float (&w)[kW][kVec]) {
  constexpr int kElems = kVec * kW;
  constexpr int kPiece = kVecBytes / static_cast<int>(sizeof(T));
  if constexpr (sizeof(T) == 2 && kElems % kPiece == 0) {
    const T* src = static_cast<const T*>(weight) + c0 * kW;
    if (!weight_fp32 && reinterpret_cast<uintptr_t>(src) % kVecBytes == 0) {
      Vec<T, kPiece> raw[kElems / kPiece];
#pragma unroll
      for (int i = 0; i < kElems / kPiece; ++i) raw[i] = reinterpret_cast<const Vec<T, kPiece>*>(src)[i];
#pragma unroll
      for (int e = 0; e < kElems; ++e) w[e % kW][e / kW] = to_float(raw[e / kPiece].v[e % kPiece]);  // [v][j]
      return;
    }
  }
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
#pragma unroll
    for (int j = 0; j < kW; ++j) w[j][v] = load_param<T>(weight, (c0 + v) * kW + j, weight_fp32);
  }
}

// out[v] = act(sum_j w[j][v] * win[j][v]) before the final rounding to T: the sum rounded to T, then SiLU.
template <typename T, int kW, int kVec>
__device__ __forceinline__ void conv_outputs(const float (&w)[kW][kVec], const float (&win)[kW][kVec], bool silu_act,
                                             float (&out)[kVec]) {
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    float acc = 0.0f;
#pragma unroll
    for (int j = 0; j < kW; ++j) acc += w[j][v] * win[j][v];
    acc = to_float(from_float<T>(acc));
    out[v] = silu_act ? silu(acc) : acc;
  }
}

// A thread's conv state: kVec channels x (W-1) taps, kVec * (W-1) contiguous elements ([kVec, W-1]), read into
// win[0, W-1) and written from win[1, W) as W-1 pieces of kVec elements: 16-byte accesses on the vector path (the
// element-wise ones touched each 16-byte piece up to 8 times), scalars when kVec is 1.
template <typename T, int kW, int kVec>
__device__ __forceinline__ void load_conv_state(const T* state, float (&win)[kW][kVec]) {
  Vec<T, kVec> raw[kW - 1];
#pragma unroll
  for (int i = 0; i < kW - 1; ++i) raw[i] = reinterpret_cast<const Vec<T, kVec>*>(state)[i];
#pragma unroll
  for (int j = 0; j < kW - 1; ++j) {
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      const int e = v * (kW - 1) + j;  // element of the thread's state
      win[j][v] = to_float(raw[e / kVec].v[e % kVec]);
    }
  }
}

template <typename T, int kW, int kVec>
__device__ __forceinline__ void store_conv_state(T* state, const float (&win)[kW][kVec]) {
  Vec<T, kVec> raw[kW - 1];
#pragma unroll
  for (int j = 0; j < kW - 1; ++j) {
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      const int e = v * (kW - 1) + j;  // element of the thread's state
      raw[e / kVec].v[e % kVec] = from_float<T>(win[j + 1][v]);
    }
  }
#pragma unroll
  for (int i = 0; i < kW - 1; ++i) reinterpret_cast<Vec<T, kVec>*>(state)[i] = raw[i];
}

}  // namespace q35::gdn
