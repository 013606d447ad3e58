// sm_90a paged prefill attention (head_dim 256): warp-specialised TMA producer, V transposer and two wgmma
// consumer warpgroups; the same op and results contract as prefill_attention_kernel (attention.cuh). Building
// blocks: attention_sm90a.cuh. Design: README.md, "sm_90a path".
#include "kernels/attention/attention_sm90a.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

using namespace attn90;

#if Q35_SM90A_ENABLED
// The warpgroup's 64 query rows of the tile into the Q tile (cp.async, 16-byte chunks, rows past the sequence
// zero-filled), made visible to wgmma (proxy fence) and to the whole warpgroup (named barrier 1 + wg).
template <typename T>
__device__ __forceinline__ void load_q(const AttentionPrefillParams& p, const Work& w, uint8_t* smem, int wg) {
  const T* q = static_cast<const T*>(p.q_ptr);
  const attn::QRows rows{w.q_start * p.q_token_stride + static_cast<int64_t>(w.kvh) * w.group * kD, p.q_token_stride,
                         w.group, w.total, kD};
  constexpr int kChunks = kD / 8;
  const int t = static_cast<int>(threadIdx.x) % kWarpgroupThreads;
#pragma unroll 4
  for (int c = t; c < kWgRows * kChunks; c += kWarpgroupThreads) {
    const int r = wg * kWgRows + c / kChunks;
    const int ch = c % kChunks;
    const int pi = w.m0 + r;
    const bool ok = pi < w.total;
    ptx::cp_async_16_zfill(smem + q_tile().offset(r, 8 * ch), ok ? q + rows.offset(pi) + 8 * ch : q,
                           ok ? kVecBytes : 0);
  }
  ptx::cp_async_wait_all();
  ptx::fence_proxy_async_shared();
  ptx::named_barrier_sync(1 + wg, kWarpgroupThreads);
}

// O / l rounded to T into the warp's own 16 rows of the Q tile (free: every wgmma of the warpgroup retired, and
// the other warpgroup reads only its own rows), then 16-byte loads and coalesced 16-byte stores to out, times
// sigmoid(gate) when given: the sm_80 kernel's store_warp_rows, with the same roundings.
template <typename T>
__device__ __forceinline__ void store_rows(const AttentionPrefillParams& p, const Work& w, int wg, float (&o)[kOAcc],
                                           float (&l)[2], uint8_t* smem) {
  const int t = static_cast<int>(threadIdx.x) % kWarpgroupThreads;
  const int lane = t % kWarpSize;
  const int warp_row0 = wg * kWgRows + 16 * (t / kWarpSize);  // the warp's first row in the Q tile
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  const float inv[2] = {1.0f / l[0], 1.0f / l[1]};
#pragma unroll
  for (int i = 0; i < kOAcc; i += 2) {
    const int h = (i >> 1) & 1;
    *reinterpret_cast<uint32_t*>(smem + q_tile().offset(wg * kWgRows + ptx::wgmma_acc_row(t, i),
                                                        ptx::wgmma_acc_col(t, i))) =
        attn::pack2<T>(o[i] * inv[h], o[i + 1] * inv[h]);
  }
  __syncwarp();
  const T* gate = static_cast<const T*>(p.gate_ptr);
  T* out = static_cast<T*>(p.out_ptr);
  constexpr int kChunks = kD / attn::kChunkElems;
  for (int c = lane; c < 16 * kChunks; c += kWarpSize) {
    const int r = c / kChunks;
    const int ch = c % kChunks;
    const int pi = w.m0 + warp_row0 + r;
    if (pi >= w.total) continue;
    const int64_t token = w.q_start + pi / w.group;
    const int64_t head = static_cast<int64_t>(w.kvh) * w.group + pi % w.group;
    float v[attn::kChunkElems];
    load_vec_f32<T, attn::kChunkElems>(reinterpret_cast<const T*>(smem + q_tile().offset(warp_row0 + r, 8 * ch)), v);
    const int64_t col = head * kD + ch * attn::kChunkElems;
    attn::store_gated<T, attn::kChunkElems>(out + token * p.num_q_heads * kD + col,
                                            gate ? gate + token * p.gate_token_stride + col : nullptr, v);
  }
}

// Ping-pong order of the two consumers (kPingPong): warpgroup wg issues the GEMMs of a key tile after waiting on
// its barrier kTurnBarrier + wg, which the other warpgroup arrives at once it has issued its own (256 threads:
// 128 waiting + 128 arriving). Warpgroup 1 arrives first, before its loop, so warpgroup 0 starts; every arrival
// is matched by a wait (warpgroup 1 skips its arrival after the last tile), so no barrier is left half full.
constexpr uint32_t kTurnBarrier = 3;  // 3, 4 (1, 2: the Q load of each warpgroup)

__device__ __forceinline__ void wait_turn(int wg) {
  ptx::named_barrier_sync(kTurnBarrier + wg, kConsumers * kWarpgroupThreads);
}
__device__ __forceinline__ void pass_turn(int wg) {
  ptx::named_barrier_arrive(kTurnBarrier + (1 - wg), kConsumers * kWarpgroupThreads);
}

// A consumer warpgroup: rows 64 wg.. of the tile. FA3's intra-warpgroup overlap: S_j = Q K_j^T is issued, then
// O += P_{j-1} V_{j-1}; the softmax of S_j runs while that P V is in flight, and only the O rescale waits for it.
// kPingPong: the GEMM issues of the two warpgroups alternate (above).
template <typename T, bool kPingPong, bool kVMn>
__device__ __forceinline__ void consume(const KernelParams& kp, const Work& w, uint8_t* smem, Barriers& b, int wg) {
  const AttentionPrefillParams& p = kp.p;
  const int t = static_cast<int>(threadIdx.x) % kWarpgroupThreads;
  const bool lane0 = t % kWarpSize == 0;
  const int row_g = w.m0 + wg * kWgRows + ptx::wgmma_acc_row(t, 0);
  const int limit_g = limit_of(w, row_g);
  const int limit_g8 = limit_of(w, row_g + 8);
  const int warp_limit = limit_of(w, w.m0 + wg * kWgRows + 16 * (t / kWarpSize));  // smallest of the warp
  const int num_tiles = __shfl_sync(0xffffffffu, w.num_tiles, 0);  // warp-uniform for ptxas
  load_q<T>(p, w, smem, wg);
  const uint32_t q_base = ptx::smem_u32(smem);
  const uint32_t k_base = q_base + kKOffset;
  const uint32_t vt_base = q_base + kVtOffset;

  float o[kOAcc];
#pragma unroll
  for (int i = 0; i < kOAcc; ++i) o[i] = 0.0f;
  float s[kSAcc];
  uint32_t pa[kPSteps][4];
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.0f, 0.0f}, alpha[2];
  // tile 0: S_0 alone (O is still zero: no rescale)
  ptx::mbarrier_wait_parity(&b.k_full[0], 0);
  ptx::wgmma_fence();
  issue_qk<T>(s, q_base, k_base, wg);
  ptx::wgmma_wait_group<0>();
  ptx::wgmma_fence_operand(s);
  if (lane0) ptx::mbarrier_arrive(&b.k_empty[0]);
  if (kTileKeys - 1 > warp_limit) mask_scores(s, 0, limit_g, limit_g8);
  softmax_step(s, m, l, alpha, p.scale_log2);
  pack_p<T>(pa, s);
  if (kPingPong && wg == 1 && num_tiles > 1) pass_turn(wg);
  for (int j = 1; j < num_tiles; ++j) {
    const int st = j % kStages;
    const int prev = (j - 1) % kStages;
    ptx::mbarrier_wait_parity(&b.k_full[st], (j / kStages) & 1);
    if (kPingPong) wait_turn(wg);
    ptx::wgmma_fence();
    issue_qk<T>(s, q_base, k_base + st * kKvBytes, wg);
    ptx::mbarrier_wait_parity(&b.vt_full[prev], ((j - 1) / kStages) & 1);
    issue_pv<T, kVMn>(o, pa, vt_base + prev * kVtBytes);
    if (kPingPong && (wg == 0 || j + 1 < num_tiles)) pass_turn(wg);
    ptx::wgmma_wait_group<1>();  // S_j retired; P_{j-1} V_{j-1} may still run
    ptx::wgmma_fence_operand(s);
    if (lane0) ptx::mbarrier_arrive(&b.k_empty[st]);
    const int key0 = j * kTileKeys;
    if (key0 + kTileKeys - 1 > warp_limit) mask_scores(s, key0, limit_g, limit_g8);
    softmax_step(s, m, l, alpha, p.scale_log2);
    ptx::wgmma_wait_group<0>();
    ptx::wgmma_fence_operand(o);
    if (lane0) ptx::mbarrier_arrive(&b.vt_empty[prev]);
    rescale_o(o, alpha);
    pack_p<T>(pa, s);
  }
  const int last = (num_tiles - 1) % kStages;
  ptx::mbarrier_wait_parity(&b.vt_full[last], ((num_tiles - 1) / kStages) & 1);
  ptx::wgmma_fence();
  issue_pv<T, kVMn>(o, pa, vt_base + last * kVtBytes);
  ptx::wgmma_wait_group<0>();
  ptx::wgmma_fence_operand(o);
  if (lane0) ptx::mbarrier_arrive(&b.vt_empty[last]);
  store_rows<T>(p, w, wg, o, l, smem);
}

// This CTA's tile (flat tile gridDim.x - 1 - blockIdx.x: the longest causal rows start first), from warp 0's scan.
__device__ __forceinline__ Work make_work(const AttentionPrefillParams& p, const Barriers& b) {
  Work w;
  w.n = b.sched[0];
  w.kvh = static_cast<int>(blockIdx.y);
  w.group = p.num_q_heads / p.num_kv_heads;
  w.m0 = b.sched[1] * kBlockM;
  w.q_start = p.cu_seqlens_q_ptr[w.n];
  const int L = p.cu_seqlens_q_ptr[w.n + 1] - w.q_start;
  w.total = L * w.group;
  w.kv_len = p.seq_lens_ptr[w.n];
  w.ctx = w.kv_len - L;
  w.num_tiles = static_cast<int>(ceil_div(limit_of(w, min(w.total, w.m0 + kBlockM) - 1) + 1, kTileKeys));
  return w;
}
#endif

// Computes: the op of prefill_attention_kernel for the paged cache (causal, GQA, gated), head_dim 256.
// Args:     kp.p as for prefill_attention_kernel (block_size >= 64, a power of two); kp.k_map / kp.v_map: the
//           caches as [slots][Hkv][256] with boxes {64, 1, 64}.
// Grid:     (sum over sequences of ceil(L_n G / 128) bound, Hkv), last tile first.
// Block:    384 threads: warpgroup 0 = warp 0 (TMA of K and V, lane 0) + warps 1-3 (V transpose); warpgroups 1-2
//           consume 64 packed query rows each (wgmma S = Q K^T m64n64k16 SS, O += P V m64n256k16 RS).
// Smem:     kSmemBytes: Q 64 KB, 2 x K 32 KB, 2 x V^T 32 KB, V 32 KB, barriers.
// kPingPong: the consumers' GEMM issues alternate (FA3's ping-pong; named barriers 3 and 4).
// kVMn: P V reads V [key][d] MN-major straight from its TMA stage (imm-trans-b; no transpose, warps 1-3 only zero
//       the keys past the sequence). LOW until the MN-major wgmma twins pass on a GPU.
// Requires: sm_90a.
template <typename T, bool kPingPong, bool kVMn>
__global__ void __launch_bounds__(kThreads, 1) prefill_attention_sm90a_kernel(const __grid_constant__ KernelParams kp) {
#if Q35_SM90A_ENABLED
  Q35_DYNAMIC_SMEM_1024(uint8_t, smem);
  Barriers& b = *reinterpret_cast<Barriers*>(smem + kBarrierOffset);
  const AttentionPrefillParams& p = kp.p;
  if (threadIdx.x < kWarpSize) {
    const attn::TileRef ref = attn::find_tile<kBlockM>(p.cu_seqlens_q_ptr, p.num_seqs, p.num_q_heads / p.num_kv_heads,
                                                       static_cast<int64_t>(gridDim.x) - 1 - blockIdx.x);
    if (threadIdx.x == 0) {
      b.sched[0] = ref.seq;
      b.sched[1] = ref.tile;
      for (int s = 0; s < kStages; ++s) {
        ptx::mbarrier_init(&b.k_full[s], 1);
        ptx::mbarrier_init(&b.k_empty[s], kConsumers * kWarpgroupThreads / kWarpSize);
        ptx::mbarrier_init(&b.vt_full[s], kTransposeThreads);
        ptx::mbarrier_init(&b.vt_empty[s], kConsumers * kWarpgroupThreads / kWarpSize);
      }
      ptx::mbarrier_init(&b.raw_full, 1);
      ptx::mbarrier_init(&b.raw_empty, kTransposeThreads);
      for (int s = 0; s < kStages; ++s) ptx::mbarrier_init(&b.v_land[s], 1);
      ptx::fence_mbarrier_init();
    }
  }
  __syncthreads();
  if (b.sched[0] < 0) return;
  const Work w = make_work(p, b);
  const int warpgroup = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / kWarpgroupThreads, 0);  // uniform
  if (warpgroup == 0) {
    ptx::setmaxnreg_dec<kProducerRegs>();
    if (threadIdx.x == 0) {
      produce_kv<kVMn>(kp, w, smem, b);
    } else if (threadIdx.x >= kWarpSize) {
      if constexpr (kVMn) {
        fix_v(w, smem, b);
      } else {
        transpose_v(w, smem, b);
      }
    }
    return;
  }
  ptx::setmaxnreg_inc<kConsumerRegs>();
  consume<T, kPingPong, kVMn>(kp, w, smem, b, warpgroup - 1);
#else
  ptx::sm90a_required();
#endif
}

}  // namespace

bool attention_sm90a_available() { return sm90a_available(); }

template <typename T>
cudaError_t launch_prefill_attention_sm90a(const AttentionPrefillParams& p, int variant, cudaStream_t stream) {
  if (!attention_sm90a_supports(p)) return cudaErrorInvalidValue;
  if (!sm90a_available()) return cudaErrorInvalidDeviceFunction;
  if (p.num_q_tokens == 0 || p.num_seqs == 0) return cudaSuccess;
  KernelParams kp{};
  kp.p = p;
  const uint64_t dims[3] = {kD, static_cast<uint64_t>(p.num_kv_heads), static_cast<uint64_t>(p.num_cache_slots)};
  const uint64_t strides[2] = {kD * sizeof(T), static_cast<uint64_t>(p.kv_token_stride) * sizeof(T)};
  const uint32_t box[3] = {64, 1, kTileKeys};
  cudaError_t err = make_tensor_map(&kp.k_map, p.k_ptr, sizeof(T), 3, dims, strides, box, kv_tile().swizzle);
  if (err == cudaSuccess) {
    err = make_tensor_map(&kp.v_map, p.v_ptr, sizeof(T), 3, dims, strides, box, kv_tile().swizzle);
  }
  if (err != cudaSuccess) return err;
  const int64_t group = p.num_q_heads / p.num_kv_heads;
  const int64_t tiles = ceil_div(p.num_q_tokens * group, kBlockM) + p.num_seqs;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.num_kv_heads));
  const auto go = [&](auto kernel) { return launch(kernel, grid, dim3(kThreads), kSmemBytes, stream, kp); };
  switch (variant) {
    case 0:
      return go(prefill_attention_sm90a_kernel<T, false, false>);
    case kAttnSm90aPingPong:
      return go(prefill_attention_sm90a_kernel<T, true, false>);
    case kAttnSm90aVMnMajor:
      return go(prefill_attention_sm90a_kernel<T, false, true>);
    case kAttnSm90aPingPong | kAttnSm90aVMnMajor:
      return go(prefill_attention_sm90a_kernel<T, true, true>);
    default:
      return cudaErrorInvalidValue;
  }
}

template cudaError_t launch_prefill_attention_sm90a<__half>(const AttentionPrefillParams&, int, cudaStream_t);
template cudaError_t launch_prefill_attention_sm90a<__nv_bfloat16>(const AttentionPrefillParams&, int, cudaStream_t);

}  // namespace q35::Q35_TARGET
