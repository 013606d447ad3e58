// Token-by-token gated delta rule (decode / verification). See gdn_recurrent.cuh for the op.
//
// One CTA owns kVs value columns of one (sequence, value head) state: S[:, v0 : v0 + kVs] stays in registers for
// all the sequence's tokens. Per token both reductions over K come from one pass over the decayed state:
//   a = S~^T k,  b = S~^T q  (S~ = exp(g) S);  delta = beta (v - a);  o = b + delta (k . q);  S = S~ + k delta^T
// so the state is read once and written once per call. The gated norm of a row split over CTAs: on sm_90 the
// head's CTAs form a cluster and add each other's sums of squares through distributed shared memory
// (norm_row_in_cluster); else each CTA writes its o columns and the last to finish the row (an atomic counter per
// row) normalises it (norm_row_by_last_cta). On sm_90 the gdn_decode layer op also convolves the token here, in
// one cluster per (sequence, k head) (kFused). README.md, "Decode and verification".
#include "kernels/gdn/gdn_common.cuh"
#include "kernels/gdn/gdn_recurrent.cuh"
#include "kernels/gdn/gdn_recurrent_parts.cuh"
#include "q35/launch.h"
#include "q35/ptx.cuh"
#include "q35/sm90_host.h"

namespace q35::Q35_TARGET {
namespace {

using gdn::kHeadDim;
using namespace ::q35::gdn::recurrent;  // NOLINT: the kernel's building blocks

// CTAs per SM the kernel is compiled for: fp32 (only the tiny test models) has no floor, whose 128-register cap it
// met at kVs = 128.
template <typename T, int kVs>
constexpr int kMinCtas = sizeof(T) == 4 ? 1 : Layout<kVs>::kMinBlocks;

// Computes: for each token t of sequence n: S = exp(g_t) S + k_t (beta_t (v_t - (exp(g_t) S)^T k_t))^T and
//           o_t = S^T (scale q_t) on value columns [v0, v0 + kVs) of value head h (q/k head h / (Hv / Hk)).
// Args:     see GdnRecurrentParams (q, k, v, gates per token; states by slot; out; optional intermediates).
// Grid:     x = n * slices + slice (value columns v0 = slice * kVs), y = value head h. kFused: x = n * ranks + r
//           with ranks = (Hv / Hk) * slices (r: the k head's value head r / slices, slice r % slices), y = k head.
// Block:    Layout<kVs>::kThreads threads (64..256): thread (row group rg, column quad c4) owns state rows
//           rg + kRowGroups * i and columns v0 + 4 * c4 .. + 3 (consecutive threads read consecutive 16 bytes of a row).
// Smem:     Smem<kVs>::kFloats * 4 bytes.
// Cluster:  kCluster: the head's `slices` CTAs (consecutive in x), launched by launch_cluster on sm_90; kFused: the
//           k head's `ranks` CTAs, which first convolve the token (fused_conv_phase; one token per sequence).
// Requires: K = V = 128; 16-byte aligned states (the torch glue checks); counters zeroed when
//           gdn_recurrent_needs_counters.
template <typename T, int kVs, bool kCluster, bool kFused>
__global__ void __launch_bounds__(Layout<kVs>::kThreads, kMinCtas<T, kVs>) gdn_recurrent_kernel(GdnRecurrentParams p) {
  using L = Layout<kVs>;
  using S = Smem<kVs>;
  constexpr int kTpr = L::kThreadsPerRow;
  static_assert(!kFused || kCluster, "the fused conv hands q / k over inside a cluster");
  const int slices = kHeadDim / kVs;
  const int per_k_head = p.num_v_heads / p.num_k_heads;
  const int heads_here = kFused ? per_k_head : 1;            // value heads of a cluster (kFused: all of the k head's)
  const int rank = static_cast<int>(blockIdx.x % (heads_here * slices));  // in the cluster (else: the slice)
  const int slice = rank % slices;
  const int64_t n = blockIdx.x / (heads_here * slices);
  const int h = kFused ? static_cast<int>(blockIdx.y) * per_k_head + rank / slices : static_cast<int>(blockIdx.y);
  const int hk = h / per_k_head;
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

  if constexpr (kFused) fused_conv_phase<T, kVs>(p, smem, n, h, hk, v0, rank, heads_here * slices);
  // the gated norm inside the CTA / cluster (norm_row_in_cluster) or by the row's last CTA (norm_row_by_last_cta)
  const bool local_norm = p.z_ptr != nullptr && (kCluster || slices == 1);
  bool pending = false;  // kCluster: a cluster arrival not yet waited for
  for (int64_t t = t_begin; t < t_end; ++t) {
    __syncthreads();  // the previous token's smem reads are done
    NormInputs norm_in;  // kCluster: loaded now, their latency behind the products (else in norm_row_in_cluster)
    if (kCluster && local_norm && tid < kTpr) load_norm_inputs<T>(p, t, h, v0 + c4, norm_in);
    load_token<T, kVs, kFused>(p, smem, t, h, hk, v0);
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
      norm_row_in_cluster<T, kVs, kCluster>(p, smem, t, h, slices, v0, rank - slice, norm_in, pending);
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
  if constexpr (kCluster) {  // no CTA leaves while a peer may still read its partial (or, kFused, its q | k share)
    if (pending) {
      ptx::cluster_wait();
    } else if (kFused) {
      ptx::cluster_sync();
    }
  }
}

// The fused conv (p.fuse_conv): one cluster per (sequence, k head) of all its value heads' slices, grid y = k head.
template <typename T, int kVs>
cudaError_t launch_fused(const GdnRecurrentParams& p, cudaStream_t stream) {
  const int per_k_head = p.num_v_heads / p.num_k_heads;
  const int ranks = per_k_head * (kHeadDim / kVs);
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % kVecBytes == 0; };
  if constexpr (sizeof(T) != 2 || kVs < 16 || kVs > 64) {
    return cudaErrorInvalidValue;  // 16-bit only; <= 8 CTAs a cluster; >= 2 a head (gdn_decode_fuses_conv)
  } else {
    if (ranks > 8 || p.z_ptr == nullptr || p.tokens_per_seq != 1 || p.cu_seqlens_ptr != nullptr ||
        p.intermediate_ptr != nullptr || !aligned(p.conv_x_ptr) || !aligned(p.conv_state_ptr) ||
        p.conv_x_row_stride % (kVecBytes / sizeof(T)) != 0)
      return cudaErrorInvalidValue;
    if (!sm90a_available()) return cudaErrorInvalidDeviceFunction;
    const dim3 grid(static_cast<unsigned>(p.num_seqs * ranks), static_cast<unsigned>(p.num_k_heads));
    return launch_cluster(gdn_recurrent_kernel<T, kVs, true, true>, grid, dim3(Layout<kVs>::kThreads),
                          dim3(static_cast<unsigned>(ranks), 1, 1), Smem<kVs>::kFloats * sizeof(float), stream, p);
  }
}

template <typename T, int kVs>
cudaError_t launch_slices(const GdnRecurrentParams& p, cudaStream_t stream) {
  constexpr int kSlices = kHeadDim / kVs;
  if (p.fuse_conv) return launch_fused<T, kVs>(p, stream);
  const dim3 grid(static_cast<unsigned>(p.num_seqs * kSlices), static_cast<unsigned>(p.num_v_heads));
  const size_t smem = Smem<kVs>::kFloats * sizeof(float);
  if constexpr (kSlices > 1 && kSlices <= 8) {
    if (p.cluster_norm && p.z_ptr) {  // the head's CTAs (consecutive in x) as one cluster
      if (!sm90a_available()) return cudaErrorInvalidDeviceFunction;
      return launch_cluster(gdn_recurrent_kernel<T, kVs, true, false>, grid, dim3(Layout<kVs>::kThreads),
                            dim3(kSlices, 1, 1), smem, stream, p);
    }
  }
  return launch(gdn_recurrent_kernel<T, kVs, false, false>, grid, dim3(Layout<kVs>::kThreads), smem, stream, p);
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
