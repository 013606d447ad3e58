// Gated delta rule, token by token (decode steps and short multi-token verification), MODEL_SPEC §3b.8:
//   S = exp(g_t) S;  S += k_t (beta_t (v_t - S^T k_t))^T;  o_t = S^T (scale q_t)
// with the gates computed inline from the raw a, b (raw_gates) or read precomputed, q/k L2 norm fused, the state
// read from and written to cache slots (in place when state_in == state_out), optionally every intermediate state
// written (speculative verification), and optionally the gated RMSNorm of the output row fused (gdn_decode).
// Kernel: gdn_recurrent.cu. Torch glue: csrc/torch/gdn_ops.cpp. Python: ops/gdn.py, ops/gdn_layer.py. Tests:
// tests/kernels/test_gdn_recurrent.py.
#pragma once
#include <cstdint>
#include <type_traits>

#include "q35/common.h"

#include <cuda_runtime_api.h>

namespace q35 {

struct GdnRecurrentParams {
  // sizes
  int64_t num_seqs;        // N
  int64_t num_tokens;      // packed tokens of all sequences
  int64_t tokens_per_seq;  // without cu_seqlens: sequence n is tokens [n * L, (n + 1) * L)
  int num_k_heads;         // Hk
  int num_v_heads;         // Hv (multiple of Hk); K = V = 128
  int num_sms;             // of the device (picks how many CTAs split the value columns of a head)
  // inputs (token t of head h at ptr + t * token_stride + h * 128; the head dim contiguous)
  const void* q_ptr;  // [tokens, Hk, K] T
  const void* k_ptr;  // [tokens, Hk, K] T
  const void* v_ptr;  // [tokens, Hv, V] T
  const void* g_ptr;     // [tokens, Hv] float32 (g_fp32) or T: log decay (raw_gates: a, T)
  const void* beta_ptr;  // [tokens, Hv] T or float32 (beta_fp32) (raw_gates: b, T)
  const void* a_log_ptr;    // raw_gates: [Hv] T or float32
  const void* dt_bias_ptr;  // raw_gates: [Hv] T or float32
  const void* cu_seqlens_ptr;   // [N+1] int32/int64 or nullptr
  const void* state_in_slots;   // [N] int32/int64 slot of sequence n in state_in (nullptr: n)
  const void* state_out_slots;  // [N] slot in state_out (nullptr: n)
  const float* state_in_ptr;    // [slots, Hv, K, V] float32 (nullptr: zeros)
  const void* z_ptr;            // norm: [tokens, Hv, V] T gate of the gated RMSNorm (nullptr: no norm)
  const void* norm_weight_ptr;  // norm: [V] T or float32
  // outputs
  void* out_ptr;              // [tokens, Hv, V] T: o, or the gated norm of o
  float* state_out_ptr;       // [slots, Hv, K, V] float32, may alias state_in_ptr (nullptr: not written)
  float* intermediate_ptr;    // [tokens, Hv, K, V] float32 state after each token (nullptr: not written)
  int* counters_ptr;          // norm with > 1 CTA per head and no cluster_norm: [tokens * Hv] int32 zeros
                              // (gdn_recurrent_needs_counters)
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
  float eps;  // of the gated norm
  bool l2norm;
  bool raw_gates;
  bool g_fp32;
  bool beta_fp32;
  bool a_log_fp32;
  bool dt_bias_fp32;
  bool norm_weight_fp32;
  bool cu_seqlens_int64;
  bool slots_int64;
  // norm with > 1 CTA per head (sm_90 only): the CTAs of a head form a thread block cluster and hand each other the
  // row's sums of squares through distributed shared memory; else the last CTA of a row (counters) normalises it
  bool cluster_norm;
  // fused conv (the gdn_decode layer op on sm_90; one token per sequence, conv width 4, 16-bit, with the norm): the
  // kernel convolves the token's q | k | v channels itself, one thread block cluster per (sequence, k head) -- each
  // CTA its v columns, the q / k channels shared out among the cluster and handed over through distributed shared
  // memory -- so q_ptr / k_ptr / v_ptr are unused, and conv states move by state_in_slots / state_out_slots
  bool fuse_conv;
  const void* conv_x_ptr;        // [N, C] T mixed q | k | v projections (row stride conv_x_row_stride)
  const void* conv_weight_ptr;   // [C, 4] T or float32 (conv_weight_fp32)
  void* conv_state_ptr;          // [slots, C, 3] T
  int64_t conv_x_row_stride;
  bool conv_weight_fp32;
};
static_assert(std::is_trivially_copyable_v<GdnRecurrentParams>);

// CTAs per (sequence, value head): each owns 128 / slices value columns of the state. Enough CTAs to cover the
// SMs at small batch (decode at tensor-parallel head counts), one per head once the batch fills the GPU. At most 8
// with cluster_norm (the portable cluster size); with fuse_conv, at most 8 CTAs for all value heads of a k head.
inline int gdn_recurrent_slices(const GdnRecurrentParams& p) {
  const int per_k_head = p.num_k_heads > 0 ? p.num_v_heads / p.num_k_heads : 1;
  const int max_slices = p.fuse_conv ? (per_k_head >= 8 ? 1 : 8 / per_k_head) : (p.cluster_norm ? 8 : 16);
  int slices = 1;
  while (slices < max_slices && p.num_seqs * p.num_v_heads * slices < p.num_sms) slices *= 2;
  return slices;
}

// Whether a gdn_decode step with p.fuse_conv requested can run fused: 2..8 CTAs per head, all the k head's value
// heads' CTAs in one cluster of at most 8. (One CTA per head -- 128 state registers a thread, larger batches --
// would keep them live across the conv and spill; those batches run the conv kernel first.)
inline bool gdn_decode_fuses_conv(const GdnRecurrentParams& p) {
  if (!p.fuse_conv || p.num_k_heads <= 0 || p.z_ptr == nullptr) return false;
  const int slices = gdn_recurrent_slices(p);
  return slices >= 2 && (p.num_v_heads / p.num_k_heads) * slices <= 8;
}

// Whether the launch needs counters_ptr (zeroed): the gated norm over several CTAs per head without clusters.
inline bool gdn_recurrent_needs_counters(const GdnRecurrentParams& p) {
  return p.z_ptr != nullptr && !p.cluster_norm && gdn_recurrent_slices(p) > 1;
}

#define Q35_FOR_EACH_GDN_RECURRENT_TYPES(X) X(float) X(__half) X(__nv_bfloat16)

namespace cuda {
template <typename T>
cudaError_t launch_gdn_recurrent(const GdnRecurrentParams& params, cudaStream_t stream);
}
namespace emu {
template <typename T>
cudaError_t launch_gdn_recurrent(const GdnRecurrentParams& params, cudaStream_t stream);
}

}  // namespace q35
