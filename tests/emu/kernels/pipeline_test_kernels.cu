// Test kernel for cp.async: a double-buffered pipeline with zero-filled tails. Declarations:
// emu_test_kernels.cuh. Tests: tests/emu/test_cp_async.py.
#include "emu_test_kernels.cuh"
#include "q35/launch.h"
#include "q35/ptx.cuh"

namespace q35::Q35_TARGET::emutest {
namespace {

constexpr int kStages = 2;
constexpr int kElemsPerThread = 4;  // one 16-byte chunk of floats per thread and tile
constexpr int kThreads = 64;
constexpr int kBlocks = 2;

// Issues this thread's copies of tile `tile` into `dst` (kElemsPerThread floats) in copy_bytes pieces; the part
// past n is zero-filled (src-size < cp-size).
__device__ __forceinline__ void issue_tile(const PipelineParams& p, float* dst, int64_t first) {
  const int elems_per_copy = p.copy_bytes / static_cast<int>(sizeof(float));
  for (int c = 0; c < kElemsPerThread; c += elems_per_copy) {
    const int64_t e = first + c;
    const int64_t left = p.n - e;
    const int src_bytes = left <= 0 ? 0 : (left >= elems_per_copy ? p.copy_bytes : static_cast<int>(left * 4));
    const float* src = src_bytes > 0 ? p.x + e : p.x;
    if (p.copy_bytes == 16) {
      ptx::cp_async_16_zfill(dst + c, src, src_bytes);
    } else if (p.copy_bytes == 8) {
      ptx::cp_async_8_zfill(dst + c, src, src_bytes);
    } else {
      ptx::cp_async_4_zfill(dst + c, src, src_bytes);
    }
  }
}

// Computes: y = 2 * x + 1, streaming tiles of kThreads * 4 floats through a two-stage cp.async pipeline; each
//           thread computes the chunk its neighbour copied (so the barrier after the wait matters).
// Grid: kBlocks (tiles round-robin). Block: kThreads. Smem: kStages * kThreads * 4 * 4 bytes.
// Requires: x 16-byte aligned.
__global__ void pipeline_kernel(PipelineParams p) {
  Q35_DYNAMIC_SMEM(float, stages);  // [kStages][kThreads * 4] smem
  const int tile_elems = blockDim.x * kElemsPerThread;
  const int64_t num_tiles = (p.n + tile_elems - 1) / tile_elems;
  const int tid = threadIdx.x;
  int64_t tile = blockIdx.x;
  if (tile < num_tiles) issue_tile(p, stages + tid * kElemsPerThread, tile * tile_elems + tid * kElemsPerThread);
  ptx::cp_async_commit_group();
  for (int stage = 0; tile < num_tiles; tile += gridDim.x, stage ^= 1) {
    // ---- load: prefetch the next tile into the other stage ----
    const int64_t next = tile + gridDim.x;
    if (next < num_tiles) {
      issue_tile(p, stages + (stage ^ 1) * tile_elems + tid * kElemsPerThread, next * tile_elems + tid * kElemsPerThread);
    }
    ptx::cp_async_commit_group();
    if (!p.skip_wait) ptx::cp_async_wait_group<1>();
    __syncthreads();
    // ---- compute ----
    const int src = (tid + 1) % blockDim.x;
#pragma unroll
    for (int q = 0; q < kElemsPerThread; ++q) {
      const int64_t e = tile * tile_elems + src * kElemsPerThread + q;
      if (e < p.n) p.y[e] = 2.0f * stages[stage * tile_elems + src * kElemsPerThread + q] + 1.0f;
    }
    __syncthreads();
  }
  ptx::cp_async_wait_all();
}

}  // namespace

cudaError_t launch_pipeline(const PipelineParams& p, cudaStream_t s) {
  const size_t smem = kStages * kThreads * kElemsPerThread * sizeof(float);
  return launch(pipeline_kernel, dim3(kBlocks), dim3(kThreads), smem, s, p);
}

}  // namespace q35::Q35_TARGET::emutest
