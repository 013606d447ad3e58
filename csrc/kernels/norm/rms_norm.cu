// RMSNorm (+ fused residual add) kernel and its launcher. See rms_norm.cuh for the op.
#include "kernels/norm/rms_norm.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

constexpr int kMaxThreads = 512;

// Computes: s = x (+ r); y = s * rsqrt(mean(s^2) + eps) * (offset + w). fp32 math; s is rounded to T before
//           the statistics (as the bf16 residual stream of the model is), y is rounded to T once.
// Args:     x, r [rows, H] T (row strides given, last dim contiguous); w [H] W; y, r_out [rows, H] T contiguous.
// Grid:     blockIdx.x = row (grid-stride loop over rows beyond gridDim.x).
// Block:    threads cover H in chunks of kVec elements; each thread owns chunks tid, tid + blockDim.x, ...
// Smem:     block::reduce_sum partials, 4 * 32 bytes.
// Requires: kVec > 1 only when H % kVec == 0 and every row start is 16-byte aligned (host picks kVec).
template <typename T, typename W, int kVec>
__global__ void __launch_bounds__(kMaxThreads) rms_norm_kernel(RmsNormParams p) {
  const int64_t hidden = p.hidden_size;
  const int64_t num_chunks = hidden / kVec;
  const T* __restrict__ x_base = static_cast<const T*>(p.x_ptr);
  const T* __restrict__ r_base = static_cast<const T*>(p.residual_ptr);
  const W* __restrict__ weight = static_cast<const W*>(p.weight_ptr);
  T* __restrict__ y_base = static_cast<T*>(p.y_ptr);
  T* __restrict__ r_out_base = static_cast<T*>(p.residual_out_ptr);

  for (int64_t row = blockIdx.x; row < p.num_rows; row += gridDim.x) {
    const T* x = x_base + row * p.x_row_stride;  // [H]
    const T* r = r_base ? r_base + row * p.residual_row_stride : nullptr;  // [H]
    T* y = y_base + row * hidden;  // [H]
    T* r_out = r_out_base ? r_out_base + row * hidden : nullptr;  // [H]

    // ---- load, residual add, sum of squares ----
    float sum_sq = 0.0f;
    for (int64_t c = threadIdx.x; c < num_chunks; c += blockDim.x) {
      float v[kVec];
      load_vec_f32<T, kVec>(x + c * kVec, v);
      if (r) {
        float rv[kVec];
        load_vec_f32<T, kVec>(r + c * kVec, rv);
#pragma unroll
        for (int i = 0; i < kVec; ++i) v[i] = to_float(from_float<T>(v[i] + rv[i]));
        store_vec_f32<T, kVec>(r_out + c * kVec, v);
      }
#pragma unroll
      for (int i = 0; i < kVec; ++i) sum_sq += v[i] * v[i];
    }
    const float inv_rms = rsqrtf(block::reduce_sum(sum_sq) / static_cast<float>(hidden) + p.eps);

    // ---- normalise, scale, store (re-reads the row: it is in L1/L2) ----
    for (int64_t c = threadIdx.x; c < num_chunks; c += blockDim.x) {
      float v[kVec];
      float w[kVec];
      load_vec_f32<T, kVec>(x + c * kVec, v);
      if (r) {
        float rv[kVec];
        load_vec_f32<T, kVec>(r + c * kVec, rv);
#pragma unroll
        for (int i = 0; i < kVec; ++i) v[i] = to_float(from_float<T>(v[i] + rv[i]));
      }
      load_vec_f32<W, kVec>(weight + c * kVec, w);
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[i] = v[i] * inv_rms * (1.0f + w[i]);
      store_vec_f32<T, kVec>(y + c * kVec, v);
    }
  }
}

}  // namespace

template <typename T, typename W>
cudaError_t launch_rms_norm(const RmsNormParams& p, cudaStream_t stream) {
  constexpr int kVec = kVecBytes / sizeof(T);
  auto aligned = [](const void* ptr, int64_t bytes) {
    return reinterpret_cast<uintptr_t>(ptr) % static_cast<uintptr_t>(bytes) == 0;
  };
  auto rows_aligned = [&](const void* ptr, int64_t row_stride) {
    return aligned(ptr, kVecBytes) && (row_stride * static_cast<int64_t>(sizeof(T))) % kVecBytes == 0;
  };
  const bool vec_ok = p.hidden_size % kVec == 0 && rows_aligned(p.x_ptr, p.x_row_stride) &&
                      aligned(p.y_ptr, kVecBytes) && aligned(p.weight_ptr, sizeof(W) * kVec) &&
                      (!p.residual_ptr || (rows_aligned(p.residual_ptr, p.residual_row_stride) &&
                                           aligned(p.residual_out_ptr, kVecBytes)));
  if (p.num_rows == 0 || p.hidden_size == 0) return cudaSuccess;
  const int64_t chunks = vec_ok ? p.hidden_size / kVec : p.hidden_size;
  const int threads = static_cast<int>(chunks >= kMaxThreads ? kMaxThreads : round_up(chunks, kWarpSize));
  constexpr int64_t kMaxGridRows = int64_t{1} << 20;  // rows beyond this loop inside the kernel
  const dim3 grid(static_cast<unsigned>(p.num_rows < kMaxGridRows ? p.num_rows : kMaxGridRows));
  if (vec_ok) return launch(rms_norm_kernel<T, W, kVec>, grid, dim3(threads), 0, stream, p);
  return launch(rms_norm_kernel<T, W, 1>, grid, dim3(threads), 0, stream, p);
}

#define Q35_INSTANTIATE(T, W) template cudaError_t launch_rms_norm<T, W>(const RmsNormParams&, cudaStream_t);
Q35_FOR_EACH_NORM_TYPES(Q35_INSTANTIATE)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
