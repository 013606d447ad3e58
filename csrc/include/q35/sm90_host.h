// Host side of the sm_90a paths, for launchers: the TMA tensor map type and its builder, and whether the device
// runs sm_90a code. Under nvcc a TensorMap is the driver's CUtensorMap, encoded by cuTensorMapEncodeTiled through
// the runtime's driver entry point (no link against libcuda); under the emulator an equivalent struct, checked
// against the same rules (and a failure throws with the rule's name instead of returning an error code).
// Pass it to the kernel by value as a `const __grid_constant__` parameter (or inside such a params struct) and
// give its address to q35::ptx::tma_*. Tests: tests/emu/test_tma.py.
#pragma once
#include <cstdint>

#include "q35/ptx/wgmma_layout.h"

#if defined(Q35_EMULATE)
#include "q35/emu/control.h"
#include "q35/emu/hopper_emu.h"
#else
#include <cuda.h>
#include <cuda_runtime_api.h>
#endif

namespace q35 {

#if defined(Q35_EMULATE)
using TensorMap = simt::TensorMapEmu;
#else
using TensorMap = CUtensorMap;
#endif

// The tensor map of a strided tensor of `rank` dimensions, dimension 0 contiguous: dims[rank] in elements,
// strides_bytes[rank - 1] for dimensions 1..rank-1 (multiples of 16), box[rank] the elements of one copy
// (box[0] * elem_bytes a multiple of 16 and, when swizzled, equal to the swizzle span), out-of-bounds elements
// read as zeros. gmem 16-byte aligned.
inline cudaError_t make_tensor_map(TensorMap* map, const void* gmem, uint32_t elem_bytes, uint32_t rank,
                                   const uint64_t* dims, const uint64_t* strides_bytes, const uint32_t* box,
                                   ptx::Swizzle swizzle) {
#if defined(Q35_EMULATE)
  simt::encode_tensor_map(map, gmem, elem_bytes, rank, dims, strides_bytes, box, static_cast<uint32_t>(swizzle));
  return cudaSuccess;
#else
  using Encode = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                              const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                              CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
  static const Encode encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    const cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                                             &found);
    return err == cudaSuccess && found == cudaDriverEntryPointSuccess ? reinterpret_cast<Encode>(fn) : nullptr;
  }();
  if (!encode) return cudaErrorNotSupported;
  CUtensorMapDataType type;
  switch (elem_bytes) {
    case 1: type = CU_TENSOR_MAP_DATA_TYPE_UINT8; break;
    case 2: type = CU_TENSOR_MAP_DATA_TYPE_UINT16; break;
    case 4: type = CU_TENSOR_MAP_DATA_TYPE_UINT32; break;
    case 8: type = CU_TENSOR_MAP_DATA_TYPE_UINT64; break;
    default: return cudaErrorInvalidValue;
  }
  CUtensorMapSwizzle sw = CU_TENSOR_MAP_SWIZZLE_NONE;
  if (swizzle == ptx::Swizzle::k32B) sw = CU_TENSOR_MAP_SWIZZLE_32B;
  if (swizzle == ptx::Swizzle::k64B) sw = CU_TENSOR_MAP_SWIZZLE_64B;
  if (swizzle == ptx::Swizzle::k128B) sw = CU_TENSOR_MAP_SWIZZLE_128B;
  const cuuint32_t element_strides[5] = {1, 1, 1, 1, 1};
  const CUresult res = encode(map, type, rank, const_cast<void*>(gmem), dims, strides_bytes, box, element_strides,
                              CU_TENSOR_MAP_INTERLEAVE_NONE, sw, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                              CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return res == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
#endif
}

// A row-major matrix [rows][cols] with a row stride of row_stride elements, copied in boxes [box_rows][box_cols].
inline cudaError_t make_tensor_map_2d(TensorMap* map, const void* gmem, uint32_t elem_bytes, uint64_t rows,
                                      uint64_t cols, uint64_t row_stride, uint32_t box_rows, uint32_t box_cols,
                                      ptx::Swizzle swizzle) {
  const uint64_t dims[2] = {cols, rows};
  const uint64_t strides[1] = {row_stride * elem_bytes};
  const uint32_t box[2] = {box_cols, box_rows};
  return make_tensor_map(map, gmem, elem_bytes, 2, dims, strides, box, swizzle);
}

// True when the current device runs the sm_90a kernels (compute capability 9.0); under the emulator, when the
// emulated architecture is sm_90. Launchers of sm_90a-only kernels check it and return
// cudaErrorInvalidDeviceFunction otherwise (their sm_80 build only traps).
inline bool sm90a_available() {
#if defined(Q35_EMULATE)
  return simt::get_arch() == "sm_90";
#else
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) return false;
  return major == 9 && minor == 0;
#endif
}

}  // namespace q35
