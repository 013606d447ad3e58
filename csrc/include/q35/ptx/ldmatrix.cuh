// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16: loads 1, 2 or 4 8x8 matrices of 16-bit elements
// from shared memory into one 32-bit register per matrix and lane. All 32 lanes must call it together.
//
// Addresses: matrix j takes its rows 0..7 from lanes 8j..8j+7 (x1: lanes 0-7, x2: 0-15, x4: 0-31; the other
// lanes' addresses are ignored). Each row is 16 bytes (8 elements), 16-byte aligned, rows need not be contiguous.
// With M_j[r][c] the c-th element at the address of lane 8j + r, lane l (g = l >> 2, t = l & 3) receives
//   no .trans: r[j] = { M_j[g][2t]  (bits 0-15), M_j[g][2t+1]  (bits 16-31) }   (row g, 32-bit word t)
//   .trans:    r[j] = { M_j[2t][g]  (bits 0-15), M_j[2t+1][g]  (bits 16-31) }   (the matrix transposed)
// Feeding mma.m16n8k16 (PTX_FACTS.md §3):
//   A [16x16] row-major:      ldmatrix_x4(a, &A[l % 16][8 * (l / 16)])            -> a[0..3] = A fragment
//   B as Bt[n][k] (N x K):    ldmatrix_x2(b, &Bt[l % 8][8 * ((l / 8) % 2)])       -> b[0..1] = B fragment
//   B as B[k][n] (K x N):     ldmatrix_x2_trans(b, &B[l % 16][0])                 -> b[0..1] = B fragment
#pragma once
#include "q35/ptx/common.cuh"

namespace q35::ptx {

#if defined(Q35_EMULATE)
#define Q35_LDMATRIX(name, n, trans)                                                   \
  __device__ __forceinline__ void name(uint32_t (&r)[n], const void* smem_row Q35_PTX_SITE_PARAMS) { \
    ::q35::simt::ldmatrix(n, trans, r, smem_row, Q35_EMU_SITE);                         \
  }
Q35_LDMATRIX(ldmatrix_x1, 1, false)
Q35_LDMATRIX(ldmatrix_x2, 2, false)
Q35_LDMATRIX(ldmatrix_x4, 4, false)
Q35_LDMATRIX(ldmatrix_x1_trans, 1, true)
Q35_LDMATRIX(ldmatrix_x2_trans, 2, true)
Q35_LDMATRIX(ldmatrix_x4_trans, 4, true)
#undef Q35_LDMATRIX
#else
__device__ __forceinline__ void ldmatrix_x1(uint32_t (&r)[1], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(smem_u32(smem_row)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_u32(smem_row)));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem_row)));
}
__device__ __forceinline__ void ldmatrix_x1_trans(uint32_t (&r)[1], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0])
               : "r"(smem_u32(smem_row)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_u32(smem_row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem_row)));
}
#endif

}  // namespace q35::ptx
