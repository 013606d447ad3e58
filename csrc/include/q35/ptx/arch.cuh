// Which implementation the sm_90a wrappers (mbarrier, fence, tma, wgmma, warpgroup) compile to:
//   Q35_EMULATE                        the SIMT emulator (csrc/emu), on any emulated sm_90 (an error under sm_80)
//   Q35_SM90A_ASM (device code for sm_90a, __CUDA_ARCH_FEAT_SM90_ALL)   inline PTX
//   otherwise (the sm_80 device pass)  sm90a_required(): the kernel traps, so sm_80 builds compile; launchers check
//                                      q35::cuda_device_is_sm90() first and never start such kernels there.
// Q35_SM90A_ENABLED is 1 wherever a kernel body using them is meaningful (emulator, sm_90a, and the host pass):
// kernels that only make sense on sm_90a put `#if Q35_SM90A_ENABLED` around their body (an sm_80 stub traps).
#pragma once

#if !defined(Q35_EMULATE) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define Q35_SM90A_ASM 1
#else
#define Q35_SM90A_ASM 0
#endif

#if defined(Q35_EMULATE) || !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define Q35_SM90A_ENABLED 1
#else
#define Q35_SM90A_ENABLED 0
#endif

namespace q35::ptx {

#if !defined(Q35_EMULATE) && !Q35_SM90A_ASM
// An sm_90a instruction in code compiled for another architecture: stops the kernel.
__device__ __forceinline__ void sm90a_required() { __trap(); }
#endif

}  // namespace q35::ptx
