// Torch glue of the layer-level GDN entry points the model calls (python/qwen35_native/ops/gdn_layer.py):
//   gdn_prefill: causal conv1d (states by slot) -> chunked scan with gates, L2 norm and gated RMSNorm fused
//                (ssm states by slot, in place): 2 kernels (plus the plan / pre-pass / chain kernels when split);
//   gdn_decode:  conv update -> recurrent step with gates, L2 norm and gated RMSNorm fused: 2 kernels; on sm_90 one
//                (the conv inside the recurrent kernel's clusters) where gdn_decode_fuses_conv allows.
// Kernels: csrc/kernels/gdn/. Tests: tests/kernels/test_gdn_layer.py.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "torch/gdn_glue.h"

namespace q35::glue::gdn {
namespace {

struct LayerDims {
  int64_t tokens, conv_dim, hk, hv;
};

LayerDims check_layer_args(const char* op, const at::Tensor& x, const at::Tensor& z, const at::Tensor& a,
                           const at::Tensor& b, const at::Tensor& a_log, const at::Tensor& dt_bias,
                           const at::Tensor& norm_weight, const at::Tensor& ssm_state) {
  check_float(op, "mixed_qkv", x);
  check_dim(op, "mixed_qkv", x, 2);
  check_defined(op, "A_log", a_log);
  check_defined(op, "norm_weight", norm_weight);
  const int64_t hv = a_log.numel();
  TORCH_CHECK(norm_weight.numel() == kHeadDim, "qwen35_native.", op, ": norm_weight must have V=128 entries (the "
              "kernels' value head dim), got ", norm_weight.numel());
  check_defined(op, "ssm_state", ssm_state);
  check_dim(op, "ssm_state", ssm_state, 4);
  const int64_t T = x.size(0), conv_dim = x.size(1);
  TORCH_CHECK(hv > 0 && conv_dim > hv * kHeadDim && (conv_dim - hv * kHeadDim) % (2 * kHeadDim) == 0,
              "qwen35_native.", op, ": mixed_qkv width must be 2*Hk*128 + Hv*128 with Hv=", hv, " (A_log), got ",
              conv_dim);
  const int64_t hk = (conv_dim - hv * kHeadDim) / (2 * kHeadDim);
  TORCH_CHECK(hv % hk == 0, "qwen35_native.", op, ": value heads Hv=", hv, " must be a multiple of key heads Hk=", hk);
  check_state(op, "ssm_state", ssm_state, x, hv);
  check_rows(op, "z", z, x, T, hv * kHeadDim);
  check_rows(op, "a", a, x, T, hv);
  check_rows(op, "b", b, x, T, hv);
  check_param(op, "A_log", a_log, x, hv);
  check_param(op, "dt_bias", dt_bias, x, hv);
  check_param(op, "norm_weight", norm_weight, x, kHeadDim);
  return {T, conv_dim, hk, hv};
}

const void* at_offset(const at::Tensor& t, int64_t elements) {
  return static_cast<const char*>(t.data_ptr()) + elements * t.element_size();
}

// The fields shared by both layer ops: q/k/v views of the conv output y, raw gates, norm, states by slot.
template <typename P>
void fill_layer(P& p, const LayerDims& d, const at::Tensor& y, const at::Tensor& z, const at::Tensor& a,
                const at::Tensor& b, const at::Tensor& a_log, const at::Tensor& dt_bias,
                const at::Tensor& norm_weight, at::Tensor& ssm_state, const at::Tensor& slots, at::Tensor& out,
                double eps) {
  p.num_tokens = d.tokens;
  p.num_k_heads = static_cast<int>(d.hk);
  p.num_v_heads = static_cast<int>(d.hv);
  p.q_ptr = y.data_ptr();
  p.k_ptr = at_offset(y, d.hk * kHeadDim);
  p.v_ptr = at_offset(y, 2 * d.hk * kHeadDim);
  p.q_token_stride = p.k_token_stride = p.v_token_stride = d.conv_dim;
  p.g_ptr = a.data_ptr();
  p.beta_ptr = b.data_ptr();
  p.g_token_stride = d.tokens > 1 ? a.stride(0) : d.hv;
  p.beta_token_stride = d.tokens > 1 ? b.stride(0) : d.hv;
  p.raw_gates = true;
  p.a_log_ptr = a_log.data_ptr();
  p.dt_bias_ptr = dt_bias.data_ptr();
  p.a_log_fp32 = a_log.scalar_type() == at::kFloat;
  p.dt_bias_fp32 = dt_bias.scalar_type() == at::kFloat;
  p.state_in_slots = p.state_out_slots = slots.data_ptr();
  p.slots_int64 = slots.scalar_type() == at::kLong;
  p.state_in_ptr = ssm_state.data_ptr<float>();
  p.state_out_ptr = ssm_state.data_ptr<float>();
  p.z_ptr = z.data_ptr();
  p.z_token_stride = d.tokens > 1 ? z.stride(0) : d.hv * kHeadDim;
  p.norm_weight_ptr = norm_weight.data_ptr();
  p.norm_weight_fp32 = norm_weight.scalar_type() == at::kFloat;
  p.out_ptr = out.data_ptr();
  p.out_token_stride = d.hv * kHeadDim;
  p.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  p.eps = static_cast<float>(eps);
  p.l2norm = true;
}

void gdn_prefill_impl(const at::Tensor& x, const at::Tensor& z, const at::Tensor& a, const at::Tensor& b,
                      const at::Tensor& conv_weight, const at::Tensor& a_log, const at::Tensor& dt_bias,
                      const at::Tensor& norm_weight, at::Tensor& conv_state, at::Tensor& ssm_state,
                      const at::Tensor& cu_seqlens, const at::Tensor& slots, const at::Tensor& has_initial_state,
                      double eps, int64_t segment_len, double shortcut_log_decay, at::Tensor& out) {
  constexpr const char* op = "gdn_prefill";
  const LayerDims d = check_layer_args(op, x, z, a, b, a_log, dt_bias, norm_weight, ssm_state);
  check_conv_args(op, x, conv_weight, &cu_seqlens, &conv_state, &slots, &has_initial_state, false);
  TORCH_CHECK(ssm_state.size(0) == conv_state.size(0), "qwen35_native.", op,
              ": ssm_state and conv_state must have the same number of slots");
  TORCH_CHECK(segment_len >= 0, "qwen35_native.", op, ": segment_len must be >= 0 (0: automatic), got ", segment_len);
  check_out(op, "out", out, x, {d.tokens, d.hv * kHeadDim}, x.scalar_type());
  at::Tensor y = at::empty({d.tokens, d.conv_dim}, x.options());  // conv + SiLU output: q | k | v
  run_conv(op, x, conv_weight, &cu_seqlens, &conv_state, &slots, &has_initial_state, true, false, y);
  GdnChunkParams p{};
  fill_layer(p, d, y, z, a, b, a_log, dt_bias, norm_weight, ssm_state, slots, out, eps);
  p.num_seqs = cu_seqlens.numel() - 1;
  p.cu_seqlens_ptr = cu_seqlens.data_ptr();
  p.cu_seqlens_int64 = cu_seqlens.scalar_type() == at::kLong;
  p.has_initial_ptr = has_initial_state.data_ptr<bool>();
  p.z_vec = aligned16(z.data_ptr()) && (p.z_token_stride * z.element_size()) % 16 == 0;
  p.shortcut_log_decay = static_cast<float>(shortcut_log_decay);
  ChunkWorkspace ws;
  run_chunk(op, p, y, segment_len, ws);
}

void gdn_decode_impl(const at::Tensor& x, const at::Tensor& z, const at::Tensor& a, const at::Tensor& b,
                     const at::Tensor& conv_weight, const at::Tensor& a_log, const at::Tensor& dt_bias,
                     const at::Tensor& norm_weight, at::Tensor& conv_state, at::Tensor& ssm_state,
                     const at::Tensor& slots, double eps, at::Tensor& out,
                     const std::optional<at::Tensor>& out_slots) {
  constexpr const char* op = "gdn_decode";
  const LayerDims d = check_layer_args(op, x, z, a, b, a_log, dt_bias, norm_weight, ssm_state);
  check_conv_args(op, x, conv_weight, nullptr, &conv_state, &slots, nullptr, true);
  TORCH_CHECK(ssm_state.size(0) == conv_state.size(0), "qwen35_native.", op,
              ": ssm_state and conv_state must have the same number of slots");
  check_out(op, "out", out, x, {d.tokens, d.hv * kHeadDim}, x.scalar_type());
  if (out_slots) {  // the new states go to other slots (speculative verification); same form as slots
    check_same_device(op, "out_slots", *out_slots, x, "mixed_qkv");
    check_dtype(op, "out_slots", *out_slots, {slots.scalar_type()});
    check_shape(op, "out_slots", *out_slots, {d.tokens}, "[N] (the dtype of slots)");
    TORCH_CHECK(out_slots->is_contiguous(), "qwen35_native.", op, ": out_slots must be contiguous");
  }
  GdnRecurrentParams p{};
  fill_layer(p, d, x, z, a, b, a_log, dt_bias, norm_weight, ssm_state, slots, out, eps);  // q / k / v: below
  if (out_slots) p.state_out_slots = out_slots->data_ptr();
  p.num_seqs = d.tokens;
  p.tokens_per_seq = 1;
  const bool fusable = (x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf) &&
                       conv_weight.size(1) == 4 && aligned16(x.data_ptr()) && aligned16(conv_state.data_ptr()) &&
                       (d.tokens == 1 || (x.stride(0) * x.element_size()) % 16 == 0);
  plan_recurrent(p, x, fusable);
  at::Tensor y;
  if (p.fuse_conv) {  // the recurrent kernel convolves the token itself (sm_90 clusters; gdn_recurrent.cuh)
    p.conv_x_ptr = x.data_ptr();
    p.conv_x_row_stride = d.tokens > 1 ? x.stride(0) : d.conv_dim;
    p.conv_weight_ptr = conv_weight.data_ptr();
    p.conv_weight_fp32 = conv_weight.scalar_type() == at::kFloat;
    p.conv_state_ptr = conv_state.data_ptr();
  } else {
    y = at::empty({d.tokens, d.conv_dim}, x.options());
    run_conv(op, x, conv_weight, nullptr, &conv_state, &slots, nullptr, true, true, y,
             out_slots ? &*out_slots : nullptr);
    fill_layer(p, d, y, z, a, b, a_log, dt_bias, norm_weight, ssm_state, slots, out, eps);
    if (out_slots) p.state_out_slots = out_slots->data_ptr();
  }
  at::Tensor counters;
  run_recurrent(op, p, x, counters);
}

}  // namespace

TORCH_LIBRARY_IMPL(qwen35_native, CPU, m) {
  m.impl("gdn_prefill", &gdn_prefill_impl);
  m.impl("gdn_decode", &gdn_decode_impl);
}

#if defined(Q35_WITH_CUDA)
TORCH_LIBRARY_IMPL(qwen35_native, CUDA, m) {
  m.impl("gdn_prefill", &gdn_prefill_impl);
  m.impl("gdn_decode", &gdn_decode_impl);
}
#endif

}  // namespace q35::glue::gdn
