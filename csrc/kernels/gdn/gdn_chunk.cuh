// Chunked gated delta rule (prefill), MODEL_SPEC §3b.9, chunk C = 64, K = V = 128, on tensor cores, with the gates
// computed inline from raw a, b (raw_gates) or read precomputed, q/k L2 norm fused, the fp32 state read from and
// written to cache slots, optionally the gated RMSNorm of the output fused, and long sequences split into segments
// processed by different CTAs (decay shortcut, or exact affine chaining of the segment states).
// Design: README.md beside this file. Kernels: gdn_chunk.cu (the scan), gdn_chunk_split.cu (segment plan, chain).
// Torch glue: csrc/torch/gdn_ops.cpp. Python: ops/gdn.py, ops/gdn_layer.py. Tests: tests/kernels/test_gdn_chunk*.py.
#pragma once
#include <cstdint>
#include <type_traits>

#include "q35/common.h"

#include <cuda_runtime_api.h>

namespace q35 {

struct GdnChunkParams {
  // sizes
  int64_t num_seqs;     // N (sequences packed along the token axis, cu_seqlens)
  int64_t num_tokens;   // T
  int num_k_heads;      // Hk
  int num_v_heads;      // Hv (multiple of Hk); K = V = 128
  int64_t segment_len;  // tokens per segment (multiple of 64); >= T: every sequence is one segment
  int64_t max_items;    // upper bound on segments over all sequences (grid.x); see gdn_chunk_plan
  bool split;           // segment_len < T: segments of one sequence run on different CTAs
  // inputs (token t of head h at ptr + t * token_stride + h * 128; the head dim contiguous)
  const void* q_ptr;  // [T, Hk, K] T
  const void* k_ptr;  // [T, Hk, K] T
  const void* v_ptr;  // [T, Hv, V] T
  const void* g_ptr;     // [T, Hv] float32 (g_fp32) or T: log decay (raw_gates: a, T)
  const void* beta_ptr;  // [T, Hv] T or float32 (beta_fp32) (raw_gates: b, T)
  const void* a_log_ptr;    // raw_gates: [Hv] T or float32
  const void* dt_bias_ptr;  // raw_gates: [Hv] T or float32
  const void* cu_seqlens_ptr;   // [N+1] int32/int64
  const void* state_in_slots;   // [N] int32/int64 (nullptr: n)
  const void* state_out_slots;  // [N] int32/int64 (nullptr: n)
  const bool* has_initial_ptr;  // [N]: read state_in[slot] (nullptr: every sequence has one when state_in is set)
  const float* state_in_ptr;    // [slots, Hv, K, V] float32 (nullptr: zeros)
  const void* z_ptr;            // norm: [T, Hv, V] T gate of the gated RMSNorm (nullptr: output o itself)
  const void* norm_weight_ptr;  // norm: [V] T or float32
  // outputs
  void* out_ptr;          // [T, Hv, V] T
  float* state_out_ptr;   // [slots, Hv, K, V] float32, may alias state_in_ptr (nullptr: not written)
  // split workspace (split only): plan [max_items, Hv] int32; entry / local / transition states
  // [max_items, Hv, K, V] float32 (the state entering each segment; a segment's state from zero; its K x K map)
  int* plan_ptr;
  float* ws_entry_ptr;
  float* ws_local_ptr;
  float* ws_trans_ptr;
  // chunk-local pre-pass (arch 91 only): per chunk slot (gdn_chunk_slots) and value head, Tu and P [64][64] and -w
  // [64][128] and the decay factors; per slot and k head, q after the L2 norm [64 token][128] and k after it,
  // transposed [128 key][64 token]; in T (the factors fp32), as the fused kernels round them. Written by
  // gdn_chunk_prep_kernel, read by the scan passes.
  void* prep_tu_ptr;  // [max_chunk_slots, Hv, 64, 64]
  void* prep_p_ptr;   // [max_chunk_slots, Hv, 64, 64]
  void* prep_w_ptr;   // [max_chunk_slots, Hv, 64, 128]
  void* prep_q_ptr;   // [max_chunk_slots, Hk, 64, 128]
  void* prep_kt_ptr;  // [max_chunk_slots, Hk, 128, 64]
  float* prep_gates_ptr;  // [max_chunk_slots, Hv, 2, 64] float32: exp(G) and exp(G_last - G) per token
  int64_t max_chunk_slots;
  int prep_heads_per_cta;  // value heads per pre-pass CTA, sharing its q / k loads and L2 norms: a divisor of
                           // Hv / Hk (0: 1)
  // strides (elements)
  int64_t q_token_stride;
  int64_t k_token_stride;
  int64_t v_token_stride;
  int64_t g_token_stride;
  int64_t beta_token_stride;
  int64_t z_token_stride;
  int64_t out_token_stride;
  // scalars
  float scale;
  float eps;                 // of the gated norm
  float shortcut_log_decay;  // a segment may start from a warm-up from zero once the warm-up decays below this
  int max_warmup_chunks;
  int pass;                  // set by the launcher: 0 = segment states for the exact chain, 1 = outputs
  int impl;                  // kGdnImplAuto (sm_90a kernel where it runs), kGdnImplSm80, kGdnImplSm90a[Prepass]
  bool l2norm;
  bool raw_gates;
  bool g_fp32;
  bool beta_fp32;
  bool a_log_fp32;
  bool dt_bias_fp32;
  bool norm_weight_fp32;
  bool z_vec;  // z rows 16-byte aligned: vector loads in the norm epilogue
  bool cu_seqlens_int64;
  bool slots_int64;
};
static_assert(std::is_trivially_copyable_v<GdnChunkParams>);

constexpr int kGdnChunkTokens = 64;
// Which chunk kernel runs: auto = the wgmma kernel (gdn_chunk_sm90a.cu) on an sm_90 device or the emulator at
// sm_90, else the mma.sync kernel (gdn_chunk.cu); the others force one (sm_90a where it cannot run: an error).
constexpr int kGdnImplAuto = 0;
constexpr int kGdnImplSm80 = 80;
constexpr int kGdnImplSm90a = 90;
// The sm_90a scan with its chunk-local stages (gates, L2 norms, K^T, K K^T, Q K^T, the inverse, w) moved out of
// the sequential loop into a pre-pass kernel over every (chunk, value head) at once (gdn_chunk_prep.cu): per chunk
// the scan CTAs then only run the four state-dependent products and the output. Same bits as kGdnImplSm90a.
constexpr int kGdnImplSm90aPrepass = 91;
constexpr int kGdnMinAutoSegment = 512;        // auto segments are at least this long (warm-up stays cheap)
constexpr int kGdnMaxWarmupChunks = 4;         // decay shortcut: warm-up chunks before a segment boundary
constexpr float kGdnShortcutLogDecay = -12.0f;  // exp(-12) = 6e-6: far below bf16 resolution

struct GdnChunkPlan {
  int64_t segment_len;
  int64_t max_items;
  bool split;
};

// Segment length: each (sequence, head) a CTA when that fills the GPU; otherwise sequences are cut into segments
// so that about num_sms CTAs run (requested_segment_len > 0 overrides, rounded up to whole chunks).
inline GdnChunkPlan gdn_chunk_plan(int64_t num_tokens, int64_t num_seqs, int num_v_heads, int num_sms,
                                   int64_t requested_segment_len) {
  int64_t len = num_tokens + 1;  // no split
  if (requested_segment_len > 0) {
    len = round_up(requested_segment_len, kGdnChunkTokens);
  } else if (num_seqs > 0 && num_seqs * num_v_heads < num_sms) {
    const int64_t per_seq = num_sms / (num_seqs * num_v_heads);
    const int64_t avg = ceil_div(num_tokens, num_seqs);
    len = round_up(ceil_div(avg, per_seq), kGdnChunkTokens);
    if (len < kGdnMinAutoSegment) len = kGdnMinAutoSegment;
  }
  const bool split = len < num_tokens;
  return {len, split ? num_seqs + num_tokens / len : num_seqs, split};
}

// Chunk slots of the pre-pass: chunk i of sequence n (tokens from start_n + 64 i) is slot n + floor(start_n / 64) + i,
// unique over all sequences and below N + floor(T / 64) whatever their lengths (the host does not know them).
inline int64_t gdn_chunk_slots(int64_t num_tokens, int64_t num_seqs) { return num_seqs + num_tokens / kGdnChunkTokens; }

#define Q35_FOR_EACH_GDN_CHUNK_TYPES(X) X(__half) X(__nv_bfloat16)

namespace cuda {
template <typename T>
cudaError_t launch_gdn_chunk(const GdnChunkParams& params, cudaStream_t stream);
}
namespace emu {
template <typename T>
cudaError_t launch_gdn_chunk(const GdnChunkParams& params, cudaStream_t stream);
}

// Launchers of the split path (gdn_chunk_split.cu), of one pass of the wgmma kernel (gdn_chunk_sm90a.cu:
// cudaErrorInvalidDeviceFunction where sm_90a does not run) and of the chunk-local pre-pass (gdn_chunk_prep.cu),
// called by launch_gdn_chunk.
namespace cuda {
bool gdn_chunk_sm90a_available();
template <typename T>
cudaError_t launch_gdn_chunk_pass_sm90a(const GdnChunkParams& params, dim3 grid, cudaStream_t stream);
template <typename T>
cudaError_t launch_gdn_chunk_prep(const GdnChunkParams& params, cudaStream_t stream);
template <typename T>
cudaError_t launch_gdn_chunk_segment_plan(const GdnChunkParams& params, cudaStream_t stream);
cudaError_t launch_gdn_chunk_chain(const GdnChunkParams& params, cudaStream_t stream);
}  // namespace cuda
namespace emu {
bool gdn_chunk_sm90a_available();
template <typename T>
cudaError_t launch_gdn_chunk_pass_sm90a(const GdnChunkParams& params, dim3 grid, cudaStream_t stream);
template <typename T>
cudaError_t launch_gdn_chunk_prep(const GdnChunkParams& params, cudaStream_t stream);
template <typename T>
cudaError_t launch_gdn_chunk_segment_plan(const GdnChunkParams& params, cudaStream_t stream);
cudaError_t launch_gdn_chunk_chain(const GdnChunkParams& params, cudaStream_t stream);
}  // namespace emu

}  // namespace q35
