// sm_90a grouped gate_up GEMM (block_m = 128) with SiLU(gate) * up fused into the epilogue. See moe_gemm.cuh
// (API) and moe_gemm_sm90a.cuh (pipeline, warp roles, scheduler).
#include "kernels/moe/moe_gemm_sm90a.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

using namespace moe_sm90a;

#if Q35_SM90A_ENABLED
// act[row, j] = silu(g) * u for the 64 rows of consumer warpgroup wg: the B tile holds the gate rows
// [j0, j0 + 128) then the matching up rows, so accumulator i (column c < 128) is a gate and i + 64 (column
// c + 128) the up of the same output j0 + c, in the same thread. Same fp32 expression as the sm_80 kernel.
template <typename T>
struct ActEpilogue {
  const MoeGemmParams& p;
  using Rows = ThreadRows;  // only compared after the K loop
  __device__ __forceinline__ Rows rows(const WorkItem& w, int wg) const { return thread_rows(p, w, wg); }
  __device__ __forceinline__ void store(const WorkItem& w, int wg, const Rows& r, const float (&acc)[kAcc]) const {
    T* __restrict__ act = static_cast<T*>(p.c_ptr);
    const int inter = p.n;
    const int t = static_cast<int>(threadIdx.x) % kWarpgroupThreads;
    const int64_t row_lo = thread_row_lo(w, wg);
    const int j0 = w.n_block * (kBlockN / 2);
#pragma unroll
    for (int i = 0; i < kAcc / 2; i += 2) {
      const int half = (i >> 1) & 1;
      const int j = j0 + ptx::wgmma_acc_col(t, i);
      if (r.pair[half] < 0 || j >= inter) continue;  // inter % 8 == 0 and j even: j + 1 < inter too
      float v[2];
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const float gate = acc[i + c];
        const float up = acc[i + c + kAcc / 2];
        v[c] = gate / (1.0f + expf(-gate)) * up;
      }
      store_vec_f32<T, 2>(act + (row_lo + 8 * half) * inter + j, v);
    }
  }
};
#endif

// Computes: act[row, j] = silu(x . w13[e, j]) * (x . w13[e, I + j]), x = hidden[sorted_pairs[row] / top_k]
//           (kSortedRows: x = a[row], the same row copied into tile order by moe_permute),
//           e = tile_experts[row / 128] (fp32 accumulation, one rounding); padding rows not written.
// Args:     kp.p as for moe_gate_up_kernel (block_m 128); kp.b_map: w13 viewed as [2E][I][H]; kSortedRows:
//           kp.a_map: the sorted rows [max_tiles * 128, H].
// Grid:     persistent, min(num_ctas, items); items = (tile, block of 128 outputs j), tiles outermost. kPair:
//           2-CTA clusters, one per item of a 256-row tile (block_m 256), each CTA 128 of its rows, B shared.
// Block:    384 threads: warpgroup 0 produces (warp 0 lane 0: TMA for w13, and with kSortedRows for the A rows;
//           without it its 4 warps gather 32 hidden rows each with cp.async), warpgroups 1-2 consume 64 rows each
//           (wgmma m64n256k16 over [128 gate | 128 up] weight rows).
// Smem:     kSmemBytes (4 stages x 48 KB + barriers).
// Requires: sm_90a; sm90a_args_ok.
template <typename T, bool kSortedRows, bool kPair>
__global__ void __launch_bounds__(kThreads, 1) moe_gate_up_sm90a_kernel(const __grid_constant__ KernelParams kp) {
#if Q35_SM90A_ENABLED
  run_persistent_gemm<T, true, !kSortedRows, kPair>(kp, ActEpilogue<T>{kp.p});
#else
  ptx::sm90a_required();
#endif
}

}  // namespace

bool moe_sm90a_available() { return sm90a_available(); }

template <typename T>
cudaError_t launch_moe_gate_up_sm90a(const MoeGemmParams& p, cudaStream_t stream) {
  if (!sm90a_args_ok<T>(p)) return cudaErrorInvalidValue;
  if (!sm90a_available()) return cudaErrorInvalidDeviceFunction;
  if (p.max_tiles == 0 || p.n == 0) return cudaSuccess;
  KernelParams kp{};
  kp.p = p;
  kp.n_blocks = static_cast<int>(ceil_div(p.n, kBlockN / 2));
  kp.k_blocks = static_cast<int>(ceil_div(p.k, kBlockK));
  kp.num_items = p.max_tiles * kp.n_blocks;
  if (p.a_sorted_rows) {  // the rows in tile order, read like act in down
    const uint64_t rows = static_cast<uint64_t>(p.max_tiles) * p.block_m;
    const cudaError_t err = make_tensor_map_2d(&kp.a_map, p.a_ptr, sizeof(T), rows, static_cast<uint64_t>(p.k),
                                               static_cast<uint64_t>(p.a_row_stride), kWgRows, kBlockK,
                                               a_tile().swizzle);
    if (err != cudaSuccess) return err;
  }
  {  // w13 [E][2I][H] = [2E][I][H]: plane 2e holds expert e's gate rows, 2e + 1 its up rows
    const uint64_t dims[3] = {static_cast<uint64_t>(p.k), static_cast<uint64_t>(p.n),
                              2 * static_cast<uint64_t>(p.num_experts)};
    const uint64_t strides[2] = {static_cast<uint64_t>(p.k) * sizeof(T), static_cast<uint64_t>(p.n) * p.k * sizeof(T)};
    const uint32_t box[3] = {kBlockK, kBlockN / 2, 1};
    const cudaError_t err = make_tensor_map(&kp.b_map, p.b_ptr, sizeof(T), 3, dims, strides, box, b_tile().swizzle);
    if (err != cudaSuccess) return err;
  }
  if (p.block_m == kPairBlockM) {  // 2-CTA clusters sharing each w13 block
    const dim3 grid = persistent_grid(kp, true), block(kThreads), pair(2);
    if (p.a_sorted_rows)
      return launch_cluster(moe_gate_up_sm90a_kernel<T, true, true>, grid, block, pair, kSmemBytes, stream, kp);
    return launch_cluster(moe_gate_up_sm90a_kernel<T, false, true>, grid, block, pair, kSmemBytes, stream, kp);
  }
  if (p.a_sorted_rows)
    return launch(moe_gate_up_sm90a_kernel<T, true, false>, persistent_grid(kp), dim3(kThreads), kSmemBytes, stream, kp);
  return launch(moe_gate_up_sm90a_kernel<T, false, false>, persistent_grid(kp), dim3(kThreads), kSmemBytes, stream,
                kp);
}

// 16-bit types only: fp32 models run the SIMT decode tiles.
template cudaError_t launch_moe_gate_up_sm90a<__half>(const MoeGemmParams&, cudaStream_t);
template cudaError_t launch_moe_gate_up_sm90a<__nv_bfloat16>(const MoeGemmParams&, cudaStream_t);

}  // namespace q35::Q35_TARGET
