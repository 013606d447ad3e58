// mbarrier (sm_90): a 64-bit barrier object in shared memory with a phase, an arrival count and a transaction
// count (bytes of asynchronous copies, e.g. TMA loads, still to land). A phase completes when all `count`
// arrivals of mbarrier_init have happened and the tx-count is back to zero; the barrier then moves to the next
// phase. Phases alternate parity 0, 1, 0, ... starting at 0.
//   mbarrier_init(bar, count)               one thread; then fence_mbarrier_init() (or fence_proxy_async_shared())
//                                           and a block barrier before anyone (or any TMA) uses it
//   mbarrier_arrive(bar)                    one arrival
//   mbarrier_arrive_expect_tx(bar, bytes)   tx-count += bytes, then one arrival (the producer before its TMA)
//   mbarrier_expect_tx(bar, bytes)          tx-count += bytes, no arrival
//   mbarrier_try_wait_parity(bar, parity)   true once the phase of that parity has completed (a wait for the
//                                           other parity than the current phase's returns true at once)
//   mbarrier_wait_parity(bar, parity)       spins on try_wait
//   mbarrier_inval(bar)                     before reusing the 8 bytes for anything else
// Emulator: the state lives beside shared memory (an ordinary store over a live barrier is an error); try_wait
// blocks the thread (yielding to the others) until the phase completes, after performing the TMA loads in flight
// on the barrier; a wait no thread can satisfy is reported as a deadlock with the barrier's state.
#pragma once
#include "q35/ptx/arch.cuh"
#include "q35/ptx/common.cuh"

namespace q35::ptx {

#if defined(Q35_EMULATE)
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t count Q35_PTX_SITE_PARAMS) {
  ::q35::simt::mbarrier_init(bar, count, Q35_EMU_SITE);
}
__device__ __forceinline__ void mbarrier_inval(uint64_t* bar Q35_PTX_SITE_PARAMS) {
  ::q35::simt::mbarrier_inval(bar, Q35_EMU_SITE);
}
__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar Q35_PTX_SITE_PARAMS) {
  ::q35::simt::mbarrier_arrive(bar, 0, Q35_EMU_SITE);
}
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t tx_bytes Q35_PTX_SITE_PARAMS) {
  ::q35::simt::mbarrier_arrive(bar, tx_bytes, Q35_EMU_SITE);
}
__device__ __forceinline__ void mbarrier_expect_tx(uint64_t* bar, uint32_t tx_bytes Q35_PTX_SITE_PARAMS) {
  ::q35::simt::mbarrier_expect_tx(bar, tx_bytes, Q35_EMU_SITE);
}
__device__ __forceinline__ bool mbarrier_try_wait_parity(uint64_t* bar, uint32_t parity Q35_PTX_SITE_PARAMS) {
  return ::q35::simt::mbarrier_try_wait_parity(bar, parity, Q35_EMU_SITE);
}
#elif Q35_SM90A_ASM
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbarrier_inval(uint64_t* bar) {
  asm volatile("mbarrier.inval.shared::cta.b64 [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(smem_u32(bar))
               : "memory");
}
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t tx_bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(tx_bytes)
               : "memory");
}
__device__ __forceinline__ void mbarrier_expect_tx(uint64_t* bar, uint32_t tx_bytes) {
  asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(tx_bytes)
               : "memory");
}
__device__ __forceinline__ bool mbarrier_try_wait_parity(uint64_t* bar, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(smem_u32(bar)), "r"(parity)
      : "memory");
  return done != 0;
}
#else
__device__ __forceinline__ void mbarrier_init(uint64_t*, uint32_t) { sm90a_required(); }
__device__ __forceinline__ void mbarrier_inval(uint64_t*) { sm90a_required(); }
__device__ __forceinline__ void mbarrier_arrive(uint64_t*) { sm90a_required(); }
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t*, uint32_t) { sm90a_required(); }
__device__ __forceinline__ void mbarrier_expect_tx(uint64_t*, uint32_t) { sm90a_required(); }
__device__ __forceinline__ bool mbarrier_try_wait_parity(uint64_t*, uint32_t) {
  sm90a_required();
  return true;
}
#endif

__device__ __forceinline__ void mbarrier_wait_parity(uint64_t* bar, uint32_t parity Q35_PTX_SITE_PARAMS) {
#if defined(Q35_EMULATE)
  while (!::q35::simt::mbarrier_try_wait_parity(bar, parity, Q35_EMU_SITE)) {
  }
#else
  while (!mbarrier_try_wait_parity(bar, parity)) {
  }
#endif
}

}  // namespace q35::ptx
