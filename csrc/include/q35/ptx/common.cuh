// Shared bits of the ptx wrappers: the shared-memory address operand and the call-site parameter the emulator
// uses in its messages (absent under nvcc).
#pragma once
#include <cstdint>

#if defined(Q35_EMULATE)
#include "q35/emu/hopper_emu.h"
#include "q35/emu/ptx_emu.h"
#define Q35_PTX_SITE_PARAMS , Q35_EMU_SITE_PARAMS
#else
#define Q35_PTX_SITE_PARAMS
#endif

namespace q35::ptx {

// 32-bit shared-state-space address of a generic pointer into shared memory (wgmma descriptors, TMA, and
// shared-address alignment: swizzled tiles align their shared address, not the pointer). The emulator gives
// dynamic shared memory the addresses [0, launch smem bytes) and rejects other pointers.
#if !defined(Q35_EMULATE)
__device__ __forceinline__ uint32_t smem_u32(const void* ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}
#else
inline uint32_t smem_u32(const void* ptr, Q35_EMU_SITE_PARAMS) {
  return ::q35::simt::shared_address(ptr, Q35_EMU_SITE);
}
#endif

}  // namespace q35::ptx
