// Causal depthwise conv1d (+ SiLU) over the GDN q|k|v channels (MODEL_SPEC §3b.3), prefill over packed sequences
// and the one-token decode update, with per-sequence conv states addressed by cache slot.
//   y_t[c] = act( sum_{j < W} w[c, j] * x_{t-W+1+j}[c] ), inputs before a sequence's start taken from its conv
//   state (the last W-1 inputs seen, column W-2 newest) or zeros. fp32 sums rounded to T, then SiLU rounded again.
// Kernels: causal_conv1d.cu. Torch glue: csrc/torch/gdn_ops.cpp. Python: ops/gdn_conv.py. Tests:
// tests/kernels/test_gdn_conv.py.
#pragma once
#include <cstdint>
#include <type_traits>

#include "q35/common.h"

#include <cuda_runtime_api.h>

namespace q35 {

struct CausalConv1dParams {
  // sizes
  int64_t num_tokens;  // T (prefill: packed tokens of all sequences; update: one token per sequence, T == N)
  int64_t channels;    // C
  int64_t num_seqs;    // N
  int width;           // W (2, 3 or 4)
  // inputs
  const void* x_ptr;               // [T, C] T, rows strided, channels contiguous
  const void* weight_ptr;          // [C, W] T or float32 (weight_fp32), contiguous
  const void* cu_seqlens_ptr;      // [N+1] int32/int64 (prefill; nullptr: one sequence [0, T])
  const void* slots_ptr;           // [N] int32/int64 cache slot of each sequence (nullptr: no conv state)
  const bool* has_initial_ptr;     // [N] prefill: continue from the slot's state (nullptr: all false)
  const void* out_slots_ptr;       // [N] update: slot the new state goes to, same dtype as slots (nullptr: in place)
  // in/out
  void* conv_state_ptr;  // [num_slots, C, W-1] T contiguous (nullptr in prefill: zeros before, nothing written)
  // outputs
  void* y_ptr;  // [T, C] T contiguous
  // strides (elements)
  int64_t x_row_stride;
  // scalars
  bool weight_fp32;
  bool cu_seqlens_int64;
  bool slots_int64;
  bool silu;
};
static_assert(std::is_trivially_copyable_v<CausalConv1dParams>);

#define Q35_FOR_EACH_CONV_TYPES(X) X(float) X(__half) X(__nv_bfloat16)

namespace cuda {
template <typename T>
cudaError_t launch_causal_conv1d_fwd(const CausalConv1dParams& params, cudaStream_t stream);
template <typename T>
cudaError_t launch_causal_conv1d_update(const CausalConv1dParams& params, cudaStream_t stream);
}  // namespace cuda
namespace emu {
template <typename T>
cudaError_t launch_causal_conv1d_fwd(const CausalConv1dParams& params, cudaStream_t stream);
template <typename T>
cudaError_t launch_causal_conv1d_update(const CausalConv1dParams& params, cudaStream_t stream);
}  // namespace emu

}  // namespace q35
