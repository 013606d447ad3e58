// GDN gating kernel. See gdn_gating.cuh for the op.
#include "kernels/gdn/gdn_common.cuh"
#include "kernels/gdn/gdn_gating.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 16;  // elements beyond grid * block loop inside the kernel

// Computes: g[r, h] = -exp(A_log[h]) * softplus(a[r, h] + dt_bias[h]) (fp32); beta[r, h] = T(sigmoid(b[r, h])).
// Args:     a, b [rows, Hv] T (row strides); A_log, dt_bias [Hv]; g [rows, Hv] fp32; beta [rows, Hv] T.
// Grid:     grid-stride loop over the rows * Hv elements. Block: kThreads threads, one element each.
// Smem:     none.
// Requires: nothing.
template <typename T>
__global__ void __launch_bounds__(kThreads) gdn_gating_kernel(GdnGatingParams p) {
  const int64_t total = p.num_rows * p.num_heads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t r = i / p.num_heads;
    const int64_t h = i % p.num_heads;
    const float a = to_float(static_cast<const T*>(p.a_ptr)[r * p.a_row_stride + h]);
    const float b = to_float(static_cast<const T*>(p.b_ptr)[r * p.b_row_stride + h]);
    p.g_ptr[i] = gdn::gate_log_decay(a, gdn::load_param<T>(p.a_log_ptr, h, p.a_log_fp32),
                                     gdn::load_param<T>(p.dt_bias_ptr, h, p.dt_bias_fp32));
    static_cast<T*>(p.beta_ptr)[i] = from_float<T>(gdn::gate_beta<T>(b));
  }
}

}  // namespace

template <typename T>
cudaError_t launch_gdn_gating(const GdnGatingParams& p, cudaStream_t stream) {
  const int64_t total = p.num_rows * p.num_heads;
  if (total == 0) return cudaSuccess;
  const int64_t blocks = ceil_div(total, kThreads);
  const dim3 grid(static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks));
  return launch(gdn_gating_kernel<T>, grid, dim3(kThreads), 0, stream, p);
}

#define Q35_INSTANTIATE(T) template cudaError_t launch_gdn_gating<T>(const GdnGatingParams&, cudaStream_t);
Q35_INSTANTIATE(float)
Q35_INSTANTIATE(__half)
Q35_INSTANTIATE(__nv_bfloat16)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
