// Device helpers shared by the Gated DeltaNet kernels (csrc/kernels/gdn/README.md): gate math (MODEL_SPEC §3b.5),
// loads of parameters stored in either the activation dtype or float32, and the 16-bit operand packing of mma.sync.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "q35/device.cuh"
#include "q35/ptx.cuh"

namespace q35::gdn {

constexpr int kHeadDim = 128;   // K = V = 128: the head dims of every Qwen3.5 size (kernels support only these)
constexpr int kChunk = 64;      // tokens per chunk of the chunked scan
constexpr float kL2NormEps = 1e-6f;
constexpr float kSoftplusThreshold = 20.0f;  // torch's softplus: linear above this

// An element of a parameter tensor stored as float32 (is_fp32) or as T.
template <typename T>
__device__ __forceinline__ float load_param(const void* ptr, int64_t i, bool is_fp32) {
  return is_fp32 ? static_cast<const float*>(ptr)[i] : to_float(static_cast<const T*>(ptr)[i]);
}

__device__ __forceinline__ float softplus(float x) { return x > kSoftplusThreshold ? x : log1pf(expf(x)); }

// g = -exp(A_log) * softplus(a + dt_bias), all in fp32 (dt_bias is added in fp32 as torch promotes it).
__device__ __forceinline__ float gate_log_decay(float a, float a_log, float dt_bias) {
  return -expf(a_log) * softplus(a + dt_bias);
}

// beta = sigmoid(b) rounded to b's dtype T (HF computes it in bf16; vLLM in fp32 then stores bf16: one rounding).
template <typename T>
__device__ __forceinline__ float gate_beta(float b) {
  return to_float(from_float<T>(1.0f / (1.0f + expf(-b))));
}

// silu(z) in fp32, as torch's F.silu on a float tensor.
__device__ __forceinline__ float silu(float z) { return z / (1.0f + expf(-z)); }

// The 16-bit pattern of a bf16/fp16 value.
template <typename T>
__device__ __forceinline__ uint32_t bits16(T x) {
  uint16_t u;
  memcpy(&u, &x, sizeof(u));
  return u;
}

// Two fp32 values rounded to T and packed as an mma operand register (lower index in bits 0-15).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  return bits16(from_float<T>(lo)) | (bits16(from_float<T>(hi)) << 16);
}

// D = A * B + C for m16n8k16 with 16-bit operands of type T (bf16 or fp16), fp32 accumulators.
template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __half>) {
    ptx::mma_m16n8k16_f16(d, a, b, d);
  } else {
    ptx::mma_m16n8k16_bf16(d, a, b, d);
  }
}

// A fragment (16 rows x 16 k) from two fp32 accumulator tiles of an m16n8 product: tile0 holds k columns
// 0..7, tile1 columns 8..15 of the same 16 rows (the C layout of two n-tiles is the A layout of one k-step).
template <typename T>
__device__ __forceinline__ void acc_to_a_frag(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack2<T>(c0[0], c0[1]);
  a[1] = pack2<T>(c0[2], c0[3]);
  a[2] = pack2<T>(c1[0], c1[1]);
  a[3] = pack2<T>(c1[2], c1[3]);
}

// The same with column scales: column j of tile0 is scaled by s0[j & 1] (columns 2t, 2t+1 of the lane), etc.
template <typename T>
__device__ __forceinline__ void acc_to_a_frag_scaled(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4],
                                                     const float (&s0)[2], const float (&s1)[2]) {
  a[0] = pack2<T>(c0[0] * s0[0], c0[1] * s0[1]);
  a[1] = pack2<T>(c0[2] * s0[0], c0[3] * s0[1]);
  a[2] = pack2<T>(c1[0] * s1[0], c1[1] * s1[1]);
  a[3] = pack2<T>(c1[2] * s1[0], c1[3] * s1[1]);
}

// Index of sequence boundaries stored as int32 or int64.
__device__ __forceinline__ int64_t load_index(const void* ptr, int64_t i, bool is_int64) {
  return is_int64 ? static_cast<const int64_t*>(ptr)[i] : static_cast<const int32_t*>(ptr)[i];
}

}  // namespace q35::gdn

namespace q35::gdn {

// One element of the gated RMSNorm (MODEL_SPEC §3a, Qwen3_5MoeRMSNormGated) with the reference's roundings:
// n = T(o * rstd); y = w * n, rounded to T when the weight is stored as T (torch promotes to the weight dtype);
// out = y * silu(z) in fp32 (the caller rounds it to T once).
template <typename T>
__device__ __forceinline__ float gated_norm_value(float o, float rstd, float w, bool w_fp32, float z) {
  const float n = to_float(from_float<T>(o * rstd));
  float y = w * n;
  if (!w_fp32) y = to_float(from_float<T>(y));
  return y * silu(z);
}

}  // namespace q35::gdn
