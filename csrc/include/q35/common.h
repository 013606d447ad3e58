// Host+device constants and small helpers shared by kernels and launchers (no CUDA, no torch).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define Q35_HD __host__ __device__
#else
#define Q35_HD  // host code and the SIMT emulator: plain functions
#endif

namespace q35 {

constexpr int kWarpSize = 32;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kVecBytes = 16;                       // one 128-bit load/store per thread
constexpr int kDefaultDynamicSmemBytes = 48 * 1024;  // above this a kernel must opt in

Q35_HD constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
Q35_HD constexpr int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

}  // namespace q35
