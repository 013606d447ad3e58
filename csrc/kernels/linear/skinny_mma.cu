// Skinny linear on tensor cores: 9 to 64 rows (a decode step of 9-64 tokens, or the verification of drafts). See
// skinny_linear.cuh for the op; skinny_linear.cu takes up to 8 rows and calls this launcher above.
//
// Still a weight stream (64 FLOPs per weight element at most), but 9-64 rows of fp32 FMAs would cost more issue
// slots than the stream leaves: the weight is the mma's A operand (16 rows), the tokens its B (8 per n-tile), i.e.
// y^T = w x^T. Lane (g, t) loads 16 bytes of weight rows g and g + 8 and of token rows 8 j + g at element 8 t of a
// 32-element step; permuting k inside the step identically for both operands (a dot product does not depend on the
// order of its terms) makes those 16 bytes exactly the lane's A and B fragments of two m16n8k16 steps: logical k
// {2t, 2t + 1} of step h is element 8t + 4h + {0, 1}, logical {2t + 8, 2t + 9} is 8t + 4h + {2, 3}. No shared
// memory staging, no ldmatrix.
#include "kernels/linear/skinny_epilogue.cuh"
#include "kernels/linear/skinny_linear.cuh"
#include "q35/launch.h"
#include "q35/ptx.cuh"

namespace q35::Q35_TARGET {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kStepK = 32;    // elements of K per step: 4 lanes x 8
constexpr int kInFlight = 8;  // steps per pass and warp: 16 weight loads of 16 bytes in flight per lane

template <typename T>
__device__ __forceinline__ void mma_16816(float (&acc)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __half>)
    ptx::mma_m16n8k16_f16(acc, a, b, acc);
  else
    ptx::mma_m16n8k16_bf16(acc, a, b, acc);
}

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// Computes: y[m, n] = sum_k x[m, k] w[n, k] for 8 < M <= 8 kNT rows, on mma.m16n8k16 (fp32 accumulation, one
//           rounding to T). kSwiglu: the block's A rows are 8 gate rows and their 8 up rows, and y[m, j] = silu(g) *
//           u rounded like the unfused ops.
// Args:     SkinnyLinearParams: x [M, K] (rows x_row_stride apart), w [N or 2N, K], y [M, N]; K % 8 == 0, x rows
//           and w 16-byte aligned.
// Grid:     ceil(N / 16) blocks (swiglu: ceil(N / 8)): one 16-row A tile each.
// Block:    4 warps splitting K: warp w takes steps w, w + 4, ... (kInFlight of them per pass); each warp holds the
//           tile's 16 x 8 kNT accumulators; their sums meet in shared memory in warp order (schedule-independent).
// Smem:     4 x kNT x 4 x 32 floats (16 KB at kNT = 8), static.
template <typename T, int kNT, bool kSwiglu>
__global__ void __launch_bounds__(kThreads, 1) skinny_mma_kernel(SkinnyLinearParams p) {
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize, g = lane / 4, t = lane % 4;
  const int64_t N = p.out_features, K = p.in_features, steps = ceil_div(K, kStepK);
  constexpr int kOutPerBlock = kSwiglu ? 8 : 16;
  const int64_t n0 = int64_t{blockIdx.x} * kOutPerBlock;
  // A rows g and g + 8: outputs n0 + g and n0 + 8 + g, or gate and up row of output n0 + g
  const int64_t out_lo = n0 + g, out_hi = kSwiglu ? n0 + g : n0 + 8 + g;
  const bool ok_lo = out_lo < N, ok_hi = out_hi < N;
  const T* __restrict__ w = static_cast<const T*>(p.w_ptr);
  const T* w_lo = w + (ok_lo ? out_lo : 0) * K;
  const T* w_hi = w + (ok_hi ? (kSwiglu ? N + out_hi : out_hi) : 0) * K;
  const T* __restrict__ x = static_cast<const T*>(p.x_ptr);

  float acc[kNT][4] = {};
  for (int64_t s0 = warp; s0 < steps; s0 += int64_t{kWarps} * kInFlight) {
    uint4 lo[kInFlight], hi[kInFlight];  // issued together
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t k = (s0 + u * kWarps) * kStepK + 8 * t;
      const bool in = k < K;  // K % 8 == 0: a chunk is whole or absent (also past the last step)
      lo[u] = in && ok_lo ? ptx::ld_global_stream_16(w_lo + k) : make_uint4(0, 0, 0, 0);
      hi[u] = in && ok_hi ? ptx::ld_global_stream_16(w_hi + k) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t k = (s0 + u * kWarps) * kStepK + 8 * t;
      if (s0 + u * kWarps >= steps) break;  // warp-uniform: the mma needs every lane
#pragma unroll
      for (int j = 0; j < kNT; ++j) {
        const int64_t token = 8 * j + g;
        const uint4 xv = token < p.rows && k < K
                             ? __ldg(reinterpret_cast<const uint4*>(x + token * p.x_row_stride + k))
                             : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const uint32_t a[4] = {word(lo[u], 2 * h), word(hi[u], 2 * h), word(lo[u], 2 * h + 1),
                                 word(hi[u], 2 * h + 1)};
          const uint32_t b[2] = {word(xv, 2 * h), word(xv, 2 * h + 1)};
          mma_16816<T>(acc[j], a, b);
        }
      }
    }
  }

  // ---- the warps' partial tiles, summed in warp order by warp 0 ----
  __shared__ float partial[kWarps][kNT][4][kWarpSize];  // [warp][n-tile][fragment element][lane] smem
#pragma unroll
  for (int j = 0; j < kNT; ++j)
#pragma unroll
    for (int c = 0; c < 4; ++c) partial[warp][j][c][lane] = acc[j][c];
  __syncthreads();
  if (warp != 0) return;
  T* __restrict__ y = static_cast<T*>(p.y_ptr);
#pragma unroll
  for (int j = 0; j < kNT; ++j) {
    float sum[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      sum[c] = partial[0][j][c][lane];
#pragma unroll
      for (int v = 1; v < kWarps; ++v) sum[c] += partial[v][j][c][lane];
    }
#pragma unroll
    for (int c = 0; c < 2; ++c) {  // fragment: c, c + 2 = rows g, g + 8 of token column 8 j + 2 t + c
      const int64_t token = 8 * j + 2 * t + c;
      if (token >= p.rows) continue;
      T* row = y + token * N;
      if constexpr (kSwiglu) {
        if (ok_lo) row[out_lo] = skinny::swiglu_rounded<T>(sum[c], sum[c + 2]);
      } else {
        if (ok_lo) row[out_lo] = from_float<T>(sum[c]);
        if (ok_hi) row[out_hi] = from_float<T>(sum[c + 2]);
      }
    }
  }
}

template <typename T, int kNT>
cudaError_t launch_tier(const SkinnyLinearParams& p, cudaStream_t stream) {
  const int64_t blocks = ceil_div(p.out_features, p.swiglu ? 8 : 16);
  if (p.swiglu)
    return launch(skinny_mma_kernel<T, kNT, true>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, p);
  return launch(skinny_mma_kernel<T, kNT, false>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, p);
}

}  // namespace

template <typename T>
cudaError_t launch_skinny_mma(const SkinnyLinearParams& p, cudaStream_t stream) {
  if (p.rows <= 16) return launch_tier<T, 2>(p, stream);
  if (p.rows <= 32) return launch_tier<T, 4>(p, stream);
  return launch_tier<T, 8>(p, stream);
}

template cudaError_t launch_skinny_mma<__half>(const SkinnyLinearParams&, cudaStream_t);
template cudaError_t launch_skinny_mma<__nv_bfloat16>(const SkinnyLinearParams&, cudaStream_t);

}  // namespace q35::Q35_TARGET
