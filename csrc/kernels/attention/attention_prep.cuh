// Pre-attention of the gated full-attention layers (MODEL_SPEC §3c.1-4): split the fused q|gate|k|v projection,
// zero-centred q/k RMSNorm per head, partial interleaved M-RoPE, paged KV-cache write. One kernel.
// Kernel: attention_prep.cu. Torch glue: csrc/torch/attention_prep_ops.cpp. Python: ops/attention_prep.py.
// Tests: tests/kernels/test_attention_prep.py. Bench: bench/attention.py (runs it inside the decode step).
#pragma once
#include <cstdint>
#include <type_traits>

#include "q35/common.h"

#include <cuda_runtime_api.h>

namespace q35 {

struct AttentionPrepParams {
  // sizes
  int64_t num_tokens;    // T
  int num_q_heads;       // Hq
  int num_kv_heads;      // Hkv
  int head_dim;          // D
  int rotary_dim;        // R: the first R dims of each head rotate, pairs (d, d + R/2)
  int mrope_h_slots;     // frequency slot i < R/2 takes stream H when i % 3 == 1 and i < mrope_h_slots (3*sec[1])
  int mrope_w_slots;     // ... stream W when i % 3 == 2 and i < mrope_w_slots (3*sec[2]); otherwise stream T
  // inputs
  const void* qkv_ptr;            // [T, (2*Hq + 2*Hkv) * D] T, rows strided, last dim contiguous
  const void* q_norm_weight_ptr;  // [D] W
  const void* k_norm_weight_ptr;  // [D] W
  const int64_t* positions_ptr;   // [3, T] int64 (any strides)
  const int64_t* slot_mapping_ptr;  // [T] int64, -1: token not written to the cache
  const float* inv_freq_ptr;      // [R/2] float32, theta^(-2i/R) as the reference computes it
  // outputs
  void* k_cache_ptr;   // [num_blocks * block_size, Hkv, D] T (flat slots)
  void* v_cache_ptr;   // [num_blocks * block_size, Hkv, D] T
  void* q_out_ptr;     // [T, Hq, D] T contiguous
  void* gate_out_ptr;  // [T, Hq * D] T contiguous
  // strides (elements)
  int64_t qkv_row_stride;
  int64_t positions_stream_stride;
  int64_t positions_token_stride;
  // scalars
  float eps;
};
static_assert(std::is_trivially_copyable_v<AttentionPrepParams>);

// T: activation dtype; W: norm weight dtype (T or float).
#define Q35_FOR_EACH_ATTENTION_PREP_TYPES(X) \
  X(float, float) X(__half, __half) X(__half, float) X(__nv_bfloat16, __nv_bfloat16) X(__nv_bfloat16, float)

namespace cuda {
template <typename T, typename W>
cudaError_t launch_attention_prep(const AttentionPrepParams& params, cudaStream_t stream);
}
namespace emu {
template <typename T, typename W>
cudaError_t launch_attention_prep(const AttentionPrepParams& params, cudaStream_t stream);
}

}  // namespace q35
