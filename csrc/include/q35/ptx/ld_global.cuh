// Streaming global loads: data read once by the whole grid (weights of a GEMV) that should not evict what the
// block reads many times (the activations) from L1.
//   ld_global_stream_16(ptr) -> uint4   ld.global.nc.L1::no_allocate.v4.u32: 16 bytes through the read-only
//                                       path without allocating in L1; ptr 16-byte aligned, read-only for
//                                       the kernel's lifetime (.nc).
// Emulator: a plain 16-byte read; a misaligned pointer stops the kernel with an error (it faults on a GPU).
#pragma once
#include "q35/ptx/common.cuh"

namespace q35::ptx {

#if defined(Q35_EMULATE)
__device__ __forceinline__ uint4 ld_global_stream_16(const void* ptr Q35_PTX_SITE_PARAMS) {
  if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0)
    ::q35::simt::kernel_error("ld.global.nc.L1::no_allocate.v4: address not 16-byte aligned", Q35_EMU_SITE);
  return *static_cast<const uint4*>(ptr);
}
#else
__device__ __forceinline__ uint4 ld_global_stream_16(const void* ptr) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(ptr));
  return v;
}
#endif

}  // namespace q35::ptx
