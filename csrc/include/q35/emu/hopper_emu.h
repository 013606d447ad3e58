// Emulator side of the sm_90a wrappers (q35/ptx/{mbarrier,fence,tma,wgmma,warpgroup}.cuh, q35/tensor_map.h):
// mbarriers, TMA tile copies, the async-proxy view of shared memory, and warpgroup MMA. Implemented in
// csrc/emu/{mbarrier,tma,wgmma,async_proxy}.cpp; how each misuse is caught: csrc/emu/README.md ("sm_90a").
#pragma once
#include <cstdint>

#include "q35/emu/ptx_emu.h"
#include "q35/emu/runtime.h"

namespace q35::simt {

// ---- shared-state-space addresses ----
// Dynamic shared memory (Q35_DYNAMIC_SMEM) has shared addresses [0, launch smem bytes) under the emulator; the
// async units (TMA, wgmma descriptors) address it through them. Other pointers are an error.
Q35_EMU_API uint32_t shared_address(const void* smem_ptr, Site site);

// ---- mbarrier (64-bit object in shared memory; state kept by the emulator, keyed by address) ----
Q35_EMU_API void mbarrier_init(uint64_t* bar, uint32_t count, Site site);
Q35_EMU_API void mbarrier_inval(uint64_t* bar, Site site);
// expect_tx(tx_bytes) when tx_bytes > 0, then one arrival.
Q35_EMU_API void mbarrier_arrive(uint64_t* bar, uint32_t tx_bytes, Site site);
Q35_EMU_API void mbarrier_expect_tx(uint64_t* bar, uint32_t tx_bytes, Site site);
// Blocks until the phase of parity `parity` has completed (returns true): the emulator's try_wait never times
// out, so a wait that nothing can complete is reported as a deadlock.
Q35_EMU_API bool mbarrier_try_wait_parity(uint64_t* bar, uint32_t parity, Site site);

// ---- fences ----
Q35_EMU_API void fence_proxy_async(Site site);    // publishes generic shared-memory writes to the async proxy
Q35_EMU_API void fence_mbarrier_init(Site site);  // makes this thread's mbarrier.init visible to the async proxy

// ---- TMA (cp.async.bulk.tensor), tile mode ----
// The emulator's CUtensorMap: what cuTensorMapEncodeTiled is given (validated the same way by
// encode_tensor_map), 128 bytes and 64-byte aligned like the real one. Dimension 0 is the contiguous one.
constexpr int kTensorMapMaxRank = 5;
struct alignas(64) TensorMapEmu {
  uint64_t magic;                        // kTensorMapMagic once encoded
  const void* base;
  uint32_t rank;
  uint32_t elem_bytes;
  uint64_t dims[kTensorMapMaxRank];      // elements
  uint64_t strides[kTensorMapMaxRank];   // bytes; strides[0] = elem_bytes
  uint32_t box[kTensorMapMaxRank];       // elements per dimension of one copy
  uint32_t swizzle;                      // 0, 32, 64 or 128 (bytes of a swizzle row)
};
static_assert(sizeof(TensorMapEmu) == 128, "the emulated tensor map has the size of a CUtensorMap");
constexpr uint64_t kTensorMapMagic = 0x51333554'4D415053ull;

// Fills `map` (throws Error naming the violated rule, where the driver returns CUDA_ERROR_INVALID_VALUE).
// strides_bytes: rank - 1 strides of dimensions 1..rank-1.
Q35_EMU_API void encode_tensor_map(TensorMapEmu* map, const void* gmem, uint32_t elem_bytes, uint32_t rank,
                                   const uint64_t* dims, const uint64_t* strides_bytes, const uint32_t* box,
                                   uint32_t swizzle_bytes);
// Global -> shared box at coords[0..rank) (signed: a box may start before the tensor), completing
// complete_tx(box bytes) on `bar`. Out-of-bounds elements are zeros.
Q35_EMU_API void tma_load(void* smem_dst, const TensorMapEmu* map, const int32_t* coords, int rank, uint64_t* bar,
                          Site site);
// Shared -> global box; out-of-bounds elements are not written. Tracked by this thread's bulk async-groups.
Q35_EMU_API void tma_store(const TensorMapEmu* map, const int32_t* coords, int rank, const void* smem_src,
                           Site site);
Q35_EMU_API void bulk_commit_group(Site site);
Q35_EMU_API void bulk_wait_group(int pending, Site site);

// ---- wgmma ----
Q35_EMU_API void wgmma_fence(Site site);
// m64nNk16, f32 accumulators d[n / 2]; A from shared memory (desc_a) or, when a_regs != nullptr, from this
// lane's 4 registers; B from shared memory (desc_b), K-major or, with trans_b (imm-trans-b = 1), MN-major.
// scale_d = 0: D = A * B, otherwise D = A * B + D.
Q35_EMU_API void wgmma_mma_async(int n, MmaInput type, float* d, uint64_t desc_a, const uint32_t* a_regs,
                                 uint64_t desc_b, bool trans_b, int scale_d, Site site);
Q35_EMU_API void wgmma_commit_group(Site site);
Q35_EMU_API void wgmma_wait_group(int pending, Site site);

// ---- thread block clusters (q35/ptx/cluster.cuh; the blocks of a q35::launch_cluster cluster run together) ----
// barrier.cluster.arrive (release) / barrier.cluster.wait (acquire): every thread of every block of the cluster
// arrives before any wait of that phase returns.
Q35_EMU_API void cluster_arrive(Site site);
Q35_EMU_API void cluster_wait(Site site);
// mapa: the address in block `cta_rank`'s dynamic shared memory at the offset smem_ptr has in this block's.
Q35_EMU_API void* map_shared_rank(const void* smem_ptr, uint32_t cta_rank, Site site);
// mbarrier.arrive.release.cluster.shared::cluster: one arrival on block `cta_rank`'s mbarrier at bar's offset.
Q35_EMU_API void mbarrier_arrive_cluster(uint64_t* bar, uint32_t cta_rank, Site site);
// TMA load multicast to the blocks in cta_mask (bit r: cluster rank r): the box lands at smem_dst's offset in each
// of them and completes complete_tx(box bytes) on each one's mbarrier at bar's offset.
Q35_EMU_API void tma_load_multicast(void* smem_dst, const TensorMapEmu* map, const int32_t* coords, int rank,
                                    uint64_t* bar, uint16_t cta_mask, Site site);

// ---- warp-level helpers ----
Q35_EMU_API bool elect_one(uint32_t mask, Site site);  // elect.sync: true in the lowest lane of the mask
// bar.sync / bar.arrive id, num_threads (named barriers 1..15; barrier 0 is __syncthreads).
Q35_EMU_API void named_barrier(uint32_t id, uint32_t num_threads, bool wait, Site site);

}  // namespace q35::simt
