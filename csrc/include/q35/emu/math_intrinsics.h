// CUDA math intrinsics for the SIMT emulator. Results are within CUDA's documented error bounds (they come
// from the correctly rounded or < 1 ulp host libm), not bit-equal to the GPU's approximations. glibc declares
// __expf & co. itself, so those names are macros here. NOTE: the host compiler does not contract a*b+c into an
// FMA while nvcc does; use fmaf() where a kernel needs the fused rounding on both targets.
#pragma once
#include <limits>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace q35::simt::math {

inline float fast_exp(float x) { return std::exp(x); }
inline float fast_exp10(float x) { return std::pow(10.0f, x); }
inline float fast_log(float x) { return std::log(x); }
inline float fast_log2(float x) { return std::log2(x); }
inline float fast_log10(float x) { return std::log10(x); }
inline float fast_pow(float x, float y) { return std::pow(x, y); }
inline float fast_sin(float x) { return std::sin(x); }
inline float fast_cos(float x) { return std::cos(x); }
inline float fast_tan(float x) { return std::tan(x); }
inline void fast_sincos(float x, float* s, float* c) {
  *s = std::sin(x);
  *c = std::cos(x);
}

template <typename To, typename From>
inline To bit_cast(From x) {
  static_assert(sizeof(To) == sizeof(From));
  To y;
  std::memcpy(&y, &x, sizeof(To));
  return y;
}

// cvt.rni/rzi/rmi/rpi.s32.f32 and friends: saturate to the integer range, NaN -> 0.
template <typename I>
inline I saturating_int(double r) {
  if (std::isnan(r)) return 0;
  if (r <= static_cast<double>(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
  if (r >= static_cast<double>(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
  return static_cast<I>(r);
}

}  // namespace q35::simt::math

#define __expf(x) ::q35::simt::math::fast_exp(x)
#define __exp10f(x) ::q35::simt::math::fast_exp10(x)
#define __logf(x) ::q35::simt::math::fast_log(x)
#define __log2f(x) ::q35::simt::math::fast_log2(x)
#define __log10f(x) ::q35::simt::math::fast_log10(x)
#define __powf(x, y) ::q35::simt::math::fast_pow(x, y)
#define __sinf(x) ::q35::simt::math::fast_sin(x)
#define __cosf(x) ::q35::simt::math::fast_cos(x)
#define __tanf(x) ::q35::simt::math::fast_tan(x)
#define __sincosf(x, s, c) ::q35::simt::math::fast_sincos(x, s, c)

inline float rsqrtf(float x) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(x))); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __tanhf(float x) { return std::tanh(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __frsqrt_rn(float x) { return rsqrtf(x); }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }  // NaN -> 0

inline int __float2int_rn(float x) { return ::q35::simt::math::saturating_int<int>(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return ::q35::simt::math::saturating_int<int>(std::trunc(x)); }
inline int __float2int_rd(float x) { return ::q35::simt::math::saturating_int<int>(std::floor(x)); }
inline int __float2int_ru(float x) { return ::q35::simt::math::saturating_int<int>(std::ceil(x)); }
inline unsigned __float2uint_rn(float x) { return ::q35::simt::math::saturating_int<unsigned>(std::nearbyint(x)); }
inline unsigned __float2uint_rz(float x) { return ::q35::simt::math::saturating_int<unsigned>(std::trunc(x)); }
inline long long __float2ll_rn(float x) { return ::q35::simt::math::saturating_int<long long>(std::nearbyint(x)); }
inline long long __float2ll_rz(float x) { return ::q35::simt::math::saturating_int<long long>(std::trunc(x)); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned x) { return static_cast<float>(x); }
inline float __ll2float_rn(long long x) { return static_cast<float>(x); }

inline int __float_as_int(float x) { return ::q35::simt::math::bit_cast<int>(x); }
inline unsigned __float_as_uint(float x) { return ::q35::simt::math::bit_cast<unsigned>(x); }
inline float __int_as_float(int x) { return ::q35::simt::math::bit_cast<float>(x); }
inline float __uint_as_float(unsigned x) { return ::q35::simt::math::bit_cast<float>(x); }
inline long long __double_as_longlong(double x) { return ::q35::simt::math::bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return ::q35::simt::math::bit_cast<double>(x); }

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  return __builtin_bswap32(x);
}
// prmt.b32 default mode: byte i of the result is byte s[i] of the 8-byte value {y, x}.
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t v = (static_cast<uint64_t>(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((v >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
  return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) { return static_cast<unsigned>((uint64_t{a} * b) >> 32); }
inline int __mulhi(int a, int b) { return static_cast<int>((int64_t{a} * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
  const uint64_t v = (static_cast<uint64_t>(hi) << 32) | lo;
  return static_cast<unsigned>((v << (shift & 31)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
  const uint64_t v = (static_cast<uint64_t>(hi) << 32) | lo;
  return static_cast<unsigned>(v >> (shift & 31));
}

// CUDA's global min/max overloads (host std::min/max live in std::).
#define Q35_EMU_MINMAX(T)                              \
  inline T min(T a, T b) { return b < a ? b : a; }    \
  inline T max(T a, T b) { return a < b ? b : a; }
Q35_EMU_MINMAX(int)
Q35_EMU_MINMAX(unsigned int)
Q35_EMU_MINMAX(long)
Q35_EMU_MINMAX(unsigned long)
Q35_EMU_MINMAX(long long)
Q35_EMU_MINMAX(unsigned long long)
#undef Q35_EMU_MINMAX
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline unsigned min(int a, unsigned b) { return min(static_cast<unsigned>(a), b); }
inline unsigned min(unsigned a, int b) { return min(a, static_cast<unsigned>(b)); }
inline unsigned max(int a, unsigned b) { return max(static_cast<unsigned>(a), b); }
inline unsigned max(unsigned a, int b) { return max(a, static_cast<unsigned>(b)); }

// Cache-hinted loads and stores are plain accesses.
template <typename T>
inline T __ldg(const T* p) { return *p; }
template <typename T>
inline T __ldca(const T* p) { return *p; }
template <typename T>
inline T __ldcg(const T* p) { return *p; }
template <typename T>
inline T __ldcs(const T* p) { return *p; }
template <typename T>
inline T __ldlu(const T* p) { return *p; }
template <typename T>
inline T __ldcv(const T* p) { return *p; }
template <typename T>
inline void __stcg(T* p, T v) { *p = v; }
template <typename T>
inline void __stcs(T* p, T v) { *p = v; }
template <typename T>
inline void __stwb(T* p, T v) { *p = v; }
template <typename T>
inline void __stwt(T* p, T v) { *p = v; }
