// Token-by-token gated delta rule (decode / verification). See gdn_recurrent.cuh for the op.
//
// One CTA owns kVs value columns of one (sequence, value head) state: S[:, v0 : v0 + kVs] stays in registers for
// all the sequence's tokens. Per token both reductions over K come from one pass over the decayed state:
//   a = S~^T k,  b = S~^T q  (S~ = exp(g) S);  delta = beta (v - a);  o = b + delta (k . q);  S = S~ + k delta^T
// so the state is read once and written once per call. The gated norm of a row split over CTAs: on sm_90 the
// head's CTAs form a cluster and add each other's sums of squares through distributed shared memory
// (norm_row_in_cluster); else each CTA writes its o columns and the last to finish the row (an atomic counter per
// row) normalises it (norm_row_by_last_cta). README.md, "Decode and verification".
#include "kernels/gdn/gdn_common.cuh"
#include "kernels/gdn/gdn_recurrent.cuh"
#include "q35/launch.h"
#include "q35/ptx.cuh"
#include "q35/sm90_host.h"

namespace q35::Q35_TARGET {
namespace {

using gdn::kHeadDim;
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
// normalises its own columns), the per-warp partial sums of a and b, and the token's scalars.
template <int kVs>
struct Smem {
  static constexpr int kQ = 0;
  static constexpr int kK = kQ + kHeadDim;
  static constexpr int kV = kK + kHeadDim;
  static constexpr int kO = kV + kVs;                                    // o of the slice, rounded (local norm)
  static constexpr int kRed = kO + kVs;                                  // [warps][kVs][2]
  static constexpr int kScalars = kRed + Layout<kVs>::kWarps * kVs * 2;  // g, beta, k.q, last-CTA flag
  static constexpr int kFloats = kScalars + 4;
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

// Warp 0: q and k of token t, L2-normalised (fp32) and q scaled; k.q. Warp 1: the value slice and the gates.
template <typename T, int kVs>
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
      qv[i] = to_float(q[lane * kElemsPerLane + i]);
      kv[i] = to_float(k[lane * kElemsPerLane + i]);
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
    const T* v = static_cast<const T*>(p.v_ptr) + t * p.v_token_stride + h * kHeadDim + v0;
    for (int c = lane; c < kVs; c += kWarpSize) smem[S::kV + c] = to_float(v[c]);
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

// Gated RMSNorm of row (t, h) when the head's CTAs form a thread block cluster (kCluster; sm_90), or are one CTA:
// each CTA's partial sum of squares goes to its shared memory, every CTA adds all of them in rank order (distributed
// shared memory), and normalises and stores its own columns -- no counters, no write and reread of o. Same sums
// as norm_row_by_last_cta, so the same bits. Every thread of the CTA calls it; lane l < kTpr of warp 0 finds its
// columns' o, rounded to T, at smem[kO + 4 l ..] (its own writes). `pending`: a cluster arrival whose wait is still
// due (the peers may still read this CTA's partial: waited before it is written again and before the kernel ends).
template <typename T, int kVs, bool kCluster>
__device__ void norm_row_in_cluster(const GdnRecurrentParams& p, float* smem, int64_t t, int h, int slices, int v0,
                                    const NormInputs& in, bool& pending) {
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
    for (int rank = 0; rank < slices; ++rank) total += *ptx::map_shared_rank(smem + S::kScalars + 3, rank);
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

// Computes: for each token t of sequence n: S = exp(g_t) S + k_t (beta_t (v_t - (exp(g_t) S)^T k_t))^T and
//           o_t = S^T (scale q_t) on value columns [v0, v0 + kVs) of value head h (q/k head h / (Hv / Hk)).
// Args:     see GdnRecurrentParams (q, k, v, gates per token; states by slot; out; optional intermediates).
// Grid:     x = n * slices + slice (value columns v0 = slice * kVs), y = value head h.
// Block:    Layout<kVs>::kThreads threads (64..256): thread (row group rg, column quad c4) owns state rows
//           rg + kRowGroups * i and columns v0 + 4 * c4 .. + 3 (consecutive threads read consecutive 16 bytes of a row).
// Smem:     Smem<kVs>::kFloats * 4 bytes.
// Cluster:  kCluster: the head's `slices` CTAs (consecutive in x), launched by launch_cluster on sm_90.
// Requires: K = V = 128; 16-byte aligned states (the torch glue checks); counters zeroed when
//           gdn_recurrent_needs_counters.
// CTAs per SM the kernel is compiled for: fp32 (only the tiny test models) has no floor, whose 128-register cap it
// met at kVs = 128.
template <typename T, int kVs>
constexpr int kMinCtas = sizeof(T) == 4 ? 1 : Layout<kVs>::kMinBlocks;

template <typename T, int kVs, bool kCluster>
__global__ void __launch_bounds__(Layout<kVs>::kThreads, kMinCtas<T, kVs>) gdn_recurrent_kernel(GdnRecurrentParams p) {
  using L = Layout<kVs>;
  using S = Smem<kVs>;
  constexpr int kTpr = L::kThreadsPerRow;
  const int slices = kHeadDim / kVs;
  const int slice = static_cast<int>(blockIdx.x % slices);
  const int64_t n = blockIdx.x / slices;
  const int h = blockIdx.y;
  const int hk = h / (p.num_v_heads / p.num_k_heads);
  const int v0 = slice * kVs;
  const int tid = threadIdx.x;
  const int warp = tid / kWarpSize;
  const int lane = tid % kWarpSize;
  const int c4 = (tid % kTpr) * kColsPerThread;  // column offset in the slice
  const int rg = tid / kTpr;
  Q35_DYNAMIC_SMEM(float, smem);

  // ---- load the state columns (the indexes first: every load that depends on none is issued at once) ----
  float s[L::kRowsPerThread][kColsPerThread];
  const int64_t slot_in = p.state_in_slots ? gdn::load_index(p.state_in_slots, n, p.slots_int64) : n;
  const int64_t t_begin = p.cu_seqlens_ptr ? gdn::load_index(p.cu_seqlens_ptr, n, p.cu_seqlens_int64)
                                           : n * p.tokens_per_seq;
  const int64_t t_end = p.cu_seqlens_ptr ? gdn::load_index(p.cu_seqlens_ptr, n + 1, p.cu_seqlens_int64)
                                         : t_begin + p.tokens_per_seq;
  const float* s_in = p.state_in_ptr ? p.state_in_ptr + (slot_in * p.num_v_heads + h) * kHeadDim * kHeadDim : nullptr;
#pragma unroll
  for (int i = 0; i < L::kRowsPerThread; ++i) {
    const int row = rg + L::kRowGroups * i;
    if (s_in) {
      load_vec_f32<float, kColsPerThread>(s_in + row * kHeadDim + v0 + c4, s[i]);
    } else {
#pragma unroll
      for (int c = 0; c < kColsPerThread; ++c) s[i][c] = 0.0f;
    }
  }

  // the gated norm inside the CTA / cluster (norm_row_in_cluster) or by the row's last CTA (norm_row_by_last_cta)
  const bool local_norm = p.z_ptr != nullptr && (kCluster || slices == 1);
  bool pending = false;  // kCluster: a cluster arrival not yet waited for
  for (int64_t t = t_begin; t < t_end; ++t) {
    __syncthreads();  // the previous token's smem reads are done
    NormInputs norm_in;  // kCluster: loaded now, their latency behind the products (else in norm_row_in_cluster)
    if (kCluster && local_norm && tid < kTpr) load_norm_inputs<T>(p, t, h, v0 + c4, norm_in);
    load_token<T, kVs>(p, smem, t, h, hk, v0);
    __syncthreads();

    // ---- decay, then a = S^T k and b = S^T q over this thread's rows ----
    const float decay = expf(smem[S::kScalars + 0]);
    float pa[kColsPerThread] = {}, pb[kColsPerThread] = {};
#pragma unroll
    for (int i = 0; i < L::kRowsPerThread; ++i) {
      const int row = rg + L::kRowGroups * i;
      const float kr = smem[S::kK + row];
      const float qr = smem[S::kQ + row];
#pragma unroll
      for (int c = 0; c < kColsPerThread; ++c) {
        s[i][c] *= decay;
        pa[c] += s[i][c] * kr;
        pb[c] += s[i][c] * qr;
      }
    }
#pragma unroll
    for (int off = kTpr; off < kWarpSize; off *= 2) {  // lanes holding the same columns
#pragma unroll
      for (int c = 0; c < kColsPerThread; ++c) {
        pa[c] += __shfl_xor_sync(warp::kFullMask, pa[c], off);
        pb[c] += __shfl_xor_sync(warp::kFullMask, pb[c], off);
      }
    }
    if (lane < kTpr) {
#pragma unroll
      for (int c = 0; c < kColsPerThread; ++c) {
        smem[S::kRed + (warp * kVs + c4 + c) * 2 + 0] = pa[c];
        smem[S::kRed + (warp * kVs + c4 + c) * 2 + 1] = pb[c];
      }
    }
    __syncthreads();

    // ---- delta rule update and output ----
    const float beta = smem[S::kScalars + 1];
    const float kq = smem[S::kScalars + 2];
    float delta[kColsPerThread], o[kColsPerThread];
#pragma unroll
    for (int c = 0; c < kColsPerThread; ++c) {
      float a = 0.0f, b = 0.0f;
#pragma unroll
      for (int w = 0; w < L::kWarps; ++w) {
        a += smem[S::kRed + (w * kVs + c4 + c) * 2 + 0];
        b += smem[S::kRed + (w * kVs + c4 + c) * 2 + 1];
      }
      delta[c] = beta * (smem[S::kV + c4 + c] - a);
      o[c] = b + delta[c] * kq;
    }
#pragma unroll
    for (int i = 0; i < L::kRowsPerThread; ++i) {
      const float kr = smem[S::kK + rg + L::kRowGroups * i];
#pragma unroll
      for (int c = 0; c < kColsPerThread; ++c) s[i][c] += kr * delta[c];
    }
    if (rg == 0 && local_norm) {  // the slice's o, rounded, for the norm of this CTA / cluster
#pragma unroll
      for (int c = 0; c < kColsPerThread; ++c) smem[S::kO + c4 + c] = to_float(from_float<T>(o[c]));
    } else if (rg == 0) {  // o itself, or the row the last CTA normalises
      T* out = static_cast<T*>(p.out_ptr) + t * p.out_token_stride + h * kHeadDim + v0 + c4;
#pragma unroll
      for (int c = 0; c < kColsPerThread; ++c) out[c] = from_float<T>(o[c]);
    }
    if (p.intermediate_ptr) {
      float* inter = p.intermediate_ptr + (t * p.num_v_heads + h) * kHeadDim * kHeadDim;  // [K, V]
#pragma unroll
      for (int i = 0; i < L::kRowsPerThread; ++i) {
        store_vec_f32<float, kColsPerThread>(inter + (rg + L::kRowGroups * i) * kHeadDim + v0 + c4, s[i]);
      }
    }
    if (local_norm) {
      norm_row_in_cluster<T, kVs, kCluster>(p, smem, t, h, slices, v0, norm_in, pending);
    } else if (!kCluster && p.z_ptr) {  // (never with kCluster: no atomics in that kernel)
      norm_row_by_last_cta<T, kVs>(p, smem, t, h, slices);
    }
  }

  // ---- store the state columns ----
  if (p.state_out_ptr) {
    const int64_t slot_out = p.state_out_slots ? gdn::load_index(p.state_out_slots, n, p.slots_int64) : n;
    float* s_out = p.state_out_ptr + (slot_out * p.num_v_heads + h) * kHeadDim * kHeadDim;
#pragma unroll
    for (int i = 0; i < L::kRowsPerThread; ++i) {
      store_vec_f32<float, kColsPerThread>(s_out + (rg + L::kRowGroups * i) * kHeadDim + v0 + c4, s[i]);
    }
  }
  if constexpr (kCluster) {
    if (pending) ptx::cluster_wait();  // no CTA leaves while a peer may still read its partial
  }
}

template <typename T, int kVs>
cudaError_t launch_slices(const GdnRecurrentParams& p, cudaStream_t stream) {
  constexpr int kSlices = kHeadDim / kVs;
  const dim3 grid(static_cast<unsigned>(p.num_seqs * kSlices), static_cast<unsigned>(p.num_v_heads));
  const size_t smem = Smem<kVs>::kFloats * sizeof(float);
  if constexpr (kSlices > 1 && kSlices <= 8) {
    if (p.cluster_norm && p.z_ptr) {  // the head's CTAs (consecutive in x) as one cluster
      if (!sm90a_available()) return cudaErrorInvalidDeviceFunction;
      return launch_cluster(gdn_recurrent_kernel<T, kVs, true>, grid, dim3(Layout<kVs>::kThreads),
                            dim3(kSlices, 1, 1), smem, stream, p);
    }
  }
  return launch(gdn_recurrent_kernel<T, kVs, false>, grid, dim3(Layout<kVs>::kThreads), smem, stream, p);
}

}  // namespace

template <typename T>
cudaError_t launch_gdn_recurrent(const GdnRecurrentParams& p, cudaStream_t stream) {
  if (p.num_seqs == 0 || p.num_v_heads == 0) return cudaSuccess;
  switch (gdn_recurrent_slices(p)) {
    case 1: return launch_slices<T, 128>(p, stream);
    case 2: return launch_slices<T, 64>(p, stream);
    case 4: return launch_slices<T, 32>(p, stream);
    case 8: return launch_slices<T, 16>(p, stream);
    default: return launch_slices<T, 8>(p, stream);
  }
}

#define Q35_INSTANTIATE(T) template cudaError_t launch_gdn_recurrent<T>(const GdnRecurrentParams&, cudaStream_t);
Q35_FOR_EACH_GDN_RECURRENT_TYPES(Q35_INSTANTIATE)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
