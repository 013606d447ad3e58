// Proxy fences (sm_90). Shared memory written by ordinary stores (the generic proxy: st.shared, stmatrix,
// cp.async) and then read by the async proxy (wgmma operands, TMA stores) needs, in every writing thread,
//   fence_proxy_async_shared();   // fence.proxy.async.shared::cta
// after its writes and before the barrier that orders them with the wgmma / TMA store. mbarrier.init must be
// followed by fence_mbarrier_init() (fence.mbarrier_init.release.cluster) or fence_proxy_async_shared() in the
// initialising thread before a TMA completes on the barrier.
// Emulator: TMA writes shared memory and its async-proxy copy alike; fence_proxy_async_shared() copies the
// generic view into the async view; a wgmma or TMA store that reads bytes where the two views differ (written
// and not fenced, or overwritten before the wgmma / store completed) stops the kernel with an error.
#pragma once
#include "q35/ptx/arch.cuh"
#include "q35/ptx/common.cuh"

namespace q35::ptx {

#if defined(Q35_EMULATE)
__device__ __forceinline__ void fence_proxy_async_shared(Q35_EMU_SITE_PARAMS) {
  ::q35::simt::fence_proxy_async(Q35_EMU_SITE);
}
__device__ __forceinline__ void fence_mbarrier_init(Q35_EMU_SITE_PARAMS) {
  ::q35::simt::fence_mbarrier_init(Q35_EMU_SITE);
}
#elif Q35_SM90A_ASM
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
#else
__device__ __forceinline__ void fence_proxy_async_shared() { sm90a_required(); }
__device__ __forceinline__ void fence_mbarrier_init() { sm90a_required(); }
#endif

}  // namespace q35::ptx
