// Torch glue of the MoE ops a model calls: moe_route (softmax top-k routing) and fused_moe (align [+ permute] +
// gate_up + down + combine with the optional gated shared expert, scratch from the caching allocator, no host sync;
// up to 64 pairs: the skinny kernel per pair, no align).
// Kernels: csrc/kernels/moe/. Python: python/qwen35_native/ops/moe.py. Tests: tests/kernels/test_moe_*.py.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>

#include "torch/moe_checks.h"
#include "torch/moe_glue.h"
#include "torch/sm90a_policy.h"

namespace q35::glue::moe {
namespace {

// The automatic choice takes the sm_90a grouped GEMMs on a GPU from this expert intermediate size (per rank) on.
// H200, 8192 tokens: at first (bench/results/2026-11-28-NVIDIA-H200.md) fused_moe ran 1.07x the sm_80 path at
// I = 1024 (397b-tp1) and 0.97x at I = 128 (397b-tp8); with gate_up's four gathering warps
// (2026-11-28-NVIDIA-H200-session8.md) 1.27x at I = 128 (gate_up 1.48x, down 1.30x) and 1.60x at I = 1024.
constexpr int64_t kMoeSm90AutoMinInter = 128;

void check_moe_route_args(const char* op, const at::Tensor& logits, int64_t top_k, const at::Tensor& weights,
                          const at::Tensor& ids) {
  check_defined(op, "logits", logits);
  check_dtype(op, "logits", logits, {at::kFloat, at::kHalf, at::kBFloat16});
  check_dim(op, "logits", logits, 2);
  check_last_dim_contiguous(op, "logits", logits);
  const int64_t experts = logits.size(1);
  TORCH_CHECK(experts >= 1 && experts <= kMoeRouteMaxExperts, "qwen35_native.", op, ": logits must have 1 to ",
              kMoeRouteMaxExperts, " experts (columns), got shape ", shape_str(logits.sizes()));
  TORCH_CHECK(top_k >= 1 && top_k <= experts && top_k <= kMoeRouteMaxTopK, "qwen35_native.", op,
              ": top_k must be in [1, min(E=", experts, ", ", kMoeRouteMaxTopK, ")], got ", top_k);
  check_buffer(op, "topk_weights", weights, at::kFloat, {logits.size(0), top_k}, "[N, top_k]", logits, "logits");
  check_buffer(op, "topk_ids", ids, at::kInt, {logits.size(0), top_k}, "[N, top_k]", logits, "logits");
}

template <bool kOnCuda>
void moe_route_impl(const at::Tensor& logits, int64_t top_k, at::Tensor& weights, at::Tensor& ids) {
  constexpr const char* kOp = "moe_route";
  check_moe_route_args(kOp, logits, top_k, weights, ids);
  const Guard<kOnCuda> guard(logits);
  run_route<kOnCuda>(kOp, logits, top_k, weights, ids);
}

// Optional shared expert: shared_out [N, H] contiguous and shared_gate_w [1, H] or [H] in hidden's dtype.
void check_shared(const char* op, const at::Tensor& hidden, const std::optional<at::Tensor>& shared_out,
                  const std::optional<at::Tensor>& shared_gate_w) {
  TORCH_CHECK(shared_out.has_value() == shared_gate_w.has_value(), "qwen35_native.", op,
              ": shared_out and shared_gate_w must be given together (or both None)");
  if (!shared_out) return;
  check_buffer(op, "shared_out", *shared_out, hidden.scalar_type(), hidden.sizes(), "hidden.shape", hidden, "hidden");
  check_aligned(op, "shared_out", *shared_out);
  const at::Tensor& w = *shared_gate_w;
  check_defined(op, "shared_gate_w", w);
  check_same_device(op, "shared_gate_w", w, hidden, "hidden");
  TORCH_CHECK(w.scalar_type() == hidden.scalar_type() && w.numel() == hidden.size(1) && w.is_contiguous() &&
                  (w.dim() == 1 || (w.dim() == 2 && w.size(0) == 1)),
              "qwen35_native.", op, ": shared_gate_w must be a contiguous [1, H=", hidden.size(1), "] or [H] tensor of ",
              c10::toString(hidden.scalar_type()), ", got ", shape_str(w.sizes()), " ", c10::toString(w.scalar_type()));
  check_aligned(op, "shared_gate_w", w);
}

template <bool kOnCuda>
at::Tensor fused_moe_impl(const at::Tensor& hidden, const at::Tensor& w13, const at::Tensor& w2,
                          const at::Tensor& topk_weights, const at::Tensor& topk_ids, int64_t expert_offset,
                          const std::optional<at::Tensor>& shared_out, const std::optional<at::Tensor>& shared_gate_w,
                          std::optional<int64_t> block_m) {
  constexpr const char* kOp = "fused_moe";
  check_hidden(kOp, hidden);
  check_expert_weights(kOp, hidden, w13, w2);
  check_topk(kOp, hidden, &topk_weights, topk_ids);
  check_expert_range(kOp, expert_offset, w13.size(0));
  check_shared(kOp, hidden, shared_out, shared_gate_w);
  const int64_t num_pairs = topk_ids.numel();
  const int64_t experts = w13.size(0);
  const bool fp32 = hidden.scalar_type() == at::kFloat;
  const Guard<kOnCuda> guard(hidden);
  const int64_t h = hidden.size(1), inter = w13.size(1) / 2;
  const bool sm90a = sm90a_runs<kOnCuda>(h, inter) && sm90a_auto(kOnCuda, inter >= kMoeSm90AutoMinInter);
  const bool skinny = skinny_fits(hidden, w13);
  int64_t bm = block_m ? *block_m : moe_pick_block_m(num_pairs, experts, fp32, sm90a, skinny);
  if (!block_m && bm == kMoeSm90BlockM && moe_cluster_auto()) bm = kMoeSm90PairBlockM;
  check_block_m(kOp, bm, hidden.scalar_type(), /*pairs_ok=*/true);
  check_block_m_runs_here<kOnCuda>(kOp, bm, h, inter);
  at::Tensor expert_out = at::empty({num_pairs, hidden.size(1)}, hidden.options());
  at::Tensor out = at::empty(hidden.sizes(), hidden.options());
  const at::Tensor none;
  if (bm == kMoeSkinnyBlockM) {  // a decode step's few pairs: no align, one pair per grid row of the skinny kernel
    TORCH_CHECK(skinny && num_pairs <= kMoeSkinnyMaxPairs, "qwen35_native.", kOp, ": block_m 1 (the skinny kernel) "
                "needs at most ", kMoeSkinnyMaxPairs, " (token, expert) pairs, H and I multiples of 8 and 16-byte "
                "aligned hidden rows, got ", num_pairs, " pairs, H=", h, " I=", inter);
    const at::Tensor ids32 = topk_ids.to(at::kInt).contiguous();
    at::Tensor act = at::empty({num_pairs, inter}, hidden.options());
    run_pair_gemm<kOnCuda, true>(kOp, hidden, w13, ids32, nullptr, expert_offset, topk_ids.size(1), act);
    run_pair_gemm<kOnCuda, false>(kOp, act, w2, ids32, &topk_weights, expert_offset, topk_ids.size(1), expert_out);
    run_combine<kOnCuda>(kOp, expert_out, topk_ids, expert_offset, experts, shared_out ? hidden : none,
                         shared_out.value_or(none), shared_gate_w.value_or(none), out);
    return out;
  }
  const int64_t tiles = moe_max_tiles(num_pairs, experts, bm);
  TORCH_CHECK(tiles * bm < (int64_t{1} << 31), "qwen35_native.", kOp, ": too many (token, expert) pairs (",
              num_pairs, ") for int32 row indexes");

  const auto index_opts = hidden.options().dtype(at::kInt);
  at::Tensor sorted_pairs = at::empty({tiles * bm}, index_opts);
  at::Tensor tile_experts = at::empty({tiles}, index_opts);
  at::Tensor act = at::empty({tiles * bm, w13.size(1) / 2}, hidden.options());
  run_align<kOnCuda>(kOp, topk_ids, expert_offset, experts, bm, sorted_pairs, tile_experts);
  if (is_sm90a_block_m(bm) && moe_sorted_rows_auto()) {  // the token rows in tile order, read by TMA
    at::Tensor rows = at::empty({tiles * bm, h}, hidden.options());
    run_permute<kOnCuda>(kOp, hidden, sorted_pairs, tile_experts, topk_ids.size(1), bm, rows);
    run_gemm<kOnCuda, true>(kOp, rows, w13, nullptr, sorted_pairs, tile_experts, topk_ids.size(1), bm, act, true);
  } else {
    run_gemm<kOnCuda, true>(kOp, hidden, w13, nullptr, sorted_pairs, tile_experts, topk_ids.size(1), bm, act);
  }
  run_gemm<kOnCuda, false>(kOp, act, w2, &topk_weights, sorted_pairs, tile_experts, topk_ids.size(1), bm, expert_out);
  run_combine<kOnCuda>(kOp, expert_out, topk_ids, expert_offset, experts, shared_out ? hidden : none,
                       shared_out.value_or(none), shared_gate_w.value_or(none), out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(qwen35_native, CPU, m) {
  m.impl("moe_route", &moe_route_impl<false>);
  m.impl("fused_moe", &fused_moe_impl<false>);
}

#if defined(Q35_WITH_CUDA)
TORCH_LIBRARY_IMPL(qwen35_native, CUDA, m) {
  m.impl("moe_route", &moe_route_impl<true>);
  m.impl("fused_moe", &fused_moe_impl<true>);
}
#endif

}  // namespace q35::glue::moe
