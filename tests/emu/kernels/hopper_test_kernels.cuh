// sm_90a test kernels of the emulator's suite (tests/emu/test_wgmma*.py, test_tma.py, test_mbarrier.py,
// test_hopper_gemm.py, test_hopper_faults.py): compiled by nvcc (their sm_80 build only traps; the launchers return
// cudaErrorInvalidDeviceFunction on devices other than sm_90) and for the emulator. Pure CUDA, no torch.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace q35::emutest {

// ---- wgmma_test_kernels.cu ----
// D = A * B (+ C) on one warpgroup: A [64][k] (shared memory, K-major tile) or per-thread RS registers, B given
// as Bt [n][k] (shared, K-major tile), both tiles written with KMajorTile::offset and the given swizzle; C and D as
// raw per-thread accumulators. `variant` injects a bug (kWgmmaVariant*).
struct WgmmaProbeParams {
  int n, k;                  // n in kWgmmaProbeN; k a multiple of 16, <= 64
  int f16;                   // f16 inputs (else bf16)
  int a_regs;                // A from registers (a_frag), else from shared memory
  int scale_d;               // 0: D = A * B; 1: D = A * B + C
  int swizzle;               // 0, 32, 64 or 128 (bytes)
  int variant;
  const uint16_t* a;         // [64][k] bit patterns
  const uint32_t* a_frag;    // [k / 16][128][4] RS registers
  const uint16_t* bt;        // [n][k]
  const float* c;            // [128][n / 2]
  float* d;                  // [128][n / 2]
  int b_mn_major;            // B stored MN-major ([k][n] tile, imm-trans-b = 1), else K-major ([n][k])
};
enum WgmmaVariant : int {
  kWgmmaOk = 0,
  kWgmmaNoProxyFence = 1,       // ordinary stores of the operands without fence.proxy.async
  kWgmmaNoFence = 2,            // no wgmma.fence before the first wgmma
  kWgmmaEarlyRead = 3,          // d read between the wgmma and its wait_group (written to the output)
  kWgmmaOverwrite = 4,          // B overwritten (and fenced) after the issue, before the wait
  kWgmmaNoWait = 5,             // commit but never wait
  kWgmmaSecondBatchNoFence = 6,  // a second batch after a wait_group without wgmma.fence
  kWgmmaPipelined = 7            // (correct) one group per k16 step, each issued before the previous retired
};
constexpr int kWgmmaProbeN[] = {8, 16, 64, 128, 256};

// ---- tma_test_kernels.cu ----
// TMA load of one box of a 2D/3D tensor into shared memory (its raw bytes out), or TMA store of a shared box
// (raw bytes in) into a tensor. The launcher builds the tensor map (the host side of a TMA kernel).
struct TmaProbeParams {
  void* tensor;              // load: the source; store: the destination
  int elem_bytes;
  int rank;                  // 2 or 3
  uint64_t dims[3];          // elements, dimension 0 contiguous
  uint64_t strides[2];       // bytes, dimensions 1 and 2
  uint32_t box[3];
  int swizzle;               // 0, 32, 64, 128
  int32_t coords[3];
  uint8_t* smem_out;         // load: [box bytes] the shared box as it landed
  const uint8_t* smem_in;    // store: [box bytes] the shared box to store
  int load;                  // 1 load, 0 store
  int variant;               // kTma*
};
enum TmaVariant : int { kTmaOk = 0, kTmaEarlyRead = 1, kTmaNoStoreFence = 2, kTmaNoInitFence = 3 };
// A K-major tile [rows][cols] of 16-bit elements TMA-loaded box by box (KMajorTile), read back element by element
// through KMajorTile::offset: out == x when TMA writes what the layout helper says.
struct TmaTileParams {
  const uint16_t* x;         // [rows][cols]
  uint16_t* out;             // [rows][cols]
  int rows, cols;            // rows % 8 == 0, <= 256; cols a multiple of the box width
  int swizzle;
};
// Phases of an mbarrier: `rounds` rounds of write / arrive / wait(parity) / read the neighbour's value.
struct MbarrierProbeParams {
  int rounds;
  int32_t* out;              // [rounds][blockDim.x]
  int wrong_parity;          // wait on the other parity (returns at once: the neighbour's value is stale)
};

// ---- hopper_gemm_test_kernels.cu ----
// C [m][n] f32 = A [m][k] @ Bt [n][k]^T (bf16 or f16), 128 x 128 tiles, BK 64, a 2-stage TMA + mbarrier pipeline
// with one producer warp and two consumer warpgroups; ragged m, n, k through TMA's zero fill.
struct HopperGemmParams {
  const void* a;             // [m][k]
  const void* bt;            // [n][k]
  float* c;                  // [m][n]
  int m, n, k;               // k a multiple of 8 (16-byte rows for TMA)
  int f16;
  int swizzle;               // of the A and B tiles
  int tma_epilogue;          // C through shared memory + TMA store (else direct stores)
  int variant;               // kGemmVariant*
};
enum GemmVariant : int {
  kGemmOk = 0,
  kGemmEarlyRelease = 1,     // consumers release a stage before their wgmma completed
  kGemmWrongParity = 2,      // consumers wait on the wrong parity of the full barriers
  kGemmNoInitFence = 3,      // no fence after mbarrier.init
  kGemmNoStoreFence = 4      // TMA-store epilogue without fence.proxy.async
};

// ---- hopper_fault_test_kernels.cu (misuse the emulator must report; emulator only) ----
struct HopperFaultParams {
  int variant;
  float* out;                // scratch
};

#define Q35_HOPPER_TEST_LAUNCHERS                                           \
  cudaError_t launch_wgmma_probe(const WgmmaProbeParams& p, cudaStream_t s); \
  cudaError_t launch_tma_probe(const TmaProbeParams& p, cudaStream_t s);     \
  cudaError_t launch_tma_tile_probe(const TmaTileParams& p, cudaStream_t s); \
  cudaError_t launch_mbarrier_probe(const MbarrierProbeParams& p, int threads, cudaStream_t s); \
  cudaError_t launch_hopper_gemm(const HopperGemmParams& p, cudaStream_t s); \
  cudaError_t launch_hopper_fault(const HopperFaultParams& p, int threads, cudaStream_t s);

}  // namespace q35::emutest

namespace q35::cuda::emutest {
using namespace q35::emutest;
Q35_HOPPER_TEST_LAUNCHERS
}  // namespace q35::cuda::emutest
namespace q35::emu::emutest {
using namespace q35::emutest;
Q35_HOPPER_TEST_LAUNCHERS
}  // namespace q35::emu::emutest
