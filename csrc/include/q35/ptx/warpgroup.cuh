// Warp-specialisation helpers.
//   setmaxnreg_inc<N>() / setmaxnreg_dec<N>()   (sm_90a) raise / lower this warpgroup's register budget to N
//                                               (24..256, step 8); every warp of the warpgroup executes it
//   elect_one_sync()                            (sm_90) true in exactly one lane of the warp (the lowest)
//   named_barrier_sync(id, n) / named_barrier_arrive(id, n)
//       bar.sync / bar.arrive with barrier id 1..15 (0 is __syncthreads) and n threads (a multiple of 32): the
//       barrier completes when n threads have arrived; arrive does not wait (e.g. consumer warpgroups meeting
//       without the producer warp). Every architecture.
// Emulator: setmaxnreg is accepted and does nothing; elect.sync is a warp collective; named barriers block the
// waiting threads (a count never reached is reported as a deadlock, with the barrier's arrivals).
#pragma once
#include "q35/ptx/arch.cuh"
#include "q35/ptx/common.cuh"

namespace q35::ptx {

#define Q35_SETMAXNREG_CHECK(N) static_assert((N) % 8 == 0 && (N) >= 24 && (N) <= 256, "setmaxnreg: 24..256, step 8")

#if defined(Q35_EMULATE)
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
  Q35_SETMAXNREG_CHECK(N);
}
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
  Q35_SETMAXNREG_CHECK(N);
}
__device__ __forceinline__ bool elect_one_sync(Q35_EMU_SITE_PARAMS) {
  return ::q35::simt::elect_one(0xffffffffu, Q35_EMU_SITE);
}
__device__ __forceinline__ void named_barrier_sync(uint32_t id, uint32_t num_threads Q35_PTX_SITE_PARAMS) {
  ::q35::simt::named_barrier(id, num_threads, true, Q35_EMU_SITE);
}
__device__ __forceinline__ void named_barrier_arrive(uint32_t id, uint32_t num_threads Q35_PTX_SITE_PARAMS) {
  ::q35::simt::named_barrier(id, num_threads, false, Q35_EMU_SITE);
}
#else
__device__ __forceinline__ void named_barrier_sync(uint32_t id, uint32_t num_threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(num_threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(uint32_t id, uint32_t num_threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(num_threads) : "memory");
}
#if Q35_SM90A_ASM
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
  Q35_SETMAXNREG_CHECK(N);
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
  Q35_SETMAXNREG_CHECK(N);
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
__device__ __forceinline__ bool elect_one_sync() {
  uint32_t elected = 0;
  asm volatile("{\n.reg .b32 lane;\n.reg .pred p;\nelect.sync lane|p, %1;\n@p mov.u32 %0, 1;\n}\n"
               : "+r"(elected)
               : "r"(0xffffffffu));
  return elected != 0;
}
#else
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
  Q35_SETMAXNREG_CHECK(N);
  sm90a_required();
}
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
  Q35_SETMAXNREG_CHECK(N);
  sm90a_required();
}
__device__ __forceinline__ bool elect_one_sync() {
  sm90a_required();
  return false;
}
#endif
#endif

#undef Q35_SETMAXNREG_CHECK

}  // namespace q35::ptx
