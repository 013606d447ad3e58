// The pieces of the token-by-token GDN kernel (gdn_recurrent.cu): the CTA layout and shared memory, a token's q / k
// / v and gates, and the gated RMSNorm of a row whose value columns several CTAs share (by the row's last CTA, or
// inside one CTA / thread block cluster). Device code only, included by gdn_recurrent.cu.
#pragma once
#include "kernels/gdn/gdn_common.cuh"
#include "kernels/gdn/gdn_conv_parts.cuh"
#include "kernels/gdn/gdn_recurrent.cuh"
#include "q35/ptx.cuh"

namespace q35::gdn::recurrent {

constexpr int kColsPerThread = 4;  // one 16-byte fp32 vector of a state row
constexpr int kElemsPerLane = kHeadDim / kWarpSize;
constexpr int kMinThreads = 2 * kWarpSize;  // warp 0 loads q/k, warp 1 v and the gates
constexpr int kMaxThreads = 256;

// Threads of a CTA owning kVs value columns: 8 per column, between 64 and 256 (narrow slices at small batch are
// latency-bound: fewer threads, cheaper barriers).
template <int kVs>
struct Layout {
  static constexpr int kWanted = kVs * 8;
  static constexpr int kThreads = kWanted < kMinThreads ? kMinThreads : (kWanted > kMaxThreads ? kMaxThreads : kWanted);
  static constexpr int kWarps = kThreads / kWarpSize;
  static constexpr int kMinBlocks = 65536 / (kThreads * 128);  // <= 128 registers: several CTAs per SM
  static constexpr int kThreadsPerRow = kVs / kColsPerThread;
  static constexpr int kRowGroups = kThreads / kThreadsPerRow;
  static constexpr int kRowsPerThread = kHeadDim / kRowGroups;
  static_assert(kThreadsPerRow <= kWarpSize && kRowsPerThread >= 1, "value slice of 8..128 columns");
};

// Shared memory of one CTA (floats): normalised q (scaled) and k, the value slice, o of the slice (when the CTA
// normalises its own columns), the per-warp partial sums of a and b, the token's scalars, and with the fused conv
// the q | k channels of the k head this CTA convolved (at their own offsets; the others stay unwritten).
template <int kVs>
struct Smem {
  static constexpr int kQ = 0;
  static constexpr int kK = kQ + kHeadDim;
  static constexpr int kV = kK + kHeadDim;
  static constexpr int kO = kV + kVs;                                    // o of the slice, rounded (local norm)
  static constexpr int kRed = kO + kVs;                                  // [warps][kVs][2]
  static constexpr int kScalars = kRed + Layout<kVs>::kWarps * kVs * 2;  // g, beta, k.q, last-CTA flag
  static constexpr int kQK = kScalars + 4;                               // fused conv: this CTA's share of q | k
  static constexpr int kFloats = kQK + 2 * kHeadDim;
};

template <typename T>
__device__ __forceinline__ float load_l2(const T* ptr) {  // bypasses L1: rows written by other CTAs
  if constexpr (std::is_same_v<T, float>) {
    return __ldcg(ptr);
  } else {
    const unsigned short u = __ldcg(reinterpret_cast<const unsigned short*>(ptr));
    T x;
    memcpy(&x, &u, sizeof(x));
    return to_float(x);
  }
}

// The fused conv of gdn_decode (p.fuse_conv; one token, sequence n): the cluster's `ranks` CTAs share the k head's
// q | k channels out (rank r convolves channels [r, r + 1) * 256 / ranks of q | k, each once, into its smem kQK at
// their own offsets), and every CTA convolves its own value columns [v0, v0 + kVs) of head h into smem kV. Each
// channel's conv state is read and written by exactly one thread of the cluster, so the update in place is
// race-free. Every thread calls it; ends with the cluster barrier after which any CTA may read any kQK share.
template <typename T, int kVs>
__device__ void fused_conv_phase(const GdnRecurrentParams& p, float* smem, int64_t n, int h, int hk, int v0,
                                 int rank, int ranks) {
  using S = Smem<kVs>;
  constexpr int kW = 4;
  constexpr int kVec = kVecBytes / static_cast<int>(sizeof(T));
  static_assert(kVs % kVec == 0, "whole 16-byte pieces of channels (ranks <= 8: shares of >= 32 q | k channels)");
  const int per_rank = 2 * kHeadDim / ranks;
  const int v_threads = kVs / kVec;
  const int tid = threadIdx.x;
  if (tid < v_threads + per_rank / kVec) {
    int64_t c0;  // the thread's first channel of mixed_qkv
    float* dst;
    if (tid < v_threads) {
      c0 = (2 * p.num_k_heads + h) * kHeadDim + v0 + tid * kVec;
      dst = smem + S::kV + tid * kVec;
    } else {
      const int lc = rank * per_rank + (tid - v_threads) * kVec;  // of the k head's q | k (0 .. 255)
      c0 = lc < kHeadDim ? hk * kHeadDim + lc : (p.num_k_heads + hk) * kHeadDim + (lc - kHeadDim);
      dst = smem + S::kQK + lc;
    }
    const int64_t channels = static_cast<int64_t>(2 * p.num_k_heads + p.num_v_heads) * kHeadDim;
    const int64_t slot_in = p.state_in_slots ? gdn::load_index(p.state_in_slots, n, p.slots_int64) : n;
    const int64_t slot_out = p.state_out_slots ? gdn::load_index(p.state_out_slots, n, p.slots_int64) : slot_in;
    T* state = static_cast<T*>(p.conv_state_ptr);
    float w[kW][kVec], win[kW][kVec], y[kVec];
    gdn::load_conv_weights<T, kW, kVec>(p.conv_weight_ptr, p.conv_weight_fp32, c0, w);
    gdn::load_conv_state<T, kW, kVec>(state + (slot_in * channels + c0) * (kW - 1), win);
    load_vec_f32<T, kVec>(static_cast<const T*>(p.conv_x_ptr) + n * p.conv_x_row_stride + c0, win[kW - 1]);
    gdn::conv_outputs<T, kW, kVec>(w, win, true, y);
    gdn::store_conv_state<T, kW, kVec>(state + (slot_out * channels + c0) * (kW - 1), win);
#pragma unroll
    for (int v = 0; v < kVec; ++v) dst[v] = to_float(from_float<T>(y[v]));  // as the unfused conv stores y
  }
  ptx::cluster_sync();  // every share written, visible to the cluster
}

// Warp 0: q and k of token t, L2-normalised (fp32) and q scaled; k.q. Warp 1: the value slice (unless kFused: the
// conv phase put it there) and the gates. kFused: q and k from the kQK shares of the cluster's CTAs.
template <typename T, int kVs, bool kFused = false>
__device__ void load_token(const GdnRecurrentParams& p, float* smem, int64_t t, int h, int hk, int v0) {
  using S = Smem<kVs>;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (warp == 0) {
    const T* q = static_cast<const T*>(p.q_ptr) + t * p.q_token_stride + hk * kHeadDim;
    const T* k = static_cast<const T*>(p.k_ptr) + t * p.k_token_stride + hk * kHeadDim;
    float qv[kElemsPerLane], kv[kElemsPerLane];
    float ssq = 0.0f, ssk = 0.0f, dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kElemsPerLane; ++i) {
      const int e = lane * kElemsPerLane + i;
      if constexpr (kFused) {  // channel e of q | k lives in the shared memory of rank e / (256 / ranks)
        const int per_rank = 2 * kHeadDim / static_cast<int>(ptx::cluster_nctarank());
        qv[i] = *ptx::map_shared_rank(smem + S::kQK + e, static_cast<uint32_t>(e / per_rank));
        kv[i] = *ptx::map_shared_rank(smem + S::kQK + kHeadDim + e, static_cast<uint32_t>((kHeadDim + e) / per_rank));
      } else {
        qv[i] = to_float(q[e]);
        kv[i] = to_float(k[e]);
      }
      ssq += qv[i] * qv[i];
      ssk += kv[i] * kv[i];
    }
    const float rq = p.l2norm ? rsqrtf(warp::reduce_sum(ssq) + gdn::kL2NormEps) * p.scale : p.scale;
    const float rk = p.l2norm ? rsqrtf(warp::reduce_sum(ssk) + gdn::kL2NormEps) : 1.0f;
#pragma unroll
    for (int i = 0; i < kElemsPerLane; ++i) {
      qv[i] *= rq;
      kv[i] *= rk;
      smem[S::kQ + lane * kElemsPerLane + i] = qv[i];
      smem[S::kK + lane * kElemsPerLane + i] = kv[i];
      dot += qv[i] * kv[i];
    }
    dot = warp::reduce_sum(dot);
    if (lane == 0) smem[S::kScalars + 2] = dot;
  } else if (warp == 1) {
    if constexpr (!kFused) {
      const T* v = static_cast<const T*>(p.v_ptr) + t * p.v_token_stride + h * kHeadDim + v0;
      for (int c = lane; c < kVs; c += kWarpSize) smem[S::kV + c] = to_float(v[c]);
    }
    if (lane == 0) {
      float g, beta;
      if (p.raw_gates) {
        const T a = static_cast<const T*>(p.g_ptr)[t * p.g_token_stride + h];
        const T b = static_cast<const T*>(p.beta_ptr)[t * p.beta_token_stride + h];
        g = gdn::gate_log_decay(to_float(a), gdn::load_param<T>(p.a_log_ptr, h, p.a_log_fp32),
                                gdn::load_param<T>(p.dt_bias_ptr, h, p.dt_bias_fp32));
        beta = gdn::gate_beta<T>(to_float(b));
      } else {
        g = gdn::load_param<T>(p.g_ptr, t * p.g_token_stride + h, p.g_fp32);
        beta = gdn::load_param<T>(p.beta_ptr, t * p.beta_token_stride + h, p.beta_fp32);
      }
      smem[S::kScalars + 0] = g;
      smem[S::kScalars + 1] = beta;
    }
  }
}

// The gated norm's sum of squares of o (values rounded to T, as stored) over the kVs columns of one value slice, in
// the one order every path uses: lane l < kTpr of warp 0 sums its 4 columns in order, then the warp's butterfly (the
// other lanes add zeros). Whole warp 0; o(c) is the lane's column c (read only by lanes < kTpr).
template <int kVs, typename Col>
__device__ __forceinline__ float slice_sum_squares(Col o) {
  float ss = 0.0f;
  if (static_cast<int>(threadIdx.x) < Layout<kVs>::kThreadsPerRow) {
#pragma unroll
    for (int c = 0; c < kColsPerThread; ++c) {
      const float r = o(c);
      ss += r * r;
    }
  }
  return warp::reduce_sum(ss);
}

// Gated RMSNorm of row (t, h) when the CTAs of the head do not share a cluster: each writes its o columns to `out`,
// and the last to finish the row (an atomic counter per row) normalises the whole row, reading it back from L2.
template <typename T, int kVs>
__device__ void norm_row_by_last_cta(const GdnRecurrentParams& p, float* smem, int64_t t, int h, int slices) {
  using S = Smem<kVs>;
  __threadfence();  // this CTA's o columns, before the counter says they are there
  __syncthreads();
  if (threadIdx.x == 0) {
    const bool last = atomicAdd(&p.counters_ptr[t * p.num_v_heads + h], 1) == slices - 1;
    smem[S::kScalars + 3] = last ? 1.0f : 0.0f;
  }
  __syncthreads();
  if (smem[S::kScalars + 3] == 0.0f) return;  // uniform over the block
  __threadfence();
  T* out = static_cast<T*>(p.out_ptr) + t * p.out_token_stride + h * kHeadDim;  // [V]
  __syncthreads();  // (every thread has read the flag before warp 0 reuses its slot)
  if (threadIdx.x < kWarpSize) {  // the row's sum of squares, slice by slice as norm_row_in_cluster forms it
    float total = 0.0f;
    for (int slice = 0; slice < slices; ++slice) {
      const T* cols = out + slice * kVs + threadIdx.x * kColsPerThread;
      total += slice_sum_squares<kVs>([cols](int c) { return load_l2(cols + c); });
    }
    if (threadIdx.x == 0) smem[S::kScalars + 3] = total;
  }
  __syncthreads();
  const float rstd = rsqrtf(smem[S::kScalars + 3] / static_cast<float>(kHeadDim) + p.eps);
  for (int c = threadIdx.x; c < kHeadDim; c += Layout<kVs>::kThreads) {
    const float o = load_l2(out + c);
    const float z = to_float(static_cast<const T*>(p.z_ptr)[t * p.z_token_stride + h * kHeadDim + c]);
    const float w = gdn::load_param<T>(p.norm_weight_ptr, c, p.norm_weight_fp32);
    out[c] = from_float<T>(gdn::gated_norm_value<T>(o, rstd, w, p.norm_weight_fp32, z));
  }
}

// The gate z and norm weight of a thread's 4 output columns (lanes < kTpr of warp 0), loaded when the token starts
// so that their latency hides behind the state products (norm_row_in_cluster).
struct NormInputs {
  float z[kColsPerThread];
  float w[kColsPerThread];
};

template <typename T>
__device__ __forceinline__ void load_norm_inputs(const GdnRecurrentParams& p, int64_t t, int h, int col,
                                                 NormInputs& in) {
#pragma unroll
  for (int c = 0; c < kColsPerThread; ++c) {
    in.z[c] = to_float(static_cast<const T*>(p.z_ptr)[t * p.z_token_stride + h * kHeadDim + col + c]);
    in.w[c] = gdn::load_param<T>(p.norm_weight_ptr, col + c, p.norm_weight_fp32);
  }
}

// Gated RMSNorm of row (t, h) when the head's CTAs form a thread block cluster (kCluster; sm_90; the head's slices at
// ranks rank0 ..), or are one CTA:
// each CTA's partial sum of squares goes to its shared memory, every CTA adds all of them in rank order (distributed
// shared memory), and normalises and stores its own columns -- no counters, no write and reread of o. Same sums
// as norm_row_by_last_cta, so the same bits. Every thread of the CTA calls it; lane l < kTpr of warp 0 finds its
// columns' o, rounded to T, at smem[kO + 4 l ..] (its own writes). `pending`: a cluster arrival whose wait is still
// due (the peers may still read this CTA's partial: waited before it is written again and before the kernel ends).
template <typename T, int kVs, bool kCluster>
__device__ void norm_row_in_cluster(const GdnRecurrentParams& p, float* smem, int64_t t, int h, int slices, int v0,
                                    int rank0, const NormInputs& in, bool& pending) {
  using S = Smem<kVs>;
  const int tid = threadIdx.x;
  const float* o = smem + S::kO + tid * kColsPerThread;
  if constexpr (kCluster) {
    if (pending) ptx::cluster_wait();
  }  // (else the token loop's barriers separate this write from the previous token's reads)
  if (tid < kWarpSize) {
    const float partial = slice_sum_squares<kVs>([o](int c) { return o[c]; });
    if (tid == 0) smem[S::kScalars + 3] = partial;
  }
  float total;
  if constexpr (kCluster) {
    ptx::cluster_sync();  // every CTA's partial written and visible to the cluster
    total = 0.0f;
    for (int rank = rank0; rank < rank0 + slices; ++rank) total += *ptx::map_shared_rank(smem + S::kScalars + 3, rank);
    ptx::cluster_arrive();  // done reading the peers (their wait comes later)
    pending = true;
  } else {
    __syncthreads();
    total = smem[S::kScalars + 3];
  }
  if (tid < Layout<kVs>::kThreadsPerRow) {
    const float rstd = rsqrtf(total / static_cast<float>(kHeadDim) + p.eps);
    const int col = v0 + tid * kColsPerThread;
    T* out = static_cast<T*>(p.out_ptr) + t * p.out_token_stride + h * kHeadDim + col;
    if constexpr (kCluster) {  // z and the weight prefetched when the token started
#pragma unroll
      for (int c = 0; c < kColsPerThread; ++c) {
        out[c] = from_float<T>(gdn::gated_norm_value<T>(o[c], rstd, in.w[c], p.norm_weight_fp32, in.z[c]));
      }
    } else {  // one CTA per head (kVs = 128, 64 state registers live): column by column, few registers
#pragma unroll 1
      for (int c = 0; c < kColsPerThread; ++c) {
        const float z = to_float(static_cast<const T*>(p.z_ptr)[t * p.z_token_stride + h * kHeadDim + col + c]);
        const float w = gdn::load_param<T>(p.norm_weight_ptr, col + c, p.norm_weight_fp32);
        out[c] = from_float<T>(gdn::gated_norm_value<T>(o[c], rstd, w, p.norm_weight_fp32, z));
      }
    }
  }
}

}  // namespace q35::gdn::recurrent
