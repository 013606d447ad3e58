// Argument checks of the attention ops (csrc/torch/attention_ops.cpp): shapes, dtypes, strides and alignment the
// kernels require, and, for CPU tensors (the emulator would read out of bounds), the values of the batch metadata.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <vector>

#include "torch/checks.h"

namespace q35::glue {

constexpr int64_t kMaxInt = (int64_t{1} << 31) - 1;
constexpr int64_t kAlignElems = 8;  // 16 bytes of 16-bit elements: the kernels' cp.async / vector unit

inline void check_rows_16b(const char* op, const char* name, const at::Tensor& t, int64_t head_dim) {
  const bool ok = t.stride(-1) == 1 && (t.dim() < 3 || t.size(-2) <= 1 || t.stride(-2) == head_dim) &&
                  (t.size(0) <= 1 || t.stride(0) % kAlignElems == 0) &&
                  reinterpret_cast<uintptr_t>(t.data_ptr()) % (kAlignElems * 2) == 0;
  TORCH_CHECK(ok, "qwen35_native.", op, ": ", name, " must have contiguous heads of head_dim elements, a token "
              "stride that is a multiple of 8 and a 16-byte aligned start, got strides ", shape_str(t.strides()));
}

inline void check_out(const char* op, const at::Tensor& out, const at::Tensor& q) {
  check_dtype(op, "out", out, {q.scalar_type()});
  check_same_device(op, "out", out, q, "q");
  TORCH_CHECK(out.is_contiguous() && out.dim() >= 2 && out.size(0) == q.size(0) && out.numel() == q.numel(),
              "qwen35_native.", op, ": out must be contiguous [T, Hq*D] (or [T, Hq, D]) with T=", q.size(0),
              ", got shape ", shape_str(out.sizes()));
  TORCH_CHECK(reinterpret_cast<uintptr_t>(out.data_ptr()) % (kAlignElems * 2) == 0, "qwen35_native.", op,
              ": out must start 16-byte aligned");
}

inline void check_q(const char* op, const at::Tensor& q) {
  check_dtype(op, "q", q, {at::kHalf, at::kBFloat16});
  check_dim(op, "q", q, 3);
  TORCH_CHECK(q.size(0) * q.size(1) <= kMaxInt, "qwen35_native.", op, ": q tokens * heads must be < 2^31, got ",
              q.size(0) * q.size(1));
  check_rows_16b(op, "q", q, q.size(2));
}

inline void check_paged_args(const char* op, const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                             const at::Tensor& seq_lens, const at::Tensor& block_tables,
                             const c10::optional<at::Tensor>& gate, const at::Tensor& out) {
  check_q(op, q);
  const int64_t T = q.size(0), Hq = q.size(1), D = q.size(2);
  check_dim(op, "k_cache", k_cache, 4);
  check_dtype(op, "k_cache", k_cache, {q.scalar_type()});
  check_dtype(op, "v_cache", v_cache, {q.scalar_type()});
  check_shape(op, "v_cache", v_cache, k_cache.sizes(), "k_cache.shape");
  TORCH_CHECK(k_cache.size(3) == D, "qwen35_native.", op, ": k_cache must have head_dim=", D,
              " in its last dimension, got shape ", shape_str(k_cache.sizes()));
  for (const auto* c : {&k_cache, &v_cache}) {
    TORCH_CHECK(c->is_contiguous() && reinterpret_cast<uintptr_t>(c->data_ptr()) % (kAlignElems * 2) == 0,
                "qwen35_native.", op, ": ", c == &k_cache ? "k_cache" : "v_cache",
                " must be contiguous [num_blocks, block_size, kv_heads, head_dim] and 16-byte aligned");
  }
  const int64_t Hkv = k_cache.size(2), bs = k_cache.size(1);
  TORCH_CHECK(Hkv > 0 && Hq % Hkv == 0, "qwen35_native.", op, ": q heads (", Hq,
              ") must be a multiple of the cache's kv heads (", Hkv, ")");
  TORCH_CHECK(bs > 0 && (bs & (bs - 1)) == 0, "qwen35_native.", op,
              ": the kernel needs a power-of-two block_size (64 preferred), got ", bs);
  check_dtype(op, "seq_lens", seq_lens, {at::kInt});
  check_dim(op, "seq_lens", seq_lens, 1);
  TORCH_CHECK(seq_lens.is_contiguous(), "qwen35_native.", op, ": seq_lens must be contiguous");
  check_dtype(op, "block_tables", block_tables, {at::kInt});
  check_dim(op, "block_tables", block_tables, 2);
  TORCH_CHECK(block_tables.size(0) == seq_lens.size(0) && block_tables.stride(1) == 1, "qwen35_native.", op,
              ": block_tables must be [N=", seq_lens.size(0), ", max_blocks] with contiguous rows, got shape ",
              shape_str(block_tables.sizes()), " strides ", shape_str(block_tables.strides()));
  if (gate) {
    check_dtype(op, "gate", *gate, {q.scalar_type()});
    check_shape(op, "gate", *gate, {T, Hq * D}, "[T, Hq*D]");
    check_same_device(op, "gate", *gate, q, "q");
    check_rows_16b(op, "gate", *gate, D);
  }
  check_out(op, out, q);
  for (const auto* t : {&k_cache, &v_cache, &seq_lens, &block_tables}) check_same_device(op, "cache/metadata", *t, q, "q");
}

inline void check_varlen_args(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& out) {
  check_q(op, q);
  for (const auto* t : {&k, &v}) {
    const char* name = t == &k ? "k" : "v";
    check_dtype(op, name, *t, {q.scalar_type()});
    check_dim(op, name, *t, 3);
    check_same_device(op, name, *t, q, "q");
    TORCH_CHECK(t->size(0) == q.size(0) && t->size(2) == q.size(2), "qwen35_native.", op, ": ", name,
                " must have shape [T=", q.size(0), ", Hkv, D=", q.size(2), "], got ", shape_str(t->sizes()));
    check_rows_16b(op, name, *t, q.size(2));
  }
  check_shape(op, "v", v, k.sizes(), "k.shape");
  TORCH_CHECK(k.stride(0) == v.stride(0), "qwen35_native.", op, ": k and v must have the same token stride, got ",
              k.stride(0), " and ", v.stride(0));
  TORCH_CHECK(k.size(1) > 0 && q.size(1) % k.size(1) == 0, "qwen35_native.", op, ": q heads (", q.size(1),
              ") must be a multiple of k heads (", k.size(1), ")");
  check_out(op, out, q);
}

inline void check_cu_seqlens_arg(const char* op, const char* name, const at::Tensor& cu, const at::Tensor& q,
                                 int64_t num_seqs) {
  check_dtype(op, name, cu, {at::kInt});
  check_dim(op, name, cu, 1);
  check_same_device(op, name, cu, q, "q");
  TORCH_CHECK(cu.is_contiguous() && cu.size(0) >= 2 && (num_seqs < 0 || cu.size(0) == num_seqs + 1),
              "qwen35_native.", op, ": ", name, " must be contiguous [N+1] with N >= 1", num_seqs < 0 ? "" : " = seq_lens",
              ", got shape ", shape_str(cu.sizes()));
}

inline void check_cu_seqlens_values_cpu(const char* op, const char* name, const at::Tensor& cu, int64_t total) {
  const int32_t* c = cu.data_ptr<int32_t>();
  bool ok = c[0] == 0 && c[cu.size(0) - 1] == total;
  for (int64_t i = 1; i < cu.size(0); ++i) ok = ok && c[i] >= c[i - 1];
  TORCH_CHECK(ok, "qwen35_native.", op, ": ", name, " must start at 0, be non-decreasing and end at ", total);
}

// seq_lens[n] >= query tokens of n, and the block-table entries covering seq_lens[n] tokens are valid blocks.
inline void check_kv_values_cpu(const char* op, const std::vector<int64_t>& q_lens, const at::Tensor& seq_lens,
                                const at::Tensor& block_tables, const at::Tensor& k_cache) {
  const int32_t* lens = seq_lens.data_ptr<int32_t>();
  const int32_t* table = block_tables.data_ptr<int32_t>();
  const int64_t bs = k_cache.size(1), blocks = k_cache.size(0);
  for (int64_t n = 0; n < seq_lens.size(0); ++n) {
    TORCH_CHECK(lens[n] >= q_lens[n] && lens[n] <= block_tables.size(1) * bs, "qwen35_native.", op, ": seq_lens[", n,
                "] must be >= its query tokens (", q_lens[n], ") and <= max_blocks*block_size=",
                block_tables.size(1) * bs, ", got ", lens[n]);
    for (int64_t b = 0; b < (lens[n] + bs - 1) / bs; ++b) {
      const int32_t blk = table[n * block_tables.stride(0) + b];
      TORCH_CHECK(blk >= 0 && blk < blocks, "qwen35_native.", op, ": block_tables[", n, ", ", b,
                  "] must be in [0, num_blocks=", blocks, "), got ", blk);
    }
  }
}

inline void check_paged_values_cpu(const char* op, const at::Tensor& cu, const at::Tensor& seq_lens,
                                   const at::Tensor& block_tables, const at::Tensor& k_cache, int64_t total) {
  check_cu_seqlens_values_cpu(op, "cu_seqlens_q", cu, total);
  const int32_t* c = cu.data_ptr<int32_t>();
  std::vector<int64_t> q_lens(seq_lens.size(0));
  for (size_t n = 0; n < q_lens.size(); ++n) q_lens[n] = c[n + 1] - c[n];
  check_kv_values_cpu(op, q_lens, seq_lens, block_tables, k_cache);
}

inline void check_decode_values_cpu(const char* op, int64_t tokens_per_seq, const at::Tensor& seq_lens,
                                    const at::Tensor& block_tables, const at::Tensor& k_cache) {
  check_kv_values_cpu(op, std::vector<int64_t>(seq_lens.size(0), tokens_per_seq), seq_lens, block_tables, k_cache);
}

}  // namespace q35::glue
