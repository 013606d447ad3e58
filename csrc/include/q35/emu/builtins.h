// threadIdx, blockIdx, blockDim, gridDim, warpSize, the __syncthreads family, fences and a few special
// registers, for kernel code compiled for the SIMT emulator.
#pragma once
#include <atomic>
#include <chrono>

#include "q35/emu/runtime.h"

#define threadIdx (static_cast<const uint3&>(::q35::simt::cur().thread_idx))
#define blockIdx (static_cast<const uint3&>(::q35::simt::cur().block_idx))
#define blockDim (static_cast<const dim3&>(::q35::simt::cur().block_dim))
#define gridDim (static_cast<const dim3&>(::q35::simt::cur().grid_dim))
inline constexpr int warpSize = 32;

// Every thread of the block must reach the same __syncthreads call site; otherwise (or if a thread has exited)
// the emulator reports barrier divergence.
inline void __syncthreads(Q35_EMU_SITE_PARAMS) {
  ::q35::simt::block_barrier(::q35::simt::BarrierKind::kPlain, 1, Q35_EMU_SITE);
}
inline int __syncthreads_count(int predicate, Q35_EMU_SITE_PARAMS) {
  return ::q35::simt::block_barrier(::q35::simt::BarrierKind::kCount, predicate, Q35_EMU_SITE);
}
inline int __syncthreads_and(int predicate, Q35_EMU_SITE_PARAMS) {
  return ::q35::simt::block_barrier(::q35::simt::BarrierKind::kAnd, predicate, Q35_EMU_SITE);
}
inline int __syncthreads_or(int predicate, Q35_EMU_SITE_PARAMS) {
  return ::q35::simt::block_barrier(::q35::simt::BarrierKind::kOr, predicate, Q35_EMU_SITE);
}

// Blocks may run on several OS threads (QWEN35_EMU_THREADS), so fences are real fences.
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_signal_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }

inline long long clock64() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
inline void __nanosleep(unsigned) { ::q35::simt::yield_thread(); }  // lets spin-waiting code make progress

[[noreturn]] inline void __trap(Q35_EMU_SITE_PARAMS) { ::q35::simt::kernel_error("__trap() called", Q35_EMU_SITE); }
[[noreturn]] inline void __brkpt(Q35_EMU_SITE_PARAMS) { ::q35::simt::kernel_error("__brkpt() called", Q35_EMU_SITE); }

// Device-side assert: a kernel error instead of abort() (compiled out under NDEBUG, as on the GPU).
#include <cassert>
#undef assert
#ifdef NDEBUG
#define assert(e) (static_cast<void>(0))
#else
#define assert(e) \
  ((e) ? static_cast<void>(0) : ::q35::simt::kernel_error("assertion failed: " #e, ::q35::simt::Site{__FILE__, __LINE__}))
#endif
