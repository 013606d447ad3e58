// The chunk-local pre-pass of the chunked scan (impl kGdnImplSm90aPrepass, README.md "Pre-pass"): for every
// (chunk, value head) at once, the stages of a chunk that do not depend on the state -- gates + cumulative decay,
// L2 norms, A = strictly_lower(diag(beta) K K^T * Gamma), P = lower(scale Q K^T * Gamma), T = (I + A)^-1,
// Tu = T diag(beta), Tw = T diag(beta exp(G)), -w = -(Tw K) -- with the code and roundings of the fused kernels
// (gdn_chunk_stages.cuh), handed to the scan passes through global memory as the operands they round to T anyway
// (Tu, P, -w, the normalised q and K^T) and the fp32 decay factors. The scan CTAs, one per segment and running
// their chunks in order, then skip these stages: they are most of a chunk's SIMT work and all of its blocked
// inverse, which here run with many CTAs per SM instead of on the serial path of one.
#include "kernels/gdn/gdn_chunk.cuh"
#include "kernels/gdn/gdn_chunk_stages.cuh"
#include "q35/launch.h"

namespace q35::Q35_TARGET {
namespace {

using namespace ::q35::gdn;  // NOLINT: the kernel's building blocks

// One chunk's q, k tiles and the stages' work areas, in the sm_80 kernel's layouts (rows padded for ldmatrix). Tw
// takes P's place: P goes to global memory before the inverse writes Tw, its stores overlapping the inverse (73 KiB
// in all, against 82 with a region of its own for Tw): three CTAs per SM, with the 80 registers the kernel needs
// (72 before the loop over value heads) since the L2 norms stopped holding their rows in registers (ncu on an
// H200, at 82 KiB and 86 registers: two CTAs per SM, 25 % occupancy, latency-bound).
template <typename T>
struct PrepSmem {
  static constexpr size_t kTile = size_t{kChunk} * kLd * sizeof(T);
  static constexpr size_t kSquare = size_t{kChunk} * kLdT * sizeof(T);
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + kTile;
  static constexpr size_t kAmat = kK + kTile;  // fp32 [64][kLdA] A / T, then -w [64][kLd]
  static constexpr size_t kTu = kAmat + size_t{kChunk} * kLdA * sizeof(float);
  static constexpr size_t kP = kTu + kSquare;  // P, then Tw
  static constexpr size_t kScratch = kP + kSquare;
  static constexpr size_t kTok = kScratch + size_t{kInvBlocks - 1} * kInvBlock * kInvBlock * sizeof(float);
  static constexpr size_t kBytes = kTok + size_t{kTokenArrays} * kChunk * sizeof(float);
  static_assert(size_t{kChunk} * kLdA * sizeof(float) >= kTile, "-w reuses the A matrix region");
  static_assert(3 * (kBytes + 1024) <= 228 * 1024, "three CTAs per SM (H100 / H200: 228 KiB, 1 KiB per CTA reserved)");
  static_assert(kTile % kVecBytes == 0 && kSquare % kVecBytes == 0 && kAmat % kVecBytes == 0,
                "16-byte rows and tiles");
};

// The views the chunk-local stages take (one stage: the stage argument is ignored).
template <typename T>
struct PrepViews {
  unsigned char* base;
  __device__ T* q(int) const { return reinterpret_cast<T*>(base + PrepSmem<T>::kQ); }
  __device__ T* k(int) const { return reinterpret_cast<T*>(base + PrepSmem<T>::kK); }
  __device__ float* amat() const { return reinterpret_cast<float*>(base + PrepSmem<T>::kAmat); }
  __device__ T* w() const { return reinterpret_cast<T*>(base + PrepSmem<T>::kAmat); }
  __device__ T* tu() const { return reinterpret_cast<T*>(base + PrepSmem<T>::kTu); }
  __device__ T* tw() const { return reinterpret_cast<T*>(base + PrepSmem<T>::kP); }
  __device__ T* pm() const { return reinterpret_cast<T*>(base + PrepSmem<T>::kP); }
  __device__ float* scratch() const { return reinterpret_cast<float*>(base + PrepSmem<T>::kScratch); }
  __device__ float* tok(int array) const {
    return reinterpret_cast<float*>(base + PrepSmem<T>::kTok) + array * kChunk;
  }
};

// A [64][cols] tile of rows of ld elements to dense rows in global memory, 16 bytes per thread and step; lower:
// the elements above the diagonal written as zeros (P: the kkt stage leaves the tiles above it unwritten, and the
// wgmma kernel reads the whole square). An explicit 16-byte store: a plain uint4 assignment compiled to four
// st.global.u32 here (ncu on an H200: 72 % of the kernel's global sectors were the excess of those stores).
template <typename T>
__device__ __forceinline__ void store_tile(T* dst, const T* src, int ld, int cols, bool lower) {
  static_assert(sizeof(T) == 2, "two elements per 32-bit word");
  constexpr int kElems = kVecBytes / sizeof(T);
  const int pieces = cols / kElems;
  for (int i = threadIdx.x; i < kChunk * pieces; i += kChunkThreads) {
    const int row = i / pieces;
    const int col = (i % pieces) * kElems;
    uint4 x = *reinterpret_cast<const uint4*>(src + row * ld + col);
    if (lower && col + kElems - 1 > row) {
      // element j is the low (even j) or high half of word j / 2; +0.0 is all zero bits in fp16 and bf16
      const auto keep = [&](int j) { return col + j > row ? 0u : (j % 2 == 0 ? 0x0000ffffu : 0xffff0000u); };
      x.x &= keep(0) | keep(1);
      x.y &= keep(2) | keep(3);
      x.z &= keep(4) | keep(5);
      x.w &= keep(6) | keep(7);
    }
    __stcg(reinterpret_cast<uint4*>(dst + row * cols + col), x);  // one st.global.cg.v4: the scan reads it from L2
  }
}

// One value head's stages after the shared ones (q, k loaded and normalised; the head's gate stage done, before a
// barrier): the decay factors the scan reads, K K^T / Q K^T, P out, the inverse, -w, Tu and -w out. What runs after
// its last barrier reads only Tu and -w: the next head's gate stage writes neither (only the token arrays, last read
// by the inverse), and its K K^T stage writes -w's region after the barrier that ends that gate stage.
template <typename T>
__device__ __forceinline__ void prep_value_head(const GdnChunkParams& p, const PrepViews<T>& sm, int64_t slot,
                                                int h) {
  const int64_t at = slot * p.num_v_heads + h;
  if (threadIdx.x < 2 * kChunk / 4) {  // the factors the scan reads: exp(G), exp(G_last - G), 4 per thread
    const int array = threadIdx.x < kChunk / 4 ? kTokExpG : kTokDecayToEnd;
    const int i = 4 * (threadIdx.x % (kChunk / 4));
    *reinterpret_cast<float4*>(p.prep_gates_ptr + at * 2 * kChunk + 4 * threadIdx.x) =
        *reinterpret_cast<const float4*>(sm.tok(array) + i);
  }
  kkt_stage<T>(p, sm, 0, true);
  __syncthreads();
  // P out now, its region is Tw's: the inverse writes Tw only after a barrier (invert_and_scale) that every read of
  // P here comes before
  store_tile(static_cast<T*>(p.prep_p_ptr) + at * kChunk * kChunk, sm.pm(), kLdT, kChunk, true);
  inverse_stage<T>(sm);
  w_stage<T>(sm, 0);
  __syncthreads();
  store_tile(static_cast<T*>(p.prep_tu_ptr) + at * kChunk * kChunk, sm.tu(), kLdT, kChunk, false);
  store_tile(static_cast<T*>(p.prep_w_ptr) + at * kChunk * kHeadDim, sm.w(), kLd, kHeadDim, false);
}

// Computes: Tu, P (outputs of every chunk are computed: any chunk is an output chunk of the last pass), -w and the
//           decay factors exp(G), exp(G_last - G) of one chunk and p.prep_heads_per_cta consecutive value heads
//           (all of one k head), into prep_tu / prep_p / prep_w / prep_gates at (slot, h); the CTA of the first
//           value heads of each k head also q and K^T after the L2 norm into prep_q / prep_kt at (slot, hk).
//           The CTA loads and normalises q and k once for its heads (every head's stages themselves are those of
//           the one-head CTA: the same bits).
// Grid:     x = chunk slot (gdn_chunk_slots; spare slots exit), y = group of value heads (Hv / prep_heads_per_cta).
// Block:    8 warps, the stages of the fused kernels. Smem: PrepSmem<T>::kBytes (73 KiB: three CTAs per SM).
// Requires: as gdn_chunk_kernel; the six prep buffers 16-byte aligned; prep_heads_per_cta >= 1 divides Hv / Hk.
template <typename T>
__global__ void __launch_bounds__(kChunkThreads, 3) gdn_chunk_prep_kernel(GdnChunkParams p) {
  const int64_t slot = blockIdx.x;
  const int heads = p.prep_heads_per_cta;
  const int h0 = static_cast<int>(blockIdx.y) * heads;
  int64_t c0;
  int nv;
  if (!find_chunk(p, slot, c0, nv)) return;
  const int per_k_head = p.num_v_heads / p.num_k_heads;
  const int hk = h0 / per_k_head;
  Q35_DYNAMIC_SMEM(unsigned char, smem_raw);
  const PrepViews<T> sm{smem_raw};
  const int warp = threadIdx.x / kWarpSize;

  load_tile_async(sm.k(0), static_cast<const T*>(p.k_ptr) + hk * kHeadDim, p.k_token_stride, c0, nv);
  load_tile_async(sm.q(0), static_cast<const T*>(p.q_ptr) + hk * kHeadDim, p.q_token_stride, c0, nv);
  ptx::cp_async_commit_group();
  GateRaw raw{};
  if (warp == 0) load_gates<T>(p, h0, c0, nv, raw);
  ptx::cp_async_wait_all();
  __syncthreads();

  const auto gates_of = [&](int h) {  // warp 0: the token arrays of value head h
    const float a_log = p.raw_gates ? load_param<T>(p.a_log_ptr, h, p.a_log_fp32) : 0.0f;
    const float dt_bias = p.raw_gates ? load_param<T>(p.dt_bias_ptr, h, p.dt_bias_fp32) : 0.0f;
    gate_stage<T>(p, sm, raw, nv, a_log, dt_bias);
  };
  if (warp == 0) gates_of(h0);
  if (p.l2norm) {
    l2norm_rows(sm.k(0));
    l2norm_rows(sm.q(0));
  }
  __syncthreads();
  if (h0 % per_k_head == 0) {  // the k head's first value heads: its normalised q and K^T (read-only from here)
    const int64_t at_k = slot * p.num_k_heads + hk;
    store_tile(static_cast<T*>(p.prep_q_ptr) + at_k * kChunk * kHeadDim, sm.q(0), kLd, kHeadDim, false);
    T* kt = static_cast<T*>(p.prep_kt_ptr) + at_k * kHeadDim * kChunk;
    const T* k = sm.k(0);
    transpose_k_tile<T>([k](int token, int key) { return k + token * kLd + key; },
                        [kt](int key, int t0) { return kt + key * kChunk + t0; });
  }
  // The heads one after another. Written so that little stays live across the stages (their peak is at the 80
  // registers of 3 CTAs per SM): the q / K^T stores above, not after the loop, no unrolling, and the next head's
  // gates loaded at its turn (the stores after the loop, or the gates prefetched into registers during the stages
  // before, each cost a spill).
#pragma unroll 1
  for (int h = h0; h < h0 + heads; ++h) {
    if (h > h0) {
      if (warp == 0) {
        load_gates<T>(p, h, c0, nv, raw);  // (L1 / L2 hits: the sectors of the first head's gates hold them)
        gates_of(h);
      }
      __syncthreads();
    }
    prep_value_head<T>(p, sm, slot, h);
  }
}

}  // namespace

template <typename T>
cudaError_t launch_gdn_chunk_prep(const GdnChunkParams& params, cudaStream_t stream) {
  if (params.max_chunk_slots == 0 || params.num_v_heads == 0) return cudaSuccess;
  GdnChunkParams p = params;
  if (p.prep_heads_per_cta == 0) p.prep_heads_per_cta = 1;
  if (p.prep_heads_per_cta < 0 || (p.num_v_heads / p.num_k_heads) % p.prep_heads_per_cta != 0) {
    return cudaErrorInvalidValue;  // a CTA's heads must share one k head
  }
  const dim3 grid(static_cast<unsigned>(p.max_chunk_slots),
                  static_cast<unsigned>(p.num_v_heads / p.prep_heads_per_cta));
  return launch(gdn_chunk_prep_kernel<T>, grid, dim3(kChunkThreads), PrepSmem<T>::kBytes, stream, p);
}

#define Q35_INSTANTIATE(T) template cudaError_t launch_gdn_chunk_prep<T>(const GdnChunkParams&, cudaStream_t);
Q35_FOR_EACH_GDN_CHUNK_TYPES(Q35_INSTANTIATE)
#undef Q35_INSTANTIATE

}  // namespace q35::Q35_TARGET
