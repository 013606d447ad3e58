// Skinny linear (the projections of a decode step) and its launcher. See skinny_linear.cuh for the op.
//
// At M <= 8 rows a projection is a weight stream: every weight byte is used M times, so the kernel is built to
// keep the HBM busy, not the tensor cores. Each lane keeps 16 loads of 16 bytes of weights in flight
// (ld.global.nc.L1::no_allocate: the weights must not evict the activations from L1), the activations come from
// L1 / L2 (every warp of the grid reads the same M x K values), and the products are fp32 FMAs.
#include "kernels/linear/skinny_epilogue.cuh"
#include "kernels/linear/skinny_linear.cuh"
#include "q35/launch.h"
#include "q35/ptx.cuh"

namespace q35::Q35_TARGET {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kChunk = 8;            // elements of one 16-byte load
constexpr int kMinWarpsPerSm = 8;    // fewer output groups than this per SM: a block's warps split K instead
constexpr int kSplitWarps = kWarps;  // ... all four of them on one group
constexpr int kShortKChunks = 64;    // K up to this many chunks (512 elements): kShortKLanes lanes per group
constexpr int kShortKLanes = 8;
constexpr int kMaxShortKRows = 4;    // ... for row tiers whose kOut * kM outputs fit 8 lanes

// The work of one team (a warp, or a block splitting K): kOut consecutive outputs, i.e. kWRows weight rows (kOut
// gate rows, then the kOut matching up rows with swiglu), kUnroll chunks of each row per lane in flight.
template <int kM, bool kSwiglu>
struct Tile {
  // 4 outputs per warp at 5-8 rows halve the activation reads per weight byte (L1 traffic, not HBM, is the limit
  // there); swiglu keeps 2 (its 4 rows already share them).
  static constexpr int kOut = (kM <= 4 || kSwiglu) ? 2 : 4;
  static constexpr int kWRows = kOut * (kSwiglu ? 2 : 1);
  static constexpr int kUnroll = 16 / kWRows;  // 16 loads of 16 bytes in flight per lane
};

template <typename T>
__device__ __forceinline__ void widen8(const uint4& raw, float (&out)[kChunk]) {
  Vec<T, kChunk> v;
  static_assert(sizeof(v) == sizeof(raw));
  __builtin_memcpy(&v, &raw, sizeof(raw));
#pragma unroll
  for (int i = 0; i < kChunk; ++i) out[i] = to_float(v.v[i]);
}

// Computes: y[m, n] = sum_k x[m, k] w[n, k] in fp32, rounded to T once, for m < M, n < N. With kSwiglu the weight
//           is [gate; up] ([2N, K]) and y[m, j] = silu(g) * u, rounded like the unfused ops (skinny::swiglu_rounded).
//           kPairs (MoE decode, M = 1 per pair): grid row blockIdx.y is pair p, with its x row, expert weight and
//           y row (SkinnyLinearParams), and the grouped GEMMs' epilogues (silu(g) * u, or weight * sum, one rounding).
// Args:     SkinnyLinearParams: x [M, K] (rows x_row_stride apart), w [N or 2N, K], y [M, N]; K % 8 == 0, x rows
//           and w 16-byte aligned. kM >= M is the row tier (1, 2, 4, 8).
// Grid:     x: kSplit == 1: warp w of block b owns groups S (4 b + w) + s, s < S = 32 / kLanes sets of kLanes
//           lanes; kSplit == 4 (kLanes 32): one block per group, its 4 warps split K. A group is Tile::kOut
//           consecutive outputs. y: the pair (kPairs), else 1.
// Block:    128 threads. Thread t of a team (kLanes * kSplit threads) reads chunks t, t + team, ... of its group's
//           rows, kUnroll at a time; sums: lane partials -> butterfly over the set -> the warps in order (kSplit 4).
//           The order is fixed: the result does not depend on the schedule.
// Smem:     kSplit == 4: the warps' sums, 4 * kWRows * kM floats (static).
// Bounds:   (128, 1): without the min-blocks hint ptxas spilled 4 bytes in one variant at 128 registers.
template <typename T, int kM, int kSplit, bool kSwiglu, bool kPairs, int kLanes>
__global__ void __launch_bounds__(kThreads, 1) skinny_linear_kernel(SkinnyLinearParams p) {
  using Shape = Tile<kM, kSwiglu>;
  constexpr int kOut = Shape::kOut, kWRows = Shape::kWRows, kUnroll = Shape::kUnroll;
  constexpr int kSets = kWarpSize / kLanes;  // groups per warp: short K gives each group kLanes lanes, not 32
  static_assert(kLanes == kWarpSize || (kSplit == 1 && kOut * kM <= kLanes));
  constexpr int kTeam = kLanes * kSplit;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int64_t N = p.out_features, chunks = p.in_features / kChunk;
  const int64_t first_group = (kSplit == 1 ? int64_t{blockIdx.x} * kWarps + warp : int64_t{blockIdx.x}) * kSets;
  if (first_group * kOut >= N) return;  // the last block's spare warps (warp-uniform); never with kSplit == 4
  const int64_t n0 = (first_group + lane / kLanes) * kOut;  // past N in a warp's spare sets: no loads, no store
  const int t = kSplit == 1 ? lane % kLanes : static_cast<int>(threadIdx.x);
  const T* __restrict__ x = static_cast<const T*>(p.x_ptr);
  const T* __restrict__ w = static_cast<const T*>(p.w_ptr);
  T* __restrict__ y = static_cast<T*>(p.y_ptr);
  float pair_weight = 1.0f;
  if constexpr (kPairs) {
    const int64_t pair = blockIdx.y;
    const int64_t e = int64_t{p.pair_ids[pair]} - p.expert_offset;
    if (e < 0 || e >= p.num_experts) return;  // another rank's expert: the whole block, before any barrier
    x += (p.x_per_pair ? pair : pair / p.top_k) * p.x_row_stride;
    w += e * p.w_expert_stride;
    y += pair * N;
    if (p.pair_weights) pair_weight = p.pair_weights[pair];
  }

  // Weight row r: output n0 + r % kOut of the gate (r < kOut) or up half. Rows past N read nothing.
  const T* wrow[kWRows];
  bool row_ok[kWRows];
#pragma unroll
  for (int r = 0; r < kWRows; ++r) {
    const int64_t n = n0 + r % kOut;
    row_ok[r] = n < N;
    wrow[r] = w + ((r / kOut) * N + (row_ok[r] ? n : 0)) * p.in_features;
  }

  float acc[kWRows][kM] = {};
  for (int64_t c0 = t; c0 < chunks; c0 += int64_t{kTeam} * kUnroll) {
    uint4 wv[kUnroll][kWRows];  // issued together: the loads of every row and chunk are in flight at once
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + u * kTeam;
#pragma unroll
      for (int r = 0; r < kWRows; ++r)
        wv[u][r] = (c < chunks && row_ok[r]) ? ptx::ld_global_stream_16(wrow[r] + c * kChunk) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + u * kTeam;
      if (c >= chunks) break;
      float wf[kWRows][kChunk];
#pragma unroll
      for (int r = 0; r < kWRows; ++r) widen8<T>(wv[u][r], wf[r]);
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        if (m >= p.rows) break;
        float xf[kChunk];
        widen8<T>(__ldg(reinterpret_cast<const uint4*>(x + m * p.x_row_stride + c * kChunk)), xf);
#pragma unroll
        for (int r = 0; r < kWRows; ++r)
#pragma unroll
          for (int i = 0; i < kChunk; ++i) acc[r][m] = fmaf(wf[r][i], xf[i], acc[r][m]);
      }
    }
  }

  // ---- sums: a set's lanes (butterfly: each of them gets the same bits), then the warps of a split in order ----
#pragma unroll
  for (int r = 0; r < kWRows; ++r)
#pragma unroll
    for (int m = 0; m < kM; ++m)
#pragma unroll
      for (int offset = kLanes / 2; offset > 0; offset /= 2)
        acc[r][m] += __shfl_xor_sync(warp::kFullMask, acc[r][m], offset);
  if constexpr (kSplit > 1) {
    __shared__ float partial[kSplit][kWRows][kM];  // [warp][row][m] smem
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < kWRows; ++r)
#pragma unroll
        for (int m = 0; m < kM; ++m) partial[warp][r][m] = acc[r][m];
    }
    __syncthreads();
    if (warp != 0) return;
#pragma unroll
    for (int r = 0; r < kWRows; ++r)
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        float s = partial[0][r][m];
#pragma unroll
        for (int v = 1; v < kSplit; ++v) s += partial[v][r][m];
        acc[r][m] = s;
      }
  }

  // ---- epilogue: lane o * kM + m of a set stores output (m, n0 + o) (a register select, no local memory) ----
  const int set_lane = lane % kLanes;
  float first = 0.0f, second = 0.0f;
#pragma unroll
  for (int o = 0; o < kOut; ++o)
#pragma unroll
    for (int m = 0; m < kM; ++m)
      if (set_lane == o * kM + m) {
        first = acc[o][m];
        if constexpr (kSwiglu) second = acc[kOut + o][m];
      }
  const int o = set_lane / kM, m = set_lane % kM;
  const int64_t n = n0 + o;
  if (set_lane < kOut * kM && m < p.rows && n < N) {
    if constexpr (kPairs)  // moe_gate_up's and moe_down's epilogues exactly
      y[n] = kSwiglu ? from_float<T>(first / (1.0f + expf(-first)) * second) : from_float<T>(first * pair_weight);
    else
      y[m * N + n] = kSwiglu ? skinny::swiglu_rounded<T>(first, second) : from_float<T>(first);
  }
}

template <typename T, int kM, bool kSwiglu, bool kPairs = false>
cudaError_t launch_tier(const SkinnyLinearParams& p, cudaStream_t stream) {
  const int64_t groups = ceil_div(p.out_features, Tile<kM, kSwiglu>::kOut);
  const int64_t sms = p.num_sms > 0 ? p.num_sms : 1;
  const unsigned pairs = kPairs ? static_cast<unsigned>(p.num_pairs) : 1u;
  if constexpr (kM <= kMaxShortKRows) {
    // Short K (at most 64 chunks, e.g. 397b-tp8's expert and shared-expert down products, K = 128): 8 lanes per
    // group and 4 groups per warp, so that every lane has chunks to load (32 lanes would leave 16 of them idle).
    if (p.in_features / kChunk <= kShortKChunks) {
      const int64_t warps = ceil_div(groups, kWarpSize / kShortKLanes);
      return launch(skinny_linear_kernel<T, kM, 1, kSwiglu, kPairs, kShortKLanes>,
                    dim3(static_cast<unsigned>(ceil_div(warps, kWarps)), pairs), dim3(kThreads), 0, stream, p);
    }
  }
  if (groups * pairs < kMinWarpsPerSm * sms)  // too few warps to keep enough loads in flight: 4 warps per group
    return launch(skinny_linear_kernel<T, kM, kSplitWarps, kSwiglu, kPairs, kWarpSize>,
                  dim3(static_cast<unsigned>(groups), pairs), dim3(kThreads), 0, stream, p);
  return launch(skinny_linear_kernel<T, kM, 1, kSwiglu, kPairs, kWarpSize>,
                dim3(static_cast<unsigned>(ceil_div(groups, kWarps)), pairs), dim3(kThreads), 0, stream, p);
}

template <typename T, bool kSwiglu>
cudaError_t launch_rows(const SkinnyLinearParams& p, cudaStream_t stream) {
  if (p.pair_ids) return launch_tier<T, 1, kSwiglu, true>(p, stream);
  if (p.rows <= 1) return launch_tier<T, 1, kSwiglu>(p, stream);
  if (p.rows <= 2) return launch_tier<T, 2, kSwiglu>(p, stream);
  if (p.rows <= 4) return launch_tier<T, 4, kSwiglu>(p, stream);
  return launch_tier<T, 8, kSwiglu>(p, stream);
}

}  // namespace

template <typename T>
cudaError_t launch_skinny_linear(const SkinnyLinearParams& p, cudaStream_t stream) {
  auto aligned16 = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % kVecBytes == 0; };
  if (p.rows < 0 || p.rows > kSkinnyLinearMaxRows || p.in_features % kChunk != 0 || p.out_features < 0 ||
      p.out_features >= (int64_t{1} << 31) || !aligned16(p.w_ptr) || !aligned16(p.x_ptr) ||
      (p.x_row_stride * static_cast<int64_t>(sizeof(T))) % kVecBytes != 0)
    return cudaErrorInvalidValue;  // the glue checks all of these with messages first
  constexpr int64_t kMaxGridY = 65535;
  if (p.pair_ids && (p.rows != 1 || p.num_pairs < 0 || p.num_pairs > kMaxGridY || p.top_k < 1 ||
                     (p.w_expert_stride * static_cast<int64_t>(sizeof(T))) % kVecBytes != 0))
    return cudaErrorInvalidValue;
  if (p.rows == 0 || p.out_features == 0 || (p.pair_ids && p.num_pairs == 0)) return cudaSuccess;
  if (p.rows > kSkinnyFmaMaxRows) return launch_skinny_mma<T>(p, stream);
  return p.swiglu ? launch_rows<T, true>(p, stream) : launch_rows<T, false>(p, stream);
}

template cudaError_t launch_skinny_linear<__half>(const SkinnyLinearParams&, cudaStream_t);
template cudaError_t launch_skinny_linear<__nv_bfloat16>(const SkinnyLinearParams&, cudaStream_t);

}  // namespace q35::Q35_TARGET
