// stmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16: the exact inverse of ldmatrix (same lane-to-row
// address table, same register-to-element map, see ldmatrix.cuh): lane l's r[j] is written to matrix j.
// All 32 lanes must call it together. The instruction exists from sm_90; on older GPUs the same store is made
// with shuffles (stmatrix_fallback below, which is what sm_80 builds run), so kernels stay arch-agnostic.
#pragma once
#include "q35/ptx/common.cuh"

namespace q35::ptx {

#if !defined(Q35_EMULATE)
// Portable stmatrix: row r of matrix j (address from lane 8j + r) collects its four 32-bit words from the lanes
// that hold them, then that lane stores 16 bytes.
template <int N, bool kTrans>
__device__ __forceinline__ void stmatrix_fallback(void* smem_row, const uint32_t (&r)[N]) {
  constexpr unsigned kFull = 0xffffffffu;
  const int lane = threadIdx.x % 32;
  const int row = lane % 8;
#pragma unroll
  for (int j = 0; j < N; ++j) {
    uint32_t words[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      if constexpr (!kTrans) {
        words[q] = __shfl_sync(kFull, r[j], 4 * row + q);  // lane (g = row, t = q) holds word q of row `row`
      } else {
        // element (row, c) is half (row & 1) of lane (g = c, t = row >> 1)
        const uint32_t lo = __shfl_sync(kFull, r[j], 4 * (2 * q) + row / 2);
        const uint32_t hi = __shfl_sync(kFull, r[j], 4 * (2 * q + 1) + row / 2);
        const int shift = 16 * (row % 2);
        words[q] = ((lo >> shift) & 0xffffu) | (((hi >> shift) & 0xffffu) << 16);
      }
    }
    if (lane / 8 == j) *reinterpret_cast<uint4*>(smem_row) = make_uint4(words[0], words[1], words[2], words[3]);
  }
}
#endif

#if defined(Q35_EMULATE)
#define Q35_STMATRIX(name, n, trans)                                                          \
  __device__ __forceinline__ void name(void* smem_row, const uint32_t (&r)[n] Q35_PTX_SITE_PARAMS) { \
    ::q35::simt::stmatrix(n, trans, r, smem_row, Q35_EMU_SITE);                                \
  }
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define Q35_STMATRIX(name, n, trans)                                                           \
  __device__ __forceinline__ void name(void* smem_row, const uint32_t (&r)[n]) { stmatrix_asm<n, trans>(smem_row, r); }
template <int N, bool kTrans>
__device__ __forceinline__ void stmatrix_asm(void* smem_row, const uint32_t (&r)[N]) {
  const uint32_t addr = smem_u32(smem_row);
  if constexpr (N == 1 && !kTrans) {
    asm volatile("stmatrix.sync.aligned.m8n8.x1.shared.b16 [%0], {%1};\n" ::"r"(addr), "r"(r[0]) : "memory");
  } else if constexpr (N == 2 && !kTrans) {
    asm volatile("stmatrix.sync.aligned.m8n8.x2.shared.b16 [%0], {%1, %2};\n" ::"r"(addr), "r"(r[0]), "r"(r[1])
                 : "memory");
  } else if constexpr (N == 4 && !kTrans) {
    asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(r[0]),
                 "r"(r[1]), "r"(r[2]), "r"(r[3])
                 : "memory");
  } else if constexpr (N == 1) {
    asm volatile("stmatrix.sync.aligned.m8n8.x1.trans.shared.b16 [%0], {%1};\n" ::"r"(addr), "r"(r[0]) : "memory");
  } else if constexpr (N == 2) {
    asm volatile("stmatrix.sync.aligned.m8n8.x2.trans.shared.b16 [%0], {%1, %2};\n" ::"r"(addr), "r"(r[0]),
                 "r"(r[1])
                 : "memory");
  } else {
    asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(r[0]),
                 "r"(r[1]), "r"(r[2]), "r"(r[3])
                 : "memory");
  }
}
#else
#define Q35_STMATRIX(name, n, trans) \
  __device__ __forceinline__ void name(void* smem_row, const uint32_t (&r)[n]) { stmatrix_fallback<n, trans>(smem_row, r); }
#endif
Q35_STMATRIX(stmatrix_x1, 1, false)
Q35_STMATRIX(stmatrix_x2, 2, false)
Q35_STMATRIX(stmatrix_x4, 4, false)
Q35_STMATRIX(stmatrix_x1_trans, 1, true)
Q35_STMATRIX(stmatrix_x2_trans, 2, true)
Q35_STMATRIX(stmatrix_x4_trans, 4, true)
#undef Q35_STMATRIX

}  // namespace q35::ptx
