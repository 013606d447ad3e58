// The chunk-local stages of the chunk kernel (every one runs on all 256 threads of the CTA between barriers):
// loading a chunk, gates + cumulative decay, L2 norms, the masked K K^T and Q K^T products, the blocked inverse
// T = (I + A)^-1, and w = T diag(beta exp(G)) K. Notation of MODEL_SPEC §3b.9; rows i, j are tokens of the chunk.
#pragma once
#include "kernels/gdn/gdn_chunk_frags.cuh"
#include "kernels/gdn/gdn_chunk_items.cuh"

namespace q35::gdn {

// ---- load: cp.async of the q/k/v rows of tokens [c0, c0 + nv) into a stage; rows >= nv are zero-filled ----
template <typename T>
__device__ __forceinline__ void load_tile_async(T* dst, const T* src, int64_t token_stride, int64_t c0, int nv) {
  constexpr int kChunksPerRow = kHeadDim * sizeof(T) / kVecBytes;  // 16-byte pieces of a row
  constexpr int kElems = kVecBytes / sizeof(T);
  for (int i = threadIdx.x; i < kChunk * kChunksPerRow; i += kChunkThreads) {
    const int row = i / kChunksPerRow;
    const int col = (i % kChunksPerRow) * kElems;
    const int64_t t = c0 + (row < nv ? row : 0);  // a valid address even for the zero-filled rows
    ptx::cp_async_16_zfill(dst + row * kLd + col, src + t * token_stride + col, row < nv ? kVecBytes : 0);
  }
}

template <typename T>
__device__ __forceinline__ void load_chunk_async(const GdnChunkParams& p, const ChunkViews<T>& sm, int stage,
                                                 int h, int hk, int64_t c0, int nv, bool with_q, bool with_v) {
  load_tile_async(sm.k(stage), static_cast<const T*>(p.k_ptr) + hk * kHeadDim, p.k_token_stride, c0, nv);
  if (with_q) load_tile_async(sm.q(stage), static_cast<const T*>(p.q_ptr) + hk * kHeadDim, p.q_token_stride, c0, nv);
  if (with_v) load_tile_async(sm.v(stage), static_cast<const T*>(p.v_ptr) + h * kHeadDim, p.v_token_stride, c0, nv);
  ptx::cp_async_commit_group();
}

// ---- gates: warp 0, lane l owns tokens 2l and 2l + 1 of the chunk ----
struct GateRaw {
  float g[2];  // log decay, or raw a
  float b[2];  // beta, or raw b
};

template <typename T>
__device__ __forceinline__ void load_gates(const GdnChunkParams& p, int h, int64_t c0, int nv, GateRaw& r) {
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int i = 2 * lane + e;
    const int64_t t = c0 + i;
    const bool valid = i < nv;
    if (p.raw_gates) {
      r.g[e] = valid ? to_float(static_cast<const T*>(p.g_ptr)[t * p.g_token_stride + h]) : 0.0f;
      r.b[e] = valid ? to_float(static_cast<const T*>(p.beta_ptr)[t * p.beta_token_stride + h]) : 0.0f;
    } else {
      r.g[e] = valid ? load_param<T>(p.g_ptr, t * p.g_token_stride + h, p.g_fp32) : 0.0f;
      r.b[e] = valid ? load_param<T>(p.beta_ptr, t * p.beta_token_stride + h, p.beta_fp32) : 0.0f;
    }
  }
}

// G = cumsum(g) over the chunk (padded tokens: g = 0, beta = 0, so they change nothing) and the per-token
// factors the products need. a_log, dt_bias: the head's raw-gate parameters.
// Views: ChunkViews<T> or the sm_90a kernel's views (anything with tok()).
template <typename T, typename Views>
__device__ __forceinline__ void gate_stage(const GdnChunkParams& p, const Views& sm, const GateRaw& r,
                                           int nv, float a_log, float dt_bias) {
  const int lane = threadIdx.x % kWarpSize;
  float g[2], beta[2];
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const bool valid = 2 * lane + e < nv;
    g[e] = valid ? (p.raw_gates ? gate_log_decay(r.g[e], a_log, dt_bias) : r.g[e]) : 0.0f;
    beta[e] = valid ? (p.raw_gates ? gate_beta<T>(r.b[e]) : r.b[e]) : 0.0f;
  }
  float incl = g[0] + g[1];  // inclusive scan of the pair sums over the lanes
#pragma unroll
  for (int off = 1; off < kWarpSize; off *= 2) {
    const float up = __shfl_up_sync(warp::kFullMask, incl, off);
    if (lane >= off) incl += up;
  }
  const float last = __shfl_sync(warp::kFullMask, incl, kWarpSize - 1);
  const float G[2] = {incl - g[1], incl};
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int i = 2 * lane + e;
    const float eg = expf(G[e]);
    sm.tok(kTokG)[i] = G[e];
    sm.tok(kTokExpG)[i] = eg;
    sm.tok(kTokBeta)[i] = beta[e];
    sm.tok(kTokBetaExpG)[i] = beta[e] * eg;
    sm.tok(kTokDecayToEnd)[i] = expf(last - G[e]);
  }
}

// ---- L2 norm of the 64 rows of a tile in place: 4 threads per row, each 32 elements ----
// addr(row, col) is the address of element (row, col) in the kernel's tile layout (16-byte pieces contiguous).
// The second pass reads the elements again instead of keeping 32 fp32 values per thread: the same values (nothing
// writes them in between), 17 registers fewer where q and k are normalised back to back (the pre-pass kernel: 89
// registers with them held, which kept it at two CTAs per SM).
template <typename T, typename Addr>
__device__ __forceinline__ void l2norm_rows_at(Addr addr) {
  constexpr int kElems = kVecBytes / sizeof(T);
  constexpr int kPerThread = kHeadDim / 4;
  const int row = threadIdx.x / 4;
  const int c0 = (threadIdx.x % 4) * kPerThread;
  float ss = 0.0f;
#pragma unroll
  for (int c = 0; c < kPerThread; c += kElems) {
    float part[kElems];
    load_vec_f32<T, kElems>(addr(row, c0 + c), part);
#pragma unroll
    for (int e = 0; e < kElems; ++e) ss += part[e] * part[e];
  }
  ss += __shfl_xor_sync(warp::kFullMask, ss, 1);
  ss += __shfl_xor_sync(warp::kFullMask, ss, 2);
  const float r = rsqrtf(ss + kL2NormEps);
#pragma unroll
  for (int c = 0; c < kPerThread; c += kElems) {
    float part[kElems];
    load_vec_f32<T, kElems>(addr(row, c0 + c), part);
#pragma unroll
    for (int e = 0; e < kElems; ++e) part[e] *= r;
    store_vec_f32<T, kElems>(addr(row, c0 + c), part);
  }
}

template <typename T>
__device__ __forceinline__ void l2norm_rows(T* tile) {  // the sm_80 tiles: rows of kLd elements
  l2norm_rows_at<T>([tile](int row, int col) { return tile + row * kLd + col; });
}

// ---- A = strictly_lower(diag(beta) K K^T * Gamma) (fp32) and P = lower(scale Q K^T * Gamma) (T) ----
// Only the 20 tiles (16 x 8) on or below the diagonal of each are computed; warp w takes tiles w, w + 8, ...
// of the list [A tiles, P tiles]. The inverse reads only A's strictly lower part, and the output stage only P's
// tiles on or below the diagonal, so the other tiles are never read (the pre-pass kernel, which hands P to a wgmma
// kernel that reads all of it, writes zeros there itself).
// Views: ChunkViews<T> or the pre-pass kernel's (the sm_80 tile layouts: rows of kLd / kLdT / kLdA elements).
template <typename T, typename Views>
__device__ __forceinline__ void kkt_stage(const GdnChunkParams& p, const Views& sm, int stage, bool with_p) {
  constexpr int kTilesPerMatrix = 20;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const T* kt = sm.k(stage);
  const float* G = sm.tok(kTokG);
  const float* beta = sm.tok(kTokBeta);
  for (int tile = warp; tile < (with_p ? 2 : 1) * kTilesPerMatrix; tile += kChunkWarps) {
    const bool is_p = tile >= kTilesPerMatrix;
    const int local = tile % kTilesPerMatrix;
    const int rb = local < 2 ? 0 : local < 6 ? 1 : local < 12 ? 2 : 3;  // row block of 16 (2, 4, 6, 8 tiles)
    const int ct = local - rb * (rb + 1);                              // column tile of 8
    const T* rows = is_p ? sm.q(stage) : kt;
    // the decay factors first: their loads and exponentials overlap the mma chain below, where they stalled the
    // epilogue (ncu on an H200: 8.7 % of the pre-pass's stall samples on this __expf)
    float decay[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int i = rb * kMmaM + lane / 4 + 8 * (e / 2);
      const int j = ct * kMmaN + 2 * (lane % 4) + e % 2;
      decay[e] = i >= j ? __expf(G[i] - G[j]) : 0.0f;
    }
    float acc[4];
    zero_acc(acc);
#pragma unroll
    for (int kb = 0; kb < kHeadDim / kMmaK; ++kb) {
      uint32_t a[4], b[2];
      lds_a(a, rows, kLd, rb * kMmaM, kb * kMmaK);
      lds_b(b, kt, kLd, ct * kMmaN, kb * kMmaK);
      mma16816<T>(acc, a, b);
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int i = rb * kMmaM + lane / 4 + 8 * (e / 2);
      const int j = ct * kMmaN + 2 * (lane % 4) + e % 2;
      if (is_p) {
        sm.pm()[i * kLdT + j] = from_float<T>(i >= j ? p.scale * acc[e] * decay[e] : 0.0f);
      } else {
        sm.amat()[i * kLdA + j] = i > j ? beta[i] * acc[e] * decay[e] : 0.0f;
      }
    }
  }
}

// ---- T = (I + A)^-1 for strictly lower A, fp32, blocked by 16 ----
// A stays in the strictly lower triangle of amat; T (unit lower) is written transposed into the strictly upper
// triangle (T[i][j], i > j, at amat[j][i]), so no block of A is overwritten while still needed.
__device__ __forceinline__ float inv_t(const float* amat, int i, int j) {  // T[i][j]
  return i > j ? amat[j * kLdA + i] : (i == j ? 1.0f : 0.0f);
}

__device__ __forceinline__ void inverse_diag_blocks(float* amat) {
  if (threadIdx.x >= kChunk) return;
  const int b0 = (threadIdx.x / kInvBlock) * kInvBlock;
  const int j = threadIdx.x % kInvBlock;  // this thread's column of the block's inverse
  float x[kInvBlock];
#pragma unroll
  for (int i = 0; i < kInvBlock; ++i) {  // forward substitution; x[m] = 0 for m < j
    float s = 0.0f;
#pragma unroll
    for (int m = 0; m < i; ++m) s += amat[(b0 + i) * kLdA + b0 + m] * x[m];
    x[i] = i > j ? -s : (i == j ? 1.0f : 0.0f);
  }
#pragma unroll
  for (int i = 0; i < kInvBlock; ++i) {
    if (i > j) amat[(b0 + j) * kLdA + b0 + i] = x[i];  // upper triangle: never read as A
  }
}

// Off-diagonal blocks at block distance d: E = sum_{k=j}^{i-1} A_ik T_kj, then T_ij = -T_ii E (i = j + d).
// A thread takes 4 rows (r0..r0 + 3) of one column c of a block: the T values of its column are loaded once for the
// 4 rows, and both operands come as 16-byte vectors of 4 consecutive k (rows of A; T's column, stored transposed
// as a row of amat) -- about 8x fewer shared-memory wavefronts than one element per thread with scalar loads.
// Every element is still summed over the same k in the same order (k ascending, one FMA each), so T is bit for
// bit what the scalar loops gave. The 4 row groups of a column are 4 consecutive lanes of one warp (item = 64 bj +
// 4 c + g), so the second step, which reads the whole column of E, waits for them with a __syncwarp instead of a
// barrier of the CTA: one barrier per distance, after it (ncu on an H200: the inverse's barriers were 14 % of the
// pre-pass's stall samples). Items are whole warps (64 per block), at most 192: one pass over the threads.
constexpr int kInvRowsPerItem = 4;
constexpr int kInvRowGroups = kInvBlock / kInvRowsPerItem;           // 4 items per column
constexpr int kInvItemsPerBlock = kInvRowGroups * kInvBlock;         // 64 (column, row group) items
static_assert(kInvItemsPerBlock % kWarpSize == 0 && (kInvBlocks - 1) * kInvItemsPerBlock <= kChunkThreads,
              "whole warps of items, one item per thread");

__device__ __forceinline__ float4 lds_f4(const float* p) { return *reinterpret_cast<const float4*>(p); }

__device__ __forceinline__ void inverse_distance(float* amat, float* scratch, int d) {
  const int blocks = kInvBlocks - d;
  constexpr int kElems = kInvBlock * kInvBlock;
  const int item = threadIdx.x;
  if (item < blocks * kInvItemsPerBlock) {  // (whole warps)
    const int bj = item / kInvItemsPerBlock;
    const int bi = bj + d;
    const int c = item % kInvItemsPerBlock / kInvRowGroups;
    const int r0 = item % kInvRowGroups * kInvRowsPerItem;
    const int col = bj * kInvBlock + c;  // the column of T (and of E)
    float e[kInvRowsPerItem] = {};
    for (int bk = bj; bk < bi; ++bk) {
#pragma unroll 1  // (unrolled, the hoisted loads cost the fused kernels a spill beside their state registers)
      for (int m0 = 0; m0 < kInvBlock; m0 += 4) {
        const int k0 = bk * kInvBlock + m0;
        const float4 tv = lds_f4(amat + col * kLdA + k0);  // T[k0 + q][col] where k0 + q > col
        float t[4] = {tv.x, tv.y, tv.z, tv.w};
        if (bk == bj) {  // the unit lower triangular diagonal block T_jj
#pragma unroll
          for (int q = 0; q < 4; ++q) t[q] = k0 + q > col ? t[q] : (k0 + q == col ? 1.0f : 0.0f);
        }
#pragma unroll
        for (int rr = 0; rr < kInvRowsPerItem; ++rr) {
          const float4 av = lds_f4(amat + (bi * kInvBlock + r0 + rr) * kLdA + k0);
          e[rr] += av.x * t[0];
          e[rr] += av.y * t[1];
          e[rr] += av.z * t[2];
          e[rr] += av.w * t[3];
        }
      }
    }
    float* ebj = scratch + bj * kElems;
#pragma unroll
    for (int rr = 0; rr < kInvRowsPerItem; ++rr) ebj[(r0 + rr) * kInvBlock + c] = e[rr];
    __syncwarp();  // the column's other row groups: lanes of this warp
    float t[kInvRowsPerItem];  // -T_ij = E_ij + (T_ii - I) E_ij, row by row (the unit diagonal of T_ii first)
#pragma unroll
    for (int rr = 0; rr < kInvRowsPerItem; ++rr) t[rr] = ebj[(r0 + rr) * kInvBlock + c];
#pragma unroll
    for (int m = 0; m < kInvBlock; ++m) {
      if (m >= r0 + kInvRowsPerItem - 1) break;  // (no row of the item has m < r left)
      const float x = ebj[m * kInvBlock + c];
      const float4 tv = lds_f4(amat + (bi * kInvBlock + m) * kLdA + bi * kInvBlock + r0);  // T_ii[r0 + q][m]
      const float ti[4] = {tv.x, tv.y, tv.z, tv.w};
#pragma unroll
      for (int rr = 0; rr < kInvRowsPerItem; ++rr) {
        if (m < r0 + rr) t[rr] += ti[rr] * x;
      }
    }
    *reinterpret_cast<float4*>(amat + (bj * kInvBlock + c) * kLdA + bi * kInvBlock + r0) =
        make_float4(-t[0], -t[1], -t[2], -t[3]);  // T[i][j] at amat[j][i]
  }
  __syncthreads();
}

// T = (I + A)^-1 in place in amat (fp32, blocked; T transposed in the upper triangle). Ends with a barrier.
__device__ __forceinline__ void invert(float* amat, float* scratch) {
  inverse_diag_blocks(amat);
  __syncthreads();
  for (int d = 1; d < kInvBlocks; ++d) inverse_distance(amat, scratch, d);
}

template <typename Store>
__device__ __forceinline__ void invert_and_scale(float* amat, float* scratch, const float* bg, const float* beta,
                                                 Store store) {
  invert(amat, scratch);
  for (int e = threadIdx.x; e < kChunk * kChunk; e += kChunkThreads) {
    const int i = e / kChunk;
    const int j = e % kChunk;
    const float t = inv_t(amat, i, j);
    store(i, j, t * bg[j], t * beta[j]);
  }
}

// Tw = T diag(beta exp(G)) and Tu = T diag(beta) in T, zeros above the diagonal (rows of kLdT elements). Ends with
// a barrier. The values of invert_and_scale, 8 columns of a row per thread and item: lanes of a warp take
// consecutive rows i of the same columns, so their reads of T (stored transposed, amat[j][i]) hit 32 banks, and
// each writes its 8 values of Tw and of Tu with one 16-byte store. (Element by element, lanes took consecutive
// columns j of one row: amat[j][i] at a stride of kLdA = 68 floats, a 4-way bank conflict, and 2-byte stores.)
template <typename T, typename Views>
__device__ __forceinline__ void inverse_stage(const Views& sm) {
  constexpr int kCols = kVecBytes / sizeof(T);
  invert(sm.amat(), sm.scratch());
  const float* amat = sm.amat();
  const float* bg = sm.tok(kTokBetaExpG);
  const float* beta = sm.tok(kTokBeta);
  for (int item = threadIdx.x; item < kChunk * kChunk / kCols; item += kChunkThreads) {
    const int i = item % kChunk;
    const int j0 = item / kChunk * kCols;
    float tw[kCols], tu[kCols];
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      const float t = inv_t(amat, i, j0 + c);
      tw[c] = t * bg[j0 + c];
      tu[c] = t * beta[j0 + c];
    }
    store_vec_f32<T, kCols>(sm.tw() + i * kLdT + j0, tw);
    store_vec_f32<T, kCols>(sm.tu() + i * kLdT + j0, tu);
  }
  __syncthreads();
}

// ---- -w = -(Tw K) into the amat region as T [64][kLd]: warp w owns K columns [16w, 16w + 16) ----
template <typename T, typename Views>
__device__ __forceinline__ void w_stage(const Views& sm, int stage) {
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int n0 = warp * kRowsPerWarp;
#pragma unroll
  for (int rb = 0; rb < kChunk / kMmaM; ++rb) {
    float acc[2][4];
    zero_acc(acc[0]);
    zero_acc(acc[1]);
    for (int kb = 0; kb <= rb; ++kb) {  // Tw is lower triangular
      uint32_t a[4], b[4];
      lds_a(a, sm.tw(), kLdT, rb * kMmaM, kb * kMmaK);
      lds_b_trans_pair(b, sm.k(stage), kLd, kb * kMmaK, n0);
      const uint32_t b0[2] = {b[0], b[1]};
      const uint32_t b1[2] = {b[2], b[3]};
      mma16816<T>(acc[0], a, b0);
      mma16816<T>(acc[1], a, b1);
    }
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int i = rb * kMmaM + lane / 4 + 8 * half;
        const int col = n0 + nt * kMmaN + 2 * (lane % 4);
        const uint32_t packed = pack2<T>(-acc[nt][2 * half], -acc[nt][2 * half + 1]);
        *reinterpret_cast<uint32_t*>(sm.w() + i * kLd + col) = packed;
      }
    }
  }
}

}  // namespace q35::gdn
