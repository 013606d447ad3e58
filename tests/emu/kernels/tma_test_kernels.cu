// Test kernels for TMA and mbarrier: one TMA box loaded into shared memory (raw bytes out) or stored from it (raw
// bytes in), and the phases of an mbarrier. Declarations: hopper_test_kernels.cuh. Tests: tests/emu/test_tma.py,
// tests/emu/test_mbarrier.py.
#include "hopper_test_kernels.cuh"
#include "q35/launch.h"
#include "q35/ptx.cuh"

namespace q35::Q35_TARGET::emutest {
namespace {

constexpr int kThreads = 128;
constexpr uint32_t kBoxAlign = 1024;

struct TmaKernelParams {
  TensorMap map;
  TmaProbeParams p;
};
struct TmaTileKernelParams {
  TensorMap map;
  TmaTileParams p;
};

__host__ __device__ inline uint32_t box_bytes(const TmaProbeParams& p) {
  uint32_t n = static_cast<uint32_t>(p.elem_bytes);
  for (int d = 0; d < p.rank; ++d) n *= p.box[d];
  return n;
}

#if Q35_SM90A_ENABLED  // (the sm_80 build of the kernels only traps)
__device__ __forceinline__ void issue_load(const TmaKernelParams& kp, uint8_t* box, uint64_t* bar) {
  const TmaProbeParams& p = kp.p;
  ptx::mbarrier_arrive_expect_tx(bar, box_bytes(p));
  if (p.rank == 2) {
    ptx::tma_load_2d(box, &kp.map, p.coords[0], p.coords[1], bar);
  } else {
    ptx::tma_load_3d(box, &kp.map, p.coords[0], p.coords[1], p.coords[2], bar);
  }
}
#endif

// Computes: load: smem_out = the shared box of `tensor` at `coords` as TMA writes it (swizzled, zero-filled);
//           store: the box smem_in stored at `coords` (out-of-bounds elements unwritten).
// Grid: 1. Block: 128 threads (thread 0 issues). Smem: box bytes (1024-aligned) + 8 (the mbarrier).
__global__ void __launch_bounds__(kThreads) tma_probe_kernel(const __grid_constant__ TmaKernelParams kp) {
#if Q35_SM90A_ENABLED
  Q35_DYNAMIC_SMEM_1024(uint8_t, smem);
  const TmaProbeParams& p = kp.p;
  const uint32_t bytes = box_bytes(p);
  uint8_t* box = smem;                                                       // [box bytes] smem
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + round_up(bytes, kBoxAlign));  // [1] smem
  const int tid = threadIdx.x;
  if (tid == 0) {
    ptx::mbarrier_init(bar, 1);
    if (p.variant != kTmaNoInitFence) ptx::fence_mbarrier_init();
  }
  __syncthreads();
  if (p.load) {
    // ---- load ----
    if (tid == 0) issue_load(kp, box, bar);
    if (p.variant != kTmaEarlyRead) ptx::mbarrier_wait_parity(bar, 0);
    for (uint32_t i = tid; i < bytes; i += kThreads) p.smem_out[i] = box[i];
    if (p.variant == kTmaEarlyRead) {  // every thread has read the box before anyone waits
      __syncthreads();
      ptx::mbarrier_wait_parity(bar, 0);
    }
  } else {
    // ---- store ----
    for (uint32_t i = tid; i < bytes; i += kThreads) box[i] = p.smem_in[i];
    if (p.variant != kTmaNoStoreFence) ptx::fence_proxy_async_shared();
    __syncthreads();
    if (tid == 0) {
      if (p.rank == 2) {
        ptx::tma_store_2d(&kp.map, p.coords[0], p.coords[1], box);
      } else {
        ptx::tma_store_3d(&kp.map, p.coords[0], p.coords[1], p.coords[2], box);
      }
      ptx::bulk_commit_group();
      ptx::bulk_wait_group<0>();
    }
  }
#else
  ptx::sm90a_required();
#endif
}

// Computes: out[r][k] = the element at KMajorTile{swizzle, rows}.offset(r, k) of the tile after TMA loads its
//           column blocks (boxes {box_cols, rows}) one after another.
// Grid: 1. Block: 128 threads (thread 0 issues). Smem: the tile + 8 (the mbarrier).
__global__ void __launch_bounds__(kThreads) tma_tile_probe_kernel(const __grid_constant__ TmaTileKernelParams kp) {
#if Q35_SM90A_ENABLED
  Q35_DYNAMIC_SMEM_1024(uint8_t, smem);
  const TmaTileParams& p = kp.p;
  const ptx::KMajorTile tile{static_cast<ptx::Swizzle>(p.swizzle), static_cast<uint32_t>(p.rows)};
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + tile.bytes(p.cols));  // [1] smem, after the tile
  const int tid = threadIdx.x;
  if (tid == 0) {
    ptx::mbarrier_init(bar, 1);
    ptx::fence_mbarrier_init();
  }
  __syncthreads();
  // ---- load ----
  if (tid == 0) {
    ptx::mbarrier_arrive_expect_tx(bar, tile.bytes(p.cols));
    for (uint32_t kb = 0; kb < p.cols / tile.box_cols(); ++kb)
      ptx::tma_load_2d(smem + kb * tile.box_bytes(), &kp.map, kb * tile.box_cols(), 0, bar);
  }
  ptx::mbarrier_wait_parity(bar, 0);
  // ---- store ----
  for (int i = tid; i < p.rows * p.cols; i += kThreads)
    p.out[i] = *reinterpret_cast<const uint16_t*>(smem + tile.offset(i / p.cols, i % p.cols));
#else
  ptx::sm90a_required();
#endif
}

// Computes: out[0][t] = try_wait(parity 1) on a fresh barrier (the phase before the first counts as complete);
//           then per round r: buf[r % 2][t] = 1000 r + t; arrive; wait(parity r % 2); out[r + 1][t] =
//           buf[r % 2][(t + 1) % n] (the neighbour's value of this round: the phase orders it).
// Grid: 1. Block: n threads (the barrier's count). Smem: 2 n int32 + 8.
__global__ void mbarrier_probe_kernel(MbarrierProbeParams p) {
#if Q35_SM90A_ENABLED
  Q35_DYNAMIC_SMEM(int32_t, buf);                                     // [2][n] smem
  const int n = blockDim.x, tid = threadIdx.x;
  uint64_t* bar = reinterpret_cast<uint64_t*>(buf + 2 * n);          // [1] smem
  if (tid == 0) {
    ptx::mbarrier_init(bar, n);
    ptx::fence_mbarrier_init();
  }
  __syncthreads();
  p.out[tid] = ptx::mbarrier_try_wait_parity(bar, 1) ? 1 : 0;
  for (int r = 0; r < p.rounds; ++r) {
    const int half = r % 2;
    buf[half * n + tid] = 1000 * r + tid;
    ptx::mbarrier_arrive(bar);
    ptx::mbarrier_wait_parity(bar, static_cast<uint32_t>(half ^ p.wrong_parity));
    p.out[(r + 1) * n + tid] = buf[half * n + (tid + 1) % n];
  }
#else
  ptx::sm90a_required();
#endif
}

}  // namespace

cudaError_t launch_tma_probe(const TmaProbeParams& p, cudaStream_t s) {
  if (!sm90a_available()) return cudaErrorInvalidDeviceFunction;
  if (p.rank != 2 && p.rank != 3) return cudaErrorInvalidValue;
  TmaKernelParams kp{};
  kp.p = p;
  const cudaError_t err = make_tensor_map(&kp.map, p.tensor, static_cast<uint32_t>(p.elem_bytes),
                                          static_cast<uint32_t>(p.rank), p.dims, p.strides, p.box,
                                          static_cast<ptx::Swizzle>(p.swizzle));
  if (err != cudaSuccess) return err;
  const size_t smem = round_up(box_bytes(p), kBoxAlign) + sizeof(uint64_t);
  return launch(tma_probe_kernel, dim3(1), dim3(kThreads), smem, s, kp);
}

cudaError_t launch_tma_tile_probe(const TmaTileParams& p, cudaStream_t s) {
  if (!sm90a_available()) return cudaErrorInvalidDeviceFunction;
  const auto sw = static_cast<ptx::Swizzle>(p.swizzle);
  const ptx::KMajorTile tile{sw, static_cast<uint32_t>(p.rows)};
  if (p.rows % 8 != 0 || p.cols % tile.box_cols() != 0) return cudaErrorInvalidValue;
  TmaTileKernelParams kp{};
  kp.p = p;
  const cudaError_t err = make_tensor_map_2d(&kp.map, p.x, sizeof(uint16_t), p.rows, p.cols, p.cols, p.rows,
                                             tile.box_cols(), sw);
  if (err != cudaSuccess) return err;
  return launch(tma_tile_probe_kernel, dim3(1), dim3(kThreads), tile.bytes(p.cols) + sizeof(uint64_t), s, kp);
}

cudaError_t launch_mbarrier_probe(const MbarrierProbeParams& p, int threads, cudaStream_t s) {
  if (!sm90a_available()) return cudaErrorInvalidDeviceFunction;
  const size_t smem = 2 * static_cast<size_t>(threads) * sizeof(int32_t) + sizeof(uint64_t);
  return launch(mbarrier_probe_kernel, dim3(1), dim3(threads), smem, s, p);
}

}  // namespace q35::Q35_TARGET::emutest
