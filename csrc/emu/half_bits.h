// Exact conversions of 16-bit floating-point bit patterns (bf16, f16) to float, for the emulated tensor-core
// instructions (mma.sync in matrix_ops.cpp, wgmma in wgmma.cpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "q35/emu/ptx_emu.h"

namespace q35::simt {

inline float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(mant), -24);  // zero or subnormal, exact
    return sign ? -v : v;
  }
  const uint32_t bits =
      exp == 0x1f ? (sign | 0x7f800000u | (mant << 13)) : (sign | ((exp + 112u) << 23) | (mant << 13));
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float bf16_bits_to_float(uint16_t bits) {
  const uint32_t b = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

inline float input_bits_to_float(MmaInput type, uint16_t bits) {
  return type == MmaInput::kBf16 ? bf16_bits_to_float(bits) : f16_bits_to_float(bits);
}

}  // namespace q35::simt
