// Argument checks of the MoE ops (STYLE habit 10/11), shared by moe_ops.cpp and moe_stage_ops.cpp. Each matches a
// `Requires:` of a kernel in csrc/kernels/moe/.
#pragma once
#include <ATen/core/Tensor.h>

#include "kernels/moe/moe_align.cuh"
#include "kernels/moe/moe_gemm.cuh"
#include "kernels/moe/moe_route.cuh"
#include "torch/checks.h"

namespace q35::glue::moe {

constexpr int kMaxTopK = kWarpSize;  // combine keeps a token's local-pair mask in one 32-bit word

inline int64_t vec_elems(const at::Tensor& t) { return kVecBytes / t.element_size(); }

inline void check_aligned(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % kVecBytes == 0, "qwen35_native.", op, ": ", name,
              " must start at a 16-byte aligned address, got storage offset ", t.storage_offset());
}

// A contiguous tensor of `dtype` and `shape` on `ref`'s device (outputs and index buffers).
inline void check_buffer(const char* op, const char* name, const at::Tensor& t, c10::ScalarType dtype,
                         c10::IntArrayRef shape, const char* what, const at::Tensor& ref, const char* ref_name) {
  check_defined(op, name, t);
  check_same_device(op, name, t, ref, ref_name);
  TORCH_CHECK(t.scalar_type() == dtype, "qwen35_native.", op, ": ", name, " must have dtype ", c10::toString(dtype),
              ", got ", c10::toString(t.scalar_type()));
  check_shape(op, name, t, shape, what);
  TORCH_CHECK(t.is_contiguous(), "qwen35_native.", op, ": ", name, " must be contiguous, got strides ",
              shape_str(t.strides()));
}

// hidden [N, H] (float dtype, rows with one 16-byte-multiple stride, aligned): gathered by the gate_up GEMM.
inline void check_hidden(const char* op, const at::Tensor& hidden) {
  check_defined(op, "hidden", hidden);
  check_dtype(op, "hidden", hidden, {at::kFloat, at::kHalf, at::kBFloat16});
  check_dim(op, "hidden", hidden, 2);
  check_last_dim_contiguous(op, "hidden", hidden);
  const int64_t stride = hidden.size(0) > 1 ? hidden.stride(0) : hidden.size(1);
  TORCH_CHECK(stride % vec_elems(hidden) == 0, "qwen35_native.", op, ": hidden rows must start every multiple of ",
              vec_elems(hidden), " elements (16 bytes), got row stride ", stride);
  check_aligned(op, "hidden", hidden);
}

// An expert weight: 3-D, contiguous, 16-byte aligned, with the dtype and device of `ref`.
inline void check_expert_weight(const char* op, const char* name, const at::Tensor& w, const at::Tensor& ref,
                                const char* ref_name) {
  check_defined(op, name, w);
  check_same_device(op, name, w, ref, ref_name);
  TORCH_CHECK(w.scalar_type() == ref.scalar_type(), "qwen35_native.", op, ": ", name, " must have the dtype of ",
              ref_name, " (", c10::toString(ref.scalar_type()), "), got ", c10::toString(w.scalar_type()));
  check_dim(op, name, w, 3);
  TORCH_CHECK(w.is_contiguous(), "qwen35_native.", op, ": ", name, " must be contiguous, got strides ",
              shape_str(w.strides()));
  check_aligned(op, name, w);
}

// Sizes the GEMMs support: E <= kMoeAlignMaxExperts local experts; H and I multiples of 16 bytes, fitting int32.
inline void check_expert_sizes(const char* op, const at::Tensor& ref, int64_t experts, int64_t h, int64_t inter) {
  TORCH_CHECK(experts <= kMoeAlignMaxExperts, "qwen35_native.", op, ": at most ", kMoeAlignMaxExperts,
              " local experts are supported, got ", experts);
  TORCH_CHECK(h % vec_elems(ref) == 0 && inter % vec_elems(ref) == 0, "qwen35_native.", op,
              ": H and I must be multiples of ", vec_elems(ref), " (16 bytes), got H=", h, " I=", inter);
  TORCH_CHECK(h < (int64_t{1} << 31) && 2 * inter < (int64_t{1} << 31), "qwen35_native.", op,
              ": H and 2*I must fit int32, got H=", h, " I=", inter);
}

// w13 [E, 2I, H] (gate rows first) for hidden [N, H].
inline void check_w13(const char* op, const at::Tensor& hidden, const at::Tensor& w13) {
  check_expert_weight(op, "w13", w13, hidden, "hidden");
  TORCH_CHECK(w13.size(2) == hidden.size(1) && w13.size(1) % 2 == 0, "qwen35_native.", op,
              ": w13 must have shape [E, 2*I, H=", hidden.size(1), "], got ", shape_str(w13.sizes()));
  check_expert_sizes(op, hidden, w13.size(0), hidden.size(1), w13.size(1) / 2);
}

// w13 [E, 2I, H] and w2 [E, H, I].
inline void check_expert_weights(const char* op, const at::Tensor& hidden, const at::Tensor& w13,
                                 const at::Tensor& w2) {
  check_w13(op, hidden, w13);
  check_expert_weight(op, "w2", w2, hidden, "hidden");
  check_shape(op, "w2", w2, {w13.size(0), hidden.size(1), w13.size(1) / 2}, "[E, H, I]");
}

// topk_weights fp32 [N, k], topk_ids int32/int64 [N, k], both contiguous; 1 <= k <= 32.
inline void check_topk(const char* op, const at::Tensor& hidden, const at::Tensor* topk_weights,
                       const at::Tensor& topk_ids) {
  check_defined(op, "topk_ids", topk_ids);
  check_dtype(op, "topk_ids", topk_ids, {at::kInt, at::kLong});
  check_dim(op, "topk_ids", topk_ids, 2);
  check_same_device(op, "topk_ids", topk_ids, hidden, "hidden");
  TORCH_CHECK(topk_ids.size(0) == hidden.size(0) && topk_ids.size(1) >= 1 && topk_ids.size(1) <= kMaxTopK,
              "qwen35_native.", op, ": topk_ids must have shape [N=", hidden.size(0), ", k] with 1 <= k <= ", kMaxTopK,
              ", got ", shape_str(topk_ids.sizes()));
  TORCH_CHECK(topk_ids.is_contiguous(), "qwen35_native.", op, ": topk_ids must be contiguous, got strides ",
              shape_str(topk_ids.strides()));
  if (topk_weights)
    check_buffer(op, "topk_weights", *topk_weights, at::kFloat, topk_ids.sizes(), "topk_ids.shape", hidden, "hidden");
}

inline void check_expert_range(const char* op, int64_t expert_offset, int64_t num_local_experts) {
  TORCH_CHECK(expert_offset >= 0 && expert_offset < (int64_t{1} << 31), "qwen35_native.", op,
              ": expert_offset must be in [0, 2^31), got ", expert_offset);
  TORCH_CHECK(num_local_experts >= 0 && num_local_experts <= kMoeAlignMaxExperts, "qwen35_native.", op,
              ": the number of local experts must be in [0, ", kMoeAlignMaxExperts, "], got ", num_local_experts);
}

// The rows per GEMM tile of a dtype: 16 (decode tiles), 64 (prefill tiles, mma.sync), 128 (prefill tiles of the
// sm_90a kernels) or 256 (the sm_90a kernels in 2-CTA clusters sharing the weights); 64-256 for 16-bit types only.
// Whether 128 / 256 run on the device: check_block_m_runs_here.
// fused_moe also takes 1 (16-bit): no tiles, each pair on its own grid row of the skinny kernel (the stage ops,
// which take moe_align's tiles, do not).
inline void check_block_m(const char* op, int64_t block_m, c10::ScalarType dtype, bool pairs_ok = false) {
  const bool wide = dtype != at::kFloat;
  const bool ok = block_m == kMoeDecodeBlockM || (pairs_ok && wide && block_m == kMoeSkinnyBlockM) ||
                  ((block_m == kMoePrefillBlockM || block_m == kMoeSm90BlockM || block_m == kMoeSm90PairBlockM) &&
                   wide);
  TORCH_CHECK(ok, "qwen35_native.", op, ": block_m must be ", pairs_ok && wide ? "1, " : "", kMoeDecodeBlockM,
              wide ? ", 64, 128 or 256" : "", " for ", c10::toString(dtype), ", got ", block_m);
}

inline bool is_sm90a_block_m(int64_t block_m) { return block_m == kMoeSm90BlockM || block_m == kMoeSm90PairBlockM; }

// sorted_pairs int32 [max_tiles * block_m], tile_experts int32 [max_tiles] (moe_align's outputs).
inline void check_align_buffers(const char* op, const at::Tensor& sorted_pairs, const at::Tensor& tile_experts,
                                int64_t num_pairs, int64_t num_local_experts, int64_t block_m, const at::Tensor& ref,
                                const char* ref_name) {
  const int64_t tiles = moe_max_tiles(num_pairs, num_local_experts, block_m);
  TORCH_CHECK(tiles * block_m < (int64_t{1} << 31), "qwen35_native.", op, ": too many (token, expert) pairs: ",
              num_pairs, " pairs need ", tiles * block_m, " sorted rows, more than int32 indexes");
  check_buffer(op, "sorted_pairs", sorted_pairs, at::kInt, {tiles * block_m}, "[max_tiles * block_m]", ref, ref_name);
  check_buffer(op, "tile_experts", tile_experts, at::kInt, {tiles}, "[max_tiles]", ref, ref_name);
}

}  // namespace q35::glue::moe
