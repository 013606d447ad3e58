// Split path of the chunked scan (PERF_TARGETS.md, "Splitting one long GDN sequence across SMs"): the segment
// plan (decay shortcut or exact chain, decided per (sequence, head) from the actual gates) and the chain of the
// exact segment states. See gdn_chunk.cuh / README.md.
//
// Per value head the state after a segment is affine in the state entering it: S_out = M S_in + S0, M the
// product over its tokens of exp(g) (I - beta k k^T). With L2-normalised keys and beta <= kMaxShortcutBeta each
// factor has norm <= exp(g), so once the log decay summed over a few chunks before a boundary is below
// shortcut_log_decay, running only those warm-up chunks from zero gives the entering state to within
// exp(shortcut_log_decay) of the state's size. Otherwise (weak decay, no L2 norm, large beta) the exact scheme
// runs: the pre-pass computes every segment's S0 and M, and the chain below composes them in order.
#include "kernels/gdn/gdn_chunk.cuh"
#include "kernels/gdn/gdn_chunk_items.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

using namespace ::q35::gdn;  // NOLINT
constexpr int kPlanThreads = 128;
constexpr int kPlanWarps = kPlanThreads / kWarpSize;
constexpr float kMaxShortcutBeta = 1.5f;  // beta |k|^2 < 2 keeps every factor a contraction (with bf16 keys)
constexpr int kChainThreads = 256;
constexpr int kChainWarps = kChainThreads / kWarpSize;
constexpr int kMmaM = 16;
constexpr int kMmaN = 8;
constexpr int kMmaK = 16;
constexpr int kChainCols = 32;  // state columns per chain CTA
constexpr int kChainTiles = kChainCols / kMmaN;

// First item of sequence n (items of earlier sequences counted; split: few sequences).
__device__ int64_t first_item(const GdnChunkParams& p, int64_t n) {
  int64_t base = 0;
  for (int64_t m = 0; m < n; ++m) base += segments_of(p, seq_bound(p, m + 1) - seq_bound(p, m));
  return base;
}

// Warp: the plan entry of the boundary at token b of a sequence starting at `start` (see kPlanChain).
template <typename T>
__device__ int boundary_plan(const GdnChunkParams& p, int h, int64_t start, int64_t b, float a_log, float dt_bias) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t from_start = (b - start) / kChunk;
  if (from_start <= p.max_warmup_chunks) return kPlanFromStart + static_cast<int>(from_start);  // exact
  if (!p.l2norm) return kPlanChain;
  float decay = 0.0f;
  for (int w = 0; w < p.max_warmup_chunks; ++w) {
    const int64_t c0 = b - int64_t{kChunk} * (w + 1);
    float g_sum = 0.0f;
    bool beta_ok = true;
    for (int i = lane; i < kChunk; i += kWarpSize) {
      const int64_t t = c0 + i;
      float g, beta;
      if (p.raw_gates) {
        g = gate_log_decay(to_float(static_cast<const T*>(p.g_ptr)[t * p.g_token_stride + h]), a_log, dt_bias);
        beta = gate_beta<T>(to_float(static_cast<const T*>(p.beta_ptr)[t * p.beta_token_stride + h]));
      } else {
        g = load_param<T>(p.g_ptr, t * p.g_token_stride + h, p.g_fp32);
        beta = load_param<T>(p.beta_ptr, t * p.beta_token_stride + h, p.beta_fp32);
      }
      g_sum += g;
      beta_ok = beta_ok && beta >= 0.0f && beta <= kMaxShortcutBeta;
    }
    if (!__all_sync(warp::kFullMask, beta_ok)) return kPlanChain;
    decay += warp::reduce_sum(g_sum);
    if (decay <= p.shortcut_log_decay) return w + 1;
  }
  return kPlanChain;
}

// Computes: ws_entry[item0] = the initial state of (sequence n, head h) (zeros without one), and plan[item, h]
//           for every segment s >= 1 of the sequence: warm-up chunks, rerun from the start, or the exact chain
//           (for all segments of the (sequence, head) as soon as one boundary needs it).
// Grid:     x = sequence n, y = value head h. Block: kPlanThreads; warp w plans boundaries w, w + 4, ...
// Smem:     none.
// Requires: p.split (workspace pointers set); 16-byte aligned states.
template <typename T>
__global__ void __launch_bounds__(kPlanThreads) gdn_chunk_segment_plan_kernel(GdnChunkParams p) {
  const int64_t n = blockIdx.x;
  const int h = blockIdx.y;
  const int warp = threadIdx.x / kWarpSize;
  const int64_t start = seq_bound(p, n);
  const int64_t segs = segments_of(p, seq_bound(p, n + 1) - start);
  const int64_t item0 = first_item(p, n);

  // ---- snapshot of the initial state: the pass-1 CTAs may overwrite the slot in place ----
  const int64_t slot = p.state_in_slots ? load_index(p.state_in_slots, n, p.slots_int64) : n;
  const bool has_init = p.state_in_ptr && (!p.has_initial_ptr || p.has_initial_ptr[n]);
  float* dst = p.ws_entry_ptr + state_offset(p, item0, h);
  constexpr int kVec = 4;
  for (int i = threadIdx.x * kVec; i < kHeadDim * kHeadDim; i += kPlanThreads * kVec) {
    float x[kVec] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (has_init) load_vec_f32<float, kVec>(p.state_in_ptr + state_offset(p, slot, h) + i, x);
    store_vec_f32<float, kVec>(dst + i, x);
  }

  // ---- boundaries ----
  const float a_log = p.raw_gates ? load_param<T>(p.a_log_ptr, h, p.a_log_fp32) : 0.0f;
  const float dt_bias = p.raw_gates ? load_param<T>(p.dt_bias_ptr, h, p.dt_bias_fp32) : 0.0f;
  bool chain = false;
  for (int64_t s = 1 + warp; s < segs; s += kPlanWarps) {
    const int plan = boundary_plan<T>(p, h, start, start + s * p.segment_len, a_log, dt_bias);
    chain = chain || plan == kPlanChain;
    if (threadIdx.x % kWarpSize == 0) p.plan_ptr[(item0 + s) * p.num_v_heads + h] = plan;
  }
  chain = __syncthreads_or(chain);
  if (chain && threadIdx.x % kWarpSize == 0) {  // the same lanes rewrite the entries they wrote
    for (int64_t s = 1 + warp; s < segs; s += kPlanWarps) p.plan_ptr[(item0 + s) * p.num_v_heads + h] = kPlanChain;
  }
}

// hi + lo bf16 split of an fp32 pair, packed as two mma operand registers.
__device__ __forceinline__ void split_pair(float x0, float x1, uint32_t& hi, uint32_t& lo) {
  const float h0 = to_float(from_float<__nv_bfloat16>(x0));
  const float h1 = to_float(from_float<__nv_bfloat16>(x1));
  hi = pack2<__nv_bfloat16>(h0, h1);
  lo = pack2<__nv_bfloat16>(x0 - h0, x1 - h1);
}

// Computes: for the (sequence, head) pairs the plan sends to the exact chain, E_{s+1} = M_s E_s + S0_s for
//           s = 1 .. segments - 2 (E_1 comes from the pre-pass), on value columns [32 c, 32 c + 32).
//           Products in three bf16 mma (hi*hi + hi*lo + lo*hi): about fp32 accuracy along the chain.
// Grid:     x = sequence n, y = value head h, z = column block c. Block: 8 warps, warp w owns state rows
//           [16w, 16w + 16) x the 32 columns. Operands straight from global memory (L2-resident workspaces).
// Smem:     none.
// Requires: the plan and the pre-pass of this launch sequence have run (same stream).
__global__ void __launch_bounds__(kChainThreads) gdn_chunk_chain_kernel(GdnChunkParams p) {
  const int64_t n = blockIdx.x;
  const int h = blockIdx.y;
  const int col0 = blockIdx.z * kChainCols;
  const int64_t start = seq_bound(p, n);
  const int64_t segs = segments_of(p, seq_bound(p, n + 1) - start);
  if (segs < 3) return;
  const int64_t item0 = first_item(p, n);
  if (p.plan_ptr[(item0 + 1) * p.num_v_heads + h] != kPlanChain) return;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int g = lane / 4;             // fragment row of the lane
  const int t4 = 2 * (lane % 4);      // fragment column pair of the lane
  const int row0 = warp * kMmaM;
  for (int64_t s = 1; s + 1 < segs; ++s) {
    const float* e_in = p.ws_entry_ptr + state_offset(p, item0 + s, h);     // [K, V]
    const float* m = p.ws_trans_ptr + state_offset(p, item0 + s, h);       // [K, K]
    const float* s0 = p.ws_local_ptr + state_offset(p, item0 + s, h);      // [K, V]
    float* e_out = p.ws_entry_ptr + state_offset(p, item0 + s + 1, h);     // [K, V]
    float acc[kChainTiles][4];
#pragma unroll
    for (int nt = 0; nt < kChainTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        acc[nt][e] = s0[(row0 + g + kMmaN * (e / 2)) * kHeadDim + col0 + nt * kMmaN + t4 + e % 2];
      }
    }
#pragma unroll 2
    for (int kb = 0; kb < kHeadDim / kMmaK; ++kb) {
      uint32_t a_hi[4], a_lo[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) {  // A[g + 8 (r % 2)][2t + 8 (r / 2) + {0, 1}]
        const float* src = m + (row0 + g + kMmaN * (r % 2)) * kHeadDim + kb * kMmaK + t4 + kMmaN * (r / 2);
        split_pair(src[0], src[1], a_hi[r], a_lo[r]);
      }
#pragma unroll
      for (int nt = 0; nt < kChainTiles; ++nt) {
        uint32_t b_hi[2], b_lo[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {  // B[2t + 8 r + {0, 1}][g]
          const float* src = e_in + (kb * kMmaK + t4 + kMmaN * r) * kHeadDim + col0 + nt * kMmaN + g;
          split_pair(src[0], src[kHeadDim], b_hi[r], b_lo[r]);
        }
        mma16816<__nv_bfloat16>(acc[nt], a_hi, b_hi);
        mma16816<__nv_bfloat16>(acc[nt], a_hi, b_lo);
        mma16816<__nv_bfloat16>(acc[nt], a_lo, b_hi);
      }
    }
#pragma unroll
    for (int nt = 0; nt < kChainTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        e_out[(row0 + g + kMmaN * (e / 2)) * kHeadDim + col0 + nt * kMmaN + t4 + e % 2] = acc[nt][e];
      }
    }
    __syncthreads();  // E_{s+1} complete (global writes of the block visible to it) before the next step reads it
  }
}

}  // namespace

template <typename T>
cudaError_t launch_gdn_chunk_segment_plan(const GdnChunkParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.num_seqs), static_cast<unsigned>(p.num_v_heads));
  return launch(gdn_chunk_segment_plan_kernel<T>, grid, dim3(kPlanThreads), 0, stream, p);
}

cudaError_t launch_gdn_chunk_chain(const GdnChunkParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.num_seqs), static_cast<unsigned>(p.num_v_heads), kHeadDim / kChainCols);
  return launch(gdn_chunk_chain_kernel, grid, dim3(kChainThreads), 0, stream, p);
}

#define Q35_INSTANTIATE(T) \
  template cudaError_t launch_gdn_chunk_segment_plan<T>(const GdnChunkParams&, cudaStream_t);
Q35_FOR_EACH_GDN_CHUNK_TYPES(Q35_INSTANTIATE)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
