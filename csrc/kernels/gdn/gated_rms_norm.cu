// Gated RMSNorm kernel. See gated_rms_norm.cuh for the op.
#include "kernels/gdn/gated_rms_norm.cuh"
#include "kernels/gdn/gdn_common.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

constexpr int kWarps = 8;  // rows per block
constexpr int kThreads = kWarps * kWarpSize;
constexpr int64_t kMaxBlocks = int64_t{1} << 16;  // rows beyond grid * kWarps loop inside the kernel

// Computes: y[r] = T( w * T(x[r] * rsqrt(mean(x[r]^2) + eps)) * silu(z[r]) ) (fp32 math).
// Args:     x, z [rows, V] T (row strides, last dim contiguous); weight [V] T or fp32; y [rows, V] T contiguous.
// Grid:     grid-stride loop over rows in groups of kWarps. Block: kWarps warps, one row per warp; lane l owns
//           the kVec-element chunks l, l + 32, ... of the row.
// Smem:     none.
// Requires: kVec > 1 only when V % kVec == 0 and x, z, y rows are 16-byte aligned (the launcher checks).
template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads, 1) gated_rms_norm_kernel(GatedRmsNormParams p) {
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t chunks = p.hidden_size / kVec;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp; row < p.num_rows;
       row += static_cast<int64_t>(gridDim.x) * kWarps) {
    const T* x = static_cast<const T*>(p.x_ptr) + row * p.x_row_stride;  // [V]
    const T* z = static_cast<const T*>(p.z_ptr) + row * p.z_row_stride;  // [V]
    T* y = static_cast<T*>(p.y_ptr) + row * p.hidden_size;             // [V]
    float sum_sq = 0.0f;
    for (int64_t c = lane; c < chunks; c += kWarpSize) {
      float v[kVec];
      load_vec_f32<T, kVec>(x + c * kVec, v);
#pragma unroll
      for (int i = 0; i < kVec; ++i) sum_sq += v[i] * v[i];
    }
    const float rstd = rsqrtf(warp::reduce_sum(sum_sq) / static_cast<float>(p.hidden_size) + p.eps);
    for (int64_t c = lane; c < chunks; c += kWarpSize) {
      float v[kVec];
      float g[kVec];
      load_vec_f32<T, kVec>(x + c * kVec, v);
      load_vec_f32<T, kVec>(z + c * kVec, g);
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        const float w = gdn::load_param<T>(p.weight_ptr, c * kVec + i, p.weight_fp32);
        v[i] = gdn::gated_norm_value<T>(v[i], rstd, w, p.weight_fp32, g[i]);
      }
      store_vec_f32<T, kVec>(y + c * kVec, v);
    }
  }
}

}  // namespace

template <typename T>
cudaError_t launch_gated_rms_norm(const GatedRmsNormParams& p, cudaStream_t stream) {
  if (p.num_rows == 0 || p.hidden_size == 0) return cudaSuccess;
  constexpr int kVec = kVecBytes / sizeof(T);
  const auto rows_aligned = [](const void* ptr, int64_t stride) {
    return reinterpret_cast<uintptr_t>(ptr) % kVecBytes == 0 && (stride * static_cast<int64_t>(sizeof(T))) % kVecBytes == 0;
  };
  const bool vec = p.hidden_size % kVec == 0 && rows_aligned(p.x_ptr, p.x_row_stride) &&
                   rows_aligned(p.z_ptr, p.z_row_stride) && rows_aligned(p.y_ptr, p.hidden_size);
  const int64_t blocks = ceil_div(p.num_rows, kWarps);
  const dim3 grid(static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks));
  if (vec) return launch(gated_rms_norm_kernel<T, kVec>, grid, dim3(kThreads), 0, stream, p);
  return launch(gated_rms_norm_kernel<T, 1>, grid, dim3(kThreads), 0, stream, p);
}

#define Q35_INSTANTIATE(T) template cudaError_t launch_gated_rms_norm<T>(const GatedRmsNormParams&, cudaStream_t);
Q35_INSTANTIATE(float)
Q35_INSTANTIATE(__half)
Q35_INSTANTIATE(__nv_bfloat16)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
