// The sm_90a chunked gated delta rule kernel (one pass of launch_gdn_chunk: the pre-pass of the exact chain or the
// output pass) and its launcher. Same CTA work as gdn_chunk_kernel (gdn_chunk.cu): one segment of one (sequence,
// value head), the fp32 state kept across chunks as S^T in the accumulators of two warpgroups (warpgroup g: value
// rows [64g, 64g + 64) x 128 key columns, m64n128, 64 registers per thread), and every product of the recurrence
// a wgmma with its A operand from registers (RS): S^T and v_new^T come straight from accumulators.
//   v_new^T = V^T Tu^T + S^T (-w)^T        (A: V^T by ldmatrix.trans, then S^T; B: Tu, -w [token][key])
//   o^T     = scale exp(G) S^T Q^T + v_new^T P^T                 (B: Q [token][key], P [token][token])
//   S^T     = exp(G_last) S^T + (v_new^T diag(exp(G_last - G))) K   (B: K^T [key][token])
// Chunk-local stages and smem layout: gdn_chunk_sm90a.cuh. Design: README.md, "sm_90a path".
#include "kernels/gdn/gdn_chunk.cuh"
#include "kernels/gdn/gdn_chunk_output.cuh"
#include "kernels/gdn/gdn_chunk_sm90a.cuh"
#include "q35/launch.h"
#include "q35/sm90_host.h"

namespace q35::Q35_TARGET {
namespace {

using namespace ::q35::gdn;         // NOLINT: the kernel's building blocks
using namespace ::q35::gdn::sm90a;  // NOLINT

constexpr int kStateRegs = kHeadDim / 2;  // m64n128 accumulators per thread
constexpr int kTokRegs = kChunk / 2;      // m64n64

// (maybe_unused: the sm_80 build compiles only the trap of the kernel that calls them)
[[maybe_unused]] __device__ __forceinline__ void init_state(const Run& r, float (&s)[kStateRegs]) {
  const int wg = threadIdx.x / kWgThreads;
  const int t = threadIdx.x % kWgThreads;
#pragma unroll
  for (int i = 0; i < kStateRegs; ++i) {
    const int v = kWgRows * wg + ptx::wgmma_acc_row(t, i);
    const int k = ptx::wgmma_acc_col(t, i);
    s[i] = r.init == Init::kLoad ? r.init_ptr[k * kHeadDim + v] : (r.init == Init::kIdentity && v == k);
  }
}

[[maybe_unused]] __device__ __forceinline__ void store_state(float* dst, const float (&s)[kStateRegs]) {
  const int wg = threadIdx.x / kWgThreads;
  const int t = threadIdx.x % kWgThreads;
#pragma unroll
  for (int i = 0; i < kStateRegs; ++i) {
    dst[ptx::wgmma_acc_col(t, i) * kHeadDim + kWgRows * wg + ptx::wgmma_acc_row(t, i)] = s[i];
  }
}

// v_new^T and (outputs) o^T = scale exp(G) S^T Q^T for the warpgroup's value rows: one commit group.
// eg: the chunk's exp(G) per token.
template <typename T, typename V>
__device__ __forceinline__ void value_stage(const V& sm, int stage, int values, int outputs, float scale,
                                            const float* eg, const float (&s)[kStateRegs], float (&vn)[kTokRegs],
                                            float (&o)[kTokRegs]) {
  const int lane = threadIdx.x % kWarpSize;
  const int vr0 = (threadIdx.x / kWarpSize) * kRowsPerWarp;
  uint32_t sa[kSteps128][4];  // the state at the chunk start as bf16/fp16 A fragments (one rounding per chunk)
#pragma unroll
  for (int kb = 0; kb < kSteps128; ++kb) acc_frag<T>(sa[kb], s, kb);
  uint32_t va[kSteps64][4];
  ptx::wgmma_fence();
  if (values) {  // u^T = V^T Tu^T
#pragma unroll
    for (int kb = 0; kb < kSteps64; ++kb) {
      lds_vt<T>(va[kb], sm.v(stage), kb * kMmaK, vr0);
      wgmma_rs<T, kChunk>(vn, va[kb], desc(sm.tu(stage), tok_tile(), 0, kb * kMmaK), kb > 0);
    }
  }
#pragma unroll
  for (int kb = 0; kb < kSteps128; ++kb) {
    wgmma_rs<T, kChunk>(vn, sa[kb], desc(sm.w(stage), tok_tile(), 0, kb * kMmaK), values || kb > 0);
  }
  if (outputs) {
#pragma unroll
    for (int kb = 0; kb < kSteps128; ++kb) {
      wgmma_rs<T, kChunk>(o, sa[kb], desc(sm.q(stage), tok_tile(), 0, kb * kMmaK), kb > 0);
    }
  }
  ptx::wgmma_commit_group();
  ptx::wgmma_wait_group<0>();
  ptx::wgmma_fence_operand(vn);
  ptx::wgmma_fence_operand(o);
  if (!outputs) return;
#pragma unroll
  for (int i = 0; i < kTokRegs; ++i) o[i] *= scale * eg[ptx::wgmma_acc_col(lane, i)];
}

// o^T += v_new^T P^T (outputs) and S^T = exp(G_last) S^T + (v_new^T diag(exp(G_last - G))) K: one commit group.
// eg, dk: the chunk's exp(G) and exp(G_last - G) per token.
template <typename T, typename V>
__device__ __forceinline__ void state_stage(const V& sm, int stage, int outputs, const float* eg, const float* dk,
                                            const float (&vn)[kTokRegs], float (&o)[kTokRegs],
                                            float (&s)[kStateRegs]) {
  const int lane = threadIdx.x % kWarpSize;
  const float decay = eg[kChunk - 1];
#pragma unroll
  for (int i = 0; i < kStateRegs; ++i) s[i] *= decay;
  float scaled[kTokRegs];
#pragma unroll
  for (int i = 0; i < kTokRegs; ++i) scaled[i] = vn[i] * dk[ptx::wgmma_acc_col(lane, i)];
  uint32_t pa[kSteps64][4], ka[kSteps64][4];
#pragma unroll
  for (int kb = 0; kb < kSteps64; ++kb) {
    acc_frag<T>(pa[kb], vn, kb);
    acc_frag<T>(ka[kb], scaled, kb);
  }
  ptx::wgmma_fence();
  if (outputs) {
#pragma unroll
    for (int kb = 0; kb < kSteps64; ++kb) {
      wgmma_rs<T, kChunk>(o, pa[kb], desc(sm.pm(stage), tok_tile(), 0, kb * kMmaK), 1);
    }
  }
#pragma unroll
  for (int kb = 0; kb < kSteps64; ++kb) {
    wgmma_rs<T, kHeadDim>(s, ka[kb], desc(sm.kt(stage), key_tile(), 0, kb * kMmaK), 1);
  }
  ptx::wgmma_commit_group();
  ptx::wgmma_wait_group<0>();
  ptx::wgmma_fence_operand(o);
  ptx::wgmma_fence_operand(s);
}

// o (rounded to T) staged as [token][V] in sm.stg (the chunk's q tile, or a tile of its own), then written row by
// row, through the gated RMSNorm when z is given (as output_stage of gdn_chunk.cu). Barriers inside.
template <typename T, typename V>
__device__ void output_stage(const GdnChunkParams& p, const V& sm, int stage, int h, int64_t c0, int nv,
                             const float (&o)[kTokRegs]) {
  constexpr int kElems = kVecBytes / sizeof(T);
  const int wg = threadIdx.x / kWgThreads;
  const int t = threadIdx.x % kWgThreads;
  if (!V::kOwnStaging) __syncthreads();  // both warpgroups are done with q
  float ss[kTokRegs / 4][2] = {};
#pragma unroll
  for (int i = 0; i < kTokRegs; ++i) {
    const int v = kWgRows * wg + ptx::wgmma_acc_row(t, i);
    const int tok = ptx::wgmma_acc_col(t, i);
    const T rounded = from_float<T>(o[i]);
    const float x = to_float(rounded);
    *at<T>(sm.stg(stage), tok_tile(), tok, v) = rounded;
    ss[i / 4][i % 2] += x * x;
  }
  if (p.z_ptr) store_token_sums(ss, sm.red());
  __syncthreads();
  store_output_rows<T>(p, sm.red(), h, c0, nv, [&](int row, int col, float (&x)[kElems]) {
    load_vec_f32<T, kElems>(at<T>(sm.stg(stage), tok_tile(), row, col), x);
  });
}

// Computes: as gdn_chunk_kernel (gdn_chunk.cu): the chunked gated delta rule of one segment of one (sequence,
//           value head), outputs and final state (pass 1) or the exact chain's segment states (pass 0).
// Grid:     as gdn_chunk_kernel. Block: 2 warpgroups (256 threads); chunk-local stages on all threads; warpgroup
//           g owns value rows [64g, 64g + 64) of S^T, v_new^T and o^T.
// Smem:     Smem<kPrepass>::kBytes (double-buffered swizzled q/k/v tiles, K^T, -w, Tu, Tw, P, A/T, per-token
//           factors; kPrepass: q, v, K^T, -w, Tu, P per stage, loaded with the chunk, and no k, A/T, Tw).
// kPrepass: the normalised q, K^T, Tu, P, -w and the decay factors come from the pre-pass kernel
//           (gdn_chunk_prep.cu, launched before): no chunk-local stage is left here, and one barrier per chunk
//           besides the output stage's.
// Requires: sm_90a (the sm_80 build traps); K = V = 128; q/k/v rows 16-byte aligned (TMA: pointer and token
//           stride); out rows 16-byte aligned.
template <typename T, bool kPrepass>
__global__ void __launch_bounds__(kChunkThreads, 1) gdn_chunk_sm90a_kernel(const __grid_constant__ KernelArgs ka) {
#if Q35_SM90A_ENABLED
  const GdnChunkParams& p = ka.p;
  Item it;
  if (!find_item(p, blockIdx.x, it)) return;
  const int h = blockIdx.y;
  const int hk = h / (p.num_v_heads / p.num_k_heads);
  Run r;
  if (!plan_run(p, it, h, blockIdx.z, r)) return;
  Q35_DYNAMIC_SMEM_1024(unsigned char, smem_raw);
  const Views<kPrepass> sm{smem_raw};
  const int warp = threadIdx.x / kWarpSize;
  const bool leader = threadIdx.x == 0;  // initialises the barriers and issues the TMA loads
  if (leader) {
    ptx::tma_prefetch_map(&ka.k_map);
    ptx::mbarrier_init(sm.bar(0), 1);
    ptx::mbarrier_init(sm.bar(1), 1);
    ptx::fence_mbarrier_init();
  }
  __syncthreads();
  const int wg = uniform(threadIdx.x / kWgThreads);
  const int values = uniform(r.values);

  float s[kStateRegs];  // S^T: the warpgroup's 64 value rows x 128 key columns
  init_state(r, s);
  const float a_log = !kPrepass && p.raw_gates ? load_param<T>(p.a_log_ptr, h, p.a_log_fp32) : 0.0f;
  const float dt_bias = !kPrepass && p.raw_gates ? load_param<T>(p.dt_bias_ptr, h, p.dt_bias_fp32) : 0.0f;

  const int64_t num_chunks = ceil_div(r.seg_end - r.warm_start, kChunk);
  const auto load = [&](int stage, int64_t c) {  // thread 0
    load_chunk_tma<T>(ka, sm, stage, h, hk, c, chunk_slot(it.n, it.seq_start, c), r.outputs && c >= r.seg_start,
                      r.values);
  };
  GateRaw next{};
  if (num_chunks > 0) {
    const int nv = static_cast<int>(r.seg_end - r.warm_start < kChunk ? r.seg_end - r.warm_start : kChunk);
    if (leader) load(0, r.warm_start);
    if (!kPrepass && warp == 0) load_gates<T>(p, h, r.warm_start, nv, next);
  }
  for (int64_t ci = 0; ci < num_chunks; ++ci) {
    // ---- load: this chunk landed (rows past the segment zeroed, fenced for the async proxy); prefetch the next
    // one into the other stage (every generic access of that stage is behind the fence and barrier) ----
    const int stage = static_cast<int>(ci % 2);
    const int64_t c0 = r.warm_start + ci * kChunk;
    const int nv = static_cast<int>(r.seg_end - c0 < kChunk ? r.seg_end - c0 : kChunk);
    const int outputs = uniform(r.outputs && c0 >= r.seg_start);
    const GateRaw cur = next;
    ptx::mbarrier_wait_parity(sm.bar(stage), static_cast<uint32_t>((ci / 2) & 1));
    if (nv < kChunk) {  // (the pre-pass wrote q and K^T from zero-filled rows)
      if (!kPrepass) zero_rows<T>(sm.k(stage), nv);
      if (!kPrepass && outputs) zero_rows<T>(sm.q(stage), nv);
      if (r.values) zero_rows<T>(sm.v(stage), nv);
    }
    ptx::fence_proxy_async_shared();
    __syncthreads();
    if (ci + 1 < num_chunks) {
      const int64_t c1 = c0 + kChunk;
      const int nv1 = static_cast<int>(r.seg_end - c1 < kChunk ? r.seg_end - c1 : kChunk);
      if (leader) load(stage ^ 1, c1);
      if (!kPrepass && warp == 0) load_gates<T>(p, h, c1, nv1, next);
    }

    // ---- chunk-local (without the pre-pass): gates, norms, K^T, A and P, T = (I + A)^-1, w ----
    if constexpr (!kPrepass) {
      if (warp == 0) gate_stage<T>(p, sm, cur, nv, a_log, dt_bias);
      if (p.l2norm) {
        l2norm_rows<T>(sm.k(stage));
        if (outputs) l2norm_rows<T>(sm.q(stage));
      }
      ptx::fence_proxy_async_shared();
      __syncthreads();
      transpose_k<T>(sm, stage);
      ptx::fence_proxy_async_shared();
      kkt_stage<T>(p, sm, stage, wg, outputs);
      ptx::fence_proxy_async_shared();
      __syncthreads();
      inverse_stage<T>(sm, stage);
      w_stage<T>(sm, stage, wg);
      __syncthreads();
    }

    // ---- recurrence: v_new and o from the state at the chunk start, then the state update ----
    const float* eg = kPrepass ? sm.factors(stage) : sm.tok(kTokExpG);
    const float* dk = kPrepass ? sm.factors(stage) + kChunk : sm.tok(kTokDecayToEnd);
    float vn[kTokRegs], o[kTokRegs];
    value_stage<T>(sm, stage, values, outputs, p.scale, eg, s, vn, o);
    state_stage<T>(sm, stage, outputs, eg, dk, vn, o, s);

    // ---- store ----
    if (outputs) output_stage<T>(p, sm, stage, h, c0, nv, o);
  }
  if (r.final_ptr) store_state(r.final_ptr, s);
#else
  (void)ka;
  ptx::sm90a_required();
#endif
}

}  // namespace

bool gdn_chunk_sm90a_available() { return sm90a_available(); }

template <typename T>
cudaError_t launch_gdn_chunk_pass_sm90a(const GdnChunkParams& params, dim3 grid, cudaStream_t stream) {
  if (!sm90a_available()) return cudaErrorInvalidDeviceFunction;
  KernelArgs ka{};
  ka.p = params;
  const GdnChunkParams& p = params;
  cudaError_t err = make_qkv_map<T>(&ka.q_map, p.q_ptr, p.num_k_heads, p.num_tokens, p.q_token_stride);
  if (err == cudaSuccess) err = make_qkv_map<T>(&ka.k_map, p.k_ptr, p.num_k_heads, p.num_tokens, p.k_token_stride);
  if (err == cudaSuccess) err = make_qkv_map<T>(&ka.v_map, p.v_ptr, p.num_v_heads, p.num_tokens, p.v_token_stride);
  if (p.impl != kGdnImplSm90aPrepass) {
    if (err != cudaSuccess) return err;
    return launch(gdn_chunk_sm90a_kernel<T, false>, grid, dim3(kChunkThreads), size_t{Smem<false>::kBytes}, stream,
                  ka);
  }
  const int64_t rows = p.max_chunk_slots * p.num_v_heads * kChunk;
  const int64_t rows_k = p.max_chunk_slots * p.num_k_heads * kChunk;
  if (err == cudaSuccess) err = make_prep_map<T>(&ka.tu_map, p.prep_tu_ptr, rows, kChunk, kChunk);
  if (err == cudaSuccess) err = make_prep_map<T>(&ka.p_map, p.prep_p_ptr, rows, kChunk, kChunk);
  if (err == cudaSuccess) err = make_prep_map<T>(&ka.w_map, p.prep_w_ptr, rows, kHeadDim, kChunk);
  if (err == cudaSuccess) err = make_prep_map<T>(&ka.qn_map, p.prep_q_ptr, rows_k, kHeadDim, kChunk);
  if (err == cudaSuccess) err = make_prep_map<T>(&ka.kt_map, p.prep_kt_ptr, 2 * rows_k, kChunk, kHeadDim);
  if (err == cudaSuccess) err = make_factor_map(&ka.gates_map, p.prep_gates_ptr, rows / kChunk);
  if (err != cudaSuccess) return err;
  return launch(gdn_chunk_sm90a_kernel<T, true>, grid, dim3(kChunkThreads), size_t{Smem<true>::kBytes}, stream, ka);
}

#define Q35_INSTANTIATE(T) \
  template cudaError_t launch_gdn_chunk_pass_sm90a<T>(const GdnChunkParams&, dim3, cudaStream_t);
Q35_FOR_EACH_GDN_CHUNK_TYPES(Q35_INSTANTIATE)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
