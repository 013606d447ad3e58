// Kernels written only for the emulator's test suite (tests/emu). Each is compiled by nvcc (sm_80, sm_90a) and
// for the SIMT emulator; the torch glue (emu_test_ops.cpp) exposes them as torch.ops.q35_emu_tests.* with a CPU
// (emulated) and a CUDA implementation so tests compare the two. Pure CUDA, no torch.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace q35::emutest {

// ---- warp_test_kernels.cu ----
struct ShuffleParams {
  int n;                     // threads (one block)
  const uint64_t* values;    // [n]
  const int32_t* operand;    // [n] srcLane / delta / laneMask of each thread
  uint32_t* out32;           // [n] shuffle of the low 32 bits
  uint64_t* out64;           // [n] 64-bit shuffle
  int mode;                  // 0 idx, 1 up, 2 down, 3 xor
  int width;
  uint32_t mask;             // lanes outside the mask skip the shuffle (and write out = 0)
};
struct VoteParams {
  int n;                     // threads (one block)
  const int32_t* predicate;  // [n]
  int32_t* out;              // [n, kVoteOutputs]
  uint32_t mask;             // lanes outside the mask skip the warp votes
};
constexpr int kVoteOutputs = 10;  // ballot any all activemask count and or match_any reduce_add syncwarp
struct BlockReduceParams {
  int rows, cols;
  const float* x;            // [rows, cols]
  float* sum;                // [rows]
  float* max;                // [rows]
};
struct HistogramParams {
  int n, num_bins;
  const int32_t* keys;       // [n] in [0, num_bins)
  int32_t* bins;             // [num_bins], zero on entry
  int32_t* stats;            // [4]: max key, min key, CAS-loop count, exch witness; initialised by the host
};
struct RacyParams {
  int n;                     // threads (one block)
  const float* x;            // [n]
  float* out;                // [n]
  int variant;               // 0 correct, 1 missing __syncthreads, 2 missing __syncwarp
};

// ---- matrix_test_kernels.cu ----
struct LdmatrixParams {
  const uint16_t* rows;      // [kProbeSlots, 8]: 8x8 matrices stored as scattered 16-byte rows
  const int32_t* slot;       // [32] row slot of the row that lane l addresses
  uint32_t* regs;            // [32, 4] registers of each lane
  int num;                   // 1, 2 or 4
  int trans;
};
constexpr int kProbeSlots = 40;
struct StmatrixParams {
  const uint32_t* regs;      // [32, 4]
  const int32_t* slot;       // [32]
  uint16_t* rows;            // [kProbeSlots, 8]: smem after the store (initialised from rows_init)
  const uint16_t* rows_init; // [kProbeSlots, 8]
  int num;
  int trans;
};
struct MmaProbeParams {
  const uint32_t* a;         // [32, 4] raw A registers per lane
  const uint32_t* b;         // [32, 2]
  const uint32_t* c;         // [32, 4] raw C registers (f32 bits, or f16x2 for f16 accumulators)
  uint32_t* d;               // [32, 4]
  int k;                     // 8 or 16
  int f16;                   // inputs f16 (else bf16)
  int f16_acc;               // f16 accumulators (k = 16, f16 only)
};
struct GemmParams {
  int m, n, k;               // multiples of 64, 64, 16
  const void* a;             // [m, k] bf16/f16 row-major
  const void* b;             // trans_b ? [k, n] : [n, k] (Bt), row-major
  float* c;                  // [m, n]
  int trans_b;
  int f16;
};

// ---- pipeline_test_kernels.cu ----
struct PipelineParams {
  int n;                     // elements of x and y
  const float* x;            // [n]
  float* y;                  // [n]: 2 * x + 1
  int copy_bytes;            // 4, 8 or 16 per cp.async
  int skip_wait;             // 1: read a stage before its cp.async group completed (a bug the emulator shows)
};

// ---- fault_test_kernels.cu (kernels that must fail on the emulator) ----
struct FaultParams {
  int variant;
  int arg;
  int32_t* out;              // [blockDim.x] scratch output
  int32_t* bad_ptr;          // for the invalid-address variant
};

#define Q35_EMUTEST_LAUNCHERS                                                 \
  cudaError_t launch_shuffle(const ShuffleParams& p, cudaStream_t s);         \
  cudaError_t launch_vote(const VoteParams& p, cudaStream_t s);               \
  cudaError_t launch_block_reduce(const BlockReduceParams& p, int threads, cudaStream_t s); \
  cudaError_t launch_histogram(const HistogramParams& p, cudaStream_t s);     \
  cudaError_t launch_racy(const RacyParams& p, cudaStream_t s);               \
  cudaError_t launch_ldmatrix_probe(const LdmatrixParams& p, cudaStream_t s); \
  cudaError_t launch_stmatrix_probe(const StmatrixParams& p, cudaStream_t s); \
  cudaError_t launch_mma_probe(const MmaProbeParams& p, cudaStream_t s);      \
  cudaError_t launch_gemm(const GemmParams& p, cudaStream_t s);               \
  cudaError_t launch_pipeline(const PipelineParams& p, cudaStream_t s);       \
  cudaError_t launch_fault(const FaultParams& p, dim3 grid, dim3 block, size_t smem, cudaStream_t s);

}  // namespace q35::emutest

namespace q35::cuda::emutest {
using namespace q35::emutest;
Q35_EMUTEST_LAUNCHERS
}  // namespace q35::cuda::emutest
namespace q35::emu::emutest {
using namespace q35::emutest;
Q35_EMUTEST_LAUNCHERS
}  // namespace q35::emu::emutest
