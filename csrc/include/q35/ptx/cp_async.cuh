// cp.async (sm_80+): asynchronous 4/8/16-byte copies from global to shared memory, tracked per thread in groups.
//   cp_async_{4,8,16}(dst, src)               copy cp-size bytes (16: .cg, L2 only; 4/8: .ca)
//   cp_async_{4,8,16}_zfill(dst, src, n)      copy n bytes (0 <= n <= cp-size), zero-fill the rest of dst
//   cp_async_commit_group()                   close this thread's issued copies into a group
//   cp_async_wait_group<N>()                  wait until at most the N most recent groups are pending
//   cp_async_wait_all()                       commit, then wait for everything
// Addresses are naturally aligned to cp-size. The data are visible to the issuing thread after the covering
// wait; other threads need a __syncthreads() after it (PTX_FACTS.md §4). The emulator copies when a wait
// retires the group, so reading dst before the wait sees the old (poisoned) bytes.
#pragma once
#include "q35/ptx/common.cuh"

namespace q35::ptx {

#if defined(Q35_EMULATE)
#define Q35_CP_ASYNC(bytes)                                                                                      \
  __device__ __forceinline__ void cp_async_##bytes(void* smem_dst, const void* gmem_src Q35_PTX_SITE_PARAMS) {   \
    ::q35::simt::cp_async(smem_dst, gmem_src, bytes, bytes, Q35_EMU_SITE);                                       \
  }                                                                                                              \
  __device__ __forceinline__ void cp_async_##bytes##_zfill(void* smem_dst, const void* gmem_src,                 \
                                                          int src_bytes Q35_PTX_SITE_PARAMS) {                  \
    ::q35::simt::cp_async(smem_dst, gmem_src, bytes, src_bytes, Q35_EMU_SITE);                                   \
  }
Q35_CP_ASYNC(4)
Q35_CP_ASYNC(8)
Q35_CP_ASYNC(16)
#undef Q35_CP_ASYNC
__device__ __forceinline__ void cp_async_commit_group() { ::q35::simt::cp_async_commit_group(); }
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
  static_assert(N >= 0, "cp.async.wait_group takes a non-negative immediate");
  ::q35::simt::cp_async_wait_group(N);
}
__device__ __forceinline__ void cp_async_wait_all() {
  ::q35::simt::cp_async_commit_group();
  ::q35::simt::cp_async_wait_group(0);
}
#else
#define Q35_CP_ASYNC(bytes, cache)                                                                              \
  __device__ __forceinline__ void cp_async_##bytes(void* smem_dst, const void* gmem_src) {                      \
    asm volatile("cp.async." cache ".shared.global [%0], [%1], " #bytes ";\n" ::"r"(smem_u32(smem_dst)),        \
                 "l"(gmem_src)                                                                                  \
                 : "memory");                                                                                   \
  }                                                                                                             \
  __device__ __forceinline__ void cp_async_##bytes##_zfill(void* smem_dst, const void* gmem_src, int src_bytes) { \
    asm volatile("cp.async." cache ".shared.global [%0], [%1], " #bytes ", %2;\n" ::"r"(smem_u32(smem_dst)),    \
                 "l"(gmem_src), "r"(src_bytes)                                                                  \
                 : "memory");                                                                                   \
  }
Q35_CP_ASYNC(4, "ca")
Q35_CP_ASYNC(8, "ca")
Q35_CP_ASYNC(16, "cg")
#undef Q35_CP_ASYNC
__device__ __forceinline__ void cp_async_commit_group() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
  static_assert(N >= 0, "cp.async.wait_group takes a non-negative immediate");
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
#endif

}  // namespace q35::ptx
