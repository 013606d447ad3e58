// The SIMT emulator's interface to kernel code: the per-thread context behind threadIdx & co., block barriers,
// the warp-collective rendezvous every warp-level intrinsic and ptx wrapper is built on, and the launch entry.
// Implemented in csrc/emu/ (libq35_emu.so). Tests: tests/emu/. Design and limits: csrc/emu/README.md.
#pragma once
#include <cstddef>
#include <cstdint>
#include <source_location>

#include <cuda_runtime_api.h>  // cudaError_t, cudaStream_t, dim3, uint3: plain host types

#define Q35_EMU_API __attribute__((visibility("default")))

namespace q35::simt {

// Where an intrinsic was called from (default arguments capture the caller's file and line).
struct Site {
  const char* file;
  int line;
};
#define Q35_EMU_SITE_PARAMS const char *q35_file = __builtin_FILE(), int q35_line = __builtin_LINE()
#define Q35_EMU_SITE (::q35::simt::Site{q35_file, q35_line})

// What kernel code sees of the CUDA thread it runs as (the first member of the runtime's fiber).
struct ThreadCtx {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
  unsigned linear_tid;  // threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)
  unsigned lane;        // linear_tid % 32
  unsigned warp;        // linear_tid / 32
  unsigned char* dyn_smem;
  dim3 cluster_dim;     // the launch's thread block cluster (1, 1, 1 without one)
  uint3 cluster_ctaid;  // this block's position in its cluster (%cluster_ctaid)
  unsigned cluster_rank;  // %cluster_ctarank: x + dim.x * (y + dim.y * z) of cluster_ctaid
};

// The thread that is running on this OS thread (null outside kernels). `const` is sound: a fiber only ever sees
// its own context, so kernel code may cache the pointer.
[[gnu::const]] Q35_EMU_API ThreadCtx* current_thread();
inline ThreadCtx& cur() { return *current_thread(); }

// ---- block barriers (__syncthreads family) ----
enum class BarrierKind : int { kPlain, kCount, kAnd, kOr };
Q35_EMU_API int block_barrier(BarrierKind kind, int predicate, Site site);

// ---- warp collectives ----
// A collective is a rendezvous of the lanes in `mask`: every lane posts a pointer to its operands (on its own
// stack) and waits; the last lane to arrive calls compute() once for all lanes, which reads operands and writes
// results through those pointers. Lanes match on (op, mask), as PTX .sync instructions do.
struct CollectiveOp {
  const char* name;          // the CUDA/PTX name, for messages
  bool exited_lanes_allowed;  // votes: exited lanes in the mask count as absent (PTX); others: an error
  void (*compute)(void* const* lane_args, uint32_t mask, uint32_t arrived);
};
Q35_EMU_API void warp_collective(const CollectiveOp& op, uint32_t mask, void* my_args, Site site);
// __activemask(): the lanes of this warp that reach the same call site before any of them can move on.
Q35_EMU_API uint32_t warp_active_mask(Site site);

// Lets the other threads of the block run (the running thread stays runnable): __nanosleep, spin-wait loops.
Q35_EMU_API void yield_thread();

// Stops the kernel with an error naming the kernel, block and thread (a Python RuntimeError at the op).
[[noreturn]] Q35_EMU_API void kernel_error(const char* what, Site site);

// ---- launch ----
struct LaunchSpec {
  const void* kernel;                                // for its name in messages
  void (*invoke)(const void* kernel, const void* params);  // calls kernel(params...) as one thread
  const void* params;                                // the packed, converted kernel arguments
  dim3 grid;
  dim3 block;
  size_t dynamic_smem_bytes;
  std::source_location launched_from;
  dim3 cluster = dim3(1, 1, 1);  // thread block cluster dimensions (q35::launch_cluster)
};
// Runs the whole grid; throws q35::simt::Error (a std::runtime_error) on any fault.
Q35_EMU_API void run_grid(const LaunchSpec& spec);

// The stream argument of q35::launch under the emulator: captures where the launch was written.
struct StreamArg {
  cudaStream_t stream;
  std::source_location where;
  StreamArg(cudaStream_t s, std::source_location w = std::source_location::current()) : stream(s), where(w) {}
};

}  // namespace q35::simt
