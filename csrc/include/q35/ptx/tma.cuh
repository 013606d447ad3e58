// TMA tile copies (cp.async.bulk.tensor, sm_90), issued by one thread with a tensor map from q35/sm90_host.h
// (`map` points at the kernel's `const __grid_constant__` copy). Coordinates are in elements, innermost first
// (c0 = column of a row-major matrix), signed: boxes may hang over any edge.
//   tma_load_2d(dst, map, c0, c1, bar) / tma_load_3d(dst, map, c0, c1, c2, bar)
//       global box -> shared memory at dst; out-of-bounds elements become zeros; completes complete_tx(box bytes)
//       on the mbarrier `bar` (so the producer does mbarrier_arrive_expect_tx(bar, box bytes) for each load).
//   tma_store_2d(map, c0, c1, src) / tma_store_3d(map, c0, c1, c2, src)
//       shared box at src -> global; out-of-bounds elements are not written. Ordinary stores to src need
//       fence_proxy_async_shared() (every writer) and a barrier before the store.
//   bulk_commit_group(); bulk_wait_group<N>()        this thread's stores in groups; wait until <= N groups pend
//   bulk_wait_group_read<N>()                        ... until their source shared memory may be reused
//   tma_prefetch_map(map)                            prefetch.tensormap (a hint)
// Shared layout of a box [box_rows][box_cols] (2D; 3D boxes stack them): row r at r * box_cols * elem bytes, then
// swizzled: swizzle_address() of q35/ptx/wgmma_layout.h, on the shared address, so dst must be aligned to
// swizzle_repeat_bytes (1024 for 128B; 128 without swizzle). KMajorTile describes tiles made of such boxes.
// Emulator: a load poisons the box (0xFF) at issue and lands when a thread waits on the barrier's phase, so reading
// it early (or waiting on the wrong parity) sees NaNs; a store reads the async-proxy view at its wait.
#pragma once
#include "q35/ptx/arch.cuh"
#include "q35/ptx/common.cuh"
#include "q35/sm90_host.h"

namespace q35::ptx {

#if defined(Q35_EMULATE)
__device__ __forceinline__ void tma_load_2d(void* dst, const TensorMap* map, int32_t c0, int32_t c1,
                                            uint64_t* bar Q35_PTX_SITE_PARAMS) {
  const int32_t c[2] = {c0, c1};
  ::q35::simt::tma_load(dst, map, c, 2, bar, Q35_EMU_SITE);
}
__device__ __forceinline__ void tma_load_3d(void* dst, const TensorMap* map, int32_t c0, int32_t c1, int32_t c2,
                                            uint64_t* bar Q35_PTX_SITE_PARAMS) {
  const int32_t c[3] = {c0, c1, c2};
  ::q35::simt::tma_load(dst, map, c, 3, bar, Q35_EMU_SITE);
}
__device__ __forceinline__ void tma_store_2d(const TensorMap* map, int32_t c0, int32_t c1,
                                             const void* src Q35_PTX_SITE_PARAMS) {
  const int32_t c[2] = {c0, c1};
  ::q35::simt::tma_store(map, c, 2, src, Q35_EMU_SITE);
}
__device__ __forceinline__ void tma_store_3d(const TensorMap* map, int32_t c0, int32_t c1, int32_t c2,
                                             const void* src Q35_PTX_SITE_PARAMS) {
  const int32_t c[3] = {c0, c1, c2};
  ::q35::simt::tma_store(map, c, 3, src, Q35_EMU_SITE);
}
__device__ __forceinline__ void bulk_commit_group(Q35_EMU_SITE_PARAMS) { ::q35::simt::bulk_commit_group(Q35_EMU_SITE); }
template <int N>
__device__ __forceinline__ void bulk_wait_group(Q35_EMU_SITE_PARAMS) {
  static_assert(N >= 0, "cp.async.bulk.wait_group takes a non-negative immediate");
  ::q35::simt::bulk_wait_group(N, Q35_EMU_SITE);
}
template <int N>
__device__ __forceinline__ void bulk_wait_group_read(Q35_EMU_SITE_PARAMS) {
  static_assert(N >= 0, "cp.async.bulk.wait_group.read takes a non-negative immediate");
  ::q35::simt::bulk_wait_group(N, Q35_EMU_SITE);
}
__device__ __forceinline__ void tma_prefetch_map(const TensorMap*) {}
#elif Q35_SM90A_ASM
__device__ __forceinline__ void tma_load_2d(void* dst, const TensorMap* map, int32_t c0, int32_t c1, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
      ::"r"(smem_u32(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(smem_u32(bar))
      : "memory");
}
__device__ __forceinline__ void tma_load_3d(void* dst, const TensorMap* map, int32_t c0, int32_t c1, int32_t c2,
                                            uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
      "[%5];\n" ::"r"(smem_u32(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2),
      "r"(smem_u32(bar))
      : "memory");
}
__device__ __forceinline__ void tma_store_2d(const TensorMap* map, int32_t c0, int32_t c1, const void* src) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.tile.bulk_group [%0, {%1, %2}], [%3];\n" ::"l"(
                   reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(smem_u32(src))
               : "memory");
}
__device__ __forceinline__ void tma_store_3d(const TensorMap* map, int32_t c0, int32_t c1, int32_t c2,
                                             const void* src) {
  asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.tile.bulk_group [%0, {%1, %2, %3}], [%4];\n" ::"l"(
                   reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_u32(src))
               : "memory");
}
__device__ __forceinline__ void bulk_commit_group() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void bulk_wait_group() {
  static_assert(N >= 0, "cp.async.bulk.wait_group takes a non-negative immediate");
  asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
}
template <int N>
__device__ __forceinline__ void bulk_wait_group_read() {
  static_assert(N >= 0, "cp.async.bulk.wait_group.read takes a non-negative immediate");
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void tma_prefetch_map(const TensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}
#else
__device__ __forceinline__ void tma_load_2d(void*, const TensorMap*, int32_t, int32_t, uint64_t*) { sm90a_required(); }
__device__ __forceinline__ void tma_load_3d(void*, const TensorMap*, int32_t, int32_t, int32_t, uint64_t*) {
  sm90a_required();
}
__device__ __forceinline__ void tma_store_2d(const TensorMap*, int32_t, int32_t, const void*) { sm90a_required(); }
__device__ __forceinline__ void tma_store_3d(const TensorMap*, int32_t, int32_t, int32_t, const void*) {
  sm90a_required();
}
__device__ __forceinline__ void bulk_commit_group() { sm90a_required(); }
template <int N>
__device__ __forceinline__ void bulk_wait_group() {
  sm90a_required();
}
template <int N>
__device__ __forceinline__ void bulk_wait_group_read() {
  sm90a_required();
}
__device__ __forceinline__ void tma_prefetch_map(const TensorMap*) { sm90a_required(); }
#endif

}  // namespace q35::ptx
