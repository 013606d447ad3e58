// Kernels with bugs the emulator must report (barrier divergence, deadlocks, bad masks, out-of-bounds shared
// memory, invalid addresses, stack overflow), plus a spin-wait that must make progress. They compile for the GPU
// too, where most are undefined behaviour: only the emulator runs them. Tests: tests/emu/test_faults.py.
#include "emu_test_kernels.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET::emutest {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr unsigned kHalfWarp = 16;

#if defined(Q35_EMULATE)
// Stack overflow needs real recursion, which the GPU build would put in local memory (our build gate forbids it).
__device__ int recurse(int depth) {
  volatile char frame[512];
  frame[0] = static_cast<char>(depth);
  return depth <= 0 ? frame[0] : recurse(depth - 1) + frame[0];
}
#endif

// Variants: 0 __syncthreads in divergent code; 1 threads exit before a barrier; 2 two barrier sites;
// 3 lanes exit while others wait in a shuffle; 4 half a warp in a shuffle, half at a barrier (deadlock);
// 5 inconsistent shuffle masks (deadlock); 6 a lane outside its own mask; 7 dynamic smem index p.arg (past the
// launch size); 8 store through p.bad_ptr by thread p.arg; 9 recursion of depth p.arg (emulator only);
// 10 __trap(); 11 integer division by p.arg; 12 thread 0 spin-waits (with __nanosleep) for a flag of thread 32;
// 13 p.arg iterations of __syncthreads() (the emulator's speed test).
// Grid: any. Block: >= 64 threads for variant 12.
__global__ void fault_kernel(FaultParams p) {
  Q35_DYNAMIC_SMEM(int32_t, smem);  // [launch smem / 4] smem
  const int tid = threadIdx.x;
  const unsigned lane = tid % kWarpSize;
  switch (p.variant) {
    case 0:
      if (tid < static_cast<int>(kHalfWarp)) __syncthreads();
      break;
    case 1:
      if (tid >= kWarpSize) return;
      __syncthreads();
      break;
    case 2:
      if (tid % 2) {
        __syncthreads();
      } else {
        __syncthreads();
      }
      break;
    case 3:
      if (lane < kHalfWarp) p.out[tid] = __shfl_sync(kFullMask, tid, 0);
      break;
    case 4:
      if (lane < kHalfWarp) p.out[tid] = __shfl_sync(kFullMask, tid, 0);
      __syncthreads();
      break;
    case 5:
      p.out[tid] = lane < kHalfWarp ? __shfl_sync(kFullMask, tid, 0) : __shfl_sync(kFullMask - 1, tid, 1);
      break;
    case 6:
      p.out[tid] = __shfl_sync(kFullMask - 1, tid, 1);
      break;
    case 7:
      smem[tid] = tid;
      __syncthreads();
      if (tid == 0) p.out[0] = smem[p.arg];
      break;
    case 8:
      if (tid == p.arg) p.bad_ptr[0] = 1;
      break;
    case 9:
#if defined(Q35_EMULATE)
      p.out[tid] = recurse(p.arg);
#endif
      break;
    case 10:
      if (tid == p.arg) __trap();
      break;
    case 11:
      p.out[tid] = 100 / p.arg;
      break;
    case 12:
      if (tid == 0) smem[0] = 0;
      __syncthreads();
      if (tid == 0) {
        while (atomicAdd(&smem[0], 0) == 0) __nanosleep(100);
        p.out[0] = smem[0];
      } else if (tid == kWarpSize) {
        atomicExch(&smem[0], 7);
      }
      break;
    case 13:
      for (int i = 0; i < p.arg; ++i) __syncthreads();
      break;
    default:
      break;
  }
}

}  // namespace

cudaError_t launch_fault(const FaultParams& p, dim3 grid, dim3 block, size_t smem, cudaStream_t s) {
  return launch(fault_kernel, grid, block, smem, s, p);
}

}  // namespace q35::Q35_TARGET::emutest
