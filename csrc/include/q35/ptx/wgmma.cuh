// wgmma.mma_async.sync.aligned.m64nNk16.f32.{bf16,f16} (sm_90a): D[64 x N] = A[64 x 16] * B[16 x N] (+ D) on a
// warpgroup (warps 4g..4g+3 of the block, all 128 threads call it together), asynchronously.
//   wgmma_bf16_ss<N>(d, desc_a, desc_b, scale_d)   A and B in shared memory (descriptors, K-major)
//   wgmma_bf16_rs<N>(d, a, desc_b, scale_d)        A from registers a[4], B in shared memory
//   wgmma_f16_ss<N> / wgmma_f16_rs<N>              the same with f16 inputs
//   <N, true>: B MN-major (imm-trans-b = 1: B[k][n] with n contiguous; descriptor KMajorTile::desc_mn_major).
//              LOW confidence until the -m gpu twins of tests/emu/test_wgmma.py pass on an H100/H200.
//   N = 8..256, a multiple of 8; d: float[N / 2] per thread; scale_d = 0: D = A * B, otherwise D = A * B + D.
//   wgmma_fence()              all warps, before the first wgmma and after any access to d (or a) since
//   wgmma_commit_group()       close the issued wgmmas into a group
//   wgmma_wait_group<N>()      wait until at most N groups are pending; then d may be read
//   wgmma_fence_operand(x)     pins reads/writes of register array x between the asm statements (call it on the
//                              accumulators after the wait and before the fence, as CUTLASS does)
// Layouts (q35/ptx/wgmma_layout.h, PTX_FACTS §6): d[i] of thread T is D[wgmma_acc_row(T, i)][wgmma_acc_col(T, i)];
// RS a[r] packs A elements 2r, 2r+1 at wgmma_a_row/col; shared operands through KMajorTile::desc (A: 64 rows x 16
// columns of a [M][K] tile; B: N rows x 16 columns of B^T stored [N][K]). Descriptors must be warpgroup-uniform.
// Shared operands written with ordinary stores need fence_proxy_async_shared() first (q35/ptx/fence.cuh).
// Emulator: d becomes NaN at issue and gets the result at the wait that retires it (reading d early shows NaNs);
// the shared operands are read at that wait from the async-proxy view (a missing fence or an overwrite before the
// wait is an error); a wgmma without wgmma_fence since the start or the last wait is an error; numerics as
// mma.sync (exact on small integers, fp32 rounding otherwise).
#pragma once
#include "q35/ptx/arch.cuh"
#include "q35/ptx/common.cuh"
#include "q35/ptx/wgmma_layout.h"

#if Q35_SM90A_ASM
#include "q35/ptx/wgmma_operands.cuh"
#endif

namespace q35::ptx {

#define Q35_WGMMA_CHECK_N(N) static_assert((N) % 8 == 0 && (N) >= 8 && (N) <= 256, "wgmma: N must be 8..256, step 8")

#if defined(Q35_EMULATE)
__device__ __forceinline__ void wgmma_fence(Q35_EMU_SITE_PARAMS) { ::q35::simt::wgmma_fence(Q35_EMU_SITE); }
__device__ __forceinline__ void wgmma_commit_group(Q35_EMU_SITE_PARAMS) {
  ::q35::simt::wgmma_commit_group(Q35_EMU_SITE);
}
template <int N>
__device__ __forceinline__ void wgmma_wait_group(Q35_EMU_SITE_PARAMS) {
  static_assert(N >= 0, "wgmma.wait_group takes a non-negative immediate");
  ::q35::simt::wgmma_wait_group(N, Q35_EMU_SITE);
}
#define Q35_WGMMA_EMU(name, type)                                                                              \
  template <int N, bool kTransB = false>                                                                       \
  __device__ __forceinline__ void name##_ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b,               \
                                            int scale_d Q35_PTX_SITE_PARAMS) {                                 \
    Q35_WGMMA_CHECK_N(N);                                                                                      \
    ::q35::simt::wgmma_mma_async(N, type, d, desc_a, nullptr, desc_b, kTransB, scale_d, Q35_EMU_SITE);         \
  }                                                                                                            \
  template <int N, bool kTransB = false>                                                                       \
  __device__ __forceinline__ void name##_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b,        \
                                            int scale_d Q35_PTX_SITE_PARAMS) {                                 \
    Q35_WGMMA_CHECK_N(N);                                                                                      \
    ::q35::simt::wgmma_mma_async(N, type, d, 0, a, desc_b, kTransB, scale_d, Q35_EMU_SITE);                    \
  }
Q35_WGMMA_EMU(wgmma_bf16, ::q35::simt::MmaInput::kBf16)
Q35_WGMMA_EMU(wgmma_f16, ::q35::simt::MmaInput::kF16)
#undef Q35_WGMMA_EMU
template <int R>
__device__ __forceinline__ void wgmma_fence_operand(float (&)[R]) {}
template <int R>
__device__ __forceinline__ void wgmma_fence_operand(uint32_t (&)[R]) {}

#else  // nvcc
template <int R>
__device__ __forceinline__ void wgmma_fence_operand(float (&x)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(x[i])::"memory");
}
template <int R>
__device__ __forceinline__ void wgmma_fence_operand(uint32_t (&x)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+r"(x[i])::"memory");
}

#if Q35_SM90A_ASM
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit_group() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait_group() {
  static_assert(N >= 0, "wgmma.wait_group takes a non-negative immediate");
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

namespace detail {
// Wgmma<N>: the inline PTX of each variant for one N (operand tables: wgmma_operands.cuh; C = N / 8).
template <int N>
struct Wgmma;
// tb: the imm-trans-b immediate, "0" (B K-major) or "1" (B MN-major).
#define Q35_WGMMA_SS(N, C, types, tb)                                                                          \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " Q35_WG_ARG(2, Q35_WG_NEXT_##C) ", 0;\n"                    \
               "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." types " {" Q35_WG_REGS_##C "}, "              \
               Q35_WG_ARG(0, Q35_WG_NEXT_##C) ", " Q35_WG_ARG(1, Q35_WG_NEXT_##C) ", p, 1, 1, 0, " tb ";\n}\n" \
               : Q35_WG_OUT_##C                                                                                \
               : "l"(desc_a), "l"(desc_b), "r"(scale_d))
#define Q35_WGMMA_RS(N, C, types, tb)                                                                          \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " Q35_WG_ARG(5, Q35_WG_NEXT_##C) ", 0;\n"                    \
               "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." types " {" Q35_WG_REGS_##C "}, {"             \
               Q35_WG_ARG(0, Q35_WG_NEXT_##C) ", " Q35_WG_ARG(1, Q35_WG_NEXT_##C) ", "                         \
               Q35_WG_ARG(2, Q35_WG_NEXT_##C) ", " Q35_WG_ARG(3, Q35_WG_NEXT_##C) "}, "                        \
               Q35_WG_ARG(4, Q35_WG_NEXT_##C) ", p, 1, 1, " tb ";\n}\n"                                        \
               : Q35_WG_OUT_##C                                                                                \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d))
#define Q35_WGMMA_INSTANCE(N, C)                                                                               \
  template <>                                                                                                  \
  struct Wgmma<N> {                                                                                            \
    template <bool kTransB>                                                                                    \
    static __device__ __forceinline__ void ss_bf16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int scale_d) { \
      if constexpr (kTransB) {                                                                                 \
        Q35_WGMMA_SS(N, C, "bf16.bf16", "1");                                                                  \
      } else {                                                                                                 \
        Q35_WGMMA_SS(N, C, "bf16.bf16", "0");                                                                  \
      }                                                                                                        \
    }                                                                                                          \
    template <bool kTransB>                                                                                    \
    static __device__ __forceinline__ void ss_f16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int scale_d) { \
      if constexpr (kTransB) {                                                                                 \
        Q35_WGMMA_SS(N, C, "f16.f16", "1");                                                                    \
      } else {                                                                                                 \
        Q35_WGMMA_SS(N, C, "f16.f16", "0");                                                                    \
      }                                                                                                        \
    }                                                                                                          \
    template <bool kTransB>                                                                                    \
    static __device__ __forceinline__ void rs_bf16(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b,  \
                                                   int scale_d) {                                              \
      if constexpr (kTransB) {                                                                                 \
        Q35_WGMMA_RS(N, C, "bf16.bf16", "1");                                                                  \
      } else {                                                                                                 \
        Q35_WGMMA_RS(N, C, "bf16.bf16", "0");                                                                  \
      }                                                                                                        \
    }                                                                                                          \
    template <bool kTransB>                                                                                    \
    static __device__ __forceinline__ void rs_f16(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b,   \
                                                  int scale_d) {                                               \
      if constexpr (kTransB) {                                                                                 \
        Q35_WGMMA_RS(N, C, "f16.f16", "1");                                                                    \
      } else {                                                                                                 \
        Q35_WGMMA_RS(N, C, "f16.f16", "0");                                                                    \
      }                                                                                                        \
    }                                                                                                          \
  };
Q35_WGMMA_INSTANCE(8, 1) Q35_WGMMA_INSTANCE(16, 2) Q35_WGMMA_INSTANCE(24, 3) Q35_WGMMA_INSTANCE(32, 4)
Q35_WGMMA_INSTANCE(40, 5) Q35_WGMMA_INSTANCE(48, 6) Q35_WGMMA_INSTANCE(56, 7) Q35_WGMMA_INSTANCE(64, 8)
Q35_WGMMA_INSTANCE(72, 9) Q35_WGMMA_INSTANCE(80, 10) Q35_WGMMA_INSTANCE(88, 11) Q35_WGMMA_INSTANCE(96, 12)
Q35_WGMMA_INSTANCE(104, 13) Q35_WGMMA_INSTANCE(112, 14) Q35_WGMMA_INSTANCE(120, 15) Q35_WGMMA_INSTANCE(128, 16)
Q35_WGMMA_INSTANCE(136, 17) Q35_WGMMA_INSTANCE(144, 18) Q35_WGMMA_INSTANCE(152, 19) Q35_WGMMA_INSTANCE(160, 20)
Q35_WGMMA_INSTANCE(168, 21) Q35_WGMMA_INSTANCE(176, 22) Q35_WGMMA_INSTANCE(184, 23) Q35_WGMMA_INSTANCE(192, 24)
Q35_WGMMA_INSTANCE(200, 25) Q35_WGMMA_INSTANCE(208, 26) Q35_WGMMA_INSTANCE(216, 27) Q35_WGMMA_INSTANCE(224, 28)
Q35_WGMMA_INSTANCE(232, 29) Q35_WGMMA_INSTANCE(240, 30) Q35_WGMMA_INSTANCE(248, 31) Q35_WGMMA_INSTANCE(256, 32)
#undef Q35_WGMMA_INSTANCE
#undef Q35_WGMMA_SS
#undef Q35_WGMMA_RS
}  // namespace detail

#define Q35_WGMMA_ASM(name, variant)                                                                           \
  template <int N, bool kTransB = false>                                                                       \
  __device__ __forceinline__ void name##_ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int scale_d) { \
    Q35_WGMMA_CHECK_N(N);                                                                                      \
    detail::Wgmma<N>::template ss_##variant<kTransB>(d, desc_a, desc_b, scale_d);                              \
  }                                                                                                            \
  template <int N, bool kTransB = false>                                                                       \
  __device__ __forceinline__ void name##_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b,        \
                                            int scale_d) {                                                     \
    Q35_WGMMA_CHECK_N(N);                                                                                      \
    detail::Wgmma<N>::template rs_##variant<kTransB>(d, a, desc_b, scale_d);                                   \
  }
#else  // device code for another architecture
__device__ __forceinline__ void wgmma_fence() { sm90a_required(); }
__device__ __forceinline__ void wgmma_commit_group() { sm90a_required(); }
template <int N>
__device__ __forceinline__ void wgmma_wait_group() {
  sm90a_required();
}
#define Q35_WGMMA_ASM(name, variant)                                                                           \
  template <int N, bool kTransB = false>                                                                       \
  __device__ __forceinline__ void name##_ss(float (&)[N / 2], uint64_t, uint64_t, int) {                       \
    Q35_WGMMA_CHECK_N(N);                                                                                      \
    sm90a_required();                                                                                          \
  }                                                                                                            \
  template <int N, bool kTransB = false>                                                                       \
  __device__ __forceinline__ void name##_rs(float (&)[N / 2], const uint32_t (&)[4], uint64_t, int) {          \
    Q35_WGMMA_CHECK_N(N);                                                                                      \
    sm90a_required();                                                                                          \
  }
#endif
Q35_WGMMA_ASM(wgmma_bf16, bf16)
Q35_WGMMA_ASM(wgmma_f16, f16)
#undef Q35_WGMMA_ASM
#endif  // nvcc

#undef Q35_WGMMA_CHECK_N

}  // namespace q35::ptx
