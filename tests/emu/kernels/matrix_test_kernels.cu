// Test kernels for the ptx wrappers: per-lane probes of ldmatrix / stmatrix / mma fragments, and a 64x64 tile
// GEMM built from cp.async + ldmatrix + mma.sync. Declarations: emu_test_kernels.cuh. Tests: tests/emu/test_ptx_*.py.
#include <type_traits>

#include "emu_test_kernels.cuh"
#include "q35/launch.h"
#include "q35/ptx.cuh"

namespace q35::Q35_TARGET::emutest {
namespace {

constexpr int kProbeWords = 4;  // registers per lane in the probe buffers

// Computes: regs[l] = the registers lane l receives from ldmatrix.x{num}{.trans} when lane l addresses row slot
//           slot[l] of `rows` (copied to smem first).
// Grid: 1. Block: one warp.
__global__ void ldmatrix_probe_kernel(LdmatrixParams p) {
  __shared__ __align__(16) uint16_t rows[kProbeSlots * 8];  // [slots, 8] smem
  const int lane = threadIdx.x;
  for (int i = lane; i < kProbeSlots * 8; i += kWarpSize) rows[i] = p.rows[i];
  __syncthreads();
  const void* row = &rows[p.slot[lane] * 8];
  uint32_t r[kProbeWords] = {0, 0, 0, 0};
  if (p.num == 1) {
    uint32_t x[1];
    if (p.trans) {
      ptx::ldmatrix_x1_trans(x, row);
    } else {
      ptx::ldmatrix_x1(x, row);
    }
    r[0] = x[0];
  } else if (p.num == 2) {
    uint32_t x[2];
    if (p.trans) {
      ptx::ldmatrix_x2_trans(x, row);
    } else {
      ptx::ldmatrix_x2(x, row);
    }
    r[0] = x[0];
    r[1] = x[1];
  } else {
    if (p.trans) {
      ptx::ldmatrix_x4_trans(r, row);
    } else {
      ptx::ldmatrix_x4(r, row);
    }
  }
#pragma unroll
  for (int j = 0; j < kProbeWords; ++j) p.regs[lane * kProbeWords + j] = r[j];
}

// Computes: rows = rows_init, then stmatrix.x{num}{.trans} of regs[l] with lane l addressing row slot slot[l].
// Grid: 1. Block: one warp.
__global__ void stmatrix_probe_kernel(StmatrixParams p) {
  __shared__ __align__(16) uint16_t rows[kProbeSlots * 8];  // [slots, 8] smem
  const int lane = threadIdx.x;
  for (int i = lane; i < kProbeSlots * 8; i += kWarpSize) rows[i] = p.rows_init[i];
  __syncthreads();
  void* row = &rows[p.slot[lane] * 8];
  uint32_t r[kProbeWords];
#pragma unroll
  for (int j = 0; j < kProbeWords; ++j) r[j] = p.regs[lane * kProbeWords + j];
  if (p.num == 1) {
    const uint32_t x[1] = {r[0]};
    if (p.trans) {
      ptx::stmatrix_x1_trans(row, x);
    } else {
      ptx::stmatrix_x1(row, x);
    }
  } else if (p.num == 2) {
    const uint32_t x[2] = {r[0], r[1]};
    if (p.trans) {
      ptx::stmatrix_x2_trans(row, x);
    } else {
      ptx::stmatrix_x2(row, x);
    }
  } else if (p.trans) {
    ptx::stmatrix_x4_trans(row, r);
  } else {
    ptx::stmatrix_x4(row, r);
  }
  __syncthreads();
  for (int i = lane; i < kProbeSlots * 8; i += kWarpSize) p.rows[i] = rows[i];
}

// Computes: d = mma(a, b, c) on raw per-lane registers (the test packs and unpacks them by PTX_FACTS.md).
// Grid: 1. Block: one warp.
__global__ void mma_probe_kernel(MmaProbeParams p) {
  const int lane = threadIdx.x;
  uint32_t a[4], b[2], c[4], d[4] = {0, 0, 0, 0};
#pragma unroll
  for (int i = 0; i < 4; ++i) a[i] = p.a[lane * 4 + i];
#pragma unroll
  for (int i = 0; i < 2; ++i) b[i] = p.b[lane * 2 + i];
#pragma unroll
  for (int i = 0; i < 4; ++i) c[i] = p.c[lane * 4 + i];
  if (p.f16_acc) {
    const uint32_t c16[2] = {c[0], c[1]};
    uint32_t d16[2];
    ptx::mma_m16n8k16_f16_f16acc(d16, a, b, c16);
    d[0] = d16[0];
    d[1] = d16[1];
  } else {
    const float cf[4] = {__uint_as_float(c[0]), __uint_as_float(c[1]), __uint_as_float(c[2]), __uint_as_float(c[3])};
    float df[4];
    if (p.k == 16) {
      if (p.f16) {
        ptx::mma_m16n8k16_f16(df, a, b, cf);
      } else {
        ptx::mma_m16n8k16_bf16(df, a, b, cf);
      }
    } else {
      const uint32_t a8[2] = {a[0], a[1]};
      if (p.f16) {
        ptx::mma_m16n8k8_f16(df, a8, b[0], cf);
      } else {
        ptx::mma_m16n8k8_bf16(df, a8, b[0], cf);
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) d[i] = __float_as_uint(df[i]);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) p.d[lane * 4 + i] = d[i];
}

constexpr int kGemmTile = 64;                   // block tile of C: 64 x 64
constexpr int kGemmK = 64;                      // k per smem stage
constexpr int kSmemStride = kGemmTile + 8;      // padded row: 144 bytes, keeps 16-byte row alignment
constexpr int kGemmThreads = 128;               // 4 warps, warp w owns rows 16w..16w+15 of the tile
constexpr int kMmaK = 16;
constexpr int kMmaN = 8;
constexpr int kNTiles = kGemmTile / kMmaN;      // 8 n-tiles of 8 columns per warp
constexpr int kChunkElems = 8;                  // one 16-byte cp.async of 16-bit elements

template <typename T>
__device__ __forceinline__ void load_tile(T* dst, const T* src, int64_t src_stride) {
  for (int c = threadIdx.x; c < kGemmTile * kGemmK / kChunkElems; c += kGemmThreads) {
    const int r = c / (kGemmK / kChunkElems);
    const int col = (c % (kGemmK / kChunkElems)) * kChunkElems;
    ptx::cp_async_16(&dst[r * kSmemStride + col], &src[r * src_stride + col]);
  }
}

template <bool kF16>
__device__ __forceinline__ void mma16816(float (&acc)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const uint32_t b[2] = {b0, b1};
  if constexpr (kF16) {
    ptx::mma_m16n8k16_f16(acc, a, b, acc);
  } else {
    ptx::mma_m16n8k16_bf16(acc, a, b, acc);
  }
}

// Computes: C = A @ B in fp32 (A [m, k], B [k, n] given as B or as Bt [n, k]; bf16 or f16).
// Grid: (n / 64, m / 64). Block: 128 threads; warp w computes rows 16w..16w+15 of the 64 x 64 tile.
// Smem: 2 * 64 * 72 * 2 bytes (A and B stages, rows padded to 72 elements).
// Requires: m, n multiples of 64; k a multiple of 64; 16-byte aligned rows.
template <typename T, bool kTransB>
__global__ void __launch_bounds__(kGemmThreads) gemm_kernel(GemmParams p) {
  Q35_DYNAMIC_SMEM(T, smem);
  T* a_s = smem;                                 // [64 m][72] smem
  T* b_s = smem + kGemmTile * kSmemStride;       // kTransB ? [64 k][72] : [64 n][72] smem
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  const int tile_m = blockIdx.y * kGemmTile;
  const int tile_n = blockIdx.x * kGemmTile;
  const int lane = threadIdx.x % kWarpSize;
  const int warp_id = threadIdx.x / kWarpSize;
  float acc[kNTiles][4] = {};
  for (int k0 = 0; k0 < p.k; k0 += kGemmK) {
    // ---- load ----
    load_tile(a_s, a + static_cast<int64_t>(tile_m) * p.k + k0, p.k);
    if (kTransB) {
      load_tile(b_s, b + static_cast<int64_t>(k0) * p.n + tile_n, p.n);
    } else {
      load_tile(b_s, b + static_cast<int64_t>(tile_n) * p.k + k0, p.k);
    }
    ptx::cp_async_commit_group();
    ptx::cp_async_wait_group<0>();
    __syncthreads();
    // ---- compute ----
#pragma unroll
    for (int kk = 0; kk < kGemmK; kk += kMmaK) {
      uint32_t af[4];
      ptx::ldmatrix_x4(af, &a_s[(warp_id * 16 + lane % 16) * kSmemStride + kk + 8 * (lane / 16)]);
#pragma unroll
      for (int nt = 0; nt < kNTiles; nt += 2) {
        uint32_t bf[4];  // b fragments of n-tiles nt (bf[0..1]) and nt + 1 (bf[2..3])
        if (kTransB) {
          ptx::ldmatrix_x4_trans(bf, &b_s[(kk + lane % 8 + 8 * ((lane / 8) % 2)) * kSmemStride + nt * kMmaN +
                                          8 * (lane / 16)]);
        } else {
          ptx::ldmatrix_x4(bf, &b_s[(nt * kMmaN + lane % 8 + 8 * (lane / 16)) * kSmemStride + kk +
                                    8 * ((lane / 8) % 2)]);
        }
        mma16816<std::is_same_v<T, __half>>(acc[nt], af, bf[0], bf[1]);
        mma16816<std::is_same_v<T, __half>>(acc[nt + 1], af, bf[2], bf[3]);
      }
    }
    __syncthreads();
  }
  // ---- store ----
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int row = tile_m + warp_id * 16 + g + 8 * (i / 2);
      const int col = tile_n + nt * kMmaN + 2 * t + i % 2;
      p.c[static_cast<int64_t>(row) * p.n + col] = acc[nt][i];
    }
  }
}

template <typename T>
cudaError_t launch_gemm_typed(const GemmParams& p, cudaStream_t s) {
  const dim3 grid(p.n / kGemmTile, p.m / kGemmTile);
  const size_t smem = 2 * kGemmTile * kSmemStride * sizeof(T);
  if (p.trans_b) return launch(gemm_kernel<T, true>, grid, dim3(kGemmThreads), smem, s, p);
  return launch(gemm_kernel<T, false>, grid, dim3(kGemmThreads), smem, s, p);
}

}  // namespace

cudaError_t launch_ldmatrix_probe(const LdmatrixParams& p, cudaStream_t s) {
  return launch(ldmatrix_probe_kernel, dim3(1), dim3(kWarpSize), 0, s, p);
}
cudaError_t launch_stmatrix_probe(const StmatrixParams& p, cudaStream_t s) {
  return launch(stmatrix_probe_kernel, dim3(1), dim3(kWarpSize), 0, s, p);
}
cudaError_t launch_mma_probe(const MmaProbeParams& p, cudaStream_t s) {
  return launch(mma_probe_kernel, dim3(1), dim3(kWarpSize), 0, s, p);
}
cudaError_t launch_gemm(const GemmParams& p, cudaStream_t s) {
  return p.f16 ? launch_gemm_typed<__half>(p, s) : launch_gemm_typed<__nv_bfloat16>(p, s);
}

}  // namespace q35::Q35_TARGET::emutest
