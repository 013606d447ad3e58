// Varlen prefill attention (paged KV cache, causal, gated) and non-paged varlen attention (vision tower), one
// FlashAttention-2 kernel on mma.sync. See attention.cuh for the ops and README.md for the design.
#include "kernels/attention/attention.cuh"
#include "kernels/attention/attention_tile.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

using attn::Head;
using attn::kThreads;
using attn::kTileKeys;
constexpr int kBlockM = kAttentionTileRows;  // packed query rows per CTA, 16 per warp
constexpr int kWarpRows = attn::kMmaM;
static_assert(kBlockM == attn::kWarps * kWarpRows, "each warp owns 16 packed query rows");

// The warp's 16 output rows: O / l rounded to T into its own (no longer needed) Q rows of shared memory, then
// 16-byte stores to out (times sigmoid(gate) when given).
template <typename T, int D>
__device__ void store_warp_rows(attn::WarpState<D>& st, T* q_s, const AttentionPrefillParams& p, int m0, int q_start,
                                int kvh, int group, int total) {
  using H = Head<D>;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  attn::reduce_row_sums(st);
  const float inv[2] = {1.0f / st.l[0], 1.0f / st.l[1]};
#pragma unroll
  for (int nt = 0; nt < H::kNTiles; ++nt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = kWarpRows * warp + lane / 4 + 8 * r;
      *reinterpret_cast<uint32_t*>(q_s + H::offset(row, nt) + 2 * (lane % 4)) =
          attn::pack2<T>(st.o[nt][2 * r] * inv[r], st.o[nt][2 * r + 1] * inv[r]);
    }
  }
  __syncwarp();
  const T* gate = static_cast<const T*>(p.gate_ptr);
  T* out = static_cast<T*>(p.out_ptr);
  for (int c = lane; c < kWarpRows * H::kDataChunks; c += kWarpSize) {
    const int r = c / H::kDataChunks;
    const int ch = c % H::kDataChunks;
    const int pi = m0 + kWarpRows * warp + r;
    if (pi >= total) continue;
    const int64_t token = q_start + pi / group;
    const int64_t head = static_cast<int64_t>(kvh) * group + pi % group;
    float o[attn::kChunkElems];
    load_vec_f32<T, attn::kChunkElems>(q_s + H::offset(kWarpRows * warp + r, ch), o);
    const int64_t col = head * D + ch * attn::kChunkElems;
    attn::store_gated<T, attn::kChunkElems>(out + token * p.num_q_heads * D + col,
                                            gate ? gate + token * p.gate_token_stride + col : nullptr, o);
  }
}

// Computes: out[t, h] = softmax(scale * q[t, h] K^T + mask) V for the queries of each sequence against its keys
//           (paged: the cache rows of positions < seq_len, causal with query i at position seq_len - L + i;
//           varlen: rows cu[n].. of k/v, causal optional), times sigmoid(gate[t, h]) when given.
// Args:     q [T, Hq, D] T; k/v paged [blocks, bs, Hkv, D] or [T, Hkv, D] T; cu_seqlens [N + 1], seq_lens [N],
//           block_tables [N, max_blocks] int32; gate [T, Hq*D] T; out [T, Hq, D] T contiguous.
// Grid:     (num_tiles_bound, Hkv): x walks the 64-row tiles of packed (token, head-in-group) query rows of all
//           sequences, last tile first (the longest causal rows start first); y = kv head.
// Block:    4 warps; warp w owns packed rows 16w..16w+15 of the tile and all 64 keys of each K/V tile.
// Smem:     (64 + 2 * 64) * row * sizeof(T) + 8: Q tile, one K and one V tile (FA2 schedule: V_j loads during
//           S_j = Q K_j^T, K_{j+1} during O += P V_j), row = D rounded up to 16 (+8 when not swizzled).
// Requires: 16-byte aligned q/k/v/gate/out with token strides multiple of 8 elements; block_size a power of two.
template <typename T, int D, attn::KvLayout kLayout>
__global__ void __launch_bounds__(kThreads) prefill_attention_kernel(AttentionPrefillParams p) {
  using H = Head<D>;
  Q35_DYNAMIC_SMEM(T, smem);
  T* q_s = smem;                                                        // [64, row] smem
  T* k_s = q_s + kBlockM * H::kRowElems;                                // [64, row] smem
  T* v_s = k_s + kTileKeys * H::kRowElems;                              // [64, row] smem
  int* sched = reinterpret_cast<int*>(v_s + kTileKeys * H::kRowElems);  // [2] smem
  const int group = p.num_q_heads / p.num_kv_heads;
  const int kvh = blockIdx.y;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;

  // ---- schedule ----
  if (warp == 0) {
    const attn::TileRef ref = attn::find_tile<kBlockM>(p.cu_seqlens_q_ptr, p.num_seqs, group,
                                                       static_cast<int64_t>(gridDim.x) - 1 - blockIdx.x);
    if (lane == 0) {
      sched[0] = ref.seq;
      sched[1] = ref.tile;
    }
  }
  __syncthreads();
  const int n = sched[0];
  if (n < 0) return;
  const int m0 = sched[1] * kBlockM;
  const int q_start = p.cu_seqlens_q_ptr[n];
  const int L = p.cu_seqlens_q_ptr[n + 1] - q_start;
  const int kv_len = p.seq_lens_ptr ? p.seq_lens_ptr[n] : L;
  const int ctx = kv_len - L;  // query i sits at key position ctx + i
  const attn::QRows qrows{q_start * p.q_token_stride + static_cast<int64_t>(kvh) * group * D, p.q_token_stride, group,
                          L * group, D};
  constexpr bool kPaged = kLayout != attn::KvLayout::kContiguous;
  const attn::KvRows<kLayout> kv{kPaged ? p.block_tables_ptr + n * p.block_table_stride : nullptr,
                                 kPaged ? 0 : q_start * p.kv_token_stride, p.kv_token_stride,
                                 static_cast<int64_t>(kvh) * D, p.block_shift, kv_len};
  auto limit_of = [&](int pi) { return p.causal ? min(kv_len - 1, ctx + pi / group) : kv_len - 1; };
  const int row_g = m0 + kWarpRows * warp + lane / 4;
  const int limit_g = limit_of(row_g);
  const int limit_g8 = limit_of(row_g + 8);
  const int warp_limit = limit_of(m0 + kWarpRows * warp);  // the smallest limit of the warp's rows
  const int key_end = limit_of(min(qrows.total, m0 + kBlockM) - 1) + 1;
  const int num_tiles = static_cast<int>(ceil_div(key_end, kTileKeys));
  const T* q = static_cast<const T*>(p.q_ptr);
  const T* k = static_cast<const T*>(p.k_ptr);
  const T* v = static_cast<const T*>(p.v_ptr);

  // ---- load Q and the first K tile ----
  attn::load_q_tile_async<D, kBlockM>(q_s, q, qrows, m0);
  attn::load_kv_tile_async<D>(k_s, k, kv, 0);
  ptx::cp_async_commit_group();

  // ---- compute: one K/V tile per iteration ----
  attn::WarpState<D> st;
  st.init();
  for (int tile = 0; tile < num_tiles; ++tile) {
    const int key0 = tile * kTileKeys;
    ptx::cp_async_wait_group<0>();
    __syncthreads();  // K_j (and Q) landed for everyone; nobody reads V_{j-1} any more
    attn::load_kv_tile_async<D>(v_s, v, kv, key0);
    ptx::cp_async_commit_group();
    float s[kTileKeys / attn::kMmaN][4];
    attn::qk_scores<T, D, kTileKeys>(s, q_s, kWarpRows * warp, k_s, 0);
    if (key0 + kTileKeys - 1 > warp_limit) attn::mask_scores<kTileKeys>(s, key0, limit_g, limit_g8);
    attn::online_softmax<D, kTileKeys>(st, s, p.scale_log2);
    uint32_t pa[kTileKeys / attn::kMmaK][4];
    attn::pack_p<T, kTileKeys>(pa, s);
    ptx::cp_async_wait_group<0>();
    __syncthreads();  // V_j landed; nobody reads K_j any more
    if (tile + 1 < num_tiles) {
      attn::load_kv_tile_async<D>(k_s, k, kv, key0 + kTileKeys);
      ptx::cp_async_commit_group();
    }
    attn::accumulate_pv<T, D, kTileKeys>(st, pa, v_s, 0);
  }
  ptx::cp_async_wait_group<0>();

  // ---- store ----
  store_warp_rows<T, D>(st, q_s, p, m0, q_start, kvh, group, qrows.total);
}

}  // namespace

template <typename T, int D>
cudaError_t launch_prefill_attention(const AttentionPrefillParams& p, cudaStream_t stream) {
  using attn::KvLayout;
  if (p.num_tiles_bound == 0 || p.num_seqs == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(p.num_tiles_bound), static_cast<unsigned>(p.num_kv_heads));
  const size_t smem = static_cast<size_t>(kBlockM + 2 * kTileKeys) * Head<D>::kRowElems * sizeof(T) + 2 * sizeof(int);
  if (!p.block_tables_ptr) {
    return launch(prefill_attention_kernel<T, D, KvLayout::kContiguous>, grid, dim3(kThreads), smem, stream, p);
  }
  if constexpr (kPrefillPagedHeadDim(D)) {
    if ((1 << p.block_shift) >= kTileKeys) {
      return launch(prefill_attention_kernel<T, D, KvLayout::kPagedTile>, grid, dim3(kThreads), smem, stream, p);
    }
    return launch(prefill_attention_kernel<T, D, KvLayout::kPagedRows>, grid, dim3(kThreads), smem, stream, p);
  }
  return cudaErrorNotSupported;  // the glue sends only head_dim 256 to the paged kernel
}

#define Q35_INSTANTIATE(T, D) \
  template cudaError_t launch_prefill_attention<T, D>(const AttentionPrefillParams&, cudaStream_t);
Q35_FOR_EACH_PREFILL_ATTENTION_CONFIG(Q35_INSTANTIATE)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
