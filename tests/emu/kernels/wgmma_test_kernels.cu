// Test kernel for wgmma: D = A * B (+ C) of one warpgroup with raw per-thread accumulators in and out, A from a
// shared K-major tile or from RS registers, B from a shared K-major tile or (b_mn_major) an MN-major one read with
// imm-trans-b, in any swizzle mode; `variant` injects the
// misuses the emulator must catch. Declarations: hopper_test_kernels.cuh. Tests: tests/emu/test_wgmma*.py.
#include "hopper_test_kernels.cuh"
#include "q35/launch.h"
#include "q35/ptx.cuh"

namespace q35::Q35_TARGET::emutest {
namespace {

constexpr int kThreads = 128;  // one warpgroup
constexpr int kM = 64;
constexpr int kMmaK = 16;
constexpr int kMaxK = 64;
constexpr uint32_t kTileAlign = 1024;

__host__ __device__ constexpr uint32_t a_tile_bytes(int k, ptx::Swizzle sw) {
  return static_cast<uint32_t>(round_up(ptx::KMajorTile{sw, kM}.bytes(k), kTileAlign));
}

template <int N, bool kF16, bool kTransB>
__device__ __forceinline__ void issue_b(float (&d)[N / 2], const WgmmaProbeParams& p, uint32_t a_base,
                                        uint64_t desc_b, int ks, int scale_d) {
  const auto sw = static_cast<ptx::Swizzle>(p.swizzle);
  constexpr int kRsRegs = 4;
  if (p.a_regs) {
    uint32_t a[kRsRegs];
#pragma unroll
    for (int i = 0; i < kRsRegs; ++i) a[i] = p.a_frag[(ks * kThreads + threadIdx.x) * kRsRegs + i];
    if constexpr (kF16) {
      ptx::wgmma_f16_rs<N, kTransB>(d, a, desc_b, scale_d);
    } else {
      ptx::wgmma_bf16_rs<N, kTransB>(d, a, desc_b, scale_d);
    }
  } else {
    const uint64_t desc_a = ptx::KMajorTile{sw, kM}.desc(a_base, 0, ks * kMmaK);
    if constexpr (kF16) {
      ptx::wgmma_f16_ss<N, kTransB>(d, desc_a, desc_b, scale_d);
    } else {
      ptx::wgmma_bf16_ss<N, kTransB>(d, desc_a, desc_b, scale_d);
    }
  }
}

// B: K-major [N][k] tile (rows N), or MN-major [k][N] tile (rows k) read through desc_mn_major.
template <int N, bool kF16>
__device__ __forceinline__ void issue(float (&d)[N / 2], const WgmmaProbeParams& p, uint32_t a_base, uint32_t b_base,
                                      int ks, int scale_d) {
  const auto sw = static_cast<ptx::Swizzle>(p.swizzle);
  if (p.b_mn_major) {
    const uint64_t desc_b = ptx::KMajorTile{sw, static_cast<uint32_t>(p.k)}.desc_mn_major(b_base, ks * kMmaK, 0);
    issue_b<N, kF16, true>(d, p, a_base, desc_b, ks, scale_d);
  } else {
    issue_b<N, kF16, false>(d, p, a_base, ptx::KMajorTile{sw, N}.desc(b_base, 0, ks * kMmaK), ks, scale_d);
  }
}

template <int N>
__device__ __forceinline__ void issue_all(float (&d)[N / 2], const WgmmaProbeParams& p, uint32_t a_base,
                                          uint32_t b_base) {
  for (int ks = 0; ks < p.k / kMmaK; ++ks) {
    const int scale_d = ks > 0 ? 1 : p.scale_d;
    if (p.f16) {
      issue<N, true>(d, p, a_base, b_base, ks, scale_d);
    } else {
      issue<N, false>(d, p, a_base, b_base, ks, scale_d);
    }
  }
}

// Computes: d = A[64][k] @ Bt[n][k]^T (+ c) through wgmma m64nNk16, k / 16 instructions in one group; A and Bt are
//           written to K-major shared tiles with KMajorTile::offset (ordinary stores, then fence.proxy.async).
// Grid: 1. Block: one warpgroup. Smem: a_tile_bytes(k) + KMajorTile{swizzle, N}.bytes(k) (b_mn_major:
//       KMajorTile{swizzle, k}.bytes(N)).
// Requires: k % 16 == 0, k <= 64; sm_90a.
template <int N>
__global__ void __launch_bounds__(kThreads) wgmma_probe_kernel(WgmmaProbeParams p) {
#if Q35_SM90A_ENABLED
  Q35_DYNAMIC_SMEM_1024(uint8_t, smem);
  const auto sw = static_cast<ptx::Swizzle>(p.swizzle);
  const ptx::KMajorTile ta{sw, kM}, tb{sw, N}, tb_mn{sw, static_cast<uint32_t>(p.k)};
  uint8_t* a_s = smem;                              // [64][k] K-major tile, smem
  uint8_t* b_s = smem + a_tile_bytes(p.k, sw);      // [N][k] K-major tile, or [k][N] (b_mn_major), smem
  const int tid = threadIdx.x;
  // ---- load ----
  for (int i = tid; i < kM * p.k; i += kThreads)
    *reinterpret_cast<uint16_t*>(a_s + ta.offset(i / p.k, i % p.k)) = p.a[i];
  for (int i = tid; i < N * p.k; i += kThreads) {  // Bt[n][kk]
    const int n = i / p.k, kk = i % p.k;
    *reinterpret_cast<uint16_t*>(b_s + (p.b_mn_major ? tb_mn.offset(kk, n) : tb.offset(n, kk))) = p.bt[i];
  }
  if (p.variant != kWgmmaNoProxyFence) ptx::fence_proxy_async_shared();
  __syncthreads();
  float d[N / 2];
#pragma unroll
  for (int i = 0; i < N / 2; ++i) d[i] = p.c[tid * (N / 2) + i];
  const uint32_t a_base = ptx::smem_u32(a_s), b_base = ptx::smem_u32(b_s);
  // ---- compute ----
  if (p.variant == kWgmmaPipelined) {  // wait_group<1>: a group stays in flight while the next one accumulates
    for (int ks = 0; ks < p.k / kMmaK; ++ks) {
      ptx::wgmma_fence();
      if (p.f16) {
        issue<N, true>(d, p, a_base, b_base, ks, ks > 0 ? 1 : p.scale_d);
      } else {
        issue<N, false>(d, p, a_base, b_base, ks, ks > 0 ? 1 : p.scale_d);
      }
      ptx::wgmma_commit_group();
      ptx::wgmma_wait_group<1>();
    }
  }
  if (p.variant != kWgmmaNoFence) ptx::wgmma_fence();
  if (p.variant != kWgmmaPipelined) issue_all<N>(d, p, a_base, b_base);
  ptx::wgmma_commit_group();
  if (p.variant == kWgmmaNoWait) return;
  if (p.variant == kWgmmaEarlyRead) {
#pragma unroll
    for (int i = 0; i < N / 2; ++i) p.d[tid * (N / 2) + i] = d[i];
  }
  if (p.variant == kWgmmaOverwrite) {
    for (int i = tid; i < N * p.k; i += kThreads) *reinterpret_cast<uint16_t*>(b_s + tb.offset(i / p.k, i % p.k)) = 0;
    ptx::fence_proxy_async_shared();
  }
  ptx::wgmma_wait_group<0>();
  ptx::wgmma_fence_operand(d);
  if (p.variant == kWgmmaSecondBatchNoFence) {
    issue_all<N>(d, p, a_base, b_base);
    ptx::wgmma_commit_group();
    ptx::wgmma_wait_group<0>();
  }
  if (p.variant == kWgmmaEarlyRead) return;
  // ---- store ----
#pragma unroll
  for (int i = 0; i < N / 2; ++i) p.d[tid * (N / 2) + i] = d[i];
#else
  ptx::sm90a_required();
#endif
}

template <int N>
cudaError_t launch_probe_n(const WgmmaProbeParams& p, cudaStream_t s) {
  const auto sw = static_cast<ptx::Swizzle>(p.swizzle);
  const size_t smem = a_tile_bytes(p.k, sw) + (p.b_mn_major ? ptx::KMajorTile{sw, static_cast<uint32_t>(p.k)}.bytes(N)
                                                             : ptx::KMajorTile{sw, N}.bytes(p.k));
  return launch(wgmma_probe_kernel<N>, dim3(1), dim3(kThreads), smem, s, p);
}

}  // namespace

cudaError_t launch_wgmma_probe(const WgmmaProbeParams& p, cudaStream_t s) {
  if (!sm90a_available()) return cudaErrorInvalidDeviceFunction;
  if (p.k % kMmaK != 0 || p.k <= 0 || p.k > kMaxK) return cudaErrorInvalidValue;
  switch (p.n) {
    case 8:
      return launch_probe_n<8>(p, s);
    case 16:
      return launch_probe_n<16>(p, s);
    case 64:
      return launch_probe_n<64>(p, s);
    case 128:
      return launch_probe_n<128>(p, s);
    case 256:
      return launch_probe_n<256>(p, s);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace q35::Q35_TARGET::emutest
