// The chunked gated delta rule kernel (prefill) and its launcher. See gdn_chunk.cuh for the op and README.md for
// the design. Per CTA: one segment of one (sequence, value head); the fp32 state lives in registers as S^T
// (value rows x key columns, warp w owning value rows [16w, 16w + 16)), so that every product of the recurrence
// takes it, or the fresh v_new, straight from accumulators as an mma A operand:
//   v_new^T = (Tu V)^T - S^T w^T                                  [16 x 64 per warp]
//   o^T     = scale diag-cols(exp(G)) S^T Q^T + v_new^T P^T        [16 x 64 per warp]
//   S^T     = exp(G_last) S^T + (v_new^T diag(exp(G_last - G))) K  [16 x 128 per warp]
// with w = Tw K, Tw = T diag(beta exp(G)), Tu = T diag(beta), T = (I + A)^-1 and P = scale (Q K^T * Gamma) from
// the chunk-local stages (gdn_chunk_stages.cuh).
#include "kernels/gdn/gdn_chunk.cuh"
#include "kernels/gdn/gdn_chunk_output.cuh"
#include "kernels/gdn/gdn_chunk_stages.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

using namespace ::q35::gdn;  // NOLINT: the kernel's building blocks
constexpr int kKTiles = kHeadDim / kMmaN;   // 16 n-tiles of the state's key columns
constexpr int kTokTiles = kChunk / kMmaN;   // 8 n-tiles of a chunk's tokens

// Element e of n-tile nt of a warp's S^T accumulators: value row v, key column k.
__device__ __forceinline__ void state_coords(int warp, int nt, int e, int& v, int& k) {
  const int lane = threadIdx.x % kWarpSize;
  v = warp * kRowsPerWarp + lane / 4 + 8 * (e / 2);
  k = nt * kMmaN + 2 * (lane % 4) + e % 2;
}

__device__ __forceinline__ void init_state(const Run& r, float (&s)[kKTiles][4]) {
  const int warp = threadIdx.x / kWarpSize;
#pragma unroll
  for (int nt = 0; nt < kKTiles; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      int v, k;
      state_coords(warp, nt, e, v, k);
      s[nt][e] = r.init == Init::kLoad ? r.init_ptr[k * kHeadDim + v] : (r.init == Init::kIdentity && v == k);
    }
  }
}

__device__ __forceinline__ void store_state(float* dst, const float (&s)[kKTiles][4]) {
  const int warp = threadIdx.x / kWarpSize;
#pragma unroll
  for (int nt = 0; nt < kKTiles; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      int v, k;
      state_coords(warp, nt, e, v, k);
      dst[k * kHeadDim + v] = s[nt][e];
    }
  }
}

template <typename T>
__device__ __forceinline__ void mma_pair(float (&c0)[4], float (&c1)[4], const uint32_t (&a)[4],
                                         const uint32_t (&b)[4]) {
  const uint32_t b0[2] = {b[0], b[1]};
  const uint32_t b1[2] = {b[2], b[3]};
  mma16816<T>(c0, a, b0);
  mma16816<T>(c1, a, b1);
}

// v_new^T = (Tu V)^T - S^T w^T and (outputs) o^T = scale exp(G) S^T Q^T + v_new^T P^T for the warp's value rows.
template <typename T>
__device__ __forceinline__ void value_stage(const ChunkViews<T>& sm, int stage, bool values, bool outputs,
                                            float scale, const float (&s)[kKTiles][4], float (&vn)[kTokTiles][4],
                                            float (&o)[kTokTiles][4]) {
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int vr0 = warp * kRowsPerWarp;
#pragma unroll
  for (int nt = 0; nt < kTokTiles; ++nt) {
    zero_acc(vn[nt]);
    zero_acc(o[nt]);
  }
  if (values) {  // u^T = V^T Tu^T, Tu lower triangular: token block kb feeds output tokens >= 16 kb
#pragma unroll
    for (int kb = 0; kb < kChunk / kMmaK; ++kb) {
      uint32_t a[4];
      lds_a_trans(a, sm.v(stage), kLd, kb * kMmaK, vr0);
#pragma unroll
      for (int nt = 2 * kb; nt < kTokTiles; nt += 2) {
        uint32_t b[4];
        lds_b_pair(b, sm.tu(), kLdT, nt * kMmaN, kb * kMmaK);
        mma_pair<T>(vn[nt], vn[nt + 1], a, b);
      }
    }
  }
#pragma unroll
  for (int kb = 0; kb < kHeadDim / kMmaK; ++kb) {  // the state at the chunk start, as bf16/fp16 A fragments
    uint32_t a[4];
    acc_to_a_frag<T>(a, s[2 * kb], s[2 * kb + 1]);
#pragma unroll
    for (int m = 0; m < kChunk / kMmaK; ++m) {
      uint32_t b[4];
      lds_b_pair(b, sm.w(), kLd, m * kMmaK, kb * kMmaK);
      mma_pair<T>(vn[2 * m], vn[2 * m + 1], a, b);
      if (outputs) {
        lds_b_pair(b, sm.q(stage), kLd, m * kMmaK, kb * kMmaK);
        mma_pair<T>(o[2 * m], o[2 * m + 1], a, b);
      }
    }
  }
  if (!outputs) return;
  const float* eg = sm.tok(kTokExpG);
#pragma unroll
  for (int nt = 0; nt < kTokTiles; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o[nt][e] *= scale * eg[nt * kMmaN + 2 * (lane % 4) + e % 2];
  }
#pragma unroll
  for (int kb = 0; kb < kChunk / kMmaK; ++kb) {  // + v_new^T P^T, P lower triangular
    uint32_t a[4];
    acc_to_a_frag<T>(a, vn[2 * kb], vn[2 * kb + 1]);
#pragma unroll
    for (int nt = 2 * kb; nt < kTokTiles; nt += 2) {
      uint32_t b[4];
      lds_b_pair(b, sm.pm(), kLdT, nt * kMmaN, kb * kMmaK);
      mma_pair<T>(o[nt], o[nt + 1], a, b);
    }
  }
}

// S^T = exp(G_last) S^T + (v_new^T diag(exp(G_last - G))) K.
template <typename T>
__device__ __forceinline__ void state_stage(const ChunkViews<T>& sm, int stage, const float (&vn)[kTokTiles][4],
                                            float (&s)[kKTiles][4]) {
  const int lane = threadIdx.x % kWarpSize;
  const float decay = sm.tok(kTokExpG)[kChunk - 1];
#pragma unroll
  for (int nt = 0; nt < kKTiles; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) s[nt][e] *= decay;
  }
  const float* dk = sm.tok(kTokDecayToEnd);
#pragma unroll
  for (int kb = 0; kb < kChunk / kMmaK; ++kb) {
    const int c = kb * kMmaK + 2 * (lane % 4);
    const float s0[2] = {dk[c], dk[c + 1]};
    const float s1[2] = {dk[c + kMmaN], dk[c + kMmaN + 1]};
    uint32_t a[4];
    acc_to_a_frag_scaled<T>(a, vn[2 * kb], vn[2 * kb + 1], s0, s1);
#pragma unroll
    for (int pp = 0; pp < kKTiles / 2; ++pp) {
      uint32_t b[4];
      lds_b_trans_pair(b, sm.k(stage), kLd, kb * kMmaK, pp * kMmaK);
      mma_pair<T>(s[2 * pp], s[2 * pp + 1], a, b);
    }
  }
}

// o (rounded to T) staged as [token][V] in the chunk's q buffer, then written row by row, through the gated
// RMSNorm when z is given (sum of squares of the rounded o per token: warp partials in red). Barriers inside.
template <typename T>
__device__ void output_stage(const GdnChunkParams& p, const ChunkViews<T>& sm, int stage, int h, int64_t c0, int nv,
                             const float (&o)[kTokTiles][4]) {
  constexpr int kElems = kVecBytes / sizeof(T);
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  T* stg = sm.q(stage);  // [64][kLd]
  __syncthreads();       // every warp is done with q
  float ss[kTokTiles][2] = {};
#pragma unroll
  for (int nt = 0; nt < kTokTiles; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int v = warp * kRowsPerWarp + lane / 4 + 8 * (e / 2);
      const int tok = nt * kMmaN + 2 * (lane % 4) + e % 2;
      const T rounded = from_float<T>(o[nt][e]);
      const float x = to_float(rounded);
      stg[tok * kLd + v] = rounded;
      ss[nt][e % 2] += x * x;
    }
  }
  if (p.z_ptr) store_token_sums(ss, sm.red());
  __syncthreads();
  store_output_rows<T>(p, sm.red(), h, c0, nv, [&](int row, int col, float (&x)[kElems]) {
    load_vec_f32<T, kElems>(stg + row * kLd + col, x);
  });
}

// Computes: the chunked gated delta rule of one segment of one (sequence, value head): outputs o (or their gated
//           RMSNorm) for the segment's tokens and the state after it (pass 1), or the segment's state from zero /
//           its transition map for the exact chain (pass 0).
// Args:     see GdnChunkParams.
// Grid:     x = item (segment of a sequence; spare items exit), y = value head h, z = pass-0 variant (state
//           from zero with values / transition map from the identity without values).
// Block:    8 warps. Chunk-local stages on all threads; warp w owns value rows [16w, 16w + 16) of the state,
//           v_new and o.
// Smem:     ChunkSmem<T>::kBytes (double-buffered q/k/v chunks, A/T, Tu, Tw, P, per-token factors).
// Requires: K = V = 128; q/k/v rows 16-byte aligned; out 16-byte aligned rows (the torch glue checks).
template <typename T>
__global__ void __launch_bounds__(kChunkThreads, 1) gdn_chunk_kernel(GdnChunkParams p) {
  Item it;
  if (!find_item(p, blockIdx.x, it)) return;
  const int h = blockIdx.y;
  const int hk = h / (p.num_v_heads / p.num_k_heads);
  Run r;
  if (!plan_run(p, it, h, blockIdx.z, r)) return;
  Q35_DYNAMIC_SMEM(unsigned char, smem_raw);
  const ChunkViews<T> sm{smem_raw};
  const int warp = threadIdx.x / kWarpSize;

  float s[kKTiles][4];  // S^T: value rows of this warp x 128 key columns
  init_state(r, s);
  const float a_log = p.raw_gates ? load_param<T>(p.a_log_ptr, h, p.a_log_fp32) : 0.0f;
  const float dt_bias = p.raw_gates ? load_param<T>(p.dt_bias_ptr, h, p.dt_bias_fp32) : 0.0f;

  const int64_t num_chunks = ceil_div(r.seg_end - r.warm_start, kChunk);
  GateRaw next{};
  if (num_chunks > 0) {
    const int nv = static_cast<int>(r.seg_end - r.warm_start < kChunk ? r.seg_end - r.warm_start : kChunk);
    load_chunk_async(p, sm, 0, h, hk, r.warm_start, nv, r.outputs && r.warm_start >= r.seg_start, r.values);
    if (warp == 0) load_gates<T>(p, h, r.warm_start, nv, next);
  }
  for (int64_t ci = 0; ci < num_chunks; ++ci) {
    // ---- load: this chunk landed; prefetch the next one into the other stage ----
    const int stage = static_cast<int>(ci % 2);
    const int64_t c0 = r.warm_start + ci * kChunk;
    const int nv = static_cast<int>(r.seg_end - c0 < kChunk ? r.seg_end - c0 : kChunk);
    const bool outputs = r.outputs && c0 >= r.seg_start;
    const GateRaw cur = next;
    ptx::cp_async_wait_all();
    __syncthreads();
    if (ci + 1 < num_chunks) {
      const int64_t c1 = c0 + kChunk;
      const int nv1 = static_cast<int>(r.seg_end - c1 < kChunk ? r.seg_end - c1 : kChunk);
      load_chunk_async(p, sm, stage ^ 1, h, hk, c1, nv1, r.outputs && c1 >= r.seg_start, r.values);
      if (warp == 0) load_gates<T>(p, h, c1, nv1, next);
    }

    // ---- chunk-local: gates, norms, A and P, T = (I + A)^-1, w ----
    if (warp == 0) gate_stage<T>(p, sm, cur, nv, a_log, dt_bias);
    if (p.l2norm) {
      l2norm_rows(sm.k(stage));
      if (outputs) l2norm_rows(sm.q(stage));
    }
    __syncthreads();
    kkt_stage<T>(p, sm, stage, outputs);
    __syncthreads();
    inverse_stage<T>(sm);
    w_stage<T>(sm, stage);
    __syncthreads();

    // ---- recurrence: v_new and o from the state at the chunk start, then the state update ----
    float vn[kTokTiles][4], o[kTokTiles][4];
    value_stage<T>(sm, stage, r.values, outputs, p.scale, s, vn, o);
    state_stage<T>(sm, stage, vn, s);

    // ---- store ----
    if (outputs) output_stage<T>(p, sm, stage, h, c0, nv, o);
  }
  if (r.final_ptr) store_state(r.final_ptr, s);
}

}  // namespace

template <typename T>
cudaError_t launch_gdn_chunk(const GdnChunkParams& params, cudaStream_t stream) {
  if (params.num_seqs == 0 || params.num_v_heads == 0) return cudaSuccess;
  GdnChunkParams p = params;
  const bool sm90a = p.impl == kGdnImplSm90a || p.impl == kGdnImplSm90aPrepass ||
                     (p.impl == kGdnImplAuto && gdn_chunk_sm90a_available());
  const unsigned items = static_cast<unsigned>(p.max_items);
  const unsigned heads = static_cast<unsigned>(p.num_v_heads);
  constexpr unsigned kPrepassVariants = 2;
  const auto pass = [&](dim3 grid) {
    return sm90a ? launch_gdn_chunk_pass_sm90a<T>(p, grid, stream)
                 : launch(gdn_chunk_kernel<T>, grid, dim3(kChunkThreads), ChunkSmem<T>::kBytes, stream, p);
  };
  if (p.impl == kGdnImplSm90aPrepass) {  // Tu, P, -w of every chunk, read by both passes
    const cudaError_t err = launch_gdn_chunk_prep<T>(p, stream);
    if (err != cudaSuccess) return err;
  }
  if (p.split) {
    cudaError_t err = launch_gdn_chunk_segment_plan<T>(p, stream);
    if (err != cudaSuccess) return err;
    p.pass = 0;
    err = pass(dim3(items, heads, kPrepassVariants));
    if (err != cudaSuccess) return err;
    err = launch_gdn_chunk_chain(p, stream);
    if (err != cudaSuccess) return err;
  }
  p.pass = 1;
  return pass(dim3(items, heads));
}

#define Q35_INSTANTIATE(T) template cudaError_t launch_gdn_chunk<T>(const GdnChunkParams&, cudaStream_t);
Q35_FOR_EACH_GDN_CHUNK_TYPES(Q35_INSTANTIATE)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
