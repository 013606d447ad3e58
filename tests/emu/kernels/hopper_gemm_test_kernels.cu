// Test kernel for the sm_90a pieces working together: a warp-specialised GEMM with a 2-stage TMA + mbarrier
// pipeline (one producer warp) feeding wgmma on two consumer warpgroups, epilogue by direct stores or shared memory
// + TMA store. Declarations: hopper_test_kernels.cuh. Tests: tests/emu/test_hopper_gemm.py.
#include "hopper_test_kernels.cuh"
#include "q35/launch.h"
#include "q35/ptx.cuh"

namespace q35::Q35_TARGET::emutest {
namespace {

constexpr int kBM = 128, kBN = 128, kBK = 64;  // block tile; k per stage
constexpr int kStages = 2;
constexpr int kWarpgroupThreads = 128;
constexpr int kConsumers = 2;                   // consumer warpgroups 1 and 2, 64 rows each
constexpr int kThreads = (1 + kConsumers) * kWarpgroupThreads;
constexpr int kWgRows = kBM / kConsumers;
constexpr uint32_t kTileBytes = kBM * kBK * 2;  // one A or B tile of a stage (16-bit elements)
constexpr uint32_t kStageBytes = 2 * kTileBytes;
constexpr uint32_t kCTileBytes = kWgRows * kBN * sizeof(float);  // a consumer's C tile for the TMA store
constexpr uint32_t kBarrierOffset = kStages * kStageBytes + kConsumers * kCTileBytes;
constexpr size_t kSmemBytes = kBarrierOffset + 2 * kStages * sizeof(uint64_t);
static_assert(kBM == kBN, "one KMajorTile shape serves A and B");

struct GemmKernelParams {
  TensorMap a_map, b_map, c_map;
  HopperGemmParams p;
};

#if Q35_SM90A_ENABLED  // (the sm_80 build of the kernel only traps)
constexpr int kMmaK = 16;
constexpr int kAcc = kBN / 2;  // f32 accumulators per consumer thread
constexpr int kProducerRegs = 40, kConsumerRegs = 232;


__device__ __forceinline__ void produce(const GemmKernelParams& kp, uint8_t* smem, uint64_t* full, uint64_t* empty) {
  const ptx::KMajorTile tile{static_cast<ptx::Swizzle>(kp.p.swizzle), kBM};
  const int k_tiles = static_cast<int>(ceil_div(kp.p.k, kBK));
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  for (int kt = 0; kt < k_tiles; ++kt) {
    const int s = kt % kStages;
    const uint32_t round = kt / kStages;
    ptx::mbarrier_wait_parity(&empty[s], (round & 1) ^ 1);  // round 0: the phase before the first, complete
    ptx::mbarrier_arrive_expect_tx(&full[s], kStageBytes);
    uint8_t* a_s = smem + s * kStageBytes;  // [128][64] K-major tile, smem
    uint8_t* b_s = a_s + kTileBytes;        // [128][64] K-major tile, smem
    for (int kb = 0; kb < kBK / static_cast<int>(tile.box_cols()); ++kb) {
      const int col = kt * kBK + kb * static_cast<int>(tile.box_cols());
      ptx::tma_load_2d(a_s + kb * tile.box_bytes(), &kp.a_map, col, m0, &full[s]);
      ptx::tma_load_2d(b_s + kb * tile.box_bytes(), &kp.b_map, col, n0, &full[s]);
    }
  }
}

template <bool kF16>
__device__ __forceinline__ void consume(const GemmKernelParams& kp, uint8_t* smem, uint64_t* full, uint64_t* empty,
                                        int cw, float (&acc)[kAcc]) {
  const HopperGemmParams& p = kp.p;
  const ptx::KMajorTile tile{static_cast<ptx::Swizzle>(p.swizzle), kBM};
  const int k_tiles = static_cast<int>(ceil_div(p.k, kBK));
  const bool leader = threadIdx.x % kWarpgroupThreads == 0;
  for (int kt = 0; kt < k_tiles; ++kt) {
    const int s = kt % kStages;
    const uint32_t round = kt / kStages;
    ptx::mbarrier_wait_parity(&full[s], (round & 1) ^ (p.variant == kGemmWrongParity ? 1 : 0));
    const uint32_t a_base = ptx::smem_u32(smem + s * kStageBytes), b_base = a_base + kTileBytes;
    ptx::wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kBK / kMmaK; ++ks) {
      const uint64_t desc_a = tile.desc(a_base, cw * kWgRows, ks * kMmaK);
      const uint64_t desc_b = tile.desc(b_base, 0, ks * kMmaK);
      const int scale_d = kt > 0 || ks > 0;
      if constexpr (kF16) {
        ptx::wgmma_f16_ss<kBN>(acc, desc_a, desc_b, scale_d);
      } else {
        ptx::wgmma_bf16_ss<kBN>(acc, desc_a, desc_b, scale_d);
      }
    }
    ptx::wgmma_commit_group();
    if (p.variant == kGemmEarlyRelease && leader) ptx::mbarrier_arrive(&empty[s]);
    ptx::wgmma_wait_group<0>();
    ptx::wgmma_fence_operand(acc);
    if (p.variant != kGemmEarlyRelease && leader) ptx::mbarrier_arrive(&empty[s]);  // the stage may be refilled
  }
}

__device__ __forceinline__ void store_c(const GemmKernelParams& kp, uint8_t* smem, int cw, const float (&acc)[kAcc]) {
  const HopperGemmParams& p = kp.p;
  const int t = threadIdx.x % kWarpgroupThreads;
  const int row0 = blockIdx.y * kBM + cw * kWgRows, col0 = blockIdx.x * kBN;
  if (!p.tma_epilogue) {
#pragma unroll
    for (int i = 0; i < kAcc; ++i) {
      const int row = row0 + ptx::wgmma_acc_row(t, i), col = col0 + ptx::wgmma_acc_col(t, i);
      if (row < p.m && col < p.n) p.c[static_cast<int64_t>(row) * p.n + col] = acc[i];
    }
    return;
  }
  float* c_s = reinterpret_cast<float*>(smem + kStages * kStageBytes + cw * kCTileBytes);  // [64][128] smem
#pragma unroll
  for (int i = 0; i < kAcc; ++i) c_s[ptx::wgmma_acc_row(t, i) * kBN + ptx::wgmma_acc_col(t, i)] = acc[i];
  if (p.variant != kGemmNoStoreFence) ptx::fence_proxy_async_shared();
  ptx::named_barrier_sync(1 + cw, kWarpgroupThreads);  // this consumer warpgroup only
  if (t == 0) {
    ptx::tma_store_2d(&kp.c_map, col0, row0, c_s);
    ptx::bulk_commit_group();
    ptx::bulk_wait_group_read<0>();
  }
}
#endif

// Computes: C[m][n] = A[m][k] @ Bt[n][k]^T in fp32 (bf16 or f16 inputs).
// Grid: (ceil(n / 128), ceil(m / 128)). Block: 384 threads: warpgroup 0 produces (one elected thread of warp 0
//       issues the TMA loads of both 2-stage rings), warpgroups 1 and 2 consume rows 0-63 and 64-127 of the tile
//       with wgmma m64n128k16 (4 per stage). Smem: kSmemBytes (2 stages of A and B tiles, 2 C tiles, barriers).
// Requires: k % 8 == 0 (16-byte rows for TMA); tma_epilogue: n % 4 == 0; sm_90a.
template <bool kF16>
__global__ void __launch_bounds__(kThreads, 1) hopper_gemm_kernel(const __grid_constant__ GemmKernelParams kp) {
#if Q35_SM90A_ENABLED
  Q35_DYNAMIC_SMEM_1024(uint8_t, smem);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kBarrierOffset);  // [kStages] smem: TMA landed
  uint64_t* empty = full + kStages;                                       // [kStages] smem: consumers done
  const int warpgroup = threadIdx.x / kWarpgroupThreads;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      ptx::mbarrier_init(&full[s], 1);
      ptx::mbarrier_init(&empty[s], kConsumers);
    }
    if (kp.p.variant != kGemmNoInitFence) ptx::fence_mbarrier_init();
  }
  __syncthreads();
  if (warpgroup == 0) {
    ptx::setmaxnreg_dec<kProducerRegs>();
    if (threadIdx.x < kWarpSize && ptx::elect_one_sync()) produce(kp, smem, full, empty);
    return;
  }
  ptx::setmaxnreg_inc<kConsumerRegs>();
  float acc[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) acc[i] = 0.0f;
  consume<kF16>(kp, smem, full, empty, warpgroup - 1, acc);
  store_c(kp, smem, warpgroup - 1, acc);
#else
  ptx::sm90a_required();
#endif
}

}  // namespace

cudaError_t launch_hopper_gemm(const HopperGemmParams& p, cudaStream_t s) {
  if (!sm90a_available()) return cudaErrorInvalidDeviceFunction;
  if (p.m < 1 || p.n < 1 || p.k < 1 || p.k % 8 != 0 || (p.tma_epilogue && p.n % 4 != 0)) return cudaErrorInvalidValue;
  GemmKernelParams kp{};
  kp.p = p;
  const auto sw = static_cast<ptx::Swizzle>(p.swizzle);
  const uint32_t box_cols = ptx::KMajorTile{sw, kBM}.box_cols();
  const uint32_t elem = 2;
  cudaError_t err = make_tensor_map_2d(&kp.a_map, p.a, elem, p.m, p.k, p.k, kBM, box_cols, sw);
  if (err == cudaSuccess) err = make_tensor_map_2d(&kp.b_map, p.bt, elem, p.n, p.k, p.k, kBN, box_cols, sw);
  if (err == cudaSuccess && p.tma_epilogue)
    err = make_tensor_map_2d(&kp.c_map, p.c, sizeof(float), p.m, p.n, p.n, kWgRows, kBN, ptx::Swizzle::kNone);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(ceil_div(p.n, kBN)), static_cast<unsigned>(ceil_div(p.m, kBM)));
  if (p.f16) return launch(hopper_gemm_kernel<true>, grid, dim3(kThreads), kSmemBytes, s, kp);
  return launch(hopper_gemm_kernel<false>, grid, dim3(kThreads), kSmemBytes, s, kp);
}

}  // namespace q35::Q35_TARGET::emutest
