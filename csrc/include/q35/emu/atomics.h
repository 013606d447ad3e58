// CUDA atomics for the SIMT emulator. They are real atomic operations (blocks may run on several OS threads);
// shared and global memory use the same functions. f32 atomicAdd flushes subnormals to zero, as atom.add.f32 does.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace q35::simt {

constexpr int kRelaxed = __ATOMIC_RELAXED;

inline float flush_subnormal(float x) {
  return (x != 0.0f && std::fabs(x) < 1.17549435e-38f) ? std::copysign(0.0f, x) : x;
}

// Compare-and-swap loop over the bits of a 2/4/8-byte value: p[0] = f(p[0]); returns the old value.
template <typename T, typename Bits, typename F>
inline T atomic_update(T* p, F f) {
  static_assert(sizeof(T) == sizeof(Bits));
  Bits* bp = reinterpret_cast<Bits*>(p);
  Bits old_bits = __atomic_load_n(bp, kRelaxed);
  for (;;) {
    T old_val;
    std::memcpy(&old_val, &old_bits, sizeof(T));
    const T new_val = f(old_val);
    Bits new_bits;
    std::memcpy(&new_bits, &new_val, sizeof(T));
    if (__atomic_compare_exchange_n(bp, &old_bits, new_bits, true, kRelaxed, kRelaxed)) return old_val;
  }
}

}  // namespace q35::simt

#define Q35_EMU_INT_ATOMICS(T)                                                                                  \
  inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }                          \
  inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }                          \
  inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }                        \
  inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }                          \
  inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }                            \
  inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }                          \
  inline T atomicMin(T* p, T v) {                                                                               \
    return ::q35::simt::atomic_update<T, T>(p, [v](T o) { return o < v ? o : v; });                             \
  }                                                                                                             \
  inline T atomicMax(T* p, T v) {                                                                               \
    return ::q35::simt::atomic_update<T, T>(p, [v](T o) { return o > v ? o : v; });                             \
  }                                                                                                             \
  inline T atomicCAS(T* p, T compare, T v) {                                                                    \
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);                     \
    return compare;                                                                                             \
  }
Q35_EMU_INT_ATOMICS(int)
Q35_EMU_INT_ATOMICS(unsigned int)
Q35_EMU_INT_ATOMICS(unsigned long long)
Q35_EMU_INT_ATOMICS(long long)
#undef Q35_EMU_INT_ATOMICS

inline unsigned short atomicCAS(unsigned short* p, unsigned short compare, unsigned short v) {
  __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return compare;
}
// ((old >= limit) ? 0 : old + 1) and (((old == 0) || (old > limit)) ? limit : old - 1), as in CUDA.
inline unsigned atomicInc(unsigned* p, unsigned limit) {
  return ::q35::simt::atomic_update<unsigned, unsigned>(p, [limit](unsigned o) { return o >= limit ? 0u : o + 1; });
}
inline unsigned atomicDec(unsigned* p, unsigned limit) {
  return ::q35::simt::atomic_update<unsigned, unsigned>(
      p, [limit](unsigned o) { return (o == 0 || o > limit) ? limit : o - 1; });
}

inline float atomicAdd(float* p, float v) {
  return ::q35::simt::atomic_update<float, uint32_t>(p, [v](float o) {
    return ::q35::simt::flush_subnormal(::q35::simt::flush_subnormal(o) + ::q35::simt::flush_subnormal(v));
  });
}
inline double atomicAdd(double* p, double v) {
  return ::q35::simt::atomic_update<double, uint64_t>(p, [v](double o) { return o + v; });
}
inline float atomicExch(float* p, float v) {
  return ::q35::simt::atomic_update<float, uint32_t>(p, [v](float) { return v; });
}
inline __half atomicAdd(__half* p, __half v) {
  return ::q35::simt::atomic_update<__half, uint16_t>(p, [v](__half o) { return __hadd(o, v); });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) {
  return ::q35::simt::atomic_update<__nv_bfloat16, uint16_t>(p, [v](__nv_bfloat16 o) { return __hadd(o, v); });
}
inline __half2 atomicAdd(__half2* p, __half2 v) {
  return ::q35::simt::atomic_update<__half2, uint32_t>(p, [v](__half2 o) { return __hadd2(o, v); });
}
inline __nv_bfloat162 atomicAdd(__nv_bfloat162* p, __nv_bfloat162 v) {
  return ::q35::simt::atomic_update<__nv_bfloat162, uint32_t>(p, [v](__nv_bfloat162 o) { return __hadd2(o, v); });
}

// Scope variants: one OS thread runs a block, so block scope and system scope are the same operation here.
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd
#define atomicMax_block atomicMax
#define atomicMin_block atomicMin
#define atomicExch_block atomicExch
#define atomicCAS_block atomicCAS
