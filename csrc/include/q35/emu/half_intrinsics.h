// The device-only functions of cuda_fp16.h / cuda_bf16.h (CUDA 13) for the SIMT emulator. The conversions,
// arithmetic and comparisons of __half / __nv_bfloat16 (and their 2-vectors) are host-callable in the CUDA
// headers and used as they are; fused multiply-adds here round once, exactly, and the math functions compute in
// fp32 and round once (within the GPU's documented bounds).
#pragma once
#include <cmath>
#include <cstdint>

namespace q35::simt::half {

// Rounds the exact value s + e (s a double, |e| <= ulp(s)/2 the rest) to a binary format with `digits`
// significand bits and minimum normal exponent `emin`, to nearest even. Returns the rounded value as a double.
inline double round_to_format(double s, double e, int digits, int emin, double max_finite) {
  if (!std::isfinite(s) || s == 0.0) return s;
  const double a = std::fabs(s);
  const double ea = s > 0 ? e : -e;  // the rest, signed relative to |s|
  int exp2 = 0;
  std::frexp(a, &exp2);  // a = m * 2^exp2, m in [0.5, 1)
  const int quantum_exp = (exp2 - 1 < emin ? emin : exp2 - 1) - (digits - 1);
  const double n = std::ldexp(a, -quantum_exp);
  double r = std::floor(n);
  const double frac = n - r;
  if (frac > 0.5 || (frac == 0.5 && (ea > 0 || (ea == 0 && std::fmod(r, 2.0) != 0.0)))) r += 1.0;
  const double out = std::ldexp(r, quantum_exp);
  if (out > max_finite) return std::copysign(INFINITY, s);
  return std::copysign(out, s);
}

// a * b + c with one rounding: a * b is exact in double for 16-bit inputs; TwoSum keeps the rest of the add.
inline double exact_fma_parts(float a, float b, float c, double* rest) {
  const double p = static_cast<double>(a) * static_cast<double>(b);
  const double s = p + static_cast<double>(c);
  const double bb = s - p;
  *rest = (p - (s - bb)) + (static_cast<double>(c) - bb);
  return s;
}

inline __half fma_half(__half a, __half b, __half c) {
  double rest = 0.0;
  const double s = exact_fma_parts(__half2float(a), __half2float(b), __half2float(c), &rest);
  if (std::isnan(s)) return __float2half(NAN);
  return __double2half(round_to_format(s, rest, 11, -14, 65504.0));
}
inline __nv_bfloat16 fma_bf16(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  double rest = 0.0;
  const double s = exact_fma_parts(__bfloat162float(a), __bfloat162float(b), __bfloat162float(c), &rest);
  if (std::isnan(s)) return __float2bfloat16(NAN);
  return __float2bfloat16(static_cast<float>(round_to_format(s, rest, 8, -126, 3.3895313892515355e38)));
}

}  // namespace q35::simt::half

inline __half __hfma(__half a, __half b, __half c) { return ::q35::simt::half::fma_half(a, b, c); }
inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  return ::q35::simt::half::fma_bf16(a, b, c);
}
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
  return __halves2half2(__hfma(__low2half(a), __low2half(b), __low2half(c)),
                        __hfma(__high2half(a), __high2half(b), __high2half(c)));
}
inline __nv_bfloat162 __hfma2(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
  return __halves2bfloat162(__hfma(__low2bfloat16(a), __low2bfloat16(b), __low2bfloat16(c)),
                            __hfma(__high2bfloat16(a), __high2bfloat16(b), __high2bfloat16(c)));
}
template <typename T>
inline T __hfma_relu(T a, T b, T c) {
  const T r = __hfma(a, b, c);
  return __hisnan(r) ? r : (__hlt(r, T(0.0f)) ? T(0.0f) : r);
}

// One-argument math on 16-bit types: fp32 math, one rounding.
#define Q35_EMU_HALF_MATH(hname, h2name, expr)                                                 \
  inline __half hname(__half x) {                                                              \
    const float v = __half2float(x);                                                           \
    return __float2half_rn(expr);                                                              \
  }                                                                                            \
  inline __nv_bfloat16 hname(__nv_bfloat16 x) {                                                \
    const float v = __bfloat162float(x);                                                       \
    return __float2bfloat16_rn(expr);                                                          \
  }                                                                                            \
  inline __half2 h2name(__half2 x) { return __halves2half2(hname(__low2half(x)), hname(__high2half(x))); } \
  inline __nv_bfloat162 h2name(__nv_bfloat162 x) {                                             \
    return __halves2bfloat162(hname(__low2bfloat16(x)), hname(__high2bfloat16(x)));            \
  }
Q35_EMU_HALF_MATH(hexp, h2exp, std::exp(v))
Q35_EMU_HALF_MATH(hexp2, h2exp2, std::exp2(v))
Q35_EMU_HALF_MATH(hexp10, h2exp10, std::pow(10.0f, v))
Q35_EMU_HALF_MATH(hlog, h2log, std::log(v))
Q35_EMU_HALF_MATH(hlog2, h2log2, std::log2(v))
Q35_EMU_HALF_MATH(hlog10, h2log10, std::log10(v))
Q35_EMU_HALF_MATH(hsqrt, h2sqrt, std::sqrt(v))
Q35_EMU_HALF_MATH(hrsqrt, h2rsqrt, static_cast<float>(1.0 / std::sqrt(static_cast<double>(v))))
Q35_EMU_HALF_MATH(hrcp, h2rcp, 1.0f / v)
Q35_EMU_HALF_MATH(htanh, h2tanh, std::tanh(v))
Q35_EMU_HALF_MATH(hsin, h2sin, std::sin(v))
Q35_EMU_HALF_MATH(hcos, h2cos, std::cos(v))
Q35_EMU_HALF_MATH(hfloor, h2floor, std::floor(v))
Q35_EMU_HALF_MATH(hceil, h2ceil, std::ceil(v))
Q35_EMU_HALF_MATH(htrunc, h2trunc, std::trunc(v))
Q35_EMU_HALF_MATH(hrint, h2rint, std::nearbyint(v))
#undef Q35_EMU_HALF_MATH
