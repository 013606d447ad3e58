// Torch glue of the pre-attention kernel: argument checks, params, CPU (emulator) and CUDA implementations.
// Kernel: csrc/kernels/attention/attention_prep.cu. Python: python/qwen35_native/ops/attention_prep.py.
// Tests: tests/kernels/test_attention_prep.py.
#include <torch/library.h>

#include "kernels/attention/attention_prep.cuh"
#include "torch/checks.h"
#include "torch/device_guard.h"
#include "torch/dispatch.h"

namespace q35::glue {
namespace {

constexpr const char* kOp = "attention_prep";
constexpr int64_t kMaxInt = (int64_t{1} << 31) - 1;

struct PrepDims {
  int64_t T, Hq, Hkv, D, R;
};

void check_contiguous(const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.is_contiguous(), "qwen35_native.", kOp, ": ", name, " must be contiguous, got strides ",
              shape_str(t.strides()));
}

PrepDims check_attention_prep_args(const at::Tensor& qkv, const at::Tensor& q_norm_weight,
                                   const at::Tensor& k_norm_weight, const at::Tensor& positions,
                                   const at::Tensor& k_cache, const at::Tensor& v_cache,
                                   const at::Tensor& slot_mapping, const at::Tensor& inv_freq,
                                   c10::IntArrayRef mrope_section, const at::Tensor& q_out,
                                   const at::Tensor& gate_out) {
  check_dtype(kOp, "qkv", qkv, {at::kFloat, at::kHalf, at::kBFloat16});
  check_dim(kOp, "qkv", qkv, 2);
  check_last_dim_contiguous(kOp, "qkv", qkv);
  check_dim(kOp, "q_norm_weight", q_norm_weight, 1);
  const int64_t D = q_norm_weight.size(0);
  for (const auto* w : {&q_norm_weight, &k_norm_weight}) {
    const char* name = w == &q_norm_weight ? "q_norm_weight" : "k_norm_weight";
    TORCH_CHECK(w->scalar_type() == qkv.scalar_type() || w->scalar_type() == at::kFloat, "qwen35_native.", kOp, ": ",
                name, " must have the dtype of qkv (", c10::toString(qkv.scalar_type()), ") or float32, got ",
                c10::toString(w->scalar_type()));
    check_shape(kOp, name, *w, {D}, "[head_dim]");
    check_contiguous(name, *w);
  }
  TORCH_CHECK(k_norm_weight.scalar_type() == q_norm_weight.scalar_type(), "qwen35_native.", kOp,
              ": k_norm_weight must have the dtype of q_norm_weight, got ", c10::toString(k_norm_weight.scalar_type()));
  check_dim(kOp, "k_cache", k_cache, 4);
  check_dtype(kOp, "k_cache", k_cache, {qkv.scalar_type()});
  check_dtype(kOp, "v_cache", v_cache, {qkv.scalar_type()});
  check_shape(kOp, "v_cache", v_cache, k_cache.sizes(), "k_cache.shape");
  TORCH_CHECK(k_cache.size(3) == D, "qwen35_native.", kOp, ": k_cache must have head_dim=", D,
              " in its last dimension, got shape ", shape_str(k_cache.sizes()));
  check_contiguous("k_cache", k_cache);
  check_contiguous("v_cache", v_cache);
  const int64_t T = qkv.size(0);
  const int64_t Hkv = k_cache.size(2);
  const int64_t width = qkv.size(1) - 2 * Hkv * D;
  TORCH_CHECK(D > 0 && Hkv > 0 && width > 0 && width % (2 * D) == 0, "qwen35_native.", kOp, ": qkv width ",
              qkv.size(1), " must be (2*Hq + 2*Hkv)*D with Hkv=", Hkv, ", D=", D);
  const int64_t Hq = width / (2 * D);
  check_dtype(kOp, "positions", positions, {at::kLong});
  check_shape(kOp, "positions", positions, {3, T}, "[3, T]");
  check_dtype(kOp, "slot_mapping", slot_mapping, {at::kLong});
  check_shape(kOp, "slot_mapping", slot_mapping, {T}, "[T]");
  check_dtype(kOp, "inv_freq", inv_freq, {at::kFloat});
  check_dim(kOp, "inv_freq", inv_freq, 1);
  check_contiguous("inv_freq", inv_freq);
  const int64_t R = 2 * inv_freq.size(0);
  TORCH_CHECK(R > 0 && R <= D, "qwen35_native.", kOp, ": inv_freq must have rotary_dim/2 entries with rotary_dim in (0, ",
              "head_dim=", D, "], got ", inv_freq.size(0));
  TORCH_CHECK(mrope_section.size() == 3 && mrope_section[0] + mrope_section[1] + mrope_section[2] == R / 2 &&
                  mrope_section[0] >= 0 && mrope_section[1] >= 0 && mrope_section[2] >= 0,
              "qwen35_native.", kOp, ": mrope_section must be 3 ints summing to rotary_dim/2=", R / 2, ", got ",
              shape_str(mrope_section));
  check_dtype(kOp, "q_out", q_out, {qkv.scalar_type()});
  check_shape(kOp, "q_out", q_out, {T, Hq, D}, "[T, Hq, D]");
  check_contiguous("q_out", q_out);
  check_dtype(kOp, "gate_out", gate_out, {qkv.scalar_type()});
  check_shape(kOp, "gate_out", gate_out, {T, Hq * D}, "[T, Hq*D]");
  check_contiguous("gate_out", gate_out);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"q_norm_weight", &q_norm_weight},
                                {"k_norm_weight", &k_norm_weight}, {"positions", &positions}, {"k_cache", &k_cache},
                                {"v_cache", &v_cache}, {"slot_mapping", &slot_mapping}, {"inv_freq", &inv_freq},
                                {"q_out", &q_out}, {"gate_out", &gate_out}}) {
    check_same_device(kOp, name, *t, qkv, "qkv");
  }
  TORCH_CHECK(T <= kMaxInt, "qwen35_native.", kOp, ": qkv must have < 2^31 rows, got ", T);
  if (slot_mapping.device().is_cpu() && T > 0) {  // the emulator would write outside the cache
    const int64_t slots = k_cache.size(0) * k_cache.size(1);
    const int64_t hi = slot_mapping.max().item<int64_t>();
    TORCH_CHECK(hi < slots, "qwen35_native.", kOp, ": slot_mapping values must be negative (skip) or in [0, "
                "num_blocks*block_size=", slots, "), got max ", hi);
  }
  return {T, Hq, Hkv, D, R};
}

template <bool kOnCuda>
void attention_prep_impl(const at::Tensor& qkv, const at::Tensor& q_norm_weight, const at::Tensor& k_norm_weight,
                         const at::Tensor& positions, at::Tensor& k_cache, at::Tensor& v_cache,
                         const at::Tensor& slot_mapping, const at::Tensor& inv_freq, c10::IntArrayRef mrope_section,
                         double eps, at::Tensor& q_out, at::Tensor& gate_out) {
  const PrepDims d = check_attention_prep_args(qkv, q_norm_weight, k_norm_weight, positions, k_cache, v_cache,
                                               slot_mapping, inv_freq, mrope_section, q_out, gate_out);
  TORCH_CHECK(eps >= 0.0, "qwen35_native.", kOp, ": eps must be >= 0, got ", eps);
  AttentionPrepParams p{};
  p.num_tokens = d.T;
  p.num_q_heads = static_cast<int>(d.Hq);
  p.num_kv_heads = static_cast<int>(d.Hkv);
  p.head_dim = static_cast<int>(d.D);
  p.rotary_dim = static_cast<int>(d.R);
  p.mrope_h_slots = static_cast<int>(3 * mrope_section[1]);
  p.mrope_w_slots = static_cast<int>(3 * mrope_section[2]);
  p.qkv_ptr = qkv.data_ptr();
  p.q_norm_weight_ptr = q_norm_weight.data_ptr();
  p.k_norm_weight_ptr = k_norm_weight.data_ptr();
  p.positions_ptr = positions.data_ptr<int64_t>();
  p.slot_mapping_ptr = slot_mapping.data_ptr<int64_t>();
  p.inv_freq_ptr = inv_freq.data_ptr<float>();
  p.k_cache_ptr = k_cache.data_ptr();
  p.v_cache_ptr = v_cache.data_ptr();
  p.q_out_ptr = q_out.data_ptr();
  p.gate_out_ptr = gate_out.data_ptr();
  p.qkv_row_stride = qkv.stride(0);
  p.positions_stream_stride = positions.stride(0);
  p.positions_token_stride = positions.stride(1);
  p.eps = static_cast<float>(eps);
  dispatch_float_dtype_and_param(qkv.scalar_type(), q_norm_weight.scalar_type(), kOp, [&](auto t_tag, auto w_tag) {
    using T = typename decltype(t_tag)::type;
    using W = typename decltype(w_tag)::type;
    if constexpr (kOnCuda) {
#if defined(Q35_WITH_CUDA)
      const c10::cuda::CUDAGuard guard(qkv.device());
      check_launch(q35::cuda::launch_attention_prep<T, W>(p, c10::cuda::getCurrentCUDAStream()), kOp);
#endif
    } else {
      check_launch(q35::emu::launch_attention_prep<T, W>(p, nullptr), kOp);
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(qwen35_native, CPU, m) { m.impl("attention_prep", &attention_prep_impl<false>); }

#if defined(Q35_WITH_CUDA)
TORCH_LIBRARY_IMPL(qwen35_native, CUDA, m) { m.impl("attention_prep", &attention_prep_impl<true>); }
#endif

}  // namespace q35::glue
