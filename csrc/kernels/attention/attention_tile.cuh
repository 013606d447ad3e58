// Device building blocks shared by the prefill, varlen and decode attention kernels (prefill_attention.cu,
// decode_attention.cu): shared-memory tile layout, paged/contiguous K/V row addressing, cp.async tile loads, and the
// per-warp FlashAttention-2 step on mma.sync (S = Q K^T, fp32 online softmax in the exp2 domain, O += P V).
// Fragment layouts: PTX_FACTS.md §1, §3 (lane l, g = l / 4, t = l % 4). Design: README.md.
#pragma once
#include <cstring>
#include <limits>
#include <type_traits>

#include "q35/device.cuh"
#include "q35/ptx.cuh"

namespace q35::Q35_TARGET::attn {

constexpr int kThreads = 128;  // 4 warps per CTA
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kTileKeys = 64;  // keys per K/V tile in shared memory
constexpr int kMmaM = 16;
constexpr int kMmaN = 8;
constexpr int kMmaK = 16;
constexpr int kChunkElems = 8;  // 16-bit elements per 16-byte chunk (one cp.async / one ldmatrix row)
constexpr int kQuadLanes = 4;   // lanes sharing one accumulator row (t = 0..3)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Shared-memory layout of one head row per tile row. The QK^T reduction runs over the head dim rounded up to a
// multiple of 16 (72 -> 80, zero columns). Rows of 8k chunks are XOR-swizzled (chunk c of row r sits at c ^ (r % 8)),
// others padded by one chunk: either way the 8 rows an ldmatrix reads hit 8 different 16-byte bank groups.
template <int D>
struct Head {
  static_assert(D % kChunkElems == 0, "head_dim must be a multiple of 8");
  static constexpr int kPadded = (D + kMmaK - 1) / kMmaK * kMmaK;
  static constexpr int kChunks = kPadded / kChunkElems;   // chunks per smem row
  static constexpr int kDataChunks = D / kChunkElems;     // chunks holding data (the rest is zero)
  static constexpr bool kSwizzle = kChunks % 8 == 0;
  static constexpr int kRowElems = kSwizzle ? kPadded : kPadded + kChunkElems;
  static constexpr int kKSteps = kPadded / kMmaK;         // k-steps of QK^T
  static constexpr int kNTiles = kPadded / kMmaN;         // 8-column n-tiles of O
  static_assert(kNTiles % 2 == 0, "O n-tiles are loaded in pairs");

  __device__ __forceinline__ static int offset(int row, int chunk) {
    return row * kRowElems + (kSwizzle ? (chunk ^ (row & 7)) : chunk) * kChunkElems;
  }
};

// Where a sequence's key/value rows live. A compile-time choice: each kernel instantiation has exactly one
// address path in its loop (the prefill loop has no registers to spare for a second one).
enum class KvLayout {
  kContiguous,  // varlen: rows cu[n] + j of k/v [T, Hkv, D]
  kPagedTile,   // paged cache, blocks of >= 64 tokens: a 64-aligned key tile lies in one block (one table read)
  kPagedRows,   // paged cache, smaller blocks: one table read per row
};

// Row j of the current sequence's keys/values -> element offset of its kv-head row in the K (or V) tensor.
template <KvLayout kLayout>
struct KvRows {
  const int32_t* table;  // paged: this sequence's block-table row
  int64_t first;         // contiguous: element offset of the sequence's row 0
  int64_t token_stride;  // elements between consecutive tokens (paged: between cache slots, Hkv * D)
  int64_t head_offset;   // kv head * D
  int block_shift;       // paged: log2(block_size)
  int len;               // rows that exist (the KV length); rows >= len are zero-filled

  __device__ __forceinline__ int64_t offset(int j) const {
    if constexpr (kLayout == KvLayout::kContiguous) {
      return first + static_cast<int64_t>(j) * token_stride + head_offset;
    } else {
      const int64_t page = table[j >> block_shift];
      return ((page << block_shift) + (j & ((1 << block_shift) - 1))) * token_stride + head_offset;
    }
  }
};

// Queries of one kv group packed into tile rows: packed row pi = token * G + head_in_group.
struct QRows {
  int64_t first;         // element offset of the sequence's token 0, head kvh * G
  int64_t token_stride;  // elements between tokens
  int group;             // G = Hq / Hkv
  int total;             // packed rows that exist (tokens * G); rows >= total are zero-filled
  int head_dim;

  __device__ __forceinline__ int64_t offset(int pi) const {
    return first + static_cast<int64_t>(pi / group) * token_stride + static_cast<int64_t>(pi % group) * head_dim;
  }
};

// One 16-byte chunk of a tile row: cp.async from src (a row start), or a zero-fill for a missing row (nullptr)
// or a pad column (no bytes read). One instruction either way: the source size selects, no branch.
template <typename H, typename T>
__device__ __forceinline__ void copy_chunk(T* dst, const T* src, int ch, const T* any_global) {
  const bool data = src && (H::kDataChunks == H::kChunks || ch < H::kDataChunks);
  ptx::cp_async_16_zfill(dst, data ? src + ch * kChunkElems : any_global, data ? kVecBytes : 0);
}

// cp.async of kRows tile rows into a Head<D> tile; row_src(r) gives the global start of row r or nullptr (zero
// row: P = 0 times a stale V row can then never make a NaN). All threads of the CTA call it. When the CTA's
// threads cover whole rows (D = 64, 128, 256), thread t always copies chunk t % chunks of rows t / chunks + k *
// (threads / chunks): the loop unrolls and the row addresses are warp-uniform.
template <int D, int kRows, typename T, typename RowSrc>
__device__ __forceinline__ void load_tile_async(T* tile, const T* any_global, RowSrc&& row_src) {
  using H = Head<D>;
  if constexpr (kThreads % H::kChunks == 0) {
    constexpr int kRowsPerIter = kThreads / H::kChunks;
    static_assert(kRows % kRowsPerIter == 0, "whole rows per pass");
    const int ch = threadIdx.x % H::kChunks;
    const int r0 = threadIdx.x / H::kChunks;
#pragma unroll
    for (int i = 0; i < kRows / kRowsPerIter; ++i) {
      const int r = r0 + i * kRowsPerIter;
      copy_chunk<H>(tile + H::offset(r, ch), row_src(r), ch, any_global);
    }
  } else {
    for (int c = threadIdx.x; c < kRows * H::kChunks; c += kThreads) {
      const int r = c / H::kChunks;
      const int ch = c % H::kChunks;
      copy_chunk<H>(tile + H::offset(r, ch), row_src(r), ch, any_global);
    }
  }
}

// Rows r = 0..kRows-1 at row0 + r * stride (r < valid; zero rows after) into a tile. The whole-row path walks
// one pointer per thread (a hoisted pointer per row would cost 32 registers the attention loop does not have).
template <int D, int kRows, typename T>
__device__ __forceinline__ void load_strided_rows_async(T* tile, const T* row0, int64_t stride, int valid,
                                                        const T* any_global) {
  using H = Head<D>;
  if constexpr (kThreads % H::kChunks == 0) {
    constexpr int kRowsPerIter = kThreads / H::kChunks;
    const int ch = threadIdx.x % H::kChunks;
    const int r0 = threadIdx.x / H::kChunks;
    const bool data_col = H::kDataChunks == H::kChunks || ch < H::kDataChunks;
    const T* src = row0 + r0 * stride + ch * kChunkElems;
#pragma unroll
    for (int i = 0; i < kRows / kRowsPerIter; ++i) {
      const int r = r0 + i * kRowsPerIter;
      const bool ok = data_col && r < valid;
      ptx::cp_async_16_zfill(tile + H::offset(r, ch), ok ? src : any_global, ok ? kVecBytes : 0);
      src += kRowsPerIter * stride;
    }
  } else {
    load_tile_async<D, kRows>(tile, any_global, [&](int r) { return r < valid ? row0 + r * stride : nullptr; });
  }
}

// The 64 key (or value) rows j0.. (64-aligned) of a sequence into a tile.
template <int D, typename T, KvLayout kLayout>
__device__ __forceinline__ void load_kv_tile_async(T* tile, const T* __restrict__ src, const KvRows<kLayout>& kv,
                                                   int j0) {
  const int valid = kv.len - j0;  // rows that exist
  if constexpr (kLayout == KvLayout::kPagedRows) {
    load_tile_async<D, kTileKeys>(tile, src, [&](int r) { return r < valid ? src + kv.offset(j0 + r) : nullptr; });
  } else {
    load_strided_rows_async<D, kTileKeys>(tile, src + kv.offset(j0), kv.token_stride, valid, src);
  }
}

// The packed query rows m0.. (kRows of them) into a tile.
template <int D, int kRows, typename T>
__device__ __forceinline__ void load_q_tile_async(T* tile, const T* __restrict__ q, const QRows& rows, int m0) {
  load_tile_async<D, kRows>(tile, q, [&](int r) { return m0 + r < rows.total ? q + rows.offset(m0 + r) : nullptr; });
}

template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  static_assert(sizeof(T) == 2, "tensor-core operands are 16-bit");
  const T l = from_float<T>(lo);
  const T h = from_float<T>(hi);
  uint16_t lb, hb;
  memcpy(&lb, &l, sizeof(lb));
  memcpy(&hb, &h, sizeof(hb));
  return static_cast<uint32_t>(lb) | (static_cast<uint32_t>(hb) << 16);
}

template <typename T>
__device__ __forceinline__ void mma_acc(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const uint32_t b[2] = {b0, b1};
  if constexpr (std::is_same_v<T, __half>) {
    ptx::mma_m16n8k16_f16(d, a, b, d);
  } else {
    ptx::mma_m16n8k16_bf16(d, a, b, d);
  }
}

// The running state of one warp over 16 query rows: rows g and g + 8 of each accumulator fragment.
template <int D>
struct WarpState {
  float o[Head<D>::kNTiles][4];  // unnormalised O, C-fragment layout
  float m[2];                    // running max of the raw scores
  float l[2];                    // running sum of exp2 (this lane's columns only; quad-reduced at the end)

  __device__ __forceinline__ void init() {
#pragma unroll
    for (int nt = 0; nt < Head<D>::kNTiles; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
    m[0] = m[1] = kNegInf;
    l[0] = l[1] = 0.0f;
  }
};

// s = Q[q_row0, +16) K[key0, +kKeys)^T over the padded head dim (C-fragment layout per 8-key n-tile).
template <typename T, int D, int kKeys>
__device__ __forceinline__ void qk_scores(float (&s)[kKeys / kMmaN][4], const T* q_s, int q_row0, const T* k_s,
                                          int key0) {
  using H = Head<D>;
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int nt = 0; nt < kKeys / kMmaN; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < H::kKSteps; ++kk) {
    uint32_t a[4];  // Q rows q_row0.., columns 16 kk..
    ptx::ldmatrix_x4(a, q_s + H::offset(q_row0 + lane % 16, 2 * kk + lane / 16));
#pragma unroll
    for (int nt = 0; nt < kKeys / kMmaN; nt += 2) {
      uint32_t b[4];  // K rows as Bt[n][k]: b[0..1] n-tile nt, b[2..3] n-tile nt + 1
      ptx::ldmatrix_x4(b, k_s + H::offset(key0 + nt * kMmaN + lane % 8 + 8 * (lane / 16), 2 * kk + (lane / 8) % 2));
      mma_acc<T>(s[nt], a, b[0], b[1]);
      mma_acc<T>(s[nt + 1], a, b[2], b[3]);
    }
  }
}

// Scores of key j (global index key_base + column) become -inf where j > limit of the row (rows g, g + 8).
template <int kKeys>
__device__ __forceinline__ void mask_scores(float (&s)[kKeys / kMmaN][4], int key_base, int limit_g, int limit_g8) {
  const int t = threadIdx.x % kQuadLanes;
#pragma unroll
  for (int nt = 0; nt < kKeys / kMmaN; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int j = key_base + nt * kMmaN + 2 * t + (e & 1);
      if (j > (e < 2 ? limit_g : limit_g8)) s[nt][e] = kNegInf;
    }
  }
}

// Online softmax: folds the scores s into the running max/sum, rescales O, and turns s into p = exp2(s*c - m*c)
// with c = scale * log2(e). A row that has seen only masked keys keeps m = -inf and p = 0. When no row of the
// warp raised its max (most tiles after the first few), alpha is exactly 1 and the O rescale (128 FMULs at
// D = 256) is skipped.
template <int D, int kKeys>
__device__ __forceinline__ void online_softmax(WarpState<D>& st, float (&s)[kKeys / kMmaN][4], float scale_log2) {
  float alpha[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = kNegInf;
#pragma unroll
    for (int nt = 0; nt < kKeys / kMmaN; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(st.m[r], mx);
    const float base = m_new == kNegInf ? 0.0f : m_new * scale_log2;
    alpha[r] = m_new == st.m[r] ? 1.0f : exp2f(fmaf(st.m[r], scale_log2, -base));
    st.m[r] = m_new;
    float sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < kKeys / kMmaN; ++nt) {
#pragma unroll
      for (int e = 2 * r; e < 2 * r + 2; ++e) {
        s[nt][e] = exp2f(fmaf(s[nt][e], scale_log2, -base));
        sum += s[nt][e];
      }
    }
    st.l[r] = fmaf(st.l[r], alpha[r], sum);
  }
  if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
    for (int nt = 0; nt < Head<D>::kNTiles; ++nt) {
      st.o[nt][0] *= alpha[0];
      st.o[nt][1] *= alpha[0];
      st.o[nt][2] *= alpha[1];
      st.o[nt][3] *= alpha[1];
    }
  }
}

// P (fp32 C fragments of 8-key n-tiles) rounded to T as A fragments of 16-key k-steps: n-tiles 2k and 2k + 1
// make k-step k. Packing right after the softmax halves the registers P holds while the next tile's loads issue.
template <typename T, int kKeys>
__device__ __forceinline__ void pack_p(uint32_t (&a)[kKeys / kMmaK][4], const float (&p)[kKeys / kMmaN][4]) {
#pragma unroll
  for (int kk = 0; kk < kKeys / kMmaK; ++kk) {
    a[kk][0] = pack2<T>(p[2 * kk][0], p[2 * kk][1]);
    a[kk][1] = pack2<T>(p[2 * kk][2], p[2 * kk][3]);
    a[kk][2] = pack2<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]);
    a[kk][3] = pack2<T>(p[2 * kk + 1][2], p[2 * kk + 1][3]);
  }
}

// O += P V[key0, +kKeys) with P packed by pack_p; V rows are read transposed with ldmatrix.trans.
template <typename T, int D, int kKeys>
__device__ __forceinline__ void accumulate_pv(WarpState<D>& st, const uint32_t (&a)[kKeys / kMmaK][4], const T* v_s,
                                              int key0) {
  using H = Head<D>;
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int kk = 0; kk < kKeys / kMmaK; ++kk) {
#pragma unroll
    for (int nt = 0; nt < H::kNTiles; nt += 2) {
      uint32_t b[4];  // V rows key0 + 16 kk.., columns 8 nt.. (b[0..1]) and 8 (nt + 1).. (b[2..3])
      ptx::ldmatrix_x4_trans(b, v_s + H::offset(key0 + kMmaK * kk + lane % 16, nt + lane / 16));
      mma_acc<T>(st.o[nt], a[kk], b[0], b[1]);
      mma_acc<T>(st.o[nt + 1], a[kk], b[2], b[3]);
    }
  }
}

// Sum of the row's l over the quad (each lane summed only its own columns).
template <int D>
__device__ __forceinline__ void reduce_row_sums(WarpState<D>& st) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    st.l[r] += __shfl_xor_sync(0xffffffffu, st.l[r], 1);
    st.l[r] += __shfl_xor_sync(0xffffffffu, st.l[r], 2);
  }
}

// out = round_T(o), times sigmoid(gate) (fp32, rounded once more) when a gate is given: the reference's two
// roundings. kN consecutive elements, 16-byte aligned when kN * sizeof(T) == 16.
template <typename T, int kN>
__device__ __forceinline__ void store_gated(T* __restrict__ out, const T* __restrict__ gate, const float (&o)[kN]) {
  float y[kN];
#pragma unroll
  for (int i = 0; i < kN; ++i) y[i] = to_float(from_float<T>(o[i]));
  if (gate) {
    float g[kN];
    load_vec_f32<T, kN>(gate, g);
#pragma unroll
    for (int i = 0; i < kN; ++i) y[i] = y[i] * (1.0f / (1.0f + __expf(-g[i])));
  }
  store_vec_f32<T, kN>(out, y);
}

struct TileRef {
  int seq;   // -1: past the last tile
  int tile;  // tile within the sequence
};

// Sequence and tile-within-sequence of flat tile `tile`, where sequence n owns ceil(L_n * G / kBlockM) consecutive
// tiles. One warp: an inclusive shuffle scan of the tile counts of 32 sequences at a time.
template <int kBlockM>
__device__ TileRef find_tile(const int32_t* __restrict__ cu_seqlens, int num_seqs, int group, int64_t tile) {
  constexpr unsigned kFull = 0xffffffffu;
  const int lane = threadIdx.x % kWarpSize;
  int64_t base = 0;
  for (int s0 = 0; s0 < num_seqs; s0 += kWarpSize) {
    const int s = s0 + lane;
    const int64_t count =
        s < num_seqs ? ceil_div(static_cast<int64_t>(cu_seqlens[s + 1] - cu_seqlens[s]) * group, kBlockM) : 0;
    int64_t incl = count;
#pragma unroll
    for (int d = 1; d < kWarpSize; d *= 2) {
      const int64_t other = __shfl_up_sync(kFull, incl, d);
      if (lane >= d) incl += other;
    }
    const int64_t chunk_total = __shfl_sync(kFull, incl, kWarpSize - 1);
    if (tile < base + chunk_total) {
      const int first = __ffs(__ballot_sync(kFull, base + incl > tile)) - 1;
      const int64_t before = __shfl_sync(kFull, incl - count, first);
      return {s0 + first, static_cast<int>(tile - base - before)};
    }
    base += chunk_total;
  }
  return {-1, 0};
}

}  // namespace q35::Q35_TARGET::attn
