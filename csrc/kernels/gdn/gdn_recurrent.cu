// Token-by-token gated delta rule (decode / verification). See gdn_recurrent.cuh for the op.
//
// One CTA owns kVs value columns of one (sequence, value head) state: S[:, v0 : v0 + kVs] stays in registers for
// all the sequence's tokens. Per token both reductions over K come from one pass over the decayed state:
//   a = S~^T k,  b = S~^T q  (S~ = exp(g) S);  delta = beta (v - a);  o = b + delta (k . q);  S = S~ + k delta^T
// so the state is read once and written once per call. With the gated norm and several CTAs per head, each CTA
// writes its o columns, and the last CTA to finish a row (an atomic counter per row) normalises the whole row.
#include "kernels/gdn/gdn_common.cuh"
#include "kernels/gdn/gdn_recurrent.cuh"
#include "q35/launch.h"

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

// Shared memory of one CTA (floats): normalised q (scaled) and k, the value slice, the per-warp partial sums of
// a and b, and the token's scalars.
template <int kVs>
struct Smem {
  static constexpr int kQ = 0;
  static constexpr int kK = kQ + kHeadDim;
  static constexpr int kV = kK + kHeadDim;
  static constexpr int kRed = kV + kVs;                                  // [warps][kVs][2]
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

// Gated RMSNorm of row (t, h) once every CTA of the head has written its columns of o to `out`.
template <typename T, int kVs>
__device__ void gated_norm_row(const GdnRecurrentParams& p, float* smem, int64_t t, int h, int slices) {
  using S = Smem<kVs>;
  __threadfence();  // this CTA's o columns, before the counter says they are there
  __syncthreads();
  if (threadIdx.x == 0) {
    const bool last = slices == 1 || atomicAdd(&p.counters_ptr[t * p.num_v_heads + h], 1) == slices - 1;
    smem[S::kScalars + 3] = last ? 1.0f : 0.0f;
  }
  __syncthreads();
  if (smem[S::kScalars + 3] == 0.0f) return;  // uniform over the block
  __threadfence();
  T* out = static_cast<T*>(p.out_ptr) + t * p.out_token_stride + h * kHeadDim;  // [V]
  constexpr int kThreads = Layout<kVs>::kThreads;
  constexpr int kPerThread = (kHeadDim + kThreads - 1) / kThreads;
  float o[kPerThread];
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int c = threadIdx.x + i * kThreads;
    o[i] = c < kHeadDim ? load_l2(out + c) : 0.0f;
    ss += o[i] * o[i];
  }
  const float rstd = rsqrtf(block::reduce_sum(ss) / static_cast<float>(kHeadDim) + p.eps);
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int c = threadIdx.x + i * kThreads;
    if (c >= kHeadDim) break;
    const float z = to_float(static_cast<const T*>(p.z_ptr)[t * p.z_token_stride + h * kHeadDim + c]);
    const float w = gdn::load_param<T>(p.norm_weight_ptr, c, p.norm_weight_fp32);
    out[c] = from_float<T>(gdn::gated_norm_value<T>(o[i], rstd, w, p.norm_weight_fp32, z));
  }
}

// Computes: for each token t of sequence n: S = exp(g_t) S + k_t (beta_t (v_t - (exp(g_t) S)^T k_t))^T and
//           o_t = S^T (scale q_t) on value columns [v0, v0 + kVs) of value head h (q/k head h / (Hv / Hk)).
// Args:     see GdnRecurrentParams (q, k, v, gates per token; states by slot; out; optional intermediates).
// Grid:     x = n * slices + slice (value columns v0 = slice * kVs), y = value head h.
// Block:    Layout<kVs>::kThreads threads (64..256): thread (row group rg, column quad c4) owns state rows
//           rg + kRowGroups * i and columns v0 + 4 * c4 .. + 3 (consecutive threads read consecutive 16 bytes of a row).
// Smem:     Smem<kVs>::kFloats * 4 bytes.
// Requires: K = V = 128; 16-byte aligned states (the torch glue checks); counters zeroed when norm and slices > 1.
template <typename T, int kVs>
__global__ void __launch_bounds__(Layout<kVs>::kThreads, Layout<kVs>::kMinBlocks) gdn_recurrent_kernel(GdnRecurrentParams p) {
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

  // ---- load the state columns ----
  float s[L::kRowsPerThread][kColsPerThread];
  const int64_t slot_in = p.state_in_slots ? gdn::load_index(p.state_in_slots, n, p.slots_int64) : n;
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

  const int64_t t_begin = p.cu_seqlens_ptr ? gdn::load_index(p.cu_seqlens_ptr, n, p.cu_seqlens_int64)
                                           : n * p.tokens_per_seq;
  const int64_t t_end = p.cu_seqlens_ptr ? gdn::load_index(p.cu_seqlens_ptr, n + 1, p.cu_seqlens_int64)
                                         : t_begin + p.tokens_per_seq;
  for (int64_t t = t_begin; t < t_end; ++t) {
    __syncthreads();  // the previous token's smem reads are done
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
    if (rg == 0) {
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
    if (p.z_ptr) gated_norm_row<T, kVs>(p, smem, t, h, slices);
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
}

template <typename T, int kVs>
cudaError_t launch_slices(const GdnRecurrentParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.num_seqs * (kHeadDim / kVs)), static_cast<unsigned>(p.num_v_heads));
  const size_t smem = Smem<kVs>::kFloats * sizeof(float);
  return launch(gdn_recurrent_kernel<T, kVs>, grid, dim3(Layout<kVs>::kThreads), smem, stream, p);
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
