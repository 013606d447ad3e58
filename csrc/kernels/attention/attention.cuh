// Softmax attention kernels (MODEL_SPEC §3c.5-6, §3f.4): varlen causal GQA prefill over the paged KV cache, the same
// kernel over contiguous K/V for the vision tower (varlen_attention), and split-KV decode with a log-sum-exp merge.
// Kernels: prefill_attention.cu, decode_attention.cu (building blocks: attention_tile.cuh; design: README.md).
// Torch glue: csrc/torch/attention_ops.cpp. Python: ops/attention.py. Tests: tests/kernels/test_attention*.py.
// Bench: bench/attention.py.
#pragma once
#include <cstdint>
#include <type_traits>

#include "q35/common.h"

#include <cuda_runtime_api.h>

namespace q35 {

// Keys per K/V tile of every attention kernel; a paged-cache block of this many tokens is one tile (README.md).
constexpr int kAttentionTileKeys = 64;
// Packed query rows (query tokens x q heads of one kv group) per prefill CTA and at most per decode CTA.
constexpr int kAttentionTileRows = 64;

struct AttentionPrefillParams {
  // sizes
  int num_seqs;      // N
  int num_q_heads;   // Hq
  int num_kv_heads;  // Hkv (Hq % Hkv == 0)
  int head_dim;      // D (the kernel's template value)
  int block_shift;   // paged: log2(block_size)
  int64_t num_tiles_bound;  // grid size: >= sum over sequences of ceil(L_n * G / kAttentionTileRows)
  int64_t num_q_tokens;     // T (the sm_90a kernel sizes its grid of 128-row tiles from it)
  int64_t num_cache_slots;  // paged: num_blocks * block_size (the sm_90a kernel's K/V tensor maps)
  // inputs
  const void* q_ptr;               // [T, Hq, D] T (token stride given, heads contiguous)
  const void* k_ptr;               // paged: k_cache [num_blocks, block_size, Hkv, D]; varlen: k [T, Hkv, D]
  const void* v_ptr;               // like k
  const int32_t* cu_seqlens_q_ptr;  // [N + 1] query offsets (varlen: also the key offsets)
  const int32_t* seq_lens_ptr;     // paged: [N] tokens in the cache incl. the new ones; varlen: nullptr
  const int32_t* block_tables_ptr;  // paged: [N, max_blocks]; varlen: nullptr
  const void* gate_ptr;            // [T, Hq * D] T (token stride given) or nullptr
  // outputs
  void* out_ptr;  // [T, Hq, D] T contiguous
  // strides (elements)
  int64_t q_token_stride;
  int64_t kv_token_stride;  // paged: Hkv * D; varlen: k's and v's token stride (equal)
  int64_t block_table_stride;
  int64_t gate_token_stride;
  // scalars
  float scale_log2;  // softmax scale * log2(e)
  bool causal;       // paged: always (query i of L sees keys <= seq_len - L + i)
};
static_assert(std::is_trivially_copyable_v<AttentionPrefillParams>);

struct AttentionDecodeParams {
  // sizes
  int num_seqs;        // N
  int tokens_per_seq;  // L: query tokens per sequence (rows [n L, (n + 1) L) of q)
  int num_q_heads;     // Hq
  int num_kv_heads;    // Hkv
  int head_dim;        // D
  int block_shift;     // log2(block_size)
  int num_splits;      // S: KV splits per (sequence, kv head); 1 writes `out` directly
  // inputs
  const void* q_ptr;                // [N L, Hq, D] T (token stride given)
  const void* k_cache_ptr;          // [num_blocks, block_size, Hkv, D] T
  const void* v_cache_ptr;          // [num_blocks, block_size, Hkv, D] T
  const int32_t* seq_lens_ptr;      // [N]
  const int32_t* block_tables_ptr;  // [N, max_blocks]
  const void* gate_ptr;             // [N L, Hq * D] T or nullptr
  // outputs
  void* out_ptr;         // [N L, Hq, D] T contiguous
  float* partial_o_ptr;  // S > 1: [S, N L, Hq, D] f32 workspace (each split's O normalised by its own sum)
  float* partial_lse_ptr;  // S > 1: [S, N L, Hq] f32 workspace (log2-sum-exp2 of the split's scaled scores)
  // strides (elements)
  int64_t q_token_stride;
  int64_t block_table_stride;
  int64_t gate_token_stride;
  // scalars
  float scale_log2;
};
static_assert(std::is_trivially_copyable_v<AttentionDecodeParams>);

// Head dims with kernels: varlen 64 and 72 (vision towers) and 256; paged prefill and decode 256 (text).
constexpr bool kPrefillPagedHeadDim(int head_dim) { return head_dim == 256; }
#define Q35_FOR_EACH_PREFILL_ATTENTION_CONFIG(X) \
  X(__half, 64) X(__half, 72) X(__half, 256) X(__nv_bfloat16, 64) X(__nv_bfloat16, 72) X(__nv_bfloat16, 256)
#define Q35_FOR_EACH_DECODE_ATTENTION_CONFIG(X) X(__half, 256) X(__nv_bfloat16, 256)

// KV splits for the decode kernel: as many as keep one wave of CTAs (one CTA per SM: its shared memory) busy, but
// never fewer than kMinTilesPerSplit key tiles per split of the longest possible context.
constexpr int kDecodeMinTilesPerSplit = 2;
constexpr int kDecodeMaxSplits = 1024;
inline int decode_num_splits(int64_t ctas_per_split, int64_t max_kv_tokens, int num_sms) {
  const int64_t tiles = ceil_div(max_kv_tokens, kAttentionTileKeys);
  int64_t splits = ctas_per_split >= num_sms ? 1 : num_sms / ctas_per_split;
  const int64_t cap = ceil_div(tiles, kDecodeMinTilesPerSplit);
  if (splits > cap) splits = cap;
  if (splits > kDecodeMaxSplits) splits = kDecodeMaxSplits;
  return static_cast<int>(splits < 1 ? 1 : splits);
}

// The sm_90a paged prefill (prefill_attention_sm90a.cu; README.md "sm_90a path"): head_dim 256, 16-bit types,
// blocks of >= 64 tokens. attention_sm90a_available(): the device (or the emulated arch) runs it;
// attention_sm90a_supports(p): the arguments fit it. The glue picks the path (csrc/torch/attention_ops.cpp).
// variant, bits (same results whichever): kAttnSm90aPingPong -- the two consumer warpgroups take turns issuing
// their GEMMs (FlashAttention-3's ping-pong order, named barriers), so that one's softmax runs while the other's
// GEMMs do; kAttnSm90aVMnMajor -- P V reads V MN-major from its TMA stage (wgmma imm-trans-b) instead of a V^T
// written by the transposer warps (its MN-major wgmma layouts matched an H200 element by element,
// tests/emu/test_wgmma.py -m gpu; the automatic choice, csrc/torch/attention_ops.cpp).
constexpr int kAttnSm90aPingPong = 1;
constexpr int kAttnSm90aVMnMajor = 2;
inline bool attention_sm90a_supports(const AttentionPrefillParams& p) {
  return p.block_tables_ptr != nullptr && p.head_dim == 256 && p.block_shift >= 6 &&
         p.num_cache_slots < (int64_t{1} << 31) && reinterpret_cast<uintptr_t>(p.k_ptr) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p.v_ptr) % 16 == 0 && p.kv_token_stride % 8 == 0;
}

namespace cuda {
bool attention_sm90a_available();
template <typename T>
cudaError_t launch_prefill_attention_sm90a(const AttentionPrefillParams& params, int variant, cudaStream_t stream);
template <typename T, int D>
cudaError_t launch_prefill_attention(const AttentionPrefillParams& params, cudaStream_t stream);
template <typename T, int D>
cudaError_t launch_decode_attention(const AttentionDecodeParams& params, cudaStream_t stream);
}  // namespace cuda
namespace emu {
bool attention_sm90a_available();
template <typename T>
cudaError_t launch_prefill_attention_sm90a(const AttentionPrefillParams& params, int variant, cudaStream_t stream);
template <typename T, int D>
cudaError_t launch_prefill_attention(const AttentionPrefillParams& params, cudaStream_t stream);
template <typename T, int D>
cudaError_t launch_decode_attention(const AttentionDecodeParams& params, cudaStream_t stream);
}  // namespace emu

}  // namespace q35
