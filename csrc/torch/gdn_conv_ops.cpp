// Torch glue of the GDN elementwise-scale kernels: causal conv1d (prefill / decode update), gating, gated RMSNorm.
// Kernels: csrc/kernels/gdn/{causal_conv1d,gdn_gating,gated_rms_norm}.cu. Python: ops/gdn_conv.py, ops/gdn_layer.py.
// Tests: tests/kernels/test_gdn_conv.py, tests/kernels/test_gdn_norm_gating.py.
#include <torch/library.h>

#include "kernels/gdn/causal_conv1d.cuh"
#include "kernels/gdn/gated_rms_norm.cuh"
#include "kernels/gdn/gdn_gating.cuh"
#include "torch/dispatch.h"
#include "torch/gdn_glue.h"

namespace q35::glue::gdn {

// ---- causal conv1d ----

void check_conv_args(const char* op, const at::Tensor& x, const at::Tensor& weight, const at::Tensor* cu_seqlens,
                     const at::Tensor* conv_state, const at::Tensor* slots, const at::Tensor* has_initial,
                     bool update) {
  check_float(op, "x", x);
  check_dim(op, "x", x, 2);
  const int64_t T = x.size(0), C = x.size(1);
  check_rows(op, "x", x, x, T, C);
  check_defined(op, "weight", weight);
  check_same_device(op, "weight", weight, x, "x");
  check_dim(op, "weight", weight, 2);
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() || weight.scalar_type() == at::kFloat, "qwen35_native.", op,
              ": weight must have the dtype of x or float32, got ", c10::toString(weight.scalar_type()));
  TORCH_CHECK(weight.size(0) == C && weight.size(1) >= 2 && weight.size(1) <= 4, "qwen35_native.", op,
              ": weight must have shape [C=", C, ", W] with W in 2..4, got ", shape_str(weight.sizes()));
  TORCH_CHECK(weight.is_contiguous(), "qwen35_native.", op, ": weight must be contiguous");
  const int64_t W = weight.size(1);
  int64_t n = update ? T : 1;
  if (cu_seqlens) {
    check_defined(op, "cu_seqlens", *cu_seqlens);
    check_same_device(op, "cu_seqlens", *cu_seqlens, x, "x");
    check_dtype(op, "cu_seqlens", *cu_seqlens, {at::kInt, at::kLong});
    check_dim(op, "cu_seqlens", *cu_seqlens, 1);
    TORCH_CHECK(cu_seqlens->numel() >= 2 && cu_seqlens->is_contiguous(), "qwen35_native.", op,
                ": cu_seqlens must be a contiguous [N+1] tensor with N >= 1, got shape ",
                shape_str(cu_seqlens->sizes()));
    n = cu_seqlens->numel() - 1;
  }
  if (conv_state) {
    check_defined(op, "conv_state", *conv_state);
    check_same_device(op, "conv_state", *conv_state, x, "x");
    check_same_dtype(op, "conv_state", *conv_state, x, "x");
    check_dim(op, "conv_state", *conv_state, 3);
    TORCH_CHECK(conv_state->size(1) == C && conv_state->size(2) == W - 1 && conv_state->is_contiguous(),
                "qwen35_native.", op, ": conv_state must be a contiguous [num_slots, C=", C, ", W-1=", W - 1,
                "] tensor, got shape ", shape_str(conv_state->sizes()));
    TORCH_CHECK(slots, "qwen35_native.", op, ": slots must be given with conv_state");
    check_index(op, "slots", *slots, x, n);
  }
  if (has_initial) {
    TORCH_CHECK(conv_state, "qwen35_native.", op, ": has_initial_state must come with conv_state");
    check_same_device(op, "has_initial_state", *has_initial, x, "x");
    check_dtype(op, "has_initial_state", *has_initial, {at::kBool});
    check_shape(op, "has_initial_state", *has_initial, {n}, "[N]");
    TORCH_CHECK(has_initial->is_contiguous(), "qwen35_native.", op, ": has_initial_state must be contiguous");
  }
}

void run_conv(const char* op, const at::Tensor& x, const at::Tensor& weight, const at::Tensor* cu_seqlens,
              const at::Tensor* conv_state, const at::Tensor* slots, const at::Tensor* has_initial, bool silu,
              bool update, at::Tensor& y, const at::Tensor* out_slots) {
  CausalConv1dParams p{};
  p.num_tokens = x.size(0);
  p.channels = x.size(1);
  p.num_seqs = update ? x.size(0) : (cu_seqlens ? cu_seqlens->numel() - 1 : 1);
  p.width = static_cast<int>(weight.size(1));
  p.x_ptr = x.data_ptr();
  p.weight_ptr = weight.data_ptr();
  p.cu_seqlens_ptr = cu_seqlens ? cu_seqlens->data_ptr() : nullptr;
  p.slots_ptr = slots ? slots->data_ptr() : nullptr;
  p.has_initial_ptr = has_initial ? has_initial->data_ptr<bool>() : nullptr;
  p.out_slots_ptr = out_slots ? out_slots->data_ptr() : nullptr;
  p.conv_state_ptr = conv_state ? conv_state->data_ptr() : nullptr;
  p.y_ptr = y.data_ptr();
  p.x_row_stride = p.num_tokens > 1 ? x.stride(0) : p.channels;
  p.weight_fp32 = weight.scalar_type() == at::kFloat;
  p.cu_seqlens_int64 = cu_seqlens && cu_seqlens->scalar_type() == at::kLong;
  p.slots_int64 = slots && slots->scalar_type() == at::kLong;
  p.silu = silu;
  dispatch_float_dtype(x.scalar_type(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (x.is_cuda()) {
#if defined(Q35_WITH_CUDA)
      const c10::cuda::CUDAGuard guard(x.device());
      auto stream = c10::cuda::getCurrentCUDAStream();
      check_launch(update ? q35::cuda::launch_causal_conv1d_update<T>(p, stream)
                          : q35::cuda::launch_causal_conv1d_fwd<T>(p, stream), op);
#endif
    } else {
      check_launch(update ? q35::emu::launch_causal_conv1d_update<T>(p, nullptr)
                          : q35::emu::launch_causal_conv1d_fwd<T>(p, nullptr), op);
    }
  });
}

namespace {

void causal_conv1d_impl(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& cu,
                        const std::optional<at::Tensor>& conv_state, const std::optional<at::Tensor>& slots,
                        const std::optional<at::Tensor>& has_initial, bool silu, at::Tensor& y) {
  constexpr const char* op = "causal_conv1d";
  const at::Tensor* cu_p = cu ? &*cu : nullptr;
  const at::Tensor* st_p = conv_state ? &*conv_state : nullptr;
  const at::Tensor* sl_p = slots ? &*slots : nullptr;
  const at::Tensor* hi_p = has_initial ? &*has_initial : nullptr;
  check_conv_args(op, x, weight, cu_p, st_p, sl_p, hi_p, false);
  check_out(op, "y", y, x, x.sizes(), x.scalar_type());
  run_conv(op, x, weight, cu_p, st_p, sl_p, hi_p, silu, false, y);
}

void causal_conv1d_update_impl(const at::Tensor& x, at::Tensor& conv_state, const at::Tensor& weight,
                               const at::Tensor& slots, bool silu, at::Tensor& y) {
  constexpr const char* op = "causal_conv1d_update";
  check_conv_args(op, x, weight, nullptr, &conv_state, &slots, nullptr, true);
  check_out(op, "y", y, x, x.sizes(), x.scalar_type());
  run_conv(op, x, weight, nullptr, &conv_state, &slots, nullptr, silu, true, y);
}

// ---- gating ----

void gdn_gating_impl(const at::Tensor& a, const at::Tensor& b, const at::Tensor& a_log, const at::Tensor& dt_bias,
                     at::Tensor& g, at::Tensor& beta) {
  constexpr const char* op = "gdn_gating";
  check_float(op, "a", a);
  check_dim(op, "a", a, 2);
  const int64_t rows = a.size(0), hv = a.size(1);
  GdnGatingParams p{};
  p.num_rows = rows;
  p.num_heads = hv;
  p.a_row_stride = check_rows(op, "a", a, a, rows, hv);
  p.b_row_stride = check_rows(op, "b", b, a, rows, hv);
  check_param(op, "A_log", a_log, a, hv);
  check_param(op, "dt_bias", dt_bias, a, hv);
  check_out(op, "g", g, a, {rows, hv}, at::kFloat);
  check_out(op, "beta", beta, a, {rows, hv}, a.scalar_type());
  p.a_ptr = a.data_ptr();
  p.b_ptr = b.data_ptr();
  p.a_log_ptr = a_log.data_ptr();
  p.dt_bias_ptr = dt_bias.data_ptr();
  p.g_ptr = g.data_ptr<float>();
  p.beta_ptr = beta.data_ptr();
  p.a_log_fp32 = a_log.scalar_type() == at::kFloat;
  p.dt_bias_fp32 = dt_bias.scalar_type() == at::kFloat;
  dispatch_float_dtype(a.scalar_type(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (a.is_cuda()) {
#if defined(Q35_WITH_CUDA)
      const c10::cuda::CUDAGuard guard(a.device());
      check_launch(q35::cuda::launch_gdn_gating<T>(p, c10::cuda::getCurrentCUDAStream()), op);
#endif
    } else {
      check_launch(q35::emu::launch_gdn_gating<T>(p, nullptr), op);
    }
  });
}

// ---- gated RMSNorm ----

void gated_rms_norm_impl(const at::Tensor& x, const at::Tensor& z, const at::Tensor& weight, double eps,
                         at::Tensor& y) {
  constexpr const char* op = "gated_rms_norm";
  check_float(op, "x", x);
  check_dim(op, "x", x, 2);
  TORCH_CHECK(eps >= 0.0, "qwen35_native.", op, ": eps must be >= 0, got ", eps);
  const int64_t rows = x.size(0), hidden = x.size(1);
  GatedRmsNormParams p{};
  p.num_rows = rows;
  p.hidden_size = hidden;
  p.x_row_stride = check_rows(op, "x", x, x, rows, hidden);
  p.z_row_stride = check_rows(op, "z", z, x, rows, hidden);
  check_param(op, "weight", weight, x, hidden);
  check_out(op, "y", y, x, {rows, hidden}, x.scalar_type());
  p.x_ptr = x.data_ptr();
  p.z_ptr = z.data_ptr();
  p.weight_ptr = weight.data_ptr();
  p.y_ptr = y.data_ptr();
  p.eps = static_cast<float>(eps);
  p.weight_fp32 = weight.scalar_type() == at::kFloat;
  dispatch_float_dtype(x.scalar_type(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (x.is_cuda()) {
#if defined(Q35_WITH_CUDA)
      const c10::cuda::CUDAGuard guard(x.device());
      check_launch(q35::cuda::launch_gated_rms_norm<T>(p, c10::cuda::getCurrentCUDAStream()), op);
#endif
    } else {
      check_launch(q35::emu::launch_gated_rms_norm<T>(p, nullptr), op);
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(qwen35_native, CPU, m) {
  m.impl("causal_conv1d", &causal_conv1d_impl);
  m.impl("causal_conv1d_update", &causal_conv1d_update_impl);
  m.impl("gdn_gating", &gdn_gating_impl);
  m.impl("gated_rms_norm", &gated_rms_norm_impl);
}

#if defined(Q35_WITH_CUDA)
TORCH_LIBRARY_IMPL(qwen35_native, CUDA, m) {
  m.impl("causal_conv1d", &causal_conv1d_impl);
  m.impl("causal_conv1d_update", &causal_conv1d_update_impl);
  m.impl("gdn_gating", &gdn_gating_impl);
  m.impl("gated_rms_norm", &gated_rms_norm_impl);
}
#endif

}  // namespace q35::glue::gdn
