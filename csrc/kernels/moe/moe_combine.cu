// MoE combine kernel (weighted expert outputs + gated shared expert) and its launcher. See moe_combine.cuh.
#include "kernels/moe/moe_combine.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

constexpr int kMaxCombineThreads = 512;
constexpr int kMaxTopK = kWarpSize;  // local-pair mask in one 32-bit word
// Pair rows a thread loads before it adds any: their latencies overlap (top-8 routing: one batch, top-10: two). Added
// one at a time, each add waited for its own load: ~k round trips to L2 in a row, the most of moe_combine's 4.9 us at
// batch 1 (35b-a3b, H200 profile of the decode step).
constexpr int kPairBatch = 8;

// Computes: out[n] = sum_{j local} y[n * k + j] (fp32, ascending j) + sigmoid(hidden[n] . gate_w) * s[n], rounded
//           once to T (no shared term when s is absent).
// Args:     y [N * k, H] T; ids [N, k] IdT; hidden [N, H] T (row stride); s [N, H] T; gate_w [H] T; out [N, H] T.
// Grid:     blockIdx.x = token (grid-stride loop beyond gridDim.x).
// Block:    threads cover H in 16-byte chunks of kVec elements (chunk c: thread c mod blockDim.x).
// Smem:     block::reduce_sum partials (shared-expert gate dot product).
// Requires: H % kVec == 0, 16-byte aligned rows, top_k <= 32.
template <typename T, typename IdT>
__global__ void __launch_bounds__(kMaxCombineThreads) moe_combine_kernel(MoeCombineParams p) {
  constexpr int kVec = kVecBytes / static_cast<int>(sizeof(T));
  const int64_t chunks = p.hidden_size / kVec;
  const T* __restrict__ expert_out = static_cast<const T*>(p.expert_out_ptr);
  const IdT* __restrict__ ids = static_cast<const IdT*>(p.ids_ptr);
  const T* __restrict__ shared_out = static_cast<const T*>(p.shared_out_ptr);
  const T* __restrict__ gate_w = static_cast<const T*>(p.shared_gate_w_ptr);
  T* __restrict__ out_base = static_cast<T*>(p.out_ptr);

  for (int64_t n = blockIdx.x; n < p.num_tokens; n += gridDim.x) {
    // ---- which of the token's k pairs have a local expert ----
    uint32_t local = 0;
    for (int j = 0; j < p.top_k; ++j) {
      const int64_t e = static_cast<int64_t>(ids[n * p.top_k + j]) - p.expert_offset;
      if (e >= 0 && e < p.num_local_experts) local |= 1u << j;
    }

    // ---- shared-expert gate: sigmoid(hidden[n] . gate_w) in fp32 ----
    float gate = 0.0f;
    if (shared_out) {  // uniform over the block
      const T* x = static_cast<const T*>(p.hidden_ptr) + n * p.hidden_row_stride;  // [H]
      float dot = 0.0f;
      for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) {
        float xv[kVec];
        float wv[kVec];
        load_vec_f32<T, kVec>(x + c * kVec, xv);
        load_vec_f32<T, kVec>(gate_w + c * kVec, wv);
#pragma unroll
        for (int i = 0; i < kVec; ++i) dot = fmaf(xv[i], wv[i], dot);
      }
      gate = 1.0f / (1.0f + expf(-block::reduce_sum(dot)));
    }

    // ---- sum and store ----
    T* out = out_base + n * p.hidden_size;  // [H]
    for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) {
      float acc[kVec] = {};
      for (int j0 = 0; j0 < p.top_k; j0 += kPairBatch) {  // the same adds in the same order (ascending j)
        Vec<T, kVec> rows[kPairBatch];
#pragma unroll
        for (int u = 0; u < kPairBatch; ++u) {
          const int j = j0 + u;
          if (j < p.top_k && ((local >> j) & 1u)) {
            rows[u] = *reinterpret_cast<const Vec<T, kVec>*>(expert_out + (n * p.top_k + j) * p.hidden_size + c * kVec);
          }
        }
#pragma unroll
        for (int u = 0; u < kPairBatch; ++u) {
          const int j = j0 + u;
          if (j < p.top_k && ((local >> j) & 1u)) {
#pragma unroll
            for (int i = 0; i < kVec; ++i) acc[i] += to_float(rows[u].v[i]);
          }
        }
      }
      if (shared_out) {
        float s[kVec];
        load_vec_f32<T, kVec>(shared_out + n * p.hidden_size + c * kVec, s);
#pragma unroll
        for (int i = 0; i < kVec; ++i) acc[i] = fmaf(gate, s[i], acc[i]);
      }
      store_vec_f32<T, kVec>(out + c * kVec, acc);
    }
  }
}

}  // namespace

template <typename T, typename IdT>
cudaError_t launch_moe_combine(const MoeCombineParams& p, cudaStream_t stream) {
  constexpr int kVec = kVecBytes / static_cast<int>(sizeof(T));
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % kVecBytes == 0; };
  const bool shared_ok = p.shared_out_ptr == nullptr ||
                         (aligned(p.shared_out_ptr) && aligned(p.shared_gate_w_ptr) && aligned(p.hidden_ptr) &&
                          p.hidden_row_stride % kVec == 0);
  if (p.hidden_size % kVec != 0 || p.top_k < 1 || p.top_k > kMaxTopK || !shared_ok || !aligned(p.out_ptr) ||
      !aligned(p.expert_out_ptr))
    return cudaErrorInvalidValue;
  if (p.num_tokens == 0 || p.hidden_size == 0) return cudaSuccess;
  const int64_t chunks = p.hidden_size / kVec;
  const int threads = static_cast<int>(chunks >= kMaxCombineThreads ? kMaxCombineThreads : round_up(chunks, kWarpSize));
  constexpr int64_t kMaxGridTokens = int64_t{1} << 20;  // tokens beyond this loop inside the kernel
  const dim3 grid(static_cast<unsigned>(p.num_tokens < kMaxGridTokens ? p.num_tokens : kMaxGridTokens));
  return launch(moe_combine_kernel<T, IdT>, grid, dim3(threads), 0, stream, p);
}

#define Q35_INSTANTIATE(T, IdT) \
  template cudaError_t launch_moe_combine<T, IdT>(const MoeCombineParams&, cudaStream_t);
Q35_FOR_EACH_MOE_COMBINE_TYPES(Q35_INSTANTIATE)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
