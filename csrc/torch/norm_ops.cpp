// Torch glue of the norm kernels: argument checks, params, CPU (emulator) and CUDA implementations.
// Kernel: csrc/kernels/norm/rms_norm.cu. Python: python/qwen35_native/ops/norm.py. Tests: tests/kernels/test_norm.py.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "kernels/norm/rms_norm.cuh"
#include "torch/checks.h"
#include "torch/device_guard.h"
#include "torch/dispatch.h"

namespace q35::glue {
namespace {

constexpr const char* kOp = "rms_norm";
constexpr const char* kAddOp = "fused_add_rms_norm";

void check_rms_norm_args(const char* op, const at::Tensor& x, const at::Tensor& weight,
                         const at::Tensor* residual, double eps) {
  check_defined(op, "x", x);
  check_defined(op, "weight", weight);
  check_dtype(op, "x", x, {at::kFloat, at::kHalf, at::kBFloat16});
  TORCH_CHECK(x.dim() >= 1, "qwen35_native.", op, ": x must have at least 1 dimension [..., hidden_size], got a scalar");
  const int64_t hidden = x.size(-1);
  check_same_device(op, "weight", weight, x, "x");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() || weight.scalar_type() == at::kFloat, "qwen35_native.", op,
              ": weight must have the dtype of x (", c10::toString(x.scalar_type()), ") or float32, got ",
              c10::toString(weight.scalar_type()));
  check_shape(op, "weight", weight, {hidden}, "[hidden_size]");
  TORCH_CHECK(weight.is_contiguous(), "qwen35_native.", op, ": weight must be contiguous, got strides ",
              shape_str(weight.strides()));
  check_last_dim_contiguous(op, "x", x);
  int64_t stride = 0;
  TORCH_CHECK(rows_have_uniform_stride(x, &stride), "qwen35_native.", op,
              ": x must collapse to rows [num_rows, hidden_size] with one row stride, got shape ", shape_str(x.sizes()),
              " strides ", shape_str(x.strides()));
  TORCH_CHECK(eps >= 0.0, "qwen35_native.", op, ": eps must be >= 0, got ", eps);
  if (residual) {
    check_defined(op, "residual", *residual);
    check_same_device(op, "residual", *residual, x, "x");
    TORCH_CHECK(residual->scalar_type() == x.scalar_type(), "qwen35_native.", op, ": residual must have the dtype of x (",
                c10::toString(x.scalar_type()), "), got ", c10::toString(residual->scalar_type()));
    check_shape(op, "residual", *residual, x.sizes(), "x.shape");
    check_last_dim_contiguous(op, "residual", *residual);
    TORCH_CHECK(rows_have_uniform_stride(*residual, &stride), "qwen35_native.", op,
                ": residual must collapse to rows [num_rows, hidden_size] with one row stride, got strides ",
                shape_str(residual->strides()));
  }
}

RmsNormParams make_rms_norm_params(const at::Tensor& x, const at::Tensor& weight, const at::Tensor* residual,
                                   at::Tensor& y, at::Tensor* residual_out, double eps) {
  RmsNormParams p{};
  p.hidden_size = x.size(-1);
  p.num_rows = p.hidden_size == 0 ? 0 : x.numel() / p.hidden_size;
  p.x_ptr = x.data_ptr();
  p.weight_ptr = weight.data_ptr();
  p.y_ptr = y.data_ptr();
  rows_have_uniform_stride(x, &p.x_row_stride);
  if (residual) {
    p.residual_ptr = residual->data_ptr();
    p.residual_out_ptr = residual_out->data_ptr();
    rows_have_uniform_stride(*residual, &p.residual_row_stride);
  }
  p.eps = static_cast<float>(eps);
  return p;
}

template <bool kOnCuda>
void run_rms_norm(const RmsNormParams& p, const at::Tensor& x, const at::Tensor& weight, const char* op) {
  dispatch_float_dtype_and_param(x.scalar_type(), weight.scalar_type(), op, [&](auto t_tag, auto w_tag) {
    using T = typename decltype(t_tag)::type;
    using W = typename decltype(w_tag)::type;
    if constexpr (kOnCuda) {
#if defined(Q35_WITH_CUDA)
      const c10::cuda::CUDAGuard guard(x.device());
      check_launch(q35::cuda::launch_rms_norm<T, W>(p, c10::cuda::getCurrentCUDAStream()), op);
#endif
    } else {
      check_launch(q35::emu::launch_rms_norm<T, W>(p, nullptr), op);  // the CUDA source on the SIMT emulator
    }
  });
}

template <bool kOnCuda>
at::Tensor rms_norm_impl(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_rms_norm_args(kOp, x, weight, nullptr, eps);
  at::Tensor y = at::empty(x.sizes(), x.options());
  const RmsNormParams p = make_rms_norm_params(x, weight, nullptr, y, nullptr, eps);
  run_rms_norm<kOnCuda>(p, x, weight, kOp);
  return y;
}

template <bool kOnCuda>
std::tuple<at::Tensor, at::Tensor> fused_add_rms_norm_impl(const at::Tensor& x, const at::Tensor& residual,
                                                           const at::Tensor& weight, double eps) {
  check_rms_norm_args(kAddOp, x, weight, &residual, eps);
  at::Tensor y = at::empty(x.sizes(), x.options());
  at::Tensor residual_out = at::empty(x.sizes(), x.options());
  const RmsNormParams p = make_rms_norm_params(x, weight, &residual, y, &residual_out, eps);
  run_rms_norm<kOnCuda>(p, x, weight, kAddOp);
  return {y, residual_out};
}

}  // namespace

TORCH_LIBRARY_IMPL(qwen35_native, CPU, m) {
  m.impl("rms_norm", &rms_norm_impl<false>);
  m.impl("fused_add_rms_norm", &fused_add_rms_norm_impl<false>);
}

#if defined(Q35_WITH_CUDA)
TORCH_LIBRARY_IMPL(qwen35_native, CUDA, m) {
  m.impl("rms_norm", &rms_norm_impl<true>);
  m.impl("fused_add_rms_norm", &fused_add_rms_norm_impl<true>);
}
#endif

}  // namespace q35::glue
