// Building blocks of the sm_90a paged prefill (prefill_attention_sm90a.cu): shared-memory plan, the K/V producer
// (TMA), the V transposer (ldmatrix.trans + stmatrix into a K-major V^T tile; with kVMn instead V read MN-major
// by the wgmma, its stale rows zeroed) and the consumer's per-tile steps
// (wgmma S = Q K^T, fp32 online softmax on the accumulator fragments, wgmma O += P V with P from registers).
// Kernel sources only (after q35/device.cuh). Design and the reasons for each choice: README.md, "sm_90a path".
#pragma once
#include <cstdint>
#include <limits>
#include <type_traits>

#include "kernels/attention/attention.cuh"
#include "kernels/attention/attention_tile.cuh"
#include "q35/device.cuh"
#include "q35/ptx.cuh"
#include "q35/sm90_host.h"

namespace q35::Q35_TARGET::attn90 {

constexpr int kD = 256;                    // head dim (the text model's; the only one of this path)
constexpr int kWgRows = 64;                // packed query rows per consumer warpgroup (wgmma M)
constexpr int kConsumers = 2;
constexpr int kBlockM = kConsumers * kWgRows;  // packed query rows per CTA
constexpr int kTileKeys = kAttentionTileKeys;  // 64 keys per K/V tile = one cache block (block_size >= 64)
constexpr int kStages = 2;                 // K and V^T stages
constexpr int kMmaK = 16;
constexpr int kWarpgroupThreads = 128;
constexpr int kThreads = (1 + kConsumers) * kWarpgroupThreads;
constexpr int kTransposeWarps = 3;         // warps 1-3 of the producer warpgroup
constexpr int kTransposeThreads = kTransposeWarps * kWarpSize;
constexpr int kProducerRegs = 40, kConsumerRegs = 232;
static_assert(kWarpgroupThreads * kProducerRegs + kConsumers * kWarpgroupThreads * kConsumerRegs <= 65536);
constexpr int kSAcc = kTileKeys / 2;       // fp32 S accumulators per consumer thread (m64n64)
constexpr int kOAcc = kD / 2;              // fp32 O accumulators per consumer thread (m64n256)
constexpr int kPSteps = kTileKeys / kMmaK;  // k16 steps of P V
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// K-major 128B-swizzled tiles (functions: a namespace-scope struct constant is not usable in device code).
Q35_HD constexpr ptx::KMajorTile q_tile() { return {ptx::Swizzle::k128B, kBlockM}; }   // [128 rows][256 d]
Q35_HD constexpr ptx::KMajorTile kv_tile() { return {ptx::Swizzle::k128B, kTileKeys}; }  // [64 keys][256 d]
Q35_HD constexpr ptx::KMajorTile vt_tile() { return {ptx::Swizzle::k128B, kD}; }         // [256 d][64 keys]
constexpr uint32_t kQBytes = q_tile().bytes(kD);            // 64 KB
constexpr uint32_t kKvBytes = kv_tile().bytes(kD);          // 32 KB: 4 TMA boxes {64 d, 1 head, 64 slots}
constexpr uint32_t kKvBoxBytes = kv_tile().box_bytes();     // 8 KB
constexpr uint32_t kVtBytes = vt_tile().bytes(kTileKeys);   // 32 KB
constexpr uint32_t kKOffset = kQBytes;
constexpr uint32_t kVtOffset = kKOffset + kStages * kKvBytes;
constexpr uint32_t kRawOffset = kVtOffset + kStages * kVtBytes;  // V as loaded ([key][d]), one buffer
constexpr uint32_t kBarrierOffset = kRawOffset + kKvBytes;
static_assert(kv_tile().box_cols() == 64 && vt_tile().box_cols() == kTileKeys, "one 128-byte swizzled row per box");
static_assert(kKOffset % 1024 == 0 && kVtOffset % 1024 == 0 && kRawOffset % 1024 == 0, "tiles on the swizzle period");

// kVMn (V read MN-major by the P V wgmmas, no transpose): the V stages at kVtOffset hold V [key][d] as TMA lays
// it down, v_land[s] is its TMA completion, and vt_full[s] the fixer warps' arrivals after zeroing the keys past
// the sequence; raw_full / raw_empty and the raw buffer are unused.
struct Barriers {
  uint64_t k_full[kStages];    // K tile landed (TMA bytes)
  uint64_t k_empty[kStages];   // both consumers' S wgmmas on it retired (one arrival per consumer warp)
  uint64_t vt_full[kStages];   // V^T (kVMn: V) tile ready (one arrival per transposer thread, after its proxy fence)
  uint64_t vt_empty[kStages];  // both consumers' P V wgmmas on it retired
  uint64_t raw_full;           // V tile landed
  uint64_t raw_empty;          // the transposers read it
  uint64_t v_land[kStages];    // kVMn: V tile landed in its stage (TMA bytes)
  int sched[2];                // (sequence, tile within the sequence) of this CTA; sequence -1: none
};
constexpr size_t kSmemBytes = kBarrierOffset + sizeof(Barriers);

// Kernel parameter (const __grid_constant__): the op's params and the K / V cache tensor maps, both viewed as
// [slots][Hkv][D] with boxes {64 d, 1 head, 64 slots} (128B swizzle).
struct KernelParams {
  TensorMap k_map;
  TensorMap v_map;
  AttentionPrefillParams p;
};

// The CTA's work: 128 packed (token, head-in-group) query rows m0.. of sequence n against its key tiles.
struct Work {
  int n, kvh, group;
  int m0;         // first packed row of the tile
  int q_start;    // the sequence's first token in q
  int total;      // packed rows of the sequence (L * G)
  int kv_len;     // keys in the cache (context + new tokens)
  int ctx;        // query i sits at key position ctx + i
  int num_tiles;  // key tiles the CTA's last row needs
};

__device__ __forceinline__ int limit_of(const Work& w, int pi) { return min(w.kv_len - 1, w.ctx + pi / w.group); }

// ---- producer warp (lane 0): K tile j into stage j % 2, V tile j into the single raw buffer (kVMn: into V stage
// j % 2) ----
template <bool kVMn>
__device__ __forceinline__ void produce_kv(const KernelParams& kp, const Work& w, uint8_t* smem, Barriers& b) {
  const AttentionPrefillParams& p = kp.p;
  const int32_t* table = p.block_tables_ptr + static_cast<int64_t>(w.n) * p.block_table_stride;
  const int offset_mask = (1 << p.block_shift) - 1;
  ptx::tma_prefetch_map(&kp.k_map);
  ptx::tma_prefetch_map(&kp.v_map);
  for (int j = 0; j < w.num_tiles; ++j) {
    const int s = j % kStages;
    const int key0 = j * kTileKeys;
    const int slot = (table[key0 >> p.block_shift] << p.block_shift) + (key0 & offset_mask);
    ptx::mbarrier_wait_parity(&b.k_empty[s], ((j / kStages) & 1) ^ 1);  // round 0: the preceding phase, complete
    ptx::mbarrier_arrive_expect_tx(&b.k_full[s], kKvBytes);
    uint8_t* k_s = smem + kKOffset + s * kKvBytes;
#pragma unroll
    for (int cb = 0; cb < kD / 64; ++cb) {
      ptx::tma_load_3d(k_s + cb * kKvBoxBytes, &kp.k_map, 64 * cb, w.kvh, slot, &b.k_full[s]);
    }
    if constexpr (kVMn) {
      ptx::mbarrier_wait_parity(&b.vt_empty[s], ((j / kStages) & 1) ^ 1);
      ptx::mbarrier_arrive_expect_tx(&b.v_land[s], kKvBytes);
      uint8_t* v_s = smem + kVtOffset + s * kVtBytes;
#pragma unroll
      for (int cb = 0; cb < kD / 64; ++cb) {
        ptx::tma_load_3d(v_s + cb * kKvBoxBytes, &kp.v_map, 64 * cb, w.kvh, slot, &b.v_land[s]);
      }
    } else {
      ptx::mbarrier_wait_parity(&b.raw_empty, (j & 1) ^ 1);
      ptx::mbarrier_arrive_expect_tx(&b.raw_full, kKvBytes);
#pragma unroll
      for (int cb = 0; cb < kD / 64; ++cb) {
        ptx::tma_load_3d(smem + kRawOffset + cb * kKvBoxBytes, &kp.v_map, 64 * cb, w.kvh, slot, &b.raw_full);
      }
    }
  }
}

// ---- kVMn: warps 1-3 instead of the transposer: keys past the sequence of the landed V stage to zero (the cache
// block's stale rows may hold anything; P = 0 times a NaN would be a NaN), whole 128-byte rows of each of the 4
// boxes (the swizzle only permutes 16-byte chunks within a row), then the proxy fence and vt_full. ----
__device__ __forceinline__ void fix_v(const Work& w, uint8_t* smem, Barriers& b) {
  const int t = static_cast<int>(threadIdx.x) - kWarpSize;  // 0 .. kTransposeThreads - 1
  constexpr int kRowChunks = 128 / 16;
  for (int j = 0; j < w.num_tiles; ++j) {
    const int s = j % kStages;
    const int valid = w.kv_len - j * kTileKeys;
    uint8_t* v_s = smem + kVtOffset + s * kVtBytes;
    ptx::mbarrier_wait_parity(&b.v_land[s], (j / kStages) & 1);
    if (valid < kTileKeys) {
      const int chunks = (kTileKeys - valid) * kRowChunks;  // per box
      for (int i = t; i < (kD / 64) * chunks; i += kTransposeThreads) {
        const int box = i / chunks;
        const int c = i % chunks;
        *reinterpret_cast<uint4*>(v_s + box * kKvBoxBytes + (valid + c / kRowChunks) * 128 + 16 * (c % kRowChunks)) =
            make_uint4(0, 0, 0, 0);
      }
      ptx::fence_proxy_async_shared();  // generic-proxy writes -> read by wgmma (async proxy)
    }
    ptx::mbarrier_arrive(&b.vt_full[s]);
  }
}

// ---- transposer warps 1-3: V [key][d] (raw) -> V^T [d][key] (K-major B operand of P V) ----
// A group is 4 8x8 blocks: keys 8 kb.. x d 32 dg... ldmatrix.trans hands lane l the elements (keys 2 (l % 4) +
// {0, 1}, d l / 4) of each block, which is the stmatrix fragment of the transposed block. Keys past the sequence
// are zeroed here (the cache block's stale rows may hold anything; P = 0 times a NaN would be a NaN).
__device__ __forceinline__ void transpose_v(const Work& w, uint8_t* smem, Barriers& b) {
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize - 1;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const uint8_t* raw = smem + kRawOffset;
  for (int j = 0; j < w.num_tiles; ++j) {
    const int s = j % kStages;
    const int valid = w.kv_len - j * kTileKeys;
    uint8_t* vt = smem + kVtOffset + s * kVtBytes;
    ptx::mbarrier_wait_parity(&b.raw_full, j & 1);
    ptx::mbarrier_wait_parity(&b.vt_empty[s], ((j / kStages) & 1) ^ 1);
    for (int g = warp; g < (kTileKeys / 8) * (kD / 32); g += kTransposeWarps) {
      const int kb = g % (kTileKeys / 8);
      const int dg = g / (kTileKeys / 8);
      const int d = 32 * dg + 8 * (lane / 8);  // block lane / 8 of the group
      uint32_t r[4];
      ptx::ldmatrix_x4_trans(r, raw + kv_tile().offset(8 * kb + lane % 8, d));
      const int key = 8 * kb + 2 * (lane % 4);
      const uint32_t keep = (key < valid ? 0x0000FFFFu : 0u) | (key + 1 < valid ? 0xFFFF0000u : 0u);
#pragma unroll
      for (int i = 0; i < 4; ++i) r[i] &= keep;
      ptx::stmatrix_x4(vt + vt_tile().offset(d + lane % 8, 8 * kb), r);
    }
    ptx::fence_proxy_async_shared();  // generic-proxy writes -> read by wgmma (async proxy)
    ptx::mbarrier_arrive(&b.vt_full[s]);
    ptx::mbarrier_arrive(&b.raw_empty);
  }
}

// ---- consumer steps (one warpgroup, 64 query rows; lane l holds rows l / 4 and l / 4 + 8 of its warp's 16) ----
template <typename T, int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  if constexpr (std::is_same_v<T, __half>) {
    ptx::wgmma_f16_ss<N>(d, desc_a, desc_b, scale_d);
  } else {
    ptx::wgmma_bf16_ss<N>(d, desc_a, desc_b, scale_d);
  }
}
template <typename T, int N, bool kTransB = false>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b) {
  if constexpr (std::is_same_v<T, __half>) {
    ptx::wgmma_f16_rs<N, kTransB>(d, a, desc_b, 1);
  } else {
    ptx::wgmma_bf16_rs<N, kTransB>(d, a, desc_b, 1);
  }
}

// Issues S = Q[rows 64 wg..][:256] K[tile][:256]^T (16 wgmma m64n64k16, one commit group).
template <typename T>
__device__ __forceinline__ void issue_qk(float (&s)[kSAcc], uint32_t q_base, uint32_t k_base, int wg) {
#pragma unroll
  for (int ks = 0; ks < kD / kMmaK; ++ks) {
    wgmma_ss<T, kTileKeys>(s, q_tile().desc(q_base, wg * kWgRows, ks * kMmaK), kv_tile().desc(k_base, 0, ks * kMmaK),
                           ks > 0);
  }
  ptx::wgmma_commit_group();
}

// Issues O += P V^T[:][tile]^T (4 wgmma m64n256k16 with P from registers, one commit group); kVMn: V [key][d]
// read MN-major (imm-trans-b) from the tile as TMA wrote it.
template <typename T, bool kVMn>
__device__ __forceinline__ void issue_pv(float (&o)[kOAcc], const uint32_t (&pa)[kPSteps][4], uint32_t vt_base) {
#pragma unroll
  for (int kk = 0; kk < kPSteps; ++kk) {
    if constexpr (kVMn) {
      wgmma_rs<T, kD, true>(o, pa[kk], kv_tile().desc_mn_major(vt_base, kk * kMmaK, 0));
    } else {
      wgmma_rs<T, kD>(o, pa[kk], vt_tile().desc(vt_base, 0, kk * kMmaK));
    }
  }
  ptx::wgmma_commit_group();
}

// Scores of keys past a row's limit become -inf (accumulator i: key 8 (i >> 2) + 2 (l % 4) + (i & 1), row half
// (i >> 1) & 1).
__device__ __forceinline__ void mask_scores(float (&s)[kSAcc], int key0, int limit_g, int limit_g8) {
  const int t = static_cast<int>(threadIdx.x) % 4;
#pragma unroll
  for (int i = 0; i < kSAcc; ++i) {
    const int j = key0 + 8 * (i >> 2) + 2 * t + (i & 1);
    if (j > (((i >> 1) & 1) ? limit_g8 : limit_g)) s[i] = kNegInf;
  }
}

// The sm_80 kernel's online softmax step (attn::online_softmax) on wgmma fragments, same operations in the same
// order: folds s into the running max m and sum l, returns each row's O rescale factor and turns s into
// p = exp2(s c - m c) with c = scale * log2(e). The O rescale itself waits for the P V wgmmas in flight.
__device__ __forceinline__ void softmax_step(float (&s)[kSAcc], float (&m)[2], float (&l)[2], float (&alpha)[2],
                                             float scale_log2) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = kNegInf;
#pragma unroll
    for (int nt = 0; nt < kSAcc / 4; ++nt) mx = fmaxf(mx, fmaxf(s[4 * nt + 2 * r], s[4 * nt + 2 * r + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m[r], mx);
    const float base = m_new == kNegInf ? 0.0f : m_new * scale_log2;
    alpha[r] = m_new == m[r] ? 1.0f : exp2f(fmaf(m[r], scale_log2, -base));
    m[r] = m_new;
    float sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < kSAcc / 4; ++nt) {
#pragma unroll
      for (int e = 2 * r; e < 2 * r + 2; ++e) {
        s[4 * nt + e] = exp2f(fmaf(s[4 * nt + e], scale_log2, -base));
        sum += s[4 * nt + e];
      }
    }
    l[r] = fmaf(l[r], alpha[r], sum);
  }
}

// O *= alpha per row, skipped when no row of the warp moved its max (alpha exactly 1).
__device__ __forceinline__ void rescale_o(float (&o)[kOAcc], const float (&alpha)[2]) {
  if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
    for (int i = 0; i < kOAcc; ++i) o[i] *= alpha[(i >> 1) & 1];
  }
}

// P (fp32 accumulators of m64n64) rounded to T as the RS A fragments of the 4 k16 steps: accumulators
// 8 kk .. 8 kk + 7 (key columns 16 kk .. 16 kk + 15) are A elements 0..7 of step kk (the mma.m16n8k16 A layout).
template <typename T>
__device__ __forceinline__ void pack_p(uint32_t (&pa)[kPSteps][4], const float (&s)[kSAcc]) {
#pragma unroll
  for (int kk = 0; kk < kPSteps; ++kk) {
#pragma unroll
    for (int r = 0; r < 4; ++r) pa[kk][r] = attn::pack2<T>(s[8 * kk + 2 * r], s[8 * kk + 2 * r + 1]);
  }
}

}  // namespace q35::Q35_TARGET::attn90
