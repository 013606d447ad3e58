// Torch glue of the MoE stage ops (one kernel each, outputs preallocated by the caller): moe_align, moe_permute,
// moe_gate_up, moe_down, moe_combine. fused_moe (moe_ops.cpp) chains the same launches; the stage ops let tests poison and
// guard every kernel's output and let callers reuse buffers.
// Kernels: csrc/kernels/moe/. Python: python/qwen35_native/ops/moe_stages.py. Tests: tests/kernels/test_moe_*.py.
#include <torch/library.h>

#include <optional>

#include "torch/moe_checks.h"
#include "torch/moe_glue.h"

namespace q35::glue::moe {
namespace {

// sorted_pairs / tile_experts must come from moe_align: values checked on CPU (reading CUDA tensors would sync).
void check_align_values(const char* op, const at::Tensor& sorted_pairs, const at::Tensor& tile_experts,
                        int64_t num_pairs, int64_t num_local_experts) {
  if (!sorted_pairs.device().is_cpu() || sorted_pairs.numel() == 0) return;
  const bool pairs_ok = sorted_pairs.min().item<int64_t>() >= -1 && sorted_pairs.max().item<int64_t>() < num_pairs;
  const bool experts_ok =
      tile_experts.min().item<int64_t>() >= -1 && tile_experts.max().item<int64_t>() < num_local_experts;
  TORCH_CHECK(pairs_ok && experts_ok, "qwen35_native.", op, ": sorted_pairs must be in [-1, ", num_pairs,
              ") and tile_experts in [-1, ", num_local_experts, ") (the outputs of moe_align), got out-of-range values");
}

template <bool kOnCuda>
void moe_align_impl(const at::Tensor& topk_ids, int64_t expert_offset, int64_t num_local_experts, int64_t block_m,
                    at::Tensor& sorted_pairs, at::Tensor& tile_experts) {
  constexpr const char* kOp = "moe_align";
  check_defined(kOp, "topk_ids", topk_ids);
  check_dtype(kOp, "topk_ids", topk_ids, {at::kInt, at::kLong});
  TORCH_CHECK(topk_ids.is_contiguous(), "qwen35_native.", kOp, ": topk_ids must be contiguous, got strides ",
              shape_str(topk_ids.strides()));
  check_expert_range(kOp, expert_offset, num_local_experts);
  check_block_m(kOp, block_m, at::kBFloat16);
  check_align_buffers(kOp, sorted_pairs, tile_experts, topk_ids.numel(), num_local_experts, block_m, topk_ids,
                      "topk_ids");
  const Guard<kOnCuda> guard(topk_ids);
  run_align<kOnCuda>(kOp, topk_ids, expert_offset, num_local_experts, block_m, sorted_pairs, tile_experts);
}

// rows [max_tiles * block_m, H]: hidden's rows in tile order (moe_permute's output, the sorted-rows gate_up's A).
void check_sorted_rows(const char* op, const at::Tensor& rows, const at::Tensor& hidden,
                       const at::Tensor& sorted_pairs) {
  check_buffer(op, "sorted_rows", rows, hidden.scalar_type(), {sorted_pairs.numel(), hidden.size(1)},
               "[max_tiles * block_m, H]", hidden, "hidden");
  check_aligned(op, "sorted_rows", rows);
}

template <bool kOnCuda>
void moe_permute_impl(const at::Tensor& hidden, const at::Tensor& sorted_pairs, const at::Tensor& tile_experts,
                      int64_t top_k, int64_t num_local_experts, int64_t block_m, at::Tensor& sorted_rows) {
  constexpr const char* kOp = "moe_permute";
  check_hidden(kOp, hidden);
  TORCH_CHECK(top_k >= 1 && top_k <= kMaxTopK, "qwen35_native.", kOp, ": top_k must be in [1, ", kMaxTopK, "], got ",
              top_k);
  TORCH_CHECK(num_local_experts >= 1, "qwen35_native.", kOp, ": num_local_experts must be >= 1, got ",
              num_local_experts);
  check_block_m(kOp, block_m, hidden.scalar_type());
  const int64_t num_pairs = hidden.size(0) * top_k;
  check_align_buffers(kOp, sorted_pairs, tile_experts, num_pairs, num_local_experts, block_m, hidden, "hidden");
  check_align_values(kOp, sorted_pairs, tile_experts, num_pairs, num_local_experts);
  check_sorted_rows(kOp, sorted_rows, hidden, sorted_pairs);
  const Guard<kOnCuda> guard(hidden);
  run_permute<kOnCuda>(kOp, hidden, sorted_pairs, tile_experts, top_k, block_m, sorted_rows);
}

template <bool kOnCuda>
void moe_gate_up_impl(const at::Tensor& hidden, const at::Tensor& w13, const at::Tensor& sorted_pairs,
                      const at::Tensor& tile_experts, int64_t top_k, int64_t block_m, at::Tensor& act,
                      const std::optional<at::Tensor>& sorted_rows) {
  constexpr const char* kOp = "moe_gate_up";
  check_hidden(kOp, hidden);
  TORCH_CHECK(top_k >= 1 && top_k <= kMaxTopK, "qwen35_native.", kOp, ": top_k must be in [1, ", kMaxTopK, "], got ",
              top_k);
  check_w13(kOp, hidden, w13);
  check_block_m(kOp, block_m, hidden.scalar_type());
  const int64_t num_pairs = hidden.size(0) * top_k;
  check_align_buffers(kOp, sorted_pairs, tile_experts, num_pairs, w13.size(0), block_m, hidden, "hidden");
  check_align_values(kOp, sorted_pairs, tile_experts, num_pairs, w13.size(0));
  check_buffer(kOp, "act", act, hidden.scalar_type(), {sorted_pairs.numel(), w13.size(1) / 2},
               "[max_tiles * block_m, I]", hidden, "hidden");
  check_aligned(kOp, "act", act);
  if (sorted_rows) {
    TORCH_CHECK(is_sm90a_block_m(block_m), "qwen35_native.", kOp, ": sorted_rows is read by the sm_90a kernels ",
                "only (block_m ", kMoeSm90BlockM, " or ", kMoeSm90PairBlockM, "), got block_m ", block_m);
    check_sorted_rows(kOp, *sorted_rows, hidden, sorted_pairs);
  }
  const Guard<kOnCuda> guard(hidden);
  check_block_m_runs_here<kOnCuda>(kOp, block_m, hidden.size(1), w13.size(1) / 2);
  if (sorted_rows) {
    run_gemm<kOnCuda, true>(kOp, *sorted_rows, w13, nullptr, sorted_pairs, tile_experts, top_k, block_m, act, true);
  } else {
    run_gemm<kOnCuda, true>(kOp, hidden, w13, nullptr, sorted_pairs, tile_experts, top_k, block_m, act);
  }
}

template <bool kOnCuda>
void moe_down_impl(const at::Tensor& act, const at::Tensor& w2, const at::Tensor& topk_weights,
                   const at::Tensor& sorted_pairs, const at::Tensor& tile_experts, int64_t block_m,
                   at::Tensor& expert_out) {
  constexpr const char* kOp = "moe_down";
  check_hidden(kOp, act);  // act [rows, I] is read like hidden (aligned rows)
  check_expert_weight(kOp, "w2", w2, act, "act");
  check_expert_sizes(kOp, act, w2.size(0), w2.size(1), w2.size(2));
  check_block_m(kOp, block_m, act.scalar_type());
  check_buffer(kOp, "topk_weights", topk_weights, at::kFloat, topk_weights.sizes(), "[N, k]", act, "act");
  check_dim(kOp, "topk_weights", topk_weights, 2);
  const int64_t num_pairs = topk_weights.numel();
  check_align_buffers(kOp, sorted_pairs, tile_experts, num_pairs, w2.size(0), block_m, act, "act");
  check_align_values(kOp, sorted_pairs, tile_experts, num_pairs, w2.size(0));
  check_shape(kOp, "act", act, {sorted_pairs.numel(), w2.size(2)}, "[max_tiles * block_m, I]");
  TORCH_CHECK(act.is_contiguous(), "qwen35_native.", kOp, ": act must be contiguous");
  check_buffer(kOp, "expert_out", expert_out, act.scalar_type(), {num_pairs, w2.size(1)}, "[N * k, H]", act, "act");
  check_aligned(kOp, "expert_out", expert_out);
  const Guard<kOnCuda> guard(act);
  check_block_m_runs_here<kOnCuda>(kOp, block_m, w2.size(1), act.size(1));
  run_gemm<kOnCuda, false>(kOp, act, w2, &topk_weights, sorted_pairs, tile_experts, topk_weights.size(1), block_m,
                           expert_out);
}

template <bool kOnCuda>
void moe_combine_impl(const at::Tensor& expert_out, const at::Tensor& topk_ids, int64_t expert_offset,
                      int64_t num_local_experts, const std::optional<at::Tensor>& hidden,
                      const std::optional<at::Tensor>& shared_out, const std::optional<at::Tensor>& shared_gate_w,
                      at::Tensor& out) {
  constexpr const char* kOp = "moe_combine";
  check_defined(kOp, "out", out);
  check_dtype(kOp, "out", out, {at::kFloat, at::kHalf, at::kBFloat16});
  check_dim(kOp, "out", out, 2);
  check_buffer(kOp, "out", out, out.scalar_type(), out.sizes(), "[N, H]", out, "out");
  check_aligned(kOp, "out", out);
  TORCH_CHECK(out.size(1) % vec_elems(out) == 0, "qwen35_native.", kOp, ": H must be a multiple of ",
              vec_elems(out), " (16 bytes), got ", out.size(1));
  check_topk(kOp, out, nullptr, topk_ids);
  check_expert_range(kOp, expert_offset, num_local_experts);
  check_buffer(kOp, "expert_out", expert_out, out.scalar_type(), {topk_ids.numel(), out.size(1)}, "[N * k, H]", out,
               "out");
  check_aligned(kOp, "expert_out", expert_out);
  const bool any_shared = hidden || shared_out || shared_gate_w;
  TORCH_CHECK(!any_shared || (hidden && shared_out && shared_gate_w), "qwen35_native.", kOp,
              ": hidden, shared_out and shared_gate_w must be given together (or all None)");
  const at::Tensor none;
  if (any_shared) {
    check_hidden(kOp, *hidden);
    check_shape(kOp, "hidden", *hidden, out.sizes(), "out.shape");
    TORCH_CHECK(hidden->scalar_type() == out.scalar_type(), "qwen35_native.", kOp, ": hidden must have out's dtype");
    check_buffer(kOp, "shared_out", *shared_out, out.scalar_type(), out.sizes(), "out.shape", out, "out");
    check_aligned(kOp, "shared_out", *shared_out);
    check_buffer(kOp, "shared_gate_w", *shared_gate_w, out.scalar_type(), {out.size(1)}, "[H]", out, "out");
    check_aligned(kOp, "shared_gate_w", *shared_gate_w);
  }
  const Guard<kOnCuda> guard(out);
  run_combine<kOnCuda>(kOp, expert_out, topk_ids, expert_offset, num_local_experts, hidden.value_or(none),
                       shared_out.value_or(none), shared_gate_w.value_or(none), out);
}

}  // namespace

TORCH_LIBRARY_IMPL(qwen35_native, CPU, m) {
  m.impl("moe_align", &moe_align_impl<false>);
  m.impl("moe_permute", &moe_permute_impl<false>);
  m.impl("moe_gate_up", &moe_gate_up_impl<false>);
  m.impl("moe_down", &moe_down_impl<false>);
  m.impl("moe_combine", &moe_combine_impl<false>);
}

#if defined(Q35_WITH_CUDA)
TORCH_LIBRARY_IMPL(qwen35_native, CUDA, m) {
  m.impl("moe_align", &moe_align_impl<true>);
  m.impl("moe_permute", &moe_permute_impl<true>);
  m.impl("moe_gate_up", &moe_gate_up_impl<true>);
  m.impl("moe_down", &moe_down_impl<true>);
  m.impl("moe_combine", &moe_combine_impl<true>);
}
#endif

}  // namespace q35::glue::moe
