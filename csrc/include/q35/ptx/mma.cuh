// mma.sync.aligned.m16n8k16 / m16n8k8 .row.col: D[16x8] = A[16xK] * B[Kx8] + C on one warp (all 32 lanes call
// it together). Inputs bf16 or f16 packed two per 32-bit register, element with the lower index in bits 0-15
// (__floats2bfloat162_rn(lo, hi) / __floats2half2_rn(lo, hi) build such a register).
// Fragments of lane l, g = l >> 2, t = l & 3 (PTX_FACTS.md §1, §2):
//   A m16n8k16 (a[0..3]): a[0] = A[g][2t..2t+1]   a[1] = A[g+8][2t..2t+1]
//                         a[2] = A[g][2t+8..2t+9] a[3] = A[g+8][2t+8..2t+9]
//   B m16n8k16 (b[0..1]): b[0] = {B[2t][g], B[2t+1][g]}  b[1] = {B[2t+8][g], B[2t+9][g]}
//   A m16n8k8  (a[0..1]): a[0] = A[g][2t..2t+1]   a[1] = A[g+8][2t..2t+1]
//   B m16n8k8  (b):       {B[2t][g], B[2t+1][g]}
//   C/D f32 (c[0..3]):    c[0] = C[g][2t]  c[1] = C[g][2t+1]  c[2] = C[g+8][2t]  c[3] = C[g+8][2t+1]
//   C/D f16 (c[0..1]):    c[0] = {C[g][2t], C[g][2t+1]}  c[1] = {C[g+8][2t], C[g+8][2t+1]}
// d may alias c. Emulator numerics: each D element is C + sum over k (in order k = 0..K-1) of the exact products,
// accumulated in double and rounded once to fp32 (f16 accumulators: rounded once to f16). Tensor cores add the
// products with their own internal precision, so GPU and emulator agree exactly on small-integer data and to
// fp32 rounding otherwise.
#pragma once
#include "q35/ptx/common.cuh"

namespace q35::ptx {

#if defined(Q35_EMULATE)
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                  const float (&c)[4] Q35_PTX_SITE_PARAMS) {
  ::q35::simt::mma_f32acc(16, ::q35::simt::MmaInput::kBf16, d, a, b, c, Q35_EMU_SITE);
}
__device__ __forceinline__ void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                 const float (&c)[4] Q35_PTX_SITE_PARAMS) {
  ::q35::simt::mma_f32acc(16, ::q35::simt::MmaInput::kF16, d, a, b, c, Q35_EMU_SITE);
}
__device__ __forceinline__ void mma_m16n8k16_f16_f16acc(uint32_t (&d)[2], const uint32_t (&a)[4],
                                                        const uint32_t (&b)[2],
                                                        const uint32_t (&c)[2] Q35_PTX_SITE_PARAMS) {
  ::q35::simt::mma_f16acc(16, d, a, b, c, Q35_EMU_SITE);
}
__device__ __forceinline__ void mma_m16n8k8_bf16(float (&d)[4], const uint32_t (&a)[2], uint32_t b,
                                                 const float (&c)[4] Q35_PTX_SITE_PARAMS) {
  ::q35::simt::mma_f32acc(8, ::q35::simt::MmaInput::kBf16, d, a, &b, c, Q35_EMU_SITE);
}
__device__ __forceinline__ void mma_m16n8k8_f16(float (&d)[4], const uint32_t (&a)[2], uint32_t b,
                                                const float (&c)[4] Q35_PTX_SITE_PARAMS) {
  ::q35::simt::mma_f32acc(8, ::q35::simt::MmaInput::kF16, d, a, &b, c, Q35_EMU_SITE);
}
#else
#define Q35_MMA_K16_F32(name, types)                                                                          \
  __device__ __forceinline__ void name(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],        \
                                       const float (&c)[4]) {                                                \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." types ".f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, " \
                 "{%8, %9}, {%10, %11, %12, %13};\n"                                                          \
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                                            \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),   \
                   "f"(c[2]), "f"(c[3]));                                                                     \
  }
#define Q35_MMA_K8_F32(name, types)                                                                           \
  __device__ __forceinline__ void name(float (&d)[4], const uint32_t (&a)[2], uint32_t b, const float (&c)[4]) { \
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32." types ".f32 {%0, %1, %2, %3}, {%4, %5}, {%6}, "      \
                 "{%7, %8, %9, %10};\n"                                                                       \
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                                            \
                 : "r"(a[0]), "r"(a[1]), "r"(b), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));                \
  }
Q35_MMA_K16_F32(mma_m16n8k16_bf16, "bf16.bf16")
Q35_MMA_K16_F32(mma_m16n8k16_f16, "f16.f16")
Q35_MMA_K8_F32(mma_m16n8k8_bf16, "bf16.bf16")
Q35_MMA_K8_F32(mma_m16n8k8_f16, "f16.f16")
#undef Q35_MMA_K16_F32
#undef Q35_MMA_K8_F32
__device__ __forceinline__ void mma_m16n8k16_f16_f16acc(uint32_t (&d)[2], const uint32_t (&a)[4],
                                                        const uint32_t (&b)[2], const uint32_t (&c)[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16 {%0, %1}, {%2, %3, %4, %5}, {%6, %7}, "
               "{%8, %9};\n"
               : "=r"(d[0]), "=r"(d[1])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(c[0]), "r"(c[1]));
}
#endif

}  // namespace q35::ptx
