// Torch glue of the skinny linear kernel (decode projections): argument checks, params, CPU (emulator) and CUDA
// implementations. Kernels: csrc/kernels/linear/skinny_{linear,mma}.cu. Python: python/qwen35_native/ops/projection.py.
// Tests: tests/kernels/test_linear.py.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "kernels/linear/skinny_linear.cuh"
#include "torch/checks.h"
#include "torch/device_guard.h"
#include "torch/dispatch.h"

namespace q35::glue {
namespace {

constexpr const char* kOp = "skinny_linear";

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % kVecBytes == 0; }

void check_skinny_linear_args(const at::Tensor& x, const at::Tensor& weight, bool swiglu, const at::Tensor& out) {
  check_defined(kOp, "x", x);
  check_defined(kOp, "weight", weight);
  check_dtype(kOp, "x", x, {at::kHalf, at::kBFloat16});
  check_dim(kOp, "x", x, 2);
  check_dim(kOp, "weight", weight, 2);
  check_same_device(kOp, "weight", weight, x, "x");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "qwen35_native.", kOp, ": weight must have the dtype of x (",
              c10::toString(x.scalar_type()), "), got ", c10::toString(weight.scalar_type()));
  const int64_t rows = x.size(0), k = x.size(1);
  TORCH_CHECK(rows <= kSkinnyLinearMaxRows, "qwen35_native.", kOp, ": x must have at most ", kSkinnyLinearMaxRows,
              " rows (tokens), got ", rows, "; larger batches are GEMMs (F.linear)");
  TORCH_CHECK(k % 8 == 0, "qwen35_native.", kOp, ": in_features must be a multiple of 8 (16-byte rows), got ", k);
  TORCH_CHECK(weight.size(1) == k, "qwen35_native.", kOp, ": weight must have shape [out_features, in_features=", k,
              "], got ", shape_str(weight.sizes()));
  TORCH_CHECK(!swiglu || weight.size(0) % 2 == 0, "qwen35_native.", kOp,
              ": with swiglu the weight must be [2 * out_features, in_features] (gate rows, then up rows), got ",
              shape_str(weight.sizes()));
  TORCH_CHECK(weight.size(0) < (int64_t{1} << 31), "qwen35_native.", kOp, ": weight has ", weight.size(0),
              " rows, more than 2^31 - 1");
  TORCH_CHECK(weight.is_contiguous() && aligned16(weight.data_ptr()), "qwen35_native.", kOp,
              ": weight must be contiguous and 16-byte aligned, got strides ", shape_str(weight.strides()));
  check_last_dim_contiguous(kOp, "x", x);
  TORCH_CHECK(rows <= 1 || (x.stride(0) * x.element_size()) % kVecBytes == 0, "qwen35_native.", kOp,
              ": x rows must be 16-byte aligned (a row stride that is a multiple of 8 elements), got strides ",
              shape_str(x.strides()));
  TORCH_CHECK(aligned16(x.data_ptr()), "qwen35_native.", kOp, ": x must start at a 16-byte aligned address");
  check_defined(kOp, "out", out);
  check_same_device(kOp, "out", out, x, "x");
  TORCH_CHECK(out.scalar_type() == x.scalar_type(), "qwen35_native.", kOp, ": out must have the dtype of x (",
              c10::toString(x.scalar_type()), "), got ", c10::toString(out.scalar_type()));
  const int64_t outputs = swiglu ? weight.size(0) / 2 : weight.size(0);
  check_shape(kOp, "out", out, {rows, outputs}, swiglu ? "[rows, weight rows / 2]" : "[rows, weight rows]");
  TORCH_CHECK(out.is_contiguous(), "qwen35_native.", kOp, ": out must be contiguous, got strides ",
              shape_str(out.strides()));
}

template <bool kOnCuda>
void skinny_linear_impl(const at::Tensor& x, const at::Tensor& weight, bool swiglu, at::Tensor& out) {
  check_skinny_linear_args(x, weight, swiglu, out);
  SkinnyLinearParams p{};
  p.rows = x.size(0);
  p.out_features = out.size(1);
  p.in_features = x.size(1);
  p.x_ptr = x.data_ptr();
  p.x_row_stride = x.size(0) <= 1 ? x.size(1) : x.stride(0);
  p.w_ptr = weight.data_ptr();
  p.y_ptr = out.data_ptr();
  p.swiglu = swiglu;
  dispatch_float_dtype(x.scalar_type(), kOp, [&](auto t_tag) {
    using T = typename decltype(t_tag)::type;
    if constexpr (!std::is_same_v<T, float>) {
      if constexpr (kOnCuda) {
#if defined(Q35_WITH_CUDA)
        const c10::cuda::CUDAGuard guard(x.device());
        int device = 0, sms = 0;
        const bool ok = cudaGetDevice(&device) == cudaSuccess &&
                        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess;
        p.num_sms = ok ? sms : 1;
        check_launch(q35::cuda::launch_skinny_linear<T>(p, c10::cuda::getCurrentCUDAStream()), kOp);
#endif
      } else {
        p.num_sms = 2;  // the emulator: test sizes reach both the per-warp and the split-K grids
        check_launch(q35::emu::launch_skinny_linear<T>(p, nullptr), kOp);
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(qwen35_native, CPU, m) { m.impl("skinny_linear", &skinny_linear_impl<false>); }

#if defined(Q35_WITH_CUDA)
TORCH_LIBRARY_IMPL(qwen35_native, CUDA, m) { m.impl("skinny_linear", &skinny_linear_impl<true>); }
#endif

}  // namespace q35::glue
