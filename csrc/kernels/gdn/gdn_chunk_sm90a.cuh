// Shared-memory layout and the chunk-level stages of the sm_90a (wgmma) chunk kernel, gdn_chunk_sm90a.cu. Same
// math, same operands and the same roundings as the mma.sync kernel (gdn_chunk.cu, gdn_chunk_stages.cuh); the
// products run as warpgroup MMAs (two consumer warpgroups; warpgroup g owns value rows [64g, 64g + 64)). Every
// wgmma operand in shared memory is a K-major tile with 128-byte swizzle (ptx::KMajorTile); a product whose
// operand is MN-major in memory (K for w = Tw K and for the state update) reads a transposed copy K^T [key][token]
// written once per chunk (MN-major wgmma operands are not verified). Design: README.md, "sm_90a path".
#pragma once
#include "kernels/gdn/gdn_chunk_stages.cuh"
#include "q35/sm90_host.h"

namespace q35::gdn::sm90a {

constexpr int kWgThreads = 128;       // one warpgroup
constexpr int kWgRows = 64;           // wgmma M: value rows of the state per warpgroup
constexpr int kSteps64 = kChunk / kMmaK;     // k16 steps over the chunk's tokens
constexpr int kSteps128 = kHeadDim / kMmaK;  // k16 steps over the key dim

// [64 token][128] tiles (q, k, v, -w), [128 key][64 token] (K^T), [64][64] (Tu, Tw, P): 128B swizzle.
Q35_HD constexpr ptx::KMajorTile tok_tile() { return {ptx::Swizzle::k128B, kChunk}; }
Q35_HD constexpr ptx::KMajorTile key_tile() { return {ptx::Swizzle::k128B, kHeadDim}; }

// kPrepass: the chunk-local stages ran in the pre-pass kernel (gdn_chunk_prep.cu); the normalised q, K^T, -w, Tu,
// P and the decay factors arrive by TMA with each chunk's v (so they are per stage), and k, A/T, Tw, the inverse's
// scratch and the per-token arrays of the gate stage are not needed.
template <bool kPrepass>
struct Smem {
  static constexpr uint32_t kTile = tok_tile().bytes(kHeadDim);  // 16 KB
  static constexpr uint32_t kSquare = tok_tile().bytes(kChunk);  // 8 KB
  static constexpr uint32_t kKtBytes = key_tile().bytes(kChunk);  // 16 KB
  static constexpr uint32_t kFused = kPrepass ? 0 : 1;           // the fused kernel's own work areas
  static constexpr uint32_t kFactorBytes = 2 * kChunk * sizeof(float);  // exp(G), exp(G_last - G)
  // q, k, v | q, v, K^T, -w, Tu, P, factors (padded: every stage starts on the 1024-byte swizzle pattern)
  static constexpr uint32_t kStage = kPrepass ? 2 * kTile + kKtBytes + kTile + 2 * kSquare + 1024 : 3 * kTile;
  static constexpr uint32_t kKt = 2 * kStage;  // K^T; kPrepass: the output staging tile instead
  static constexpr uint32_t kW = kKt + kKtBytes;
  static constexpr uint32_t kTu = kW + kFused * kTile;
  static constexpr uint32_t kTw = kTu + kFused * kSquare;
  static constexpr uint32_t kP = kTw + kFused * kSquare;
  static constexpr uint32_t kAmat = kP + kFused * kSquare;  // fp32 [64][kLdA]: A, then T in its upper triangle
  static constexpr uint32_t kScratch = kAmat + kFused * kChunk * kLdA * sizeof(float);
  static constexpr uint32_t kTok = kScratch + kFused * (kInvBlocks - 1) * kInvBlock * kInvBlock * sizeof(float);
  static constexpr uint32_t kRed = kTok + kFused * kTokenArrays * kChunk * sizeof(float);
  static constexpr uint32_t kBars = kRed + kChunkWarps * kChunk * sizeof(float);  // full[2]: a stage landed
  static constexpr uint32_t kBytes = kBars + 2 * sizeof(uint64_t);
  static_assert(kTile % 1024 == 0 && kSquare % 1024 == 0 && kKtBytes % 1024 == 0 && kStage % 1024 == 0,
                "every wgmma tile starts on the 1024-byte swizzle pattern");
  static_assert(kFactorBytes <= 1024, "the factors fit the stage's padding");
  static_assert(kBytes <= 227 * 1024, "fits the 227 KiB of dynamic shared memory of sm_90");
};

// Byte views of one CTA's shared memory (base: Q35_DYNAMIC_SMEM_1024). kt, w, tu, pm take the chunk's stage (used
// only with kPrepass); k exists only without it. stg: where the output stage puts o -- the chunk's q tile, or with
// kPrepass a tile of its own (kOwnStaging: no barrier needed before writing it, the q tile may still be read by
// the other warpgroup's wgmmas).
template <bool kPrepass>
struct Views {
  using L = Smem<kPrepass>;
  static constexpr bool kOwnStaging = kPrepass;
  unsigned char* base;
  __device__ unsigned char* q(int stage) const { return base + stage * L::kStage; }
  __device__ unsigned char* k(int stage) const { return q(stage) + L::kTile; }
  __device__ unsigned char* v(int stage) const { return q(stage) + (kPrepass ? 1 : 2) * L::kTile; }
  __device__ unsigned char* kt(int stage) const { return kPrepass ? v(stage) + L::kTile : base + L::kKt; }
  __device__ unsigned char* stg(int stage) const { return kPrepass ? base + L::kKt : q(stage); }
  __device__ unsigned char* w(int stage) const { return kPrepass ? kt(stage) + L::kKtBytes : base + L::kW; }
  __device__ unsigned char* tu(int stage) const { return kPrepass ? w(stage) + L::kTile : base + L::kTu; }
  __device__ unsigned char* pm(int stage) const { return kPrepass ? tu(stage) + L::kSquare : base + L::kP; }
  // kPrepass: [2][64] fp32 exp(G), exp(G_last - G) of the stage's chunk (else the gate stage's tok arrays)
  __device__ float* factors(int stage) const { return reinterpret_cast<float*>(pm(stage) + L::kSquare); }
  __device__ unsigned char* tw() const { return base + L::kTw; }
  __device__ float* amat() const { return reinterpret_cast<float*>(base + L::kAmat); }
  __device__ float* scratch() const { return reinterpret_cast<float*>(base + L::kScratch); }
  __device__ float* tok(int array) const { return reinterpret_cast<float*>(base + L::kTok) + array * kChunk; }
  __device__ float* red() const { return reinterpret_cast<float*>(base + L::kRed); }
  __device__ uint64_t* bar(int stage) const { return reinterpret_cast<uint64_t*>(base + L::kBars) + stage; }
};

// Kernel parameter (const __grid_constant__): TMA maps of q, k, v as [T][H][128] (3D, boxes {64, 1, 64}: 64 tokens
// x 64 dims of one head, two boxes per [64][128] tile), with the pre-pass those of its buffers as 2D [rows][64 /
// 128] (boxes of 64 columns x 64 rows; K^T: x 128 rows), and the op's params.
struct KernelArgs {
  TensorMap q_map;
  TensorMap k_map;
  TensorMap v_map;
  TensorMap tu_map;
  TensorMap p_map;
  TensorMap w_map;
  TensorMap qn_map;
  TensorMap kt_map;
  TensorMap gates_map;  // prep_gates as [slots * Hv][128] fp32, boxes of one row, no swizzle
  GdnChunkParams p;
};

// Element (r, c) of a K-major tile at `tile`.
template <typename T>
__device__ __forceinline__ T* at(unsigned char* tile, const ptx::KMajorTile& layout, int r, int c) {
  return reinterpret_cast<T*>(tile + layout.offset(r, c));
}

__device__ __forceinline__ uint64_t desc(const unsigned char* tile, const ptx::KMajorTile& layout, int r0, int k0) {
  return layout.desc(ptx::smem_u32(tile), r0, k0);
}

template <typename T, int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t a, uint64_t b, int scale_d) {
  if constexpr (std::is_same_v<T, __half>) {
    ptx::wgmma_f16_ss<N>(d, a, b, scale_d);
  } else {
    ptx::wgmma_bf16_ss<N>(d, a, b, scale_d);
  }
}

template <typename T, int N>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t b, int scale_d) {
  if constexpr (std::is_same_v<T, __half>) {
    ptx::wgmma_f16_rs<N>(d, a, b, scale_d);
  } else {
    ptx::wgmma_bf16_rs<N>(d, a, b, scale_d);
  }
}

// The RS A fragment of k16 step kb from accumulators d (d[4j..4j+3] is the m16n8 C tile of columns 8j..8j+7, so
// tiles 2kb and 2kb + 1 form the mma A fragment of one k16 step), rounded to T as acc_to_a_frag.
template <typename T, int R>
__device__ __forceinline__ void acc_frag(uint32_t (&a)[4], const float (&d)[R], int kb) {
  const float* c0 = d + 8 * kb;
  a[0] = pack2<T>(c0[0], c0[1]);
  a[1] = pack2<T>(c0[2], c0[3]);
  a[2] = pack2<T>(c0[4], c0[5]);
  a[3] = pack2<T>(c0[6], c0[7]);
}

// Warp-uniform copies of block-uniform values that steer wgmma branches (ptxas must see them uniform: C7518).
__device__ __forceinline__ int uniform(int x) { return __shfl_sync(warp::kFullMask, x, 0); }

// ---- load: thread 0 issues the TMA boxes of tokens [c0, c0 + 64) of a stage, completing on its barrier: q
// (outputs), k and v (values); with the pre-pass, instead of q and k, the chunk's normalised q (outputs) and K^T
// from its slot, and also its -w, Tu (values), P (outputs) and decay factors ----
template <typename T, bool kPrepass>
__device__ __forceinline__ void load_chunk_tma(const KernelArgs& ka, const Views<kPrepass>& sm, int stage, int h,
                                               int hk, int64_t c0, int64_t slot, bool with_q, bool with_v) {
  using L = Smem<kPrepass>;
  uint64_t* bar = sm.bar(stage);
  const uint32_t bytes = kPrepass ? (with_q + with_v) * (L::kTile + L::kSquare) + L::kKtBytes + L::kTile +
                                        L::kFactorBytes
                                  : (1u + with_q + with_v) * L::kTile;
  ptx::mbarrier_arrive_expect_tx(bar, bytes);
  const int32_t t = static_cast<int32_t>(c0);
  const int32_t row = static_cast<int32_t>((slot * ka.p.num_v_heads + h) * kChunk);     // Tu, P, -w
  const int32_t row_k = static_cast<int32_t>((slot * ka.p.num_k_heads + hk) * kChunk);  // q; K^T: x 2
#pragma unroll
  for (int b = 0; b < kHeadDim / kChunk; ++b) {  // two 64-column boxes per tile
    const uint32_t off = b * tok_tile().box_bytes();
    if (with_v) ptx::tma_load_3d(sm.v(stage) + off, &ka.v_map, b * kChunk, h, t, bar);
    if (kPrepass) {
      ptx::tma_load_2d(sm.w(stage) + off, &ka.w_map, b * kChunk, row, bar);
      if (with_q) ptx::tma_load_2d(sm.q(stage) + off, &ka.qn_map, b * kChunk, row_k, bar);
    } else {
      ptx::tma_load_3d(sm.k(stage) + off, &ka.k_map, b * kChunk, hk, t, bar);
      if (with_q) ptx::tma_load_3d(sm.q(stage) + off, &ka.q_map, b * kChunk, hk, t, bar);
    }
  }
  if (kPrepass) {
    ptx::tma_load_2d(sm.kt(stage), &ka.kt_map, 0, 2 * row_k, bar);
    ptx::tma_load_2d(sm.factors(stage), &ka.gates_map, 0, row / kChunk, bar);
    if (with_v) ptx::tma_load_2d(sm.tu(stage), &ka.tu_map, 0, row, bar);
    if (with_q) ptx::tma_load_2d(sm.pm(stage), &ka.p_map, 0, row, bar);
  }
}

// Rows [nv, 64) of a landed tile to zero: a box reads past the segment end into the next sequence's tokens (only
// past the last token does TMA fill zeros), and the kernel's contract is that of the mma.sync kernel, which
// zero-fills them (they meet only beta = 0 and masked products, but must not carry another sequence's values).
template <typename T>
__device__ __forceinline__ void zero_rows(unsigned char* tile, int nv) {
  constexpr int kPieces = kHeadDim * sizeof(T) / kVecBytes;
  for (int i = threadIdx.x; i < (kChunk - nv) * kPieces; i += kChunkThreads) {
    *reinterpret_cast<uint4*>(at<T>(tile, tok_tile(), nv + i / kPieces, (i % kPieces) * (kVecBytes / sizeof(T)))) =
        make_uint4(0, 0, 0, 0);
  }
}

// The TMA map of q, k or v ([T, H, 128], token stride in elements; the glue checks 16-byte rows). With no tokens
// there is nothing to map (no chunk is loaded): the map stays zero.
template <typename T>
inline cudaError_t make_qkv_map(TensorMap* map, const void* ptr, int heads, int64_t tokens, int64_t token_stride) {
  if (tokens == 0) return cudaSuccess;
  const uint64_t dims[3] = {kHeadDim, static_cast<uint64_t>(heads), static_cast<uint64_t>(tokens)};
  const uint64_t strides[2] = {kHeadDim * sizeof(T), static_cast<uint64_t>(token_stride) * sizeof(T)};
  const uint32_t box[3] = {kChunk, 1, kChunk};
  return make_tensor_map(map, ptr, sizeof(T), 3, dims, strides, box, tok_tile().swizzle);
}

// The TMA map of the pre-pass's decay factors: [rows][128] fp32, boxes of one row, no swizzle (a plain copy).
inline cudaError_t make_factor_map(TensorMap* map, const float* ptr, int64_t rows) {
  if (rows == 0) return cudaSuccess;
  return make_tensor_map_2d(map, ptr, sizeof(float), static_cast<uint64_t>(rows), 2 * kChunk, 2 * kChunk, 1,
                            2 * kChunk, ptx::Swizzle::kNone);
}

// The TMA map of a pre-pass buffer: [rows][cols] dense (cols = 64: Tu, P, K^T; 128: -w, q), boxes of box_rows x 64.
template <typename T>
inline cudaError_t make_prep_map(TensorMap* map, const void* ptr, int64_t rows, int cols, int box_rows) {
  if (rows == 0) return cudaSuccess;
  return make_tensor_map_2d(map, ptr, sizeof(T), static_cast<uint64_t>(rows), static_cast<uint64_t>(cols),
                            static_cast<uint64_t>(cols), static_cast<uint32_t>(box_rows), kChunk, tok_tile().swizzle);
}

// ---- L2 norm of the 64 rows of a swizzled token tile in place (the code and order of l2norm_rows) ----
template <typename T>
__device__ __forceinline__ void l2norm_rows(unsigned char* tile) {
  l2norm_rows_at<T>([tile](int row, int col) { return at<T>(tile, tok_tile(), row, col); });
}

// ---- K^T [128 key][64 token] from the (normalised) K tile: thread -> (key, 8 tokens), one 16-byte store ----
template <typename T, typename V>
__device__ __forceinline__ void transpose_k(const V& sm, int stage) {
  unsigned char* k = sm.k(stage);
  unsigned char* kt = sm.kt(stage);
  transpose_k_tile<T>([k](int token, int key) { return at<T>(k, tok_tile(), token, key); },
                      [kt](int key, int t0) { return at<T>(kt, key_tile(), key, t0); });
}

// ---- A = strictly_lower(diag(beta) K K^T * Gamma) (warpgroup 0) and P = lower(scale Q K^T * Gamma) (warpgroup
// 1, outputs only): one SS wgmma m64n64 chain of 8 k16 steps each, epilogue as kkt_stage. ----
template <typename T, typename V>
__device__ __forceinline__ void kkt_stage(const GdnChunkParams& p, const V& sm, int stage, int wg, bool with_p) {
  if (wg == 1 && !with_p) return;
  const int t = threadIdx.x % kWgThreads;
  const unsigned char* rows = wg == 0 ? sm.k(stage) : sm.q(stage);
  float acc[kChunk / 2];
  ptx::wgmma_fence();
#pragma unroll
  for (int kb = 0; kb < kSteps128; ++kb) {
    wgmma_ss<T, kChunk>(acc, desc(rows, tok_tile(), 0, kb * kMmaK), desc(sm.k(stage), tok_tile(), 0, kb * kMmaK),
                        kb > 0);
  }
  ptx::wgmma_commit_group();
  ptx::wgmma_wait_group<0>();
  ptx::wgmma_fence_operand(acc);
  const float* G = sm.tok(kTokG);
  const float* beta = sm.tok(kTokBeta);
#pragma unroll
  for (int e = 0; e < kChunk / 2; ++e) {
    const int i = ptx::wgmma_acc_row(t, e);
    const int j = ptx::wgmma_acc_col(t, e);
    const float decay = i >= j ? __expf(G[i] - G[j]) : 0.0f;
    if (wg == 1) {
      *at<T>(sm.pm(stage), tok_tile(), i, j) = from_float<T>(i >= j ? p.scale * acc[e] * decay : 0.0f);
    } else {
      sm.amat()[i * kLdA + j] = i > j ? beta[i] * acc[e] * decay : 0.0f;
    }
  }
}

// ---- T = (I + A)^-1 (the blocked fp32 inverse of gdn_chunk_stages.cuh), then Tw, Tu as swizzled tiles ----
template <typename T, typename V>
__device__ __forceinline__ void inverse_stage(const V& sm, int stage) {
  invert_and_scale(sm.amat(), sm.scratch(), sm.tok(kTokBetaExpG), sm.tok(kTokBeta),
                   [&](int i, int j, float tw, float tu) {
                     *at<T>(sm.tw(), tok_tile(), i, j) = from_float<T>(tw);
                     *at<T>(sm.tu(stage), tok_tile(), i, j) = from_float<T>(tu);
                   });
  ptx::fence_proxy_async_shared();  // Tw, Tu: generic writes read by wgmma
  __syncthreads();
}

// ---- -w = -(Tw K): warpgroup wg computes key columns [64 wg, 64 wg + 64) (A = Tw, B = K^T rows) ----
template <typename T, typename V>
__device__ __forceinline__ void w_stage(const V& sm, int stage, int wg) {
  const int t = threadIdx.x % kWgThreads;
  float acc[kChunk / 2];
  ptx::wgmma_fence();
#pragma unroll
  for (int kb = 0; kb < kSteps64; ++kb) {
    wgmma_ss<T, kChunk>(acc, desc(sm.tw(), tok_tile(), 0, kb * kMmaK),
                        desc(sm.kt(stage), key_tile(), kWgRows * wg, kb * kMmaK), kb > 0);
  }
  ptx::wgmma_commit_group();
  ptx::wgmma_wait_group<0>();
  ptx::wgmma_fence_operand(acc);
#pragma unroll
  for (int e = 0; e < kChunk / 2; e += 2) {
    const int i = ptx::wgmma_acc_row(t, e);
    const int key = kWgRows * wg + ptx::wgmma_acc_col(t, e);
    *reinterpret_cast<uint32_t*>(at<T>(sm.w(stage), tok_tile(), i, key)) = pack2<T>(-acc[e], -acc[e + 1]);
  }
  ptx::fence_proxy_async_shared();
}

// The RS A fragment of V^T (16 value rows of this warp x k16 tokens [k0, k0 + 16)) from V [token][value] by
// ldmatrix.trans (the addresses of lds_a_trans, in the swizzled tile).
template <typename T>
__device__ __forceinline__ void lds_vt(uint32_t (&a)[4], unsigned char* v, int k0, int m0) {
  const int lane = threadIdx.x % kWarpSize;
  const int j = lane / 8;
  ptx::ldmatrix_x4_trans(a, at<T>(v, tok_tile(), k0 + 8 * (j / 2) + lane % 8, m0 + 8 * (j % 2)));
}

}  // namespace q35::gdn::sm90a
