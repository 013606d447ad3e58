// Thread block cluster test kernels (cluster_test_kernels.cuh). Tests: tests/emu/test_cluster.py.
#include "cluster_test_kernels.cuh"
#include "q35/launch.h"
#include "q35/ptx.cuh"

namespace q35::Q35_TARGET::emutest {
namespace {

constexpr uint32_t kBoxAlign = 1024;

// Grid: blocks (clusters of p.cluster along x). Block: `threads`. Smem: threads int32 + an mbarrier.
__global__ void cluster_probe_kernel(ClusterProbeParams p) {
#if Q35_SM90A_ENABLED
  Q35_DYNAMIC_SMEM_1024(int32_t, vals);                                             // [threads] smem
  const int threads = static_cast<int>(blockDim.x), tid = static_cast<int>(threadIdx.x);
  uint64_t* bar = reinterpret_cast<uint64_t*>(vals + round_up(threads, 2));        // [1] smem
  const uint32_t rank = ptx::cluster_ctarank(), n = ptx::cluster_nctarank();
  const int b = static_cast<int>(blockIdx.x);
  if (tid == 0) {
    p.ids[4 * b + 0] = b;
    p.ids[4 * b + 1] = static_cast<int32_t>(rank);
    p.ids[4 * b + 2] = static_cast<int32_t>(n);
    ptx::mbarrier_init(bar, n > 1 ? n - 1 : 1);
    ptx::fence_mbarrier_init();
  }
  if (p.variant == kClusterSkipArrive && rank == 0) return;  // never reaches the cluster barrier
  if (p.variant == kClusterNoSyncAfterInit) {
    __syncthreads();
  } else {
    ptx::cluster_sync();  // every block's mbarrier is initialised
  }
  vals[tid] = 1000 * b + tid;
  if (p.variant == kClusterNoSyncAfterInit) {
    __syncthreads();
  } else if (p.variant != kClusterNoSyncBeforeRead) {
    ptx::cluster_sync();  // every block's array is written
  }
  if (p.variant == kClusterExitBeforeRead && rank == 0) return;  // (no cluster barrier after the peers' reads)
  const uint32_t right = p.variant == kClusterRankOutOfRange ? n : (rank + 1) % n;
  p.peer[b * threads + tid] = *ptx::map_shared_rank(&vals[tid], right);
  if (tid == 0) {
    if (n == 1) ptx::mbarrier_arrive(bar);
    for (uint32_t q = 0; q < n; ++q)
      if (q != rank) ptx::mbarrier_arrive_cluster(bar, q);
    ptx::mbarrier_wait_parity(bar, 0);
    p.ids[4 * b + 3] = static_cast<int32_t>(rank);
  }
  ptx::cluster_sync();  // no block leaves while others read its array
#else
  ptx::sm90a_required();
#endif
}

struct ClusterTmaKernelParams {
  TensorMap map;
  ClusterTmaParams p;
};

// Grid: clusters * cluster blocks. Block: 128. Smem: cluster boxes (1024-aligned each) + an mbarrier.
__global__ void __launch_bounds__(128) cluster_tma_kernel(const __grid_constant__ ClusterTmaKernelParams kp) {
#if Q35_SM90A_ENABLED
  Q35_DYNAMIC_SMEM_1024(uint8_t, smem);
  const ClusterTmaParams& p = kp.p;
  const uint32_t rank = ptx::cluster_ctarank(), n = ptx::cluster_nctarank();
  const uint32_t box = static_cast<uint32_t>(p.rows * p.cols) * 2;
  const uint32_t slot = static_cast<uint32_t>(round_up(box, kBoxAlign));
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + n * slot);
  const int b = static_cast<int>(blockIdx.x), tid = static_cast<int>(threadIdx.x);
  if (tid == 0) {
    ptx::mbarrier_init(bar, 1);
    ptx::fence_mbarrier_init();
  }
  if (p.variant == kMulticastNoSyncAfterInit) {
    __syncthreads();
  } else {
    ptx::cluster_sync();
  }
  if (tid == 0) {
    const uint16_t all = static_cast<uint16_t>((1u << n) - 1u);
    const uint16_t mask = p.variant == kMulticastSelfOnly ? static_cast<uint16_t>(1u << rank) : all;
    ptx::mbarrier_arrive_expect_tx(bar, n * box);  // every block's box lands here
    ptx::tma_load_2d_multicast(smem + rank * slot, &kp.map, 0, b * p.rows, bar, mask);
  }
  ptx::mbarrier_wait_parity(bar, 0);
  // slots in the 128B-swizzled layout: row r's 16-byte chunk c sits at chunk c ^ (r % 8) (PTX_FACTS §6)
  const int chunks = p.cols / 8;
  for (int i = tid; i < static_cast<int>(n) * p.rows * chunks; i += static_cast<int>(blockDim.x)) {
    const int q = i / (p.rows * chunks), r = (i / chunks) % p.rows, c = i % chunks;
    const uint4* src = reinterpret_cast<const uint4*>(smem + q * slot + r * 128 + ((c ^ (r % 8)) * 16));
    reinterpret_cast<uint4*>(p.out)[(static_cast<int64_t>(b) * n * p.rows + q * p.rows + r) * chunks + c] = *src;
  }
  ptx::cluster_sync();  // no block leaves while a multicast into another is outstanding
#else
  ptx::sm90a_required();
#endif
}

}  // namespace

cudaError_t launch_cluster_probe(const ClusterProbeParams& p, int blocks, int threads, cudaStream_t s) {
  if (!sm90a_available()) return cudaErrorInvalidDeviceFunction;
  const size_t smem = round_up(threads, 2) * sizeof(int32_t) + sizeof(uint64_t);
  return launch_cluster(cluster_probe_kernel, dim3(blocks), dim3(threads), dim3(p.cluster), smem, s, p);
}

cudaError_t launch_cluster_tma_probe(const ClusterTmaParams& p, cudaStream_t s) {
  if (!sm90a_available()) return cudaErrorInvalidDeviceFunction;
  if (p.cols * 2 != 128 || p.rows < 1 || p.rows > 256) return cudaErrorInvalidValue;
  ClusterTmaKernelParams kp{};
  kp.p = p;
  const uint64_t dims[2] = {static_cast<uint64_t>(p.cols), static_cast<uint64_t>(p.clusters * p.cluster * p.rows)};
  const uint64_t strides[1] = {static_cast<uint64_t>(p.cols) * 2};
  const uint32_t box[2] = {static_cast<uint32_t>(p.cols), static_cast<uint32_t>(p.rows)};
  const cudaError_t err = make_tensor_map(&kp.map, p.x, 2, 2, dims, strides, box, ptx::Swizzle::k128B);
  if (err != cudaSuccess) return err;
  const size_t smem = p.cluster * round_up(p.rows * p.cols * 2, kBoxAlign) + sizeof(uint64_t);
  return launch_cluster(cluster_tma_kernel, dim3(p.clusters * p.cluster), dim3(128), dim3(p.cluster), smem, s, kp);
}

}  // namespace q35::Q35_TARGET::emutest
