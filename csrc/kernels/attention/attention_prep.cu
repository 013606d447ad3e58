// Pre-attention kernel (q/gate split, q/k zero-centred RMSNorm, partial M-RoPE, paged KV write) and its launcher.
// See attention_prep.cuh for the op and README.md for the design.
#include "kernels/attention/attention_prep.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

constexpr int kPrepWarps = 4;  // one head job per warp
constexpr int kPrepThreads = kPrepWarps * kWarpSize;

// y_e of the zero-centred RMSNorm, rounded to T as the reference rounds it before the rotary.
template <typename T, typename W>
__device__ __forceinline__ float normed(const float* row, const W* w, int e, float inv_rms) {
  return to_float(from_float<T>(__fmul_rn(__fmul_rn(row[e], inv_rms), 1.0f + to_float(w[e]))));
}

// One head row: out = rope(round_T(x * rsqrt(mean(x^2) + eps) * (1 + w))) on dims [0, R), the normed value on
// [R, D). fp32 math without contraction (x*cos + rot*sin rounds each product, as the torch reference does).
// row: [D] fp32 scratch of this warp (the rotary partner d +- R/2 lives in another lane).
template <typename T, typename W, int kVec>
__device__ void norm_rope_row(const T* __restrict__ x, const W* __restrict__ w, T* __restrict__ out, float* row,
                              const float* cos_s, const float* sin_s, int D, int R, float eps) {
  const int lane = threadIdx.x % kWarpSize;
  const int chunks = D / kVec;
  float sum_sq = 0.0f;
  for (int c = lane; c < chunks; c += kWarpSize) {
    float v[kVec];
    load_vec_f32<T, kVec>(x + c * kVec, v);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      sum_sq += v[i] * v[i];
      row[c * kVec + i] = v[i];
    }
  }
  const float inv_rms = rsqrtf(warp::reduce_sum(sum_sq) / static_cast<float>(D) + eps);
  __syncwarp();
  const int half = R / 2;
  for (int c = lane; c < chunks; c += kWarpSize) {
    float y[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const int e = c * kVec + i;
      y[i] = normed<T>(row, w, e, inv_rms);
      if (e < R) {
        const int slot = e < half ? e : e - half;
        const float partner = normed<T>(row, w, e < half ? e + half : e - half, inv_rms);
        const float rotated = e < half ? -partner : partner;  // rotate_half: [-x2, x1]
        y[i] = __fadd_rn(__fmul_rn(y[i], cos_s[slot]), __fmul_rn(rotated, sin_s[slot]));
      }
    }
    store_vec_f32<T, kVec>(out + c * kVec, y);
  }
  __syncwarp();
}

template <typename T, int kVec>
__device__ void copy_row(const T* __restrict__ src, T* __restrict__ dst, int D) {
  const int lane = threadIdx.x % kWarpSize;
  for (int c = lane; c < D / kVec; c += kWarpSize) {
    *reinterpret_cast<Vec<T, kVec>*>(dst + c * kVec) = *reinterpret_cast<const Vec<T, kVec>*>(src + c * kVec);
  }
}

// Computes: per token t and head: q_h = rope(qnorm(qkv[t, q_h])), gate_h = qkv[t, gate_h] (-> q_out, gate_out);
//           k_h = rope(knorm(qkv[t, k_h])), v_h = qkv[t, v_h] (-> k_cache/v_cache at slot_mapping[t] if >= 0).
//           cos/sin of frequency slot i: position of stream s(i) (interleaved M-RoPE) * inv_freq[i], fp32, rounded
//           to T.
// Args:     qkv [T, (2Hq + 2Hkv) D] T (row stride given); norm weights [D] W; positions [3, T] int64 (strides
//           given); slot_mapping [T] int64; inv_freq [R/2] f32; caches [slots, Hkv, D] T; q_out [T, Hq, D],
//           gate_out [T, Hq*D] T contiguous.
// Grid:     (T, ceil((Hq + 2 Hkv) / 4)): blockIdx.x = token, job = 4 blockIdx.y + warp (q heads, k heads, v heads).
// Block:    4 warps, one head row each; lanes cover the row in kVec chunks.
// Smem:     (R + 4 D) * 4 bytes: the token's cos/sin table and one fp32 row per warp.
// Requires: kVec > 1 only when every row and head start is 16-byte aligned (the launcher checks).
template <typename T, typename W, int kVec>
__global__ void __launch_bounds__(kPrepThreads) attention_prep_kernel(AttentionPrepParams p) {
  Q35_DYNAMIC_SMEM(float, smem);
  const int D = p.head_dim;
  const int R = p.rotary_dim;
  const int half = R / 2;
  const int Hq = p.num_q_heads;
  const int Hkv = p.num_kv_heads;
  const int64_t t = blockIdx.x;
  float* cos_s = smem;                                    // [R/2] smem
  float* sin_s = smem + half;                             // [R/2] smem
  float* row = smem + R + (threadIdx.x / kWarpSize) * D;  // [D] smem, this warp's

  // ---- rotary table of this token ----
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const int stream = (i % 3 == 1 && i < p.mrope_h_slots) ? 1 : (i % 3 == 2 && i < p.mrope_w_slots) ? 2 : 0;
    const float pos = static_cast<float>(
        p.positions_ptr[stream * p.positions_stream_stride + t * p.positions_token_stride]);
    float s, c;
    sincosf(pos * p.inv_freq_ptr[i], &s, &c);
    cos_s[i] = to_float(from_float<T>(c));
    sin_s[i] = to_float(from_float<T>(s));
  }
  __syncthreads();

  // ---- one head job per warp ----
  const int job = blockIdx.y * kPrepWarps + threadIdx.x / kWarpSize;
  const T* qkv = static_cast<const T*>(p.qkv_ptr) + t * p.qkv_row_stride;  // [(2Hq + 2Hkv) D]
  const int64_t slot = p.slot_mapping_ptr[t];
  if (job < Hq) {
    T* q_out = static_cast<T*>(p.q_out_ptr) + (t * Hq + job) * D;        // [D]
    T* gate_out = static_cast<T*>(p.gate_out_ptr) + (t * Hq + job) * D;  // [D]
    norm_rope_row<T, W, kVec>(qkv + 2 * job * D, static_cast<const W*>(p.q_norm_weight_ptr), q_out, row, cos_s,
                              sin_s, D, R, p.eps);
    copy_row<T, kVec>(qkv + (2 * job + 1) * D, gate_out, D);
  } else if (job < Hq + Hkv && slot >= 0) {
    const int h = job - Hq;
    T* k_out = static_cast<T*>(p.k_cache_ptr) + (slot * Hkv + h) * D;  // [D]
    norm_rope_row<T, W, kVec>(qkv + (2 * Hq + h) * D, static_cast<const W*>(p.k_norm_weight_ptr), k_out, row,
                              cos_s, sin_s, D, R, p.eps);
  } else if (job < Hq + 2 * Hkv && slot >= 0) {
    const int h = job - Hq - Hkv;
    copy_row<T, kVec>(qkv + (2 * Hq + Hkv + h) * D, static_cast<T*>(p.v_cache_ptr) + (slot * Hkv + h) * D, D);
  }
}

}  // namespace

template <typename T, typename W>
cudaError_t launch_attention_prep(const AttentionPrepParams& p, cudaStream_t stream) {
  constexpr int kVec = kVecBytes / sizeof(T);
  if (p.num_tokens == 0) return cudaSuccess;
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % kVecBytes == 0; };
  const bool vec_ok = p.head_dim % kVec == 0 && (p.qkv_row_stride * sizeof(T)) % kVecBytes == 0 &&
                      aligned(p.qkv_ptr) && aligned(p.k_cache_ptr) && aligned(p.v_cache_ptr) &&
                      aligned(p.q_out_ptr) && aligned(p.gate_out_ptr) &&
                      reinterpret_cast<uintptr_t>(p.q_norm_weight_ptr) % (sizeof(W) * kVec) == 0 &&
                      reinterpret_cast<uintptr_t>(p.k_norm_weight_ptr) % (sizeof(W) * kVec) == 0;
  const int jobs = p.num_q_heads + 2 * p.num_kv_heads;
  const dim3 grid(static_cast<unsigned>(p.num_tokens), static_cast<unsigned>(ceil_div(jobs, kPrepWarps)));
  const size_t smem = static_cast<size_t>(p.rotary_dim + kPrepWarps * p.head_dim) * sizeof(float);
  if (vec_ok) return launch(attention_prep_kernel<T, W, kVec>, grid, dim3(kPrepThreads), smem, stream, p);
  return launch(attention_prep_kernel<T, W, 1>, grid, dim3(kPrepThreads), smem, stream, p);
}

#define Q35_INSTANTIATE(T, W) \
  template cudaError_t launch_attention_prep<T, W>(const AttentionPrepParams&, cudaStream_t);
Q35_FOR_EACH_ATTENTION_PREP_TYPES(Q35_INSTANTIATE)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
