// Torch glue of the gated delta rule scans with flash-linear-attention conventions: chunk_gated_delta_rule
// (chunked prefill) and fused_recurrent_gated_delta_rule (token by token, optional intermediate states), on
// packed [T, H, 128] tensors (python/qwen35_native/ops/gdn.py packs [B, T, ...] inputs).
// Kernels: csrc/kernels/gdn/gdn_chunk*.cu, gdn_recurrent.cu. Tests: tests/kernels/test_gdn_chunk*.py,
// tests/kernels/test_gdn_recurrent.py.
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>

#include "kernels/gdn/gdn_chunk.cuh"
#include "kernels/gdn/gdn_recurrent.cuh"
#include "torch/dispatch.h"
#include "torch/gdn_glue.h"
#include "torch/sm90a_policy.h"

namespace q35::glue::gdn {

int num_sms(const at::Tensor& t) {
#if defined(Q35_WITH_CUDA)
  if (t.is_cuda()) {
    constexpr int kMaxDevices = 64;
    static int cache[kMaxDevices] = {};
    const int dev = t.get_device();
    if (dev < kMaxDevices && cache[dev] == 0) {
      int count = 0;
      TORCH_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess,
                  "qwen35_native: cannot query the multiprocessor count of cuda:", dev);
      cache[dev] = count;
    }
    return dev < kMaxDevices ? cache[dev] : kNominalSms;
  }
#endif
  (void)t;
  return kNominalSms;
}

namespace {

// Whether the sm_90a chunk kernels run where ref is: an sm_90 GPU, or the emulator at arch sm_90.
bool chunk_sm90a_runs(const at::Tensor& ref) {
  if (ref.is_cuda()) {
#if defined(Q35_WITH_CUDA)
    const c10::cuda::CUDAGuard guard(ref.device());
    return q35::cuda::gdn_chunk_sm90a_available();
#else
    return false;
#endif
  }
  return q35::emu::gdn_chunk_sm90a_available();
}

}  // namespace

int check_chunk_arch(const char* op, int64_t arch, const at::Tensor& ref) {
  TORCH_CHECK(arch == kGdnImplAuto || arch == kGdnImplSm80 || arch == kGdnImplSm90a || arch == kGdnImplSm90aPrepass,
              "qwen35_native.", op,
              ": arch must be 0 (automatic), 80 (the mma.sync kernel), 90 (the sm_90a wgmma kernel) or 91 (the sm_90a "
              "kernel after a chunk-local pre-pass), got ",
              arch);
  if (arch == kGdnImplSm90a || arch == kGdnImplSm90aPrepass) {
    TORCH_CHECK(chunk_sm90a_runs(ref), "qwen35_native.", op, ": arch ", arch, " (the sm_90a kernel) needs ",
                ref.is_cuda() ? "an sm_90 GPU (H100/H200), got another device" : "the emulator at arch sm_90, got sm_80");
  }
  return static_cast<int>(arch);
}

void run_chunk(const char* op, GdnChunkParams& p, const at::Tensor& ref, int64_t segment_len, ChunkWorkspace& ws) {
  if (p.impl == kGdnImplAuto) {
    if (!sm90a_auto(ref.is_cuda())) {
      p.impl = kGdnImplSm80;
    } else if (gdn_prepass_auto() && chunk_sm90a_runs(ref)) {
      p.impl = kGdnImplSm90aPrepass;
    }
  }
  const GdnChunkPlan plan = gdn_chunk_plan(p.num_tokens, p.num_seqs, p.num_v_heads, num_sms(ref), segment_len);
  p.segment_len = plan.segment_len;
  p.max_items = plan.max_items;
  p.split = plan.split;
  p.max_warmup_chunks = kGdnMaxWarmupChunks;
  if (plan.split) {
    const auto f32 = ref.options().dtype(at::kFloat);
    const int64_t items = plan.max_items, hv = p.num_v_heads;
    ws.plan = at::empty({items, hv}, ref.options().dtype(at::kInt));
    ws.entry = at::empty({items, hv, kHeadDim, kHeadDim}, f32);
    ws.local = at::empty({items, hv, kHeadDim, kHeadDim}, f32);
    ws.trans = at::empty({items, hv, kHeadDim, kHeadDim}, f32);
    p.plan_ptr = ws.plan.data_ptr<int>();
    p.ws_entry_ptr = ws.entry.data_ptr<float>();
    p.ws_local_ptr = ws.local.data_ptr<float>();
    p.ws_trans_ptr = ws.trans.data_ptr<float>();
  }
  if (p.impl == kGdnImplSm90aPrepass) {  // per chunk slot: Tu, P, -w, factors per value head, q, K^T per k head
    const int64_t slots = gdn_chunk_slots(p.num_tokens, p.num_seqs), hv = p.num_v_heads;
    const int64_t rows = std::max(slots * hv * kGdnChunkTokens, slots * p.num_k_heads * kHeadDim);  // Tu / K^T rows
    TORCH_CHECK(rows < (int64_t{1} << 31), "qwen35_native.", op,
                ": the chunk-local pre-pass addresses its buffers with 32-bit TMA rows; ", slots, " chunk slots x ", hv,
                " value heads are too many (use arch 90)");
    ws.prep_tu = at::empty({slots, hv, kGdnChunkTokens, kGdnChunkTokens}, ref.options());
    ws.prep_p = at::empty({slots, hv, kGdnChunkTokens, kGdnChunkTokens}, ref.options());
    ws.prep_w = at::empty({slots, hv, kGdnChunkTokens, kHeadDim}, ref.options());
    ws.prep_q = at::empty({slots, p.num_k_heads, kGdnChunkTokens, kHeadDim}, ref.options());
    ws.prep_kt = at::empty({slots, p.num_k_heads, kHeadDim, kGdnChunkTokens}, ref.options());
    ws.prep_gates = at::empty({slots, hv, 2, kGdnChunkTokens}, ref.options().dtype(at::kFloat));
    p.prep_tu_ptr = ws.prep_tu.data_ptr();
    p.prep_p_ptr = ws.prep_p.data_ptr();
    p.prep_w_ptr = ws.prep_w.data_ptr();
    p.prep_q_ptr = ws.prep_q.data_ptr();
    p.prep_kt_ptr = ws.prep_kt.data_ptr();
    p.prep_gates_ptr = ws.prep_gates.data_ptr<float>();
    p.max_chunk_slots = slots;
    p.prep_heads_per_cta = gdn_prep_heads_per_cta(p.num_v_heads / p.num_k_heads);
  }
  TORCH_CHECK(ref.scalar_type() == at::kBFloat16 || ref.scalar_type() == at::kHalf, "qwen35_native.", op,
              ": the chunk kernel supports float16 and bfloat16 inputs, got ", c10::toString(ref.scalar_type()));
  if (ref.scalar_type() == at::kHalf) {
    run_on_device(op, ref, [&](cudaStream_t s, bool cuda) {
      return cuda ? Q35_GDN_CUDA_LAUNCH(q35::cuda::launch_gdn_chunk<__half>(p, s))
                  : q35::emu::launch_gdn_chunk<__half>(p, s);
    });
  } else {
    run_on_device(op, ref, [&](cudaStream_t s, bool cuda) {
      return cuda ? Q35_GDN_CUDA_LAUNCH(q35::cuda::launch_gdn_chunk<__nv_bfloat16>(p, s))
                  : q35::emu::launch_gdn_chunk<__nv_bfloat16>(p, s);
    });
  }
}

void plan_recurrent(GdnRecurrentParams& p, const at::Tensor& ref, bool conv_fusable) {
  p.num_sms = num_sms(ref);
  p.cluster_norm = p.z_ptr != nullptr && gdn_decode_cluster_auto() && chunk_sm90a_runs(ref);
  p.fuse_conv = conv_fusable && p.cluster_norm && gdn_decode_fused_auto();
  p.fuse_conv = gdn_decode_fuses_conv(p);
}

void run_recurrent(const char* op, GdnRecurrentParams& p, const at::Tensor& ref, at::Tensor& counters) {
  if (!p.fuse_conv) plan_recurrent(p, ref, false);
  if (gdn_recurrent_needs_counters(p)) {
    counters = at::zeros({p.num_tokens * p.num_v_heads}, ref.options().dtype(at::kInt));
    p.counters_ptr = counters.data_ptr<int>();
  }
  dispatch_float_dtype(ref.scalar_type(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    run_on_device(op, ref, [&](cudaStream_t s, bool cuda) {
      return cuda ? Q35_GDN_CUDA_LAUNCH(q35::cuda::launch_gdn_recurrent<T>(p, s))
                  : q35::emu::launch_gdn_recurrent<T>(p, s);
    });
  });
}

namespace {

// q, k, v, g, beta of the FLA-style ops, packed [T, H, 128] / [T, Hv]; fills the shared params fields.
template <typename P>
void fill_qkv_gates(const char* op, P& p, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& g, const at::Tensor& beta, bool vec16) {
  check_defined(op, "q", q);
  check_dim(op, "q", q, 3);
  const int64_t T = q.size(0), hk = q.size(1);
  check_dim(op, "v", v, 3);
  const int64_t hv = v.size(1);
  TORCH_CHECK(hk > 0 && hv % hk == 0, "qwen35_native.", op, ": v heads must be a positive multiple of q/k heads (",
              hk, "), got ", hv);
  p.q_token_stride = check_heads(op, "q", q, q, T, hk, vec16);
  p.k_token_stride = check_heads(op, "k", k, q, T, hk, vec16);
  p.v_token_stride = check_heads(op, "v", v, q, T, hv, vec16);
  TORCH_CHECK(g.scalar_type() == at::kFloat || g.scalar_type() == q.scalar_type(), "qwen35_native.", op,
              ": g must have dtype float32 or that of q, got ", c10::toString(g.scalar_type()));
  TORCH_CHECK(beta.scalar_type() == at::kFloat || beta.scalar_type() == q.scalar_type(), "qwen35_native.", op,
              ": beta must have dtype float32 or that of q, got ", c10::toString(beta.scalar_type()));
  p.g_token_stride = check_gate(op, "g", g, q, T, hv);
  p.beta_token_stride = check_gate(op, "beta", beta, q, T, hv);
  p.num_tokens = T;
  p.num_k_heads = static_cast<int>(hk);
  p.num_v_heads = static_cast<int>(hv);
  p.q_ptr = q.data_ptr();
  p.k_ptr = k.data_ptr();
  p.v_ptr = v.data_ptr();
  p.g_ptr = g.data_ptr();
  p.beta_ptr = beta.data_ptr();
  p.g_fp32 = g.scalar_type() == at::kFloat;
  p.beta_fp32 = beta.scalar_type() == at::kFloat;
}

int64_t check_cu(const char* op, const at::Tensor& cu, const at::Tensor& q) {
  check_defined(op, "cu_seqlens", cu);
  check_same_device(op, "cu_seqlens", cu, q, "q");
  check_dtype(op, "cu_seqlens", cu, {at::kInt, at::kLong});
  check_dim(op, "cu_seqlens", cu, 1);
  TORCH_CHECK(cu.numel() >= 2 && cu.is_contiguous(), "qwen35_native.", op,
              ": cu_seqlens must be a contiguous [N+1] tensor with N >= 1, got shape ", shape_str(cu.sizes()));
  return cu.numel() - 1;
}

void chunk_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                const at::Tensor& beta, double scale, const std::optional<at::Tensor>& initial_state,
                const at::Tensor& cu_seqlens, bool l2norm, int64_t segment_len, double shortcut_log_decay, at::Tensor& o,
                const std::optional<at::Tensor>& final_state, int64_t arch) {
  constexpr const char* op = "chunk_gated_delta_rule";
  GdnChunkParams p{};
  fill_qkv_gates(op, p, q, k, v, g, beta, true);
  p.num_seqs = check_cu(op, cu_seqlens, q);
  TORCH_CHECK(scale > 0.0, "qwen35_native.", op, ": scale must be > 0, got ", scale);
  TORCH_CHECK(segment_len >= 0, "qwen35_native.", op, ": segment_len must be >= 0 (0: automatic), got ", segment_len);
  if (initial_state) check_state(op, "initial_state", *initial_state, q, p.num_v_heads);
  if (initial_state) check_shape(op, "initial_state", *initial_state, {p.num_seqs, p.num_v_heads, kHeadDim, kHeadDim},
                                 "[N, Hv, 128, 128]");
  check_out(op, "o", o, q, {p.num_tokens, p.num_v_heads, kHeadDim}, q.scalar_type());
  if (final_state) {
    check_out(op, "final_state", *final_state, q, {p.num_seqs, p.num_v_heads, kHeadDim, kHeadDim}, at::kFloat);
  }
  p.cu_seqlens_ptr = cu_seqlens.data_ptr();
  p.cu_seqlens_int64 = cu_seqlens.scalar_type() == at::kLong;
  p.state_in_ptr = initial_state ? initial_state->data_ptr<float>() : nullptr;
  p.out_ptr = o.data_ptr();
  p.out_token_stride = p.num_v_heads * kHeadDim;
  p.state_out_ptr = final_state ? final_state->data_ptr<float>() : nullptr;
  p.scale = static_cast<float>(scale);
  p.shortcut_log_decay = static_cast<float>(shortcut_log_decay);
  p.l2norm = l2norm;
  p.impl = check_chunk_arch(op, arch, q);
  ChunkWorkspace ws;
  run_chunk(op, p, q, segment_len, ws);
}

void recurrent_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                    const at::Tensor& beta, double scale, const std::optional<at::Tensor>& initial_state,
                    const std::optional<at::Tensor>& cu_seqlens, int64_t num_seqs, bool l2norm, at::Tensor& o,
                    const std::optional<at::Tensor>& final_state, const std::optional<at::Tensor>& intermediate) {
  constexpr const char* op = "fused_recurrent_gated_delta_rule";
  check_float(op, "q", q);
  GdnRecurrentParams p{};
  fill_qkv_gates(op, p, q, k, v, g, beta, false);
  TORCH_CHECK(scale > 0.0, "qwen35_native.", op, ": scale must be > 0, got ", scale);
  if (cu_seqlens) {
    p.num_seqs = check_cu(op, *cu_seqlens, q);
    p.cu_seqlens_ptr = cu_seqlens->data_ptr();
    p.cu_seqlens_int64 = cu_seqlens->scalar_type() == at::kLong;
  } else {
    TORCH_CHECK(num_seqs >= 0 && (num_seqs == 0 ? p.num_tokens == 0 : p.num_tokens % num_seqs == 0),
                "qwen35_native.", op, ": without cu_seqlens the ", p.num_tokens,
                " tokens must split evenly into num_seqs sequences, got num_seqs=", num_seqs);
    p.num_seqs = num_seqs;
    p.tokens_per_seq = num_seqs ? p.num_tokens / num_seqs : 0;
  }
  if (initial_state) check_state(op, "initial_state", *initial_state, q, p.num_v_heads);
  if (initial_state) check_shape(op, "initial_state", *initial_state, {p.num_seqs, p.num_v_heads, kHeadDim, kHeadDim},
                                 "[N, Hv, 128, 128]");
  check_out(op, "o", o, q, {p.num_tokens, p.num_v_heads, kHeadDim}, q.scalar_type());
  if (final_state) {
    check_out(op, "final_state", *final_state, q, {p.num_seqs, p.num_v_heads, kHeadDim, kHeadDim}, at::kFloat);
  }
  if (intermediate) {
    check_out(op, "intermediate_states", *intermediate, q, {p.num_tokens, p.num_v_heads, kHeadDim, kHeadDim},
              at::kFloat);
  }
  p.state_in_ptr = initial_state ? initial_state->data_ptr<float>() : nullptr;
  p.out_ptr = o.data_ptr();
  p.out_token_stride = p.num_v_heads * kHeadDim;
  p.state_out_ptr = final_state ? final_state->data_ptr<float>() : nullptr;
  p.intermediate_ptr = intermediate ? intermediate->data_ptr<float>() : nullptr;
  p.scale = static_cast<float>(scale);
  p.l2norm = l2norm;
  at::Tensor counters;
  run_recurrent(op, p, q, counters);
}

}  // namespace

TORCH_LIBRARY_IMPL(qwen35_native, CPU, m) {
  m.impl("chunk_gated_delta_rule", &chunk_impl);
  m.impl("fused_recurrent_gated_delta_rule", &recurrent_impl);
}

#if defined(Q35_WITH_CUDA)
TORCH_LIBRARY_IMPL(qwen35_native, CUDA, m) {
  m.impl("chunk_gated_delta_rule", &chunk_impl);
  m.impl("fused_recurrent_gated_delta_rule", &recurrent_impl);
}
#endif

}  // namespace q35::glue::gdn
