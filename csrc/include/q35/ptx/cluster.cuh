// Thread block clusters (sm_90): blocks launched together by q35::launch_cluster, which can wait for each other and
// read, write and signal each other's shared memory.
//   cluster_ctarank(), cluster_nctarank()   this block's rank in its cluster (x fastest) and the cluster's size
//   cluster_arrive(); cluster_wait()        barrier.cluster (release / acquire): every thread of every block of the
//   cluster_sync()                          cluster arrives before any of them passes the wait
//   map_shared_rank(p, rank)                mapa: the generic address of the same shared-memory offset as p in the
//                                           block of that rank (loads and stores through it reach that block)
//   mbarrier_arrive_cluster(bar, rank)      one arrival on the mbarrier at bar's offset in the block of that rank
//   tma_load_2d_multicast(dst, map, c0, c1, bar, cta_mask), ..._3d_...
//       a TMA load whose box lands at dst's offset in every block of cta_mask (bit r: rank r) and completes
//       complete_tx(box bytes) on each one's mbarrier at bar's offset (each block expects its own bytes)
// A block must not be signalled, multicast into or have its shared memory touched before it has initialised and
// fenced what is used (a cluster_sync after the inits), nor after it exited (a cluster_sync before exit).
// Emulator: the blocks of a cluster run together (csrc/emu/cluster.cpp); a peer barrier that is not initialised yet
// is an error, a thread that never reaches the cluster barrier a reported deadlock.
#pragma once
#include "q35/ptx/arch.cuh"
#include "q35/ptx/common.cuh"
#include "q35/sm90_host.h"

namespace q35::ptx {

#if defined(Q35_EMULATE)
__device__ __forceinline__ uint32_t cluster_ctarank() { return ::q35::simt::cur().cluster_rank; }
__device__ __forceinline__ uint32_t cluster_nctarank() {
  const dim3 d = ::q35::simt::cur().cluster_dim;
  return d.x * d.y * d.z;
}
__device__ __forceinline__ void cluster_arrive(Q35_EMU_SITE_PARAMS) { ::q35::simt::cluster_arrive(Q35_EMU_SITE); }
__device__ __forceinline__ void cluster_wait(Q35_EMU_SITE_PARAMS) { ::q35::simt::cluster_wait(Q35_EMU_SITE); }
template <typename T>
__device__ __forceinline__ T* map_shared_rank(T* p, uint32_t rank Q35_PTX_SITE_PARAMS) {
  return static_cast<T*>(::q35::simt::map_shared_rank(p, rank, Q35_EMU_SITE));
}
__device__ __forceinline__ void mbarrier_arrive_cluster(uint64_t* bar, uint32_t rank Q35_PTX_SITE_PARAMS) {
  ::q35::simt::mbarrier_arrive_cluster(bar, rank, Q35_EMU_SITE);
}
__device__ __forceinline__ void tma_load_2d_multicast(void* dst, const TensorMap* map, int32_t c0, int32_t c1,
                                                      uint64_t* bar, uint16_t cta_mask Q35_PTX_SITE_PARAMS) {
  const int32_t c[2] = {c0, c1};
  ::q35::simt::tma_load_multicast(dst, map, c, 2, bar, cta_mask, Q35_EMU_SITE);
}
__device__ __forceinline__ void tma_load_3d_multicast(void* dst, const TensorMap* map, int32_t c0, int32_t c1,
                                                      int32_t c2, uint64_t* bar, uint16_t cta_mask Q35_PTX_SITE_PARAMS) {
  const int32_t c[3] = {c0, c1, c2};
  ::q35::simt::tma_load_multicast(dst, map, c, 3, bar, cta_mask, Q35_EMU_SITE);
}
#elif Q35_SM90A_ASM
__device__ __forceinline__ uint32_t cluster_ctarank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}
__device__ __forceinline__ uint32_t cluster_nctarank() {
  uint32_t n;
  asm volatile("mov.u32 %0, %%cluster_nctarank;\n" : "=r"(n));
  return n;
}
__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive.release;\n" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire;\n" ::: "memory"); }
template <typename T>
__device__ __forceinline__ T* map_shared_rank(T* p, uint32_t rank) {
  uint64_t out;
  asm volatile("mapa.u64 %0, %1, %2;\n" : "=l"(out) : "l"(reinterpret_cast<uint64_t>(p)), "r"(rank));
  return reinterpret_cast<T*>(out);
}
__device__ __forceinline__ void mbarrier_arrive_cluster(uint64_t* bar, uint32_t rank) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(smem_u32(bar)), "r"(rank));
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(remote) : "memory");
}
__device__ __forceinline__ void tma_load_2d_multicast(void* dst, const TensorMap* map, int32_t c0, int32_t c1,
                                                      uint64_t* bar, uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(smem_u32(bar)), "h"(cta_mask)
      : "memory");
}
__device__ __forceinline__ void tma_load_3d_multicast(void* dst, const TensorMap* map, int32_t c0, int32_t c1,
                                                      int32_t c2, uint64_t* bar, uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%2, %3, %4}], [%5], %6;\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_u32(bar)), "h"(cta_mask)
      : "memory");
}
#else
__device__ __forceinline__ uint32_t cluster_ctarank() {
  sm90a_required();
  return 0;
}
__device__ __forceinline__ uint32_t cluster_nctarank() {
  sm90a_required();
  return 1;
}
__device__ __forceinline__ void cluster_arrive() { sm90a_required(); }
__device__ __forceinline__ void cluster_wait() { sm90a_required(); }
template <typename T>
__device__ __forceinline__ T* map_shared_rank(T* p, uint32_t) {
  sm90a_required();
  return p;
}
__device__ __forceinline__ void mbarrier_arrive_cluster(uint64_t*, uint32_t) { sm90a_required(); }
__device__ __forceinline__ void tma_load_2d_multicast(void*, const TensorMap*, int32_t, int32_t, uint64_t*, uint16_t) {
  sm90a_required();
}
__device__ __forceinline__ void tma_load_3d_multicast(void*, const TensorMap*, int32_t, int32_t, int32_t, uint64_t*,
                                                      uint16_t) {
  sm90a_required();
}
#endif

#if defined(Q35_EMULATE)
__device__ __forceinline__ void cluster_sync(Q35_EMU_SITE_PARAMS) {
  ::q35::simt::cluster_arrive(Q35_EMU_SITE);
  ::q35::simt::cluster_wait(Q35_EMU_SITE);
}
#else
__device__ __forceinline__ void cluster_sync() {
  cluster_arrive();
  cluster_wait();
}
#endif

}  // namespace q35::ptx
