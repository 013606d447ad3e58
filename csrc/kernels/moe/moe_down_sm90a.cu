// sm_90a grouped down GEMM (block_m = 128) with the routing weight applied in the epilogue. See moe_gemm.cuh
// (API) and moe_gemm_sm90a.cuh (pipeline, warp roles, scheduler).
#include "kernels/moe/moe_gemm_sm90a.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

using namespace moe_sm90a;

#if Q35_SM90A_ENABLED
// y[pair, h] = weight[pair] * acc for the 64 rows of consumer warpgroup wg (columns h0 + 0..255 of the item).
template <typename T>
struct YEpilogue {
  const MoeGemmParams& p;
  using Rows = ThreadRows;  // only used after the K loop
  __device__ __forceinline__ Rows rows(const WorkItem& w, int wg) const { return thread_rows(p, w, wg); }
  // (the routing weights are loaded here: a load that depends on the pair before the K loop would wait for it)
  __device__ __forceinline__ void store(const WorkItem& w, int wg, const Rows& r, const float (&acc)[kAcc]) const {
    const float weight[2] = {r.pair[0] >= 0 ? p.topk_weights_ptr[r.pair[0]] : 0.0f,
                             r.pair[1] >= 0 ? p.topk_weights_ptr[r.pair[1]] : 0.0f};
    T* __restrict__ y = static_cast<T*>(p.c_ptr);
    const int hidden = p.n;
    const int t = static_cast<int>(threadIdx.x) % kWarpgroupThreads;
    const int h0 = w.n_block * kBlockN;
#pragma unroll
    for (int i = 0; i < kAcc; i += 2) {
      const int half = (i >> 1) & 1;
      const int h = h0 + ptx::wgmma_acc_col(t, i);
      if (r.pair[half] < 0 || h >= hidden) continue;  // hidden % 8 == 0 and h even: h + 1 < hidden too
      const float v[2] = {acc[i] * weight[half], acc[i + 1] * weight[half]};
      store_vec_f32<T, 2>(y + static_cast<int64_t>(r.pair[half]) * hidden + h, v);
    }
  }
};
#endif

// Computes: y[pair, h] = topk_weights[pair] * (act[row] . w2[e, h]) (fp32 accumulation and product, one
//           rounding), pair = sorted_pairs[row], e = tile_experts[row / 128]; padding rows not stored.
// Args:     kp.p as for moe_down_kernel (block_m 128); kp.a_map: act [rows, I]; kp.b_map: w2 [E][H][I].
// Grid:     persistent, min(num_ctas, items); items = (tile, block of 256 columns h), tiles outermost. kPair:
//           2-CTA clusters, one per item of a 256-row tile (block_m 256), each CTA 128 of its rows, B shared.
// Block:    384 threads: lane 0 of warp 0 issues the TMA loads (w2 block, the act rows of the active halves),
//           warpgroups 1-2 consume 64 rows each (wgmma m64n256k16).
// Smem:     kSmemBytes (4 stages x 48 KB + barriers).
// Requires: sm_90a; sm90a_args_ok; topk_weights given.
template <typename T, bool kPair>
__global__ void __launch_bounds__(kThreads, 1) moe_down_sm90a_kernel(const __grid_constant__ KernelParams kp) {
#if Q35_SM90A_ENABLED
  run_persistent_gemm<T, false, false, kPair>(kp, YEpilogue<T>{kp.p});
#else
  ptx::sm90a_required();
#endif
}

}  // namespace

template <typename T>
cudaError_t launch_moe_down_sm90a(const MoeGemmParams& p, cudaStream_t stream) {
  if (!sm90a_args_ok<T>(p) || p.topk_weights_ptr == nullptr || p.a_sorted_rows) return cudaErrorInvalidValue;
  if (!sm90a_available()) return cudaErrorInvalidDeviceFunction;
  if (p.max_tiles == 0 || p.n == 0) return cudaSuccess;
  KernelParams kp{};
  kp.p = p;
  kp.n_blocks = static_cast<int>(ceil_div(p.n, kBlockN));
  kp.k_blocks = static_cast<int>(ceil_div(p.k, kBlockK));
  kp.num_items = p.max_tiles * kp.n_blocks;
  {
    const uint64_t rows = static_cast<uint64_t>(p.max_tiles) * p.block_m;
    cudaError_t err = make_tensor_map_2d(&kp.a_map, p.a_ptr, sizeof(T), rows, static_cast<uint64_t>(p.k),
                                         static_cast<uint64_t>(p.a_row_stride), kWgRows, kBlockK, a_tile().swizzle);
    if (err != cudaSuccess) return err;
    const uint64_t dims[3] = {static_cast<uint64_t>(p.k), static_cast<uint64_t>(p.n),
                              static_cast<uint64_t>(p.num_experts)};
    const uint64_t strides[2] = {static_cast<uint64_t>(p.k) * sizeof(T), static_cast<uint64_t>(p.n) * p.k * sizeof(T)};
    const bool pair = p.block_m == kPairBlockM;  // each CTA of a pair loads (and multicasts) 128 of the 256 rows
    const uint32_t box[3] = {kBlockK, static_cast<uint32_t>(pair ? kBlockN / 2 : kBlockN), 1};
    err = make_tensor_map(&kp.b_map, p.b_ptr, sizeof(T), 3, dims, strides, box, b_tile().swizzle);
    if (err != cudaSuccess) return err;
  }
  if (p.block_m == kPairBlockM) {
    return launch_cluster(moe_down_sm90a_kernel<T, true>, persistent_grid(kp, true), dim3(kThreads), dim3(2),
                          kSmemBytes, stream, kp);
  }
  return launch(moe_down_sm90a_kernel<T, false>, persistent_grid(kp), dim3(kThreads), kSmemBytes, stream, kp);
}

// 16-bit types only: fp32 models run the SIMT decode tiles.
template cudaError_t launch_moe_down_sm90a<__half>(const MoeGemmParams&, cudaStream_t);
template cudaError_t launch_moe_down_sm90a<__nv_bfloat16>(const MoeGemmParams&, cudaStream_t);

}  // namespace q35::Q35_TARGET
