// Torch glue of the attention kernels (paged prefill, varlen, split-KV decode): argument checks, params, CPU
// (emulator) and CUDA implementations. Kernels: csrc/kernels/attention/{prefill,decode}_attention.cu.
// Python: python/qwen35_native/ops/attention.py. Tests: tests/kernels/test_attention*.py.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>

#include "kernels/attention/attention.cuh"
#include "torch/attention_checks.h"
#include "torch/device_guard.h"
#include "torch/dispatch.h"
#include "torch/sm90a_policy.h"

#include <array>

namespace q35::glue {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kEmulatedSms = 132;  // CPU tensors: plan the decode splits as for an H100

// Calls f(TypeTag<T>, integral_constant<int, D>) for a 16-bit dtype and a head dim with kernels (all_dims: the
// varlen kernel's 64, 72 and 256; else 256 only, the paged kernels').
template <typename F>
void dispatch_attention(const char* op, c10::ScalarType st, int64_t head_dim, bool all_dims, F&& f) {
  TORCH_CHECK(st == at::kHalf || st == at::kBFloat16, "qwen35_native.", op,
              ": the kernel needs q of dtype float16 or bfloat16, got ", c10::toString(st));
  dispatch_float_dtype(st, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (!std::is_same_v<T, float>) {
      if (head_dim == 256) return f(tag, std::integral_constant<int, 256>{});
      if (all_dims && head_dim == 64) return f(tag, std::integral_constant<int, 64>{});
      if (all_dims && head_dim == 72) return f(tag, std::integral_constant<int, 72>{});
    }
    TORCH_CHECK(false, "qwen35_native.", op, ": the kernel supports head_dim ", all_dims ? "64, 72 or 256" : "256",
                ", got ", head_dim);
  });
}

template <bool kOnCuda>
void run_prefill(const AttentionPrefillParams& p, c10::ScalarType st, const at::Tensor& q, const char* op) {
  dispatch_attention(op, st, p.head_dim, p.block_tables_ptr == nullptr, [&](auto tag, auto dim) {
    using T = typename decltype(tag)::type;
    if constexpr (kOnCuda) {
#if defined(Q35_WITH_CUDA)
      const c10::cuda::CUDAGuard guard(q.device());
      check_launch(q35::cuda::launch_prefill_attention<T, dim()>(p, c10::cuda::getCurrentCUDAStream()), op);
#endif
    } else {
      check_launch(q35::emu::launch_prefill_attention<T, dim()>(p, nullptr), op);
    }
  });
}

AttentionPrefillParams prefill_params(const at::Tensor& q, const at::Tensor& cu_seqlens, double scale,
                                      const c10::optional<at::Tensor>& gate, at::Tensor& out) {
  AttentionPrefillParams p{};
  const int64_t Hq = q.size(1), D = q.size(2);
  p.num_seqs = static_cast<int>(cu_seqlens.size(0) - 1);
  p.num_q_heads = static_cast<int>(Hq);
  p.head_dim = static_cast<int>(D);
  p.q_ptr = q.data_ptr();
  p.cu_seqlens_q_ptr = cu_seqlens.data_ptr<int32_t>();
  p.out_ptr = out.data_ptr();
  p.q_token_stride = q.stride(0);
  if (gate) {
    p.gate_ptr = gate->data_ptr();
    p.gate_token_stride = gate->stride(0);
  }
  p.scale_log2 = static_cast<float>(scale) * kLog2e;
  return p;
}

// Whether the sm_90a prefill kernel runs here: an sm_90 GPU, or the emulator at its (default) arch sm_90.
template <bool kOnCuda>
bool sm90a_here() {
  if constexpr (kOnCuda) {
#if defined(Q35_WITH_CUDA)
    return q35::cuda::attention_sm90a_available();
#endif
  }
  return q35::emu::attention_sm90a_available();
}

// The paged prefill on the path `arch` names: 0 = the sm_90a kernel where it runs, fits the arguments (head_dim
// 256, blocks of >= 64 tokens) and sm90a_auto allows it, else the mma.sync one; 80 = the mma.sync kernel; 90 = the
// sm_90a kernel or an error; 90 + kAttnSm90a* variant bits: 91 = with its consumers in ping-pong order, 92 = V
// read MN-major (no transpose), 93 = both. The automatic choice takes 92: on an H200 (bench/results/
// 2026-11-28-NVIDIA-H200-session8.md, 1x8192 causal) it ran 1.60x arch 90 with 32 q / 2 kv heads, where 93 ran
// 1.51x, and 1.64x with 4 q / 1 kv heads, level with 93; all four give the same bits.
template <bool kOnCuda>
void run_paged_prefill(const AttentionPrefillParams& p, int64_t arch, const at::Tensor& q, const char* op) {
  TORCH_CHECK(arch == 0 || arch == 80 || (arch >= 90 && arch <= 93), "qwen35_native.", op,
              ": arch must be 0 (auto), 80, 90, 91 (90 with ping-pong consumers), 92 (90 reading V MN-major) or 93 "
              "(both), got ",
              arch);
  const bool fits = attention_sm90a_supports(p) && q.scalar_type() != at::kFloat;
  const bool here = sm90a_here<kOnCuda>();
  if (arch >= 90) {
    TORCH_CHECK(fits, "qwen35_native.", op, ": arch ", arch, " (the sm_90a kernel) needs head_dim 256, a cache "
                "block_size of >= 64 and 16-byte aligned caches, got head_dim ", p.head_dim, " and block_size ",
                1 << p.block_shift);
    TORCH_CHECK(here, "qwen35_native.", op, ": arch ", arch, " (the sm_90a kernel) needs ",
                kOnCuda ? "an sm_90 GPU (H100/H200), got another device" : "the emulator at arch sm_90, got sm_80");
  }
  const int variant = arch >= 90 ? static_cast<int>(arch - 90) : kAttnSm90aVMnMajor;
  if (arch == 80 || !fits || !here || (arch == 0 && !sm90a_auto(kOnCuda))) {
    return run_prefill<kOnCuda>(p, q.scalar_type(), q, op);
  }
  dispatch_attention(op, q.scalar_type(), p.head_dim, false, [&](auto tag, auto) {
    using T = typename decltype(tag)::type;
    if constexpr (kOnCuda) {
#if defined(Q35_WITH_CUDA)
      const c10::cuda::CUDAGuard guard(q.device());
      check_launch(q35::cuda::launch_prefill_attention_sm90a<T>(p, variant, c10::cuda::getCurrentCUDAStream()), op);
#endif
    } else {
      check_launch(q35::emu::launch_prefill_attention_sm90a<T>(p, variant, nullptr), op);
    }
  });
}

template <bool kOnCuda>
void paged_prefill_attention_impl(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                  const at::Tensor& cu_seqlens_q, const at::Tensor& seq_lens,
                                  const at::Tensor& block_tables, const c10::optional<at::Tensor>& gate, double scale,
                                  at::Tensor& out, int64_t arch) {
  constexpr const char* op = "paged_prefill_attention";
  check_paged_args(op, q, k_cache, v_cache, seq_lens, block_tables, gate, out);
  check_cu_seqlens_arg(op, "cu_seqlens_q", cu_seqlens_q, q, seq_lens.size(0));
  if (q.device().is_cpu()) check_paged_values_cpu(op, cu_seqlens_q, seq_lens, block_tables, k_cache, q.size(0));
  AttentionPrefillParams p = prefill_params(q, cu_seqlens_q, scale, gate, out);
  const int64_t Hkv = k_cache.size(2);
  p.num_kv_heads = static_cast<int>(Hkv);
  p.num_tiles_bound = q.size(0) == 0 ? 0 : ceil_div(q.size(0) * (q.size(1) / Hkv), kAttentionTileRows) + p.num_seqs;
  p.block_shift = static_cast<int>(std::log2(static_cast<double>(k_cache.size(1))));
  p.k_ptr = k_cache.data_ptr();
  p.v_ptr = v_cache.data_ptr();
  p.seq_lens_ptr = seq_lens.data_ptr<int32_t>();
  p.block_tables_ptr = block_tables.data_ptr<int32_t>();
  p.kv_token_stride = Hkv * q.size(2);
  p.block_table_stride = block_tables.stride(0);
  p.causal = true;
  p.num_q_tokens = q.size(0);
  p.num_cache_slots = k_cache.size(0) * k_cache.size(1);
  run_paged_prefill<kOnCuda>(p, arch, q, op);
}

template <bool kOnCuda>
void varlen_attention_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& cu_seqlens, double scale, bool causal, at::Tensor& out) {
  constexpr const char* op = "varlen_attention";
  check_varlen_args(op, q, k, v, out);
  check_cu_seqlens_arg(op, "cu_seqlens", cu_seqlens, q, -1);
  if (q.device().is_cpu()) check_cu_seqlens_values_cpu(op, "cu_seqlens", cu_seqlens, q.size(0));
  AttentionPrefillParams p = prefill_params(q, cu_seqlens, scale, c10::nullopt, out);
  const int64_t Hkv = k.size(1);
  p.num_kv_heads = static_cast<int>(Hkv);
  p.num_tiles_bound = q.size(0) == 0 ? 0 : ceil_div(q.size(0) * (q.size(1) / Hkv), kAttentionTileRows) + p.num_seqs;
  p.k_ptr = k.data_ptr();
  p.v_ptr = v.data_ptr();
  p.kv_token_stride = k.stride(0);
  p.causal = causal;
  run_prefill<kOnCuda>(p, q.scalar_type(), q, op);
}

// SM count of q's device, queried once per device.
int num_sms(const at::Tensor& q) {
#if defined(Q35_WITH_CUDA)
  if (q.is_cuda()) {
    constexpr int kMaxDevices = 64;
    static std::array<int, kMaxDevices> cached{};
    const int dev = q.device().index();
    if (dev < 0 || dev >= kMaxDevices) return kEmulatedSms;
    if (cached[dev] == 0) {
      int sms = 0;
      if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || sms <= 0) sms = 1;
      cached[dev] = sms;
    }
    return cached[dev];
  }
#endif
  return kEmulatedSms;
}

template <bool kOnCuda>
void paged_decode_attention_impl(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                 const at::Tensor& seq_lens, const at::Tensor& block_tables,
                                 const c10::optional<at::Tensor>& gate, double scale, int64_t num_splits,
                                 at::Tensor& out) {
  constexpr const char* op = "paged_decode_attention";
  check_paged_args(op, q, k_cache, v_cache, seq_lens, block_tables, gate, out);
  const int64_t N = seq_lens.size(0), T = q.size(0), Hkv = k_cache.size(2), Hq = q.size(1), D = q.size(2);
  TORCH_CHECK(N > 0 && T % N == 0, "qwen35_native.", op, ": q tokens (", T,
              ") must be a positive multiple of the sequence count (", N, ")");
  TORCH_CHECK(N * Hkv <= kMaxInt, "qwen35_native.", op, ": sequences * kv heads must be < 2^31, got ", N * Hkv);
  TORCH_CHECK(num_splits >= 0 && num_splits <= kDecodeMaxSplits, "qwen35_native.", op,
              ": num_splits must be 0 (auto) or in [1, ", kDecodeMaxSplits, "], got ", num_splits);
  if (q.device().is_cpu()) check_decode_values_cpu(op, T / N, seq_lens, block_tables, k_cache);
  const int64_t L = T / N;
  const int64_t row_blocks = ceil_div(L * (Hq / Hkv), kAttentionTileRows);
  TORCH_CHECK(row_blocks <= 65535, "qwen35_native.", op, ": query tokens per sequence x q heads per kv head must be "
              "<= ", 65535 * kAttentionTileRows, ", got ", L * (Hq / Hkv));
  const int64_t max_kv = block_tables.size(1) * k_cache.size(1);
  const int splits = num_splits > 0 ? static_cast<int>(num_splits)
                                    : decode_num_splits(N * Hkv * row_blocks, max_kv, num_sms(q));
  AttentionDecodeParams p{};
  p.num_seqs = static_cast<int>(N);
  p.tokens_per_seq = static_cast<int>(L);
  p.num_q_heads = static_cast<int>(Hq);
  p.num_kv_heads = static_cast<int>(Hkv);
  p.head_dim = static_cast<int>(D);
  p.block_shift = static_cast<int>(std::log2(static_cast<double>(k_cache.size(1))));
  p.num_splits = splits;
  p.q_ptr = q.data_ptr();
  p.k_cache_ptr = k_cache.data_ptr();
  p.v_cache_ptr = v_cache.data_ptr();
  p.seq_lens_ptr = seq_lens.data_ptr<int32_t>();
  p.block_tables_ptr = block_tables.data_ptr<int32_t>();
  p.out_ptr = out.data_ptr();
  p.q_token_stride = q.stride(0);
  p.block_table_stride = block_tables.stride(0);
  if (gate) {
    p.gate_ptr = gate->data_ptr();
    p.gate_token_stride = gate->stride(0);
  }
  p.scale_log2 = static_cast<float>(scale) * kLog2e;
  at::Tensor partial_o, partial_lse;  // workspace of the split-KV partials (kept alive across the launch)
  if (splits > 1 && T > 0) {
    partial_o = at::empty({splits, T, Hq, D}, q.options().dtype(at::kFloat));
    partial_lse = at::empty({splits, T, Hq}, q.options().dtype(at::kFloat));
    p.partial_o_ptr = partial_o.data_ptr<float>();
    p.partial_lse_ptr = partial_lse.data_ptr<float>();
  }
  dispatch_attention(op, q.scalar_type(), D, false, [&](auto tag, auto dim) {
    using T16 = typename decltype(tag)::type;
    if constexpr (kOnCuda) {
#if defined(Q35_WITH_CUDA)
      const c10::cuda::CUDAGuard guard(q.device());
      check_launch(q35::cuda::launch_decode_attention<T16, dim()>(p, c10::cuda::getCurrentCUDAStream()), op);
#endif
    } else {
      check_launch(q35::emu::launch_decode_attention<T16, dim()>(p, nullptr), op);
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(qwen35_native, CPU, m) {
  m.impl("paged_prefill_attention", &paged_prefill_attention_impl<false>);
  m.impl("paged_decode_attention", &paged_decode_attention_impl<false>);
  m.impl("varlen_attention", &varlen_attention_impl<false>);
}

#if defined(Q35_WITH_CUDA)
TORCH_LIBRARY_IMPL(qwen35_native, CUDA, m) {
  m.impl("paged_prefill_attention", &paged_prefill_attention_impl<true>);
  m.impl("paged_decode_attention", &paged_decode_attention_impl<true>);
  m.impl("varlen_attention", &varlen_attention_impl<true>);
}
#endif

}  // namespace q35::glue
