// Split-KV decode attention over the paged KV cache (flash-decoding) with the output gate fused, and the
// log-sum-exp merge of the splits. See attention.cuh for the op and README.md for the design.
#include "kernels/attention/attention.cuh"
#include "kernels/attention/attention_tile.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

using attn::Head;
using attn::kMmaM;
using attn::kThreads;
using attn::kTileKeys;
using attn::kWarps;
constexpr int kStages = 2;  // K/V tiles in flight: the next tile loads while the current one is consumed

// 32-bit ceil_div: a 64-bit division is a subroutine call on the GPU (and its ABI frame trips the spill gate).
__device__ __forceinline__ int ceil_div32(int a, int b) { return (a + b - 1) / b; }

// Shared memory of the decode kernel: Q rows, then kStages (K tile, V tile) pairs. After the loop the stage area
// holds the combine buffers: every warp's fp32 O [16, kPadded], its row max/sum, and per-row combine weights.
template <typename T, int D, int kMTiles>
struct DecodeLayout {
  using H = Head<D>;
  static constexpr int kKeySplit = kWarps / kMTiles;  // warps sharing one 16-row m-tile, each on its own keys
  static constexpr int kRows = kMTiles * kMmaM;
  static constexpr int kTileElems = kTileKeys * H::kRowElems;
  static constexpr int kStageElems = 2 * kTileElems;
  static constexpr int kOFloats = kWarps * kMmaM * H::kPadded;
  static constexpr int kStatFloats = kWarps * kMmaM;
  static constexpr int kCombineFloats = kOFloats + 2 * kStatFloats + kRows * (kKeySplit + 1);
  static_assert(kCombineFloats * sizeof(float) <= kStages * kStageElems * sizeof(T), "combine buffers fit");
  static constexpr size_t kBytes = static_cast<size_t>(kRows * H::kRowElems + kStages * kStageElems) * sizeof(T);
};

// Merges the kKeySplit warps of each m-tile (their own max, sum and O over disjoint keys), then writes the rows of
// this CTA: the gated output when there is one split, else the split's normalised O and its log2-sum-exp2.
template <typename T, int D, int kMTiles>
__device__ void combine_and_store(attn::WarpState<D>& st, float* red, const AttentionDecodeParams& p, int n, int kvh,
                                  int m0, int split) {
  using Lay = DecodeLayout<T, D, kMTiles>;
  constexpr int kKeySplit = Lay::kKeySplit;
  constexpr int kPadded = Head<D>::kPadded;
  constexpr int kVec = 4;
  float* o_red = red;                             // [warps, 16, kPadded] smem
  float* m_red = o_red + Lay::kOFloats;           // [warps, 16] smem
  float* l_red = m_red + Lay::kStatFloats;        // [warps, 16] smem
  float* w_red = l_red + Lay::kStatFloats;        // [rows, kKeySplit] smem: normalised weights
  float* lse_red = w_red + Lay::kRows * kKeySplit;  // [rows] smem
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  attn::reduce_row_sums(st);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = warp * kMmaM + lane / 4 + 8 * r;
#pragma unroll
    for (int nt = 0; nt < Head<D>::kNTiles; ++nt) {
      o_red[row * kPadded + nt * attn::kMmaN + 2 * (lane % 4)] = st.o[nt][2 * r];
      o_red[row * kPadded + nt * attn::kMmaN + 2 * (lane % 4) + 1] = st.o[nt][2 * r + 1];
    }
    if (lane % 4 == 0) {
      m_red[row] = st.m[r];
      l_red[row] = st.l[r];
    }
  }
  __syncthreads();
  for (int row = threadIdx.x; row < Lay::kRows; row += kThreads) {
    const int first = (row / kMmaM) * kKeySplit * kMmaM + row % kMmaM;  // row of warp (mt, ks = 0)
    float m_star = attn::kNegInf;
    for (int ks = 0; ks < kKeySplit; ++ks) m_star = fmaxf(m_star, m_red[first + ks * kMmaM]);
    const float base = m_star == attn::kNegInf ? 0.0f : m_star * p.scale_log2;
    float l_total = 0.0f;
    for (int ks = 0; ks < kKeySplit; ++ks) {
      const float w = exp2f(fmaf(m_red[first + ks * kMmaM], p.scale_log2, -base));
      w_red[row * kKeySplit + ks] = w;
      l_total += w * l_red[first + ks * kMmaM];
    }
    const float inv = l_total > 0.0f ? 1.0f / l_total : 0.0f;
    for (int ks = 0; ks < kKeySplit; ++ks) w_red[row * kKeySplit + ks] *= inv;
    lse_red[row] = l_total > 0.0f ? base + log2f(l_total) : attn::kNegInf;
  }
  __syncthreads();
  const int group = p.num_q_heads / p.num_kv_heads;
  const int64_t tokens = static_cast<int64_t>(p.num_seqs) * p.tokens_per_seq;
  const T* gate = static_cast<const T*>(p.gate_ptr);
  for (int c = threadIdx.x; c < Lay::kRows * (D / kVec); c += kThreads) {
    const int row = c / (D / kVec);
    const int col = (c % (D / kVec)) * kVec;
    const int pi = m0 + row;
    if (pi >= p.tokens_per_seq * group) continue;
    const int first = (row / kMmaM) * kKeySplit * kMmaM + row % kMmaM;
    float o[kVec] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int ks = 0; ks < kKeySplit; ++ks) {
      const float w = w_red[row * kKeySplit + ks];
      const float* src = o_red + (first + ks * kMmaM) * kPadded + col;
#pragma unroll
      for (int i = 0; i < kVec; ++i) o[i] = fmaf(w, src[i], o[i]);
    }
    const int64_t token = static_cast<int64_t>(n) * p.tokens_per_seq + pi / group;
    const int64_t head = static_cast<int64_t>(kvh) * group + pi % group;
    if (p.num_splits == 1) {
      attn::store_gated<T, kVec>(static_cast<T*>(p.out_ptr) + (token * p.num_q_heads + head) * D + col,
                                 gate ? gate + token * p.gate_token_stride + head * D + col : nullptr, o);
    } else {
      const int64_t prow = (split * tokens + token) * p.num_q_heads + head;
      store_vec_f32<float, kVec>(p.partial_o_ptr + prow * D + col, o);
      if (col == 0) p.partial_lse_ptr[prow] = lse_red[row];
    }
  }
}

// Computes: out[n L + i, h] = softmax(scale * q K_n^T + causal mask among the L new tokens) V_n (times
//           sigmoid(gate)), K_n/V_n the seq_lens[n] cache rows of sequence n; or, with S splits, split s's
//           normalised O and log2-sum-exp2 over its key tiles (decode_merge_kernel combines them).
// Args:     q [N L, Hq, D] T; caches [blocks, bs, Hkv, D] T; seq_lens [N], block_tables [N, max_blocks] int32;
//           gate [N L, Hq*D] T; out [N L, Hq, D] T; partial_o [S, N L, Hq, D], partial_lse [S, N L, Hq] f32.
// Grid:     (N * Hkv, S, ceil(L G / 64)): (sequence, kv head), split (a contiguous range of 64-key tiles), and the
//           64-row block of packed (token, head-in-group) query rows.
// Block:    4 warps = kMTiles m-tiles of 16 packed rows x (4 / kMTiles) key slices of each 64-key tile.
// Smem:     DecodeLayout::kBytes: Q [16 kMTiles, row] + 2 stages of K and V tiles [64, row] (cp.async pipeline).
// Requires: 16-byte aligned q/caches/gate/out, token strides multiple of 8 elements; block_size a power of two.
template <typename T, int D, int kMTiles, attn::KvLayout kLayout>
__global__ void __launch_bounds__(kThreads) decode_attention_kernel(AttentionDecodeParams p) {
  using H = Head<D>;
  using Lay = DecodeLayout<T, D, kMTiles>;
  constexpr int kWarpKeys = kTileKeys / Lay::kKeySplit;
  Q35_DYNAMIC_SMEM(T, smem);
  T* q_s = smem;                                 // [kRows, row] smem
  T* stages = q_s + Lay::kRows * H::kRowElems;  // [kStages][K, V][64, row] smem
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int mt = warp / Lay::kKeySplit;
  const int ks = warp % Lay::kKeySplit;
  const int n = blockIdx.x / p.num_kv_heads;
  const int kvh = blockIdx.x % p.num_kv_heads;
  const int split = blockIdx.y;
  const int m0 = blockIdx.z * Lay::kRows;
  const int group = p.num_q_heads / p.num_kv_heads;
  const int L = p.tokens_per_seq;
  const int kv_len = p.seq_lens_ptr[n];
  const int num_tiles = ceil_div32(kv_len, kTileKeys);
  const int per_split = ceil_div32(num_tiles, p.num_splits);
  const int t0 = split * per_split;
  const int t1 = min(num_tiles, t0 + per_split);
  if (t0 >= t1) return;  // the merge reads only the splits that own tiles
  const attn::QRows qrows{static_cast<int64_t>(n) * L * p.q_token_stride + static_cast<int64_t>(kvh) * group * D,
                          p.q_token_stride, group, L * group, D};
  const attn::KvRows<kLayout> kv{p.block_tables_ptr + n * p.block_table_stride, 0,
                        static_cast<int64_t>(p.num_kv_heads) * D, static_cast<int64_t>(kvh) * D, p.block_shift,
                        kv_len};
  auto limit_of = [&](int pi) { return min(kv_len - 1, kv_len - L + pi / group); };
  const int row_g = m0 + mt * kMmaM + lane / 4;
  const int limit_g = limit_of(row_g);
  const int limit_g8 = limit_of(row_g + 8);
  const int warp_limit = limit_of(m0 + mt * kMmaM);
  const T* k = static_cast<const T*>(p.k_cache_ptr);
  const T* v = static_cast<const T*>(p.v_cache_ptr);

  // ---- load Q and the first K/V tile ----
  attn::load_q_tile_async<D, Lay::kRows>(q_s, static_cast<const T*>(p.q_ptr), qrows, m0);
  attn::load_kv_tile_async<D>(stages, k, kv, t0 * kTileKeys);
  attn::load_kv_tile_async<D>(stages + Lay::kTileElems, v, kv, t0 * kTileKeys);
  ptx::cp_async_commit_group();

  // ---- compute: the split's tiles, the next one loading while this one is consumed ----
  attn::WarpState<D> st;
  st.init();
  for (int tile = t0; tile < t1; ++tile) {
    const int stage = (tile - t0) % kStages;
    if (tile + 1 < t1) {
      T* next = stages + ((tile + 1 - t0) % kStages) * Lay::kStageElems;
      attn::load_kv_tile_async<D>(next, k, kv, (tile + 1) * kTileKeys);
      attn::load_kv_tile_async<D>(next + Lay::kTileElems, v, kv, (tile + 1) * kTileKeys);
    }
    ptx::cp_async_commit_group();
    ptx::cp_async_wait_group<1>();
    __syncthreads();  // this tile landed for everyone
    const T* k_s = stages + stage * Lay::kStageElems;
    const int key0 = ks * kWarpKeys;
    const int key_base = tile * kTileKeys + key0;
    float s[kWarpKeys / attn::kMmaN][4];
    attn::qk_scores<T, D, kWarpKeys>(s, q_s, mt * kMmaM, k_s, key0);
    if (key_base + kWarpKeys - 1 > warp_limit) attn::mask_scores<kWarpKeys>(s, key_base, limit_g, limit_g8);
    attn::online_softmax<D, kWarpKeys>(st, s, p.scale_log2);
    uint32_t pa[kWarpKeys / attn::kMmaK][4];
    attn::pack_p<T, kWarpKeys>(pa, s);
    attn::accumulate_pv<T, D, kWarpKeys>(st, pa, k_s + Lay::kTileElems, key0);
    __syncthreads();  // the next iteration refills this stage
  }
  ptx::cp_async_wait_group<0>();

  // ---- combine the key slices, store ----
  combine_and_store<T, D, kMTiles>(st, reinterpret_cast<float*>(stages), p, n, kvh, m0, split);
}

// Computes: out[t, h] = (sum_s 2^(lse_s - max) o_s) / (sum_s 2^(lse_s - max)) over the splits that own tiles of
//           the sequence, rounded to T, times sigmoid(gate[t, h]) when given.
// Args:     partial_o [S, N L, Hq, D], partial_lse [S, N L, Hq] f32; gate, out as decode_attention_kernel.
// Grid:     ceil(N L Hq / 4): one warp per (token, head) row.  Block: 4 warps; lanes cover D in float4 steps.
// Smem:     none.  Requires: D % 128 == 0 or any D % 4 == 0 (lanes loop).
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) decode_merge_kernel(AttentionDecodeParams p) {
  constexpr int kVec = 4;
  const int rows = p.num_seqs * p.tokens_per_seq * p.num_q_heads;  // < 2^31 (host check)
  const int row = blockIdx.x * kWarps + threadIdx.x / kWarpSize;
  if (row >= rows) return;
  const int lane = threadIdx.x % kWarpSize;
  const int token = row / p.num_q_heads;
  const int head = row % p.num_q_heads;
  const int kv_len = p.seq_lens_ptr[token / p.tokens_per_seq];
  const int num_tiles = ceil_div32(kv_len, kTileKeys);
  const int per_split = max(1, ceil_div32(num_tiles, p.num_splits));
  const int used = ceil_div32(num_tiles, per_split);
  float lse_max = attn::kNegInf;
  const float* lse = p.partial_lse_ptr + row;  // [S] with stride rows
  for (int s = 0; s < used; ++s) lse_max = fmaxf(lse_max, lse[static_cast<int64_t>(s) * rows]);
  const float base = lse_max == attn::kNegInf ? 0.0f : lse_max;
  float w_sum = 0.0f;
  for (int s = 0; s < used; ++s) w_sum += exp2f(lse[static_cast<int64_t>(s) * rows] - base);
  const float inv = __frcp_rn(w_sum);
  const T* gate = static_cast<const T*>(p.gate_ptr);
  for (int col = lane * kVec; col < D; col += kWarpSize * kVec) {
    float o[kVec] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int s = 0; s < used; ++s) {
      const float w = exp2f(lse[static_cast<int64_t>(s) * rows] - base);
      float part[kVec];
      load_vec_f32<float, kVec>(p.partial_o_ptr + (static_cast<int64_t>(s) * rows + row) * D + col, part);
#pragma unroll
      for (int i = 0; i < kVec; ++i) o[i] = fmaf(w, part[i], o[i]);
    }
#pragma unroll
    for (int i = 0; i < kVec; ++i) o[i] *= inv;
    attn::store_gated<T, kVec>(static_cast<T*>(p.out_ptr) + static_cast<int64_t>(row) * D + col,
                               gate ? gate + token * p.gate_token_stride + head * D + col : nullptr, o);
  }
}

template <typename T, int D, int kMTiles>
cudaError_t launch_decode_split(const AttentionDecodeParams& p, int row_blocks, cudaStream_t stream) {
  using attn::KvLayout;
  const dim3 grid(static_cast<unsigned>(p.num_seqs * p.num_kv_heads), static_cast<unsigned>(p.num_splits),
                  static_cast<unsigned>(row_blocks));
  constexpr size_t kSmem = DecodeLayout<T, D, kMTiles>::kBytes;
  if ((1 << p.block_shift) >= kTileKeys) {
    return launch(decode_attention_kernel<T, D, kMTiles, KvLayout::kPagedTile>, grid, dim3(kThreads), kSmem, stream,
                  p);
  }
  return launch(decode_attention_kernel<T, D, kMTiles, KvLayout::kPagedRows>, grid, dim3(kThreads), kSmem, stream, p);
}

}  // namespace

template <typename T, int D>
cudaError_t launch_decode_attention(const AttentionDecodeParams& p, cudaStream_t stream) {
  if (p.num_seqs == 0 || p.tokens_per_seq == 0) return cudaSuccess;
  const int64_t rows = static_cast<int64_t>(p.tokens_per_seq) * (p.num_q_heads / p.num_kv_heads);
  cudaError_t err;
  if (rows <= kMmaM) {
    err = launch_decode_split<T, D, 1>(p, 1, stream);
  } else if (rows <= 2 * kMmaM) {
    err = launch_decode_split<T, D, 2>(p, 1, stream);
  } else {
    err = launch_decode_split<T, D, 4>(p, static_cast<int>(ceil_div(rows, kAttentionTileRows)), stream);
  }
  if (err != cudaSuccess || p.num_splits == 1) return err;
  const int64_t merge_rows = static_cast<int64_t>(p.num_seqs) * p.tokens_per_seq * p.num_q_heads;
  return launch(decode_merge_kernel<T, D>, dim3(static_cast<unsigned>(ceil_div(merge_rows, kWarps))), dim3(kThreads),
                0, stream, p);
}

#define Q35_INSTANTIATE(T, D) \
  template cudaError_t launch_decode_attention<T, D>(const AttentionDecodeParams&, cudaStream_t);
Q35_FOR_EACH_DECODE_ATTENTION_CONFIG(Q35_INSTANTIATE)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
