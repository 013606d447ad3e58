// sm_90a misuse the emulator must report (most is undefined behaviour on a GPU: only the emulator runs these),
// plus elect.sync and named barriers used correctly. Declarations: hopper_test_kernels.cuh.
// Tests: tests/emu/test_hopper_faults.py.
#include "hopper_test_kernels.cuh"
#include "q35/launch.h"
#include "q35/ptx.cuh"

namespace q35::Q35_TARGET::emutest {
namespace {

constexpr uint32_t kBarrierOffset = 4096;  // after the A and B tiles

#if Q35_SM90A_ENABLED  // (the sm_80 build of the kernel only traps)
constexpr int kWarpgroupThreads = 128;
constexpr int kTileRows = 64;
constexpr int kN = 8;
constexpr int kMmaK = 16;

// One wgmma m64n8k16 of zeros from the tiles at the start of shared memory (A [64][16], B [8][16], no swizzle).
__device__ __forceinline__ void zero_wgmma(uint8_t* smem, float (&d)[kN / 2], uint64_t desc_b_xor) {
  const uint32_t base = ptx::smem_u32(smem);
  const ptx::KMajorTile ta{ptx::Swizzle::kNone, kTileRows}, tb{ptx::Swizzle::kNone, kN};
  ptx::wgmma_fence();
  ptx::wgmma_bf16_ss<kN>(d, ta.desc(base, 0, 0), tb.desc(base + ta.bytes(kMmaK), 0, 0) ^ desc_b_xor, 0);
  ptx::wgmma_commit_group();
  ptx::wgmma_wait_group<0>();
}
#endif

// Variants: 0 wgmma by warps 1-4 (not a warpgroup); 1 a descriptor that differs between lanes; 2 arrive on a
// never-initialised mbarrier; 3 an ordinary store over a live mbarrier; 4 more arrivals than the count; 5 a wait
// no arrival completes (deadlock); 6 a named barrier that never fills (deadlock); 7 elect.sync (out[t] = elected);
// 8 named barriers between two groups of warps (out[t] = the other group's value); 9 a non-zero base offset in a
// descriptor; 10 a TMA-sized wgmma tile outside dynamic shared memory; 11 one wgmma (for the sm_80 emulation test);
// 12 an MN-major (imm-trans-b) 128B-swizzled B whose start lies 32 bytes into a swizzle row.
// Grid: 1. Block: `threads`. Smem: 4096 + 64.
__global__ void hopper_fault_kernel(HopperFaultParams p) {
#if Q35_SM90A_ENABLED
  Q35_DYNAMIC_SMEM_1024(uint8_t, smem);
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + kBarrierOffset);  // [4] smem
  const int tid = threadIdx.x, warp = tid / kWarpSize;
  for (uint32_t i = tid; i < kBarrierOffset; i += blockDim.x) smem[i] = 0;
  ptx::fence_proxy_async_shared();
  __syncthreads();
  float d[kN / 2] = {0.0f, 0.0f, 0.0f, 0.0f};
  switch (p.variant) {
    case 0:
      if (warp >= 1 && warp <= 4) zero_wgmma(smem, d, 0);
      break;
    case 1:
      if (warp < 4) zero_wgmma(smem, d, tid % kWarpSize == 5 ? 1 : 0);
      break;
    case 2:
      ptx::mbarrier_arrive(&bar[0]);
      break;
    case 3:
      if (tid == 0) {
        ptx::mbarrier_init(&bar[0], 1);
        bar[0] = 0;
        ptx::mbarrier_arrive(&bar[0]);
      }
      break;
    case 4:
      if (tid == 0) {
        ptx::mbarrier_init(&bar[0], 1);
        ptx::mbarrier_expect_tx(&bar[0], kMmaK);  // the phase now also waits for 16 bytes
        ptx::mbarrier_arrive(&bar[0]);
        ptx::mbarrier_arrive(&bar[0]);
      }
      break;
    case 5:
      if (tid == 0) ptx::mbarrier_init(&bar[1], 2);
      __syncthreads();
      if (tid == 0) ptx::mbarrier_arrive(&bar[1]);
      ptx::mbarrier_wait_parity(&bar[1], 0);
      break;
    case 6:
      if (warp == 0) ptx::named_barrier_sync(1, 2 * kWarpSize);
      break;
    case 7:
      p.out[tid] = ptx::elect_one_sync() ? 1.0f : 0.0f;
      break;
    case 8:
      // warps [0, n/2) publish, warps [n/2, n) wait for them (arrive/sync on barrier 2), then read
      if (tid < static_cast<int>(blockDim.x) / 2) {
        smem[tid] = static_cast<uint8_t>(tid + 1);
        ptx::named_barrier_arrive(2, blockDim.x);
      } else {
        ptx::named_barrier_sync(2, blockDim.x);
        p.out[tid] = smem[tid - blockDim.x / 2];
      }
      break;
    case 9:
      if (warp < 4) zero_wgmma(smem, d, uint64_t{1} << 49);
      break;
    case 10:
      if (warp < 4) {
        ptx::wgmma_fence();
        ptx::wgmma_bf16_ss<kN>(d, ptx::make_smem_desc(ptx::smem_u32(smem) + kBarrierOffset, ptx::Swizzle::kNone,
                                                      128, 128 * 16),
                               ptx::make_smem_desc(ptx::smem_u32(smem), ptx::Swizzle::kNone, 128, 128), 0);
        ptx::wgmma_commit_group();
        ptx::wgmma_wait_group<0>();
      }
      break;
    case 11:
      if (warp < 4) zero_wgmma(smem, d, 0);
      break;
    case 12:
      if (warp < 4) {
        const uint32_t base = ptx::smem_u32(smem);
        const ptx::KMajorTile ta{ptx::Swizzle::kNone, kTileRows}, tb{ptx::Swizzle::k128B, kMmaK};
        const uint32_t b_base = base + ta.bytes(kMmaK);  // 2048: on the 1024-byte pattern
        ptx::wgmma_fence();
        ptx::wgmma_bf16_ss<kN, true>(d, ta.desc(base, 0, 0), tb.desc_mn_major(b_base, 0, 0) + 2, 0);  // +32 bytes
        ptx::wgmma_commit_group();
        ptx::wgmma_wait_group<0>();
      }
      break;
    default:
      break;
  }
  if (tid < kWarpgroupThreads && p.variant != 7 && p.variant != 8) p.out[tid] = d[0];
#else
  ptx::sm90a_required();
#endif
}

}  // namespace

cudaError_t launch_hopper_fault(const HopperFaultParams& p, int threads, cudaStream_t s) {
  return launch(hopper_fault_kernel, dim3(1), dim3(threads), kBarrierOffset + 64, s, p);
}

}  // namespace q35::Q35_TARGET::emutest
