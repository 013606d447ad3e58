// Grouped down GEMM of the routed experts with the routing weight applied in the epilogue. See moe_gemm.cuh.
#include "kernels/moe/moe_gemm_tile.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

using namespace moe_tile;

// Computes: y[pair, h] = topk_weights[pair] * (act[row] . w2[e, h]) (fp32 accumulation and product, one rounding
//           to T), pair = sorted_pairs[row], e = tile_experts[row / BM]; padding rows read as zeros, not stored.
// Args:     act [tiles * BM, I] T; w2 [E, H, I] T; sorted_pairs [tiles * BM], tile_experts [tiles] int32;
//           topk_weights [N * k] fp32; y [N * k, H] T (rows indexed by pair).
// Grid:     x = block of kBlockN output columns h, y = row tile (grid-stride); tiles of expert -1 end the CTA.
// Block:    Shape::kThreads; warps (wm, wn, wk) as in TileShape.
// Smem:     TileSmem::kBytes.
// Requires: gemm_args_ok (H, I multiples of 16 bytes; 16-byte aligned pointers).
template <typename T, class Shape>
__global__ void __launch_bounds__(Shape::kThreads, 1) moe_down_kernel(MoeGemmParams p) {
  using S = TileSmem<T, Shape>;
  Q35_DYNAMIC_SMEM(T, smem);
  const T* __restrict__ act = static_cast<const T*>(p.a_ptr);
  const T* __restrict__ w2 = static_cast<const T*>(p.b_ptr);
  T* __restrict__ y = static_cast<T*>(p.c_ptr);
  const int hidden = p.n;
  const int n0 = static_cast<int>(blockIdx.x) * Shape::kBlockN;  // first output column h of the CTA
  const WarpCoord<Shape> w;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;

  for (int64_t tile = blockIdx.y; tile < p.max_tiles; tile += gridDim.y) {
    const int expert = p.tile_experts_ptr[tile];
    if (expert < 0) break;  // the unused tiles are the last ones
    const int64_t row0 = tile * Shape::kBlockM;

    // ---- load: the tile's act rows (padding rows zero-filled), rows [n0, n0 + BN) of w2[e] ----
    TileLoader<T, Shape> loader;
    loader.init(w2, p.k);
#pragma unroll
    for (int i = 0; i < S::kAChunks; ++i) {
      const int64_t row = row0 + loader.row_of(i);
      loader.a_rows[i] = p.sorted_pairs_ptr[row] >= 0 ? act + row * p.a_row_stride : nullptr;
    }
    const T* w_e = w2 + static_cast<int64_t>(expert) * hidden * p.k;  // [H, I]
#pragma unroll
    for (int i = 0; i < S::kBChunks; ++i) {
      const int h = n0 + loader.row_of(i);
      loader.b_rows[i] = h < hidden ? w_e + static_cast<int64_t>(h) * p.k : nullptr;
    }

    // ---- compute ----
    float acc[Shape::kMTiles][Shape::kNTiles][4] = {};
    mainloop<T, Shape, false>(acc, smem, loader, w);
    reduce_k_warps<T, Shape>(acc, reinterpret_cast<float*>(smem), w);

    // ---- store: y[pair] = weight * acc ----
    if (w.wk == 0) {
#pragma unroll
      for (int mi = 0; mi < Shape::kMTiles; ++mi) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int64_t row = row0 + w.wm * Shape::kWarpRows + mi * kMmaM + lane / 4 + half * kMmaN;
          const int pair = p.sorted_pairs_ptr[row];
          if (pair < 0) continue;
          const float weight = p.topk_weights_ptr[pair];
          T* out = y + static_cast<int64_t>(pair) * hidden;  // [H]
#pragma unroll
          for (int ni = 0; ni < Shape::kNTiles; ++ni) {
            const int h = n0 + w.wn * Shape::kWarpCols + ni * kMmaN + (lane % 4) * 2;
            if (h >= hidden) continue;
            const float v[2] = {acc[mi][ni][half * 2] * weight, acc[mi][ni][half * 2 + 1] * weight};
            store_vec_f32<T, 2>(out + h, v);
          }
        }
      }
    }
    __syncthreads();  // the reduction scratch is read before the next tile's copies overwrite it
  }
}

template <typename T, class Shape>
cudaError_t launch_down_tiles(const MoeGemmParams& p, cudaStream_t stream) {
  const dim3 grid = tile_grid(ceil_div(p.n, Shape::kBlockN), p.max_tiles);
  return launch(moe_down_kernel<T, Shape>, grid, dim3(Shape::kThreads), TileSmem<T, Shape>::kBytes, stream, p);
}

}  // namespace

template <typename T>
cudaError_t launch_moe_down(const MoeGemmParams& p, cudaStream_t stream) {
  if constexpr (!std::is_same_v<T, float>) {
    if (p.block_m == kMoeSm90BlockM || p.block_m == kMoeSm90PairBlockM)
      return launch_moe_down_sm90a<T>(p, stream);  // moe_down_sm90a.cu
  }
  if (!gemm_args_ok<T>(p)) return cudaErrorInvalidValue;
  if (p.max_tiles == 0 || p.n == 0) return cudaSuccess;
  if (p.topk_weights_ptr == nullptr) return cudaErrorInvalidValue;
  if constexpr (!std::is_same_v<T, float>) {
    if (p.block_m == kMoePrefillBlockM) return launch_down_tiles<T, PrefillShape>(p, stream);
  }
  return launch_down_tiles<T, DecodeDownShape>(p, stream);
}

#define Q35_INSTANTIATE(T) template cudaError_t launch_moe_down<T>(const MoeGemmParams&, cudaStream_t);
Q35_FOR_EACH_MOE_GEMM_TYPE(Q35_INSTANTIATE)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
