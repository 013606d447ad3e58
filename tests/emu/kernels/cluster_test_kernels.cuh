// Thread block cluster test kernels of the emulator's suite (tests/emu/test_cluster.py): cluster ids, distributed
// shared memory, cluster-scope mbarrier arrivals, the cluster barrier, and TMA multicast. Compiled by nvcc (the
// sm_80 build only traps; launchers return cudaErrorInvalidDeviceFunction off sm_90) and for the emulator.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace q35::emutest {

// Blocks in clusters of `cluster` along x, `threads` threads each: every block writes its ids, fills its shared
// array with 1000 * blockIdx.x + tid, reads its right neighbour's (rank + 1) array through map_shared_rank, and
// its thread 0 arrives on every other block's mbarrier, then waits on its own (count: cluster size - 1).
struct ClusterProbeParams {
  int cluster;
  int variant;               // kCluster*
  int32_t* ids;              // [blocks][4]: blockIdx.x, %cluster_ctarank, %cluster_nctarank, rank of the wait's end
  int32_t* peer;             // [blocks][threads]: the right neighbour's shared array as this block read it
};
enum ClusterVariant : int {
  kClusterOk = 0,
  kClusterNoSyncBeforeRead = 1,  // no cluster barrier between the writes and the neighbour's reads
  kClusterNoSyncAfterInit = 2,   // __syncthreads instead of both cluster barriers: a peer may signal an uninitialised
                                 // mbarrier
  kClusterRankOutOfRange = 3,    // map_shared_rank(p, cluster size)
  kClusterSkipArrive = 4,        // rank 0 never reaches the cluster barrier (the others wait for it)
  kClusterExitBeforeRead = 5     // rank 0 exits once the arrays are written, before its neighbour reads it
};

// Clusters of `cluster` blocks; block rank r TMA-loads rows [(c * cluster + r) * rows, ... + rows) of x (cluster
// c) and multicasts them into slot r of every block of its cluster (cta_mask); each block then writes its slots
// out. x [clusters * cluster * rows][cols] 16-bit; out [blocks][cluster * rows][cols].
struct ClusterTmaParams {
  const uint16_t* x;
  uint16_t* out;
  int cluster, clusters;
  int rows, cols;            // a box: rows <= 256, cols * 2 bytes = 128 (one 128B-swizzled row)
  int variant;               // kMulticast*
};
enum MulticastVariant : int {
  kMulticastOk = 0,
  kMulticastSelfOnly = 1,    // cta_mask = this block only: the others never receive the bytes they expect
  kMulticastNoSyncAfterInit = 2  // no cluster barrier between the mbarrier inits and the multicasts
};

#define Q35_CLUSTER_TEST_LAUNCHERS                                                          \
  cudaError_t launch_cluster_probe(const ClusterProbeParams& p, int blocks, int threads, cudaStream_t s); \
  cudaError_t launch_cluster_tma_probe(const ClusterTmaParams& p, cudaStream_t s);

}  // namespace q35::emutest

namespace q35::cuda::emutest {
using namespace q35::emutest;
Q35_CLUSTER_TEST_LAUNCHERS
}  // namespace q35::cuda::emutest
namespace q35::emu::emutest {
using namespace q35::emutest;
Q35_CLUSTER_TEST_LAUNCHERS
}  // namespace q35::emu::emutest
