// Grouped gate_up GEMM of the routed experts with SiLU(gate) * up fused into the epilogue. See moe_gemm.cuh.
#include "kernels/moe/moe_gemm_tile.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

using namespace moe_tile;

// Computes: act[row, j] = silu(g) * u, g = x . w13[e, j], u = x . w13[e, I + j] (fp32 accumulation, one rounding
//           to T), x = hidden[sorted_pairs[row] / top_k], e = tile_experts[row / BM]; padding rows not written.
// Args:     hidden [N, H] T (row stride a_row_stride); w13 [E, 2I, H] T; sorted_pairs [tiles * BM], tile_experts
//           [tiles] int32; act [tiles * BM, I] T.
// Grid:     x = block of kBlockN / 2 output columns j (the CTA loads those gate rows and the matching up rows),
//           y = row tile (grid-stride); tiles of expert -1 end the CTA.
// Block:    Shape::kThreads; warps (wm, wn, wk) as in TileShape; a thread holds gate and up of the same outputs.
// Smem:     TileSmem::kBytes (kStages x (BM + BN) x (BK + 16 bytes) rows).
// Requires: gemm_args_ok (H, I, row stride multiples of 16 bytes; 16-byte aligned pointers).
template <typename T, class Shape>
__global__ void __launch_bounds__(Shape::kThreads, 1) moe_gate_up_kernel(MoeGemmParams p) {
  using S = TileSmem<T, Shape>;
  Q35_DYNAMIC_SMEM(T, smem);
  constexpr int kHalfN = Shape::kBlockN / 2;
  const T* __restrict__ hidden = static_cast<const T*>(p.a_ptr);
  const T* __restrict__ w13 = static_cast<const T*>(p.b_ptr);
  T* __restrict__ act = static_cast<T*>(p.c_ptr);
  const int inter = p.n;
  const int n0 = static_cast<int>(blockIdx.x) * kHalfN;  // first output column j of the CTA
  const WarpCoord<Shape> w;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;

  for (int64_t tile = blockIdx.y; tile < p.max_tiles; tile += gridDim.y) {
    const int expert = p.tile_experts_ptr[tile];
    if (expert < 0) break;  // the unused tiles are the last ones
    const int64_t row0 = tile * Shape::kBlockM;

    // ---- load: gathered token rows of hidden, gate rows [n0, n0 + BN/2) and the matching up rows of w13 ----
    TileLoader<T, Shape> loader;
    loader.init(w13, p.k);
#pragma unroll
    for (int i = 0; i < S::kAChunks; ++i) {
      const int pair = p.sorted_pairs_ptr[row0 + loader.row_of(i)];
      loader.a_rows[i] = pair >= 0 ? hidden + static_cast<int64_t>(pair / p.top_k) * p.a_row_stride : nullptr;
    }
    const T* w_e = w13 + static_cast<int64_t>(expert) * 2 * inter * p.k;  // [2I, H]
#pragma unroll
    for (int i = 0; i < S::kBChunks; ++i) {
      const int r = loader.row_of(i);
      const int j = n0 + r % kHalfN;
      loader.b_rows[i] = j < inter ? w_e + static_cast<int64_t>((r < kHalfN ? 0 : inter) + j) * p.k : nullptr;
    }

    // ---- compute ----
    float acc[Shape::kMTiles][Shape::kNTiles][4] = {};
    mainloop<T, Shape, true>(acc, smem, loader, w);
    reduce_k_warps<T, Shape>(acc, reinterpret_cast<float*>(smem), w);

    // ---- store: act = silu(gate) * up ----
    if (w.wk == 0) {
#pragma unroll
      for (int mi = 0; mi < Shape::kMTiles; ++mi) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int64_t row = row0 + w.wm * Shape::kWarpRows + mi * kMmaM + lane / 4 + half * kMmaN;
          if (p.sorted_pairs_ptr[row] < 0) continue;
#pragma unroll
          for (int ni = 0; ni < Shape::kNTiles / 2; ++ni) {
            const int j = n0 + w.wn * (Shape::kWarpCols / 2) + ni * kMmaN + (lane % 4) * 2;
            if (j >= inter) continue;
            float v[2];
#pragma unroll
            for (int c = 0; c < 2; ++c) {
              const float gate = acc[mi][ni][half * 2 + c];
              const float up = acc[mi][ni + Shape::kNTiles / 2][half * 2 + c];
              v[c] = gate / (1.0f + expf(-gate)) * up;
            }
            store_vec_f32<T, 2>(act + row * inter + j, v);
          }
        }
      }
    }
    __syncthreads();  // the reduction scratch is read before the next tile's copies overwrite it
  }
}

template <typename T, class Shape>
cudaError_t launch_gate_up_tiles(const MoeGemmParams& p, cudaStream_t stream) {
  const dim3 grid = tile_grid(ceil_div(p.n, Shape::kBlockN / 2), p.max_tiles);
  return launch(moe_gate_up_kernel<T, Shape>, grid, dim3(Shape::kThreads), TileSmem<T, Shape>::kBytes, stream, p);
}

}  // namespace

template <typename T>
cudaError_t launch_moe_gate_up(const MoeGemmParams& p, cudaStream_t stream) {
  if constexpr (!std::is_same_v<T, float>) {
    if (p.block_m == kMoeSm90BlockM || p.block_m == kMoeSm90PairBlockM)
      return launch_moe_gate_up_sm90a<T>(p, stream);  // moe_gate_up_sm90a.cu
  }
  if (!gemm_args_ok<T>(p)) return cudaErrorInvalidValue;
  if (p.max_tiles == 0 || p.n == 0) return cudaSuccess;
  if constexpr (!std::is_same_v<T, float>) {
    if (p.block_m == kMoePrefillBlockM) return launch_gate_up_tiles<T, PrefillShape>(p, stream);
  }
  return launch_gate_up_tiles<T, DecodeGateUpShape>(p, stream);
}

#define Q35_INSTANTIATE(T) template cudaError_t launch_moe_gate_up<T>(const MoeGemmParams&, cudaStream_t);
Q35_FOR_EACH_MOE_GEMM_TYPE(Q35_INSTANTIATE)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
